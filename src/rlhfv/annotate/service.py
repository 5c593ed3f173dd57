"""What the app does, apart from HTTP: accounts, task locks, submits, review.

Every function runs in its own short transaction (``db.write()`` / ``db.read()``) and
returns plain data, so the web routes, the CLI and the tests call the same code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from rlhfv.annotate.db import (
    ROLES,
    Assignment,
    AuthSession,
    Database,
    Submission,
    Task,
    TaskSkip,
    User,
    now,
)
from rlhfv.annotate.edits import Edit, EditError, apply_edits
from rlhfv.annotate.security import hash_password, new_token, token_hash, verify_password
from rlhfv.data.schema import ChangedSegment

SESSION_SECONDS = 12 * 3600
DEFAULT_LOCK_SECONDS = 30 * 60


class Conflict(Exception):
    """The request is valid but the state forbids it (lock lost, already submitted): HTTP 409."""


class Forbidden(Exception):
    """The user may not touch this object: HTTP 403."""


class NotFound(Exception):
    """HTTP 404."""


class Refused(ValueError):
    """A request the user must change (an empty correction, a taken user name): HTTP 422,
    its text shown to the user. Only this (and ``EditError``) is: any other ValueError is
    a bug, a 500 without its text. A ValueError, so callers catching one still do."""


@dataclass(frozen=True)
class CurrentUser:
    id: int
    name: str
    role: str


# ---------------------------------------------------------------- accounts


MIN_PASSWORD_CHARS = 8


def add_user(db: Database, name: str, role: str, password: str) -> int:
    if role not in ROLES:
        raise Refused(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64 or not name.isprintable():
        raise Refused("user name must be 1-64 printable characters")
    if len(password) < MIN_PASSWORD_CHARS:
        raise Refused(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    hashed = hash_password(password)
    try:
        with db.write() as s:
            user = User(name=name, role=role, password_hash=hashed)
            s.add(user)
            s.flush()
            return user.id
    except IntegrityError as err:
        raise Refused(f"user {name!r} exists") from err


def login(db: Database, name: str, password: str) -> str | None:
    """A new session token, or None when the name or password is wrong."""
    with db.read() as s:
        user = s.scalar(select(User).where(User.name == name))
    if not verify_password(user.password_hash if user else None, password):
        return None
    token = new_token()
    with db.write() as s:
        s.add(AuthSession(token_hash=token_hash(token), user_id=user.id, expires_at=now() + SESSION_SECONDS))
    return token


def logout(db: Database, token: str) -> None:
    with db.write() as s:
        session = s.get(AuthSession, token_hash(token))
        if session is not None:
            s.delete(session)


def user_for_token(db: Database, token: str) -> CurrentUser | None:
    with db.read() as s:
        row = s.execute(
            select(User.id, User.name, User.role)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(AuthSession.token_hash == token_hash(token), AuthSession.expires_at > now())
        ).first()
    return CurrentUser(*row) if row else None


def list_users(db: Database) -> list[dict]:
    with db.read() as s:
        return [
            {"id": u.id, "name": u.name, "role": u.role} for u in s.scalars(select(User).order_by(User.id))
        ]


# ---------------------------------------------------------------- locks


def _claimable(t: float):
    """Open slots, and locked ones whose lock expired (an abandoned task)."""
    return or_(
        Assignment.status == "open",
        and_(Assignment.status == "locked", Assignment.expires_at < t),
    )


def _held_by(user_id: int, t: float):
    """What the user is working on: an unexpired lock, or a task returned by review."""
    return and_(
        Assignment.annotator_id == user_id,
        or_(and_(Assignment.status == "locked", Assignment.expires_at >= t), Assignment.status == "returned"),
    )


def _kept_by(user_id: int):
    """What the user can take up again: ``_held_by``, and a lock of theirs that expired
    while nobody else took the task (a claim by another would have made it theirs)."""
    return and_(Assignment.annotator_id == user_id, Assignment.status.in_(("locked", "returned")))


def claim_next(db: Database, user: CurrentUser, lock_seconds: float = DEFAULT_LOCK_SECONDS) -> int | None:
    """The id of the assignment the user should work on now, locked to them; None if none left.

    A task returned by review or one the user already holds (its lock renewed, even
    after it expired, as long as nobody else took the task) comes first. Otherwise the
    first claimable slot is taken (tasks the user skipped last, the one skipped longest
    ago first, so *Skip* moves on) with a conditional UPDATE (``WHERE`` still claimable):
    of two annotators racing for it, exactly one UPDATE matches a row; the unique
    ``(task_id, annotator_id)`` stops one user from holding both slots of a task.
    """
    for attempt in range(50):
        if attempt:
            time.sleep(min(0.002 * attempt, 0.05))  # let the concurrent claims commit
        t = now()
        try:
            with db.write() as s:
                # serialise one user's claims (PostgreSQL; SQLite writers are serial already)
                s.execute(select(User.id).where(User.id == user.id).with_for_update())
                held = s.scalar(
                    select(Assignment.id)
                    .where(_kept_by(user.id))
                    .order_by(Assignment.status.desc(), Assignment.id)  # returned before locked
                    .limit(1)
                )
                if held is not None:
                    # a renewed lock; WHERE still theirs: a concurrent claim may take an expired one
                    renewed = s.execute(
                        update(Assignment)
                        .where(Assignment.id == held, _kept_by(user.id))
                        .values(
                            expires_at=case(
                                (Assignment.status == "locked", t + lock_seconds), else_=Assignment.expires_at
                            )
                        )
                        .execution_options(synchronize_session=False)
                    ).rowcount
                    if renewed == 1:
                        return held
                    continue  # another annotator took the expired lock meanwhile: look again
                mine = aliased(Assignment)
                claimable = select(Assignment.id).where(
                    _claimable(t),
                    ~exists().where(mine.task_id == Assignment.task_id, mine.annotator_id == user.id),
                )
                skipped = and_(TaskSkip.user_id == user.id, TaskSkip.task_id == Assignment.task_id)
                # PostgreSQL: lock the first claimable row nobody else is locking (a queue
                # pop); SQLite ignores FOR UPDATE, its writers are serial anyway
                aid = s.scalar(
                    claimable.where(~exists().where(skipped))
                    .order_by(Assignment.task_id, Assignment.slot)
                    .limit(1)
                    .with_for_update(skip_locked=True, of=Assignment)
                )
                if aid is None:
                    aid = s.scalar(
                        claimable.join(TaskSkip, skipped)
                        .order_by(TaskSkip.skipped_at, Assignment.task_id, Assignment.slot)
                        .limit(1)
                        .with_for_update(skip_locked=True, of=Assignment)
                    )
                if aid is None:
                    if s.scalar(claimable.limit(1)) is None:
                        return None
                    continue  # all claimable rows are being claimed by others right now: look again
                won = s.execute(
                    update(Assignment)
                    .where(Assignment.id == aid, _claimable(t))
                    .values(status="locked", annotator_id=user.id, locked_at=t, expires_at=t + lock_seconds)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if won == 1:
                    return aid
        except IntegrityError:
            # the user already holds the other slot of this task (a concurrent claim): retry
            continue
    raise Conflict("could not claim a task: too much contention, retry")


def release(db: Database, user: CurrentUser, assignment_id: int) -> None:
    """Give a locked task back (skip): open to others at once, to this user again only
    when nothing else is left. A returned one stays with its annotator."""
    with db.write() as s:
        a = _own_assignment(s, user, assignment_id, for_update=True)
        if a.status != "locked":
            raise Conflict(f"assignment {assignment_id} is {a.status}, not locked")
        skip = s.get(TaskSkip, (user.id, a.task_id))
        if skip is None:
            s.add(TaskSkip(user_id=user.id, task_id=a.task_id, skipped_at=now()))
        else:
            skip.skipped_at = now()
        a.status, a.annotator_id, a.locked_at, a.expires_at = "open", None, None, None


def extend(
    db: Database, user: CurrentUser, assignment_id: int, lock_seconds: float = DEFAULT_LOCK_SECONDS
) -> float:
    """Renew the user's lock (the UI calls this while the page is open); the new expiry time."""
    with db.write() as s:
        a = _own_assignment(s, user, assignment_id, for_update=True)
        if a.status != "locked":
            raise Conflict(f"assignment {assignment_id} is {a.status}, not locked")
        a.expires_at = now() + lock_seconds
        return a.expires_at


def _own_assignment(s, user: CurrentUser, assignment_id: int, for_update: bool = False) -> Assignment:
    q = select(Assignment).where(Assignment.id == assignment_id)
    if for_update:
        q = q.with_for_update()
    a = s.scalar(q)
    if a is None:
        raise NotFound(f"no assignment {assignment_id}")
    if a.annotator_id != user.id:
        raise Forbidden("this task is not assigned to you")
    return a


# ---------------------------------------------------------------- views


def _segments(sub: Submission | None) -> list[dict]:
    return json.loads(sub.segments_json) if sub else []


def _latest_submission(s, assignment_id: int) -> Submission | None:
    return s.scalar(
        select(Submission)
        .where(Submission.assignment_id == assignment_id)
        .order_by(Submission.id.desc())
        .limit(1)
    )


def assignment_view(db: Database, user: CurrentUser, assignment_id: int) -> dict:
    """The task as the annotator (or a reviewer/admin) sees it."""
    with db.read() as s:
        a = s.get(Assignment, assignment_id)
        if a is None:
            raise NotFound(f"no assignment {assignment_id}")
        if user.role == "annotator" and a.annotator_id != user.id:
            raise Forbidden("this task is not assigned to you")
        task = s.get(Task, a.task_id)
        sub = _latest_submission(s, a.id)
        annotator = s.get(User, a.annotator_id) if a.annotator_id else None
        return {
            "assignment_id": a.id,
            "task_id": task.id,
            "external_id": task.external_id,
            "slot": a.slot,
            "status": a.status,
            "annotator": annotator.name if annotator else None,
            "expires_at": a.expires_at,
            "question": task.question,
            "answer": task.answer,
            "image_url": f"/api/tasks/{task.id}/image",
            "review_comment": a.review_comment,
            "submission": None
            if sub is None
            else {
                "id": sub.id,
                "corrected": sub.corrected,
                "is_correct": sub.is_correct,
                "segments": _segments(sub),
                "created_at": sub.created_at,
            },
        }


def progress(db: Database, user: CurrentUser) -> dict:
    """done: the user's submitted tasks; remaining: slots the user could still take."""
    t = now()
    with db.read() as s:
        done = s.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.annotator_id == user.id, Assignment.status.in_(("submitted", "accepted")))
        )
        returned = s.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.annotator_id == user.id, Assignment.status == "returned")
        )
        mine = aliased(Assignment)
        remaining = s.scalar(
            select(func.count(func.distinct(Assignment.task_id))).where(
                or_(_claimable(t), _held_by(user.id, t)),
                ~exists().where(
                    mine.task_id == Assignment.task_id,
                    mine.annotator_id == user.id,
                    mine.status.in_(("submitted", "accepted")),
                ),
            )
        )
    return {"done": done, "returned": returned, "remaining": remaining}


def may_see_task(db: Database, user: CurrentUser, task_id: int) -> str:
    """The task's image file name, if the user may see the task (else Forbidden/NotFound)."""
    with db.read() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        if user.role == "annotator":
            mine = s.scalar(
                select(Assignment.id).where(Assignment.task_id == task_id, Assignment.annotator_id == user.id)
            )
            if mine is None:
                raise Forbidden("this task is not assigned to you")
        return task.image_name


# ---------------------------------------------------------------- submit


def submit(
    db: Database,
    user: CurrentUser,
    assignment_id: int,
    idempotency_key: str,
    edits: list[Edit],
    is_correct: bool,
) -> tuple[dict, bool]:
    """Record a correction; ``(receipt, created)``. Durable once this returns.

    A retry with the same idempotency key and the same edits returns the first receipt
    with ``created=False`` and writes nothing; the key with other edits is a Conflict.
    """
    for _attempt in range(3):
        try:
            with db.write() as s:
                # lock the row first: a concurrent retry waits here, then sees the first one's record
                a = _own_assignment(s, user, assignment_id, for_update=True)
                task = s.get(Task, a.task_id)
                prior = _prior_submission(s, user, idempotency_key)
                if prior is not None:
                    if prior.assignment_id != assignment_id:
                        raise Conflict("idempotency key already used for another task")
                    if not _same_submit(prior, task.answer, edits, is_correct):
                        raise Conflict("idempotency key already used for different edits: send a new key")
                    return _receipt(prior), False
                if a.status not in ("locked", "returned"):
                    raise Conflict(f"assignment {assignment_id} is {a.status}: nothing to submit")
                corrected, segments = _correction(task.answer, edits, is_correct)
                sub = Submission(
                    assignment_id=a.id,
                    task_id=a.task_id,
                    annotator_id=user.id,
                    idempotency_key=idempotency_key,
                    corrected=corrected,
                    is_correct=is_correct,
                    segments_json=json.dumps([seg.to_dict() for seg in segments]),
                    started_at=a.locked_at,
                    created_at=now(),
                )
                s.add(sub)
                a.status, a.expires_at = "submitted", None
                s.flush()
                return _receipt(sub), True
        except IntegrityError:
            # a concurrent retry with the same key won the race: the loop returns its receipt
            continue
    raise Conflict("submit raced with itself; retry")


def _correction(answer: str, edits: list[Edit], is_correct: bool) -> tuple[str, list[ChangedSegment]]:
    """The corrected answer and its segments; Refused unless they make a record the
    data layer takes (``rlhfv.data.io.check_correction``), or an answer marked correct."""
    if is_correct and edits:
        raise Refused("an answer marked correct has no edits")
    if not is_correct and not edits:
        raise Refused("no edits: correct a span or mark the answer correct")
    corrected, segments = apply_edits(answer, edits)
    if not is_correct and not corrected.strip():
        raise Refused("the corrected answer is empty: an answer needs some text")
    if not is_correct and corrected == answer:
        raise Refused(
            "the corrected answer is identical to the original (the edits cancel out): "
            "undo them, or mark the answer correct"
        )
    # the data layer's rule (check_correction, reason whitespace_only), repeated here: its
    # check also wants an image, which the service does not hold
    if not is_correct and corrected.split() == answer.split():
        raise Refused(
            "the corrected answer differs from the original only in whitespace (spaces, line breaks), "
            "which the export leaves out as nothing to learn from: change words in the edits, "
            "undo them, or mark the answer correct"
        )
    return corrected, segments


def _same_submit(prior: Submission, answer: str, edits: list[Edit], is_correct: bool) -> bool:
    """Whether a retry carries the submit ``prior`` recorded. Edits determine the corrected
    answer and its segments and can be read back from them, so comparing those compares
    the edits (in any order), with nothing more to store."""
    try:
        corrected, segments = apply_edits(answer, edits)
    except EditError:
        return False
    mine = (is_correct, corrected, [seg.to_dict() for seg in segments])
    return mine == (prior.is_correct, prior.corrected, _segments(prior))


def _prior_submission(s, user: CurrentUser, key: str) -> Submission | None:
    return s.scalar(
        select(Submission).where(Submission.annotator_id == user.id, Submission.idempotency_key == key)
    )


def _receipt(sub: Submission) -> dict:
    return {
        "submission_id": sub.id,
        "assignment_id": sub.assignment_id,
        "corrected": sub.corrected,
        "segments": _segments(sub),
    }


# ---------------------------------------------------------------- review


def review_queue(db: Database, reviewer: CurrentUser, limit: int = 50) -> list[dict]:
    """The first ``limit`` submitted assignments the reviewer may review: not their own."""
    with db.read() as s:
        rows = s.execute(
            select(Assignment.id, Task.external_id, User.name)
            .join(Task, Task.id == Assignment.task_id)
            .join(User, User.id == Assignment.annotator_id)
            .where(Assignment.status == "submitted", Assignment.annotator_id != reviewer.id)
            .order_by(Assignment.id)
            .limit(limit)
        ).all()
    return [{"assignment_id": a, "external_id": e, "annotator": n} for a, e, n in rows]


def review(db: Database, reviewer: CurrentUser, assignment_id: int, accept: bool, comment: str = "") -> str:
    """Accept a submitted correction, or return it to its annotator with a comment."""
    if not accept and not comment.strip():
        raise Refused("a returned task needs a comment for the annotator")
    with db.write() as s:
        a = s.scalar(select(Assignment).where(Assignment.id == assignment_id).with_for_update())
        if a is None:
            raise NotFound(f"no assignment {assignment_id}")
        if a.status != "submitted":
            raise Conflict(f"assignment {assignment_id} is {a.status}, not awaiting review")
        if a.annotator_id == reviewer.id:
            raise Forbidden("nobody reviews their own work")
        a.status = "accepted" if accept else "returned"
        a.reviewer_id, a.review_comment, a.reviewed_at = reviewer.id, comment or None, now()
        return a.status


# ---------------------------------------------------------------- for export and stats


def task_progress(db: Database) -> dict[str, int]:
    """Tasks imported, and how many are completed (every slot submitted or accepted), in
    progress (some slot held: an unexpired lock, or returned for rework) or open (the
    rest, abandoned locks included: ``imported = completed + in_progress + open``)."""
    t = now()
    done = Assignment.status.in_(("submitted", "accepted"))
    held = or_(
        and_(Assignment.status == "locked", Assignment.expires_at >= t), Assignment.status == "returned"
    )
    per_task = (
        select(
            func.count().label("slots"),
            func.sum(case((done, 1), else_=0)).label("done"),
            func.sum(case((held, 1), else_=0)).label("held"),
        )
        .group_by(Assignment.task_id)
        .subquery()
    )
    complete = per_task.c.done == per_task.c.slots
    with db.read() as s:
        imported = s.scalar(select(func.count()).select_from(Task))
        completed, in_progress = s.execute(
            select(
                func.coalesce(func.sum(case((complete, 1), else_=0)), 0),
                func.coalesce(func.sum(case((and_(~complete, per_task.c.held > 0), 1), else_=0)), 0),
            )
        ).one()
    completed, in_progress = int(completed), int(in_progress)  # PostgreSQL sums are Decimals
    return {
        "imported": imported,
        "completed": completed,
        "in_progress": in_progress,
        "open": imported - completed - in_progress,
    }


@dataclass(frozen=True)
class CurrentCorrection:
    """The latest submission of an assignment that is submitted or accepted."""

    task_id: int
    external_id: str
    slot: int
    n_annotations: int
    image_name: str
    question: str
    answer: str
    source: dict
    annotator: str
    status: str
    corrected: str
    is_correct: bool
    segments: list[dict]
    started_at: float | None
    submitted_at: float


def current_corrections(db: Database, accepted_only: bool = False) -> list[CurrentCorrection]:
    states = ("accepted",) if accepted_only else ("submitted", "accepted")
    latest = (
        select(Submission.assignment_id, func.max(Submission.id).label("sid"))
        .group_by(Submission.assignment_id)
        .subquery()
    )
    with db.read() as s:
        rows = s.execute(
            select(Assignment, Task, Submission, User.name)
            .join(latest, latest.c.assignment_id == Assignment.id)
            .join(Submission, Submission.id == latest.c.sid)
            .join(Task, Task.id == Assignment.task_id)
            .join(User, User.id == Submission.annotator_id)
            .where(Assignment.status.in_(states))
            .order_by(Task.id, Assignment.slot)
        ).all()
    return [
        CurrentCorrection(
            task_id=task.id,
            external_id=task.external_id,
            slot=a.slot,
            n_annotations=task.n_annotations,
            image_name=task.image_name,
            question=task.question,
            answer=task.answer,
            source=json.loads(task.source_json),
            annotator=name,
            status=a.status,
            corrected=sub.corrected,
            is_correct=sub.is_correct,
            segments=json.loads(sub.segments_json),
            started_at=sub.started_at,
            submitted_at=sub.created_at,
        )
        for a, task, sub, name in rows
    ]
