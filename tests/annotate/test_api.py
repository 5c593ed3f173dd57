"""The HTTP API, each rule of the issue, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from rlhfv.annotate import service
from rlhfv.annotate.db import Assignment, Submission, Task
from rlhfv.annotate.edits import Edit, apply_edits
from rlhfv.data.io import check_correction
from rlhfv.data.schema import Correction
from rlhfv.errors import InputError
from tests.annotate.conftest import (
    ANSWERS,
    APPLES_CORRECTED,
    APPLES_SEGMENTS,
    IMAGES,
    PASSWORD,
    REPO,
    LiveServer,
    make_env,
)

EDITS = [
    {"start": 10, "end": 13, "text": "one", "category": "number"},  # "two" -> "one"
    {"start": 14, "end": 17, "text": "green", "category": "attribute"},  # "red" -> "green"
]


def claim(client) -> dict:  # noqa: ANN001
    res = client.post("/api/next")
    assert res.status_code == 200, res.text
    return res.json()["assignment"]


def submit(client, aid: int, edits=None, key: str = "key-0001", correct: bool = False):  # noqa: ANN001, ANN201
    body = {"idempotency_key": key, "edits": EDITS if edits is None else edits, "correct": correct}
    return client.post(f"/api/assignments/{aid}/submit", json=body)


def n_submissions(env) -> int:  # noqa: ANN001
    with env.db.read() as s:
        return s.scalar(select(func.count()).select_from(Submission))


# ---------------------------------------------------------------- authentication, authorisation


def test_unauthenticated_requests_get_401(env) -> None:
    anon = env.client()
    for method, path in [
        ("GET", "/api/me"),
        ("POST", "/api/next"),
        ("GET", "/api/assignments/1"),
        ("POST", "/api/assignments/1/submit"),
        ("GET", "/api/tasks/1/image"),
        ("GET", "/api/review/queue"),
        ("GET", "/api/admin/export"),
        ("GET", "/api/admin/users"),
    ]:
        res = anon.request(method, path)
        assert res.status_code == 401, (method, path, res.status_code)
    bad = env.client()
    bad.headers["Authorization"] = "Bearer not-a-token"
    assert bad.get("/api/me").status_code == 401


def test_login_wrong_password_401_and_cookie_session(env) -> None:
    c = env.client()
    assert c.post("/api/login", json={"name": "ann", "password": "wrong password"}).status_code == 401
    assert c.post("/api/login", json={"name": "nobody", "password": PASSWORD}).status_code == 401
    res = c.post("/api/login", json={"name": "ann", "password": PASSWORD})
    assert res.status_code == 200
    cookie = res.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert c.get("/api/me").json()["name"] == "ann"  # the cookie alone authenticates
    assert c.post("/api/logout").status_code == 200
    assert c.get("/api/me").status_code == 401


def test_tokens_and_passwords_are_stored_hashed(env) -> None:
    token = env.token("ann")
    with env.db.read() as s:
        rows = s.execute(select(service.User.password_hash)).scalars().all()
        hashes = s.execute(select(service.AuthSession.token_hash)).scalars().all()
    assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in rows)
    assert token not in hashes and service.token_hash(token) in hashes


def test_annotator_and_reviewer_get_403_on_routes_above_their_role(env) -> None:
    ann, rita = env.client("ann"), env.client("rita")
    for path in ["/api/admin/export", "/api/admin/users", "/api/admin/stats", "/api/review/queue"]:
        assert ann.get(path).status_code == 403, path
    assert ann.post("/api/review/1", json={"accept": True}).status_code == 403
    assert (
        ann.post("/api/admin/users", json={"name": "eve", "role": "admin", "password": "x" * 12}).status_code
        == 403
    )
    for path in ["/api/admin/export", "/api/admin/users", "/api/admin/stats"]:
        assert rita.get(path).status_code == 403, path
    assert rita.get("/api/review/queue").status_code == 200
    assert env.client("ada").get("/api/admin/users").status_code == 200


def test_annotator_cannot_read_or_touch_another_annotators_task(env) -> None:
    ann, bob = env.client("ann"), env.client("bob")
    task = claim(ann)
    aid, tid = task["assignment_id"], task["task_id"]
    assert ann.get(f"/api/assignments/{aid}").status_code == 200
    assert ann.get(f"/api/tasks/{tid}/image").status_code == 200
    assert bob.get(f"/api/assignments/{aid}").status_code == 403
    assert bob.get(f"/api/tasks/{tid}/image").status_code == 403
    assert submit(bob, aid).status_code == 403
    assert bob.post(f"/api/assignments/{aid}/release").status_code == 403
    assert bob.post(f"/api/assignments/{aid}/extend").status_code == 403
    # an unclaimed task is nobody's: its image is not readable either
    with env.db.read() as s:
        other = s.scalar(select(Task.id).where(Task.id != tid).limit(1))
    assert bob.get(f"/api/tasks/{other}/image").status_code == 403
    # reviewers may look at any task
    assert env.client("rita").get(f"/api/assignments/{aid}").status_code == 200


# ---------------------------------------------------------------- locks


def test_next_task_is_locked_to_one_annotator_and_kept(env) -> None:
    ann, bob = env.client("ann"), env.client("bob")
    a1, b1 = claim(ann), claim(bob)
    assert a1["task_id"] != b1["task_id"]
    assert claim(ann)["assignment_id"] == a1["assignment_id"]  # the held task comes back
    renewed = ann.post(f"/api/assignments/{a1['assignment_id']}/extend").json()["expires_at"]
    assert renewed >= a1["expires_at"]  # the open page's heartbeat keeps the lock
    assert a1["answer"].startswith("There are two red apples")
    # remaining: the held task and the four open ones, not the one bob holds
    assert ann.get("/api/me").json()["progress"] == {"done": 0, "returned": 0, "remaining": 5}


@pytest.mark.parametrize("n_tasks", [4, 12])
def test_concurrent_claims_never_share_a_task(db_url, tmp_path, n_tasks: int) -> None:
    """Eight annotators claim at the same moment: no task has two holders, and nobody is
    told "no task" while one is free (4 tasks: four get one; 12 tasks: all eight do)."""
    env = make_env(db_url, tmp_path, n_tasks=n_tasks)
    names = [f"ann{i}" for i in range(8)]
    for name in names:
        service.add_user(env.db, name, "annotator", PASSWORD)
    tokens = {name: env.token(name) for name in names}
    barrier = threading.Barrier(len(names))
    with LiveServer(env.app) as server:

        def grab(name: str) -> int | None:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens[name]}"}) as c:
                barrier.wait()
                got = c.post("/api/next", timeout=30).json()["assignment"]
                return None if got is None else got["task_id"]

        with ThreadPoolExecutor(len(names)) as pool:
            results = list(pool.map(grab, names))
    held = [t for t in results if t is not None]
    assert len(held) == min(n_tasks, 8) and len(set(held)) == len(held)
    with env.db.read() as s:
        owners = s.execute(
            select(Assignment.task_id, Assignment.annotator_id).where(Assignment.status == "locked")
        ).all()
    assert sorted(t for t, _ in owners) == sorted(held)
    assert len({a for _, a in owners}) == len(owners)  # one task per annotator
    env.db.dispose()


def test_abandoned_lock_expires_and_goes_to_someone_else(db_url, tmp_path) -> None:
    env = make_env(db_url, tmp_path, n_tasks=1, lock_seconds=120)
    ann, bob = env.client("ann"), env.client("bob")
    mine = claim(ann)
    with env.db.read() as s:
        a = s.get(Assignment, mine["assignment_id"])
        assert a.expires_at - a.locked_at == pytest.approx(120)  # the time limit
    assert claim(bob) is None  # the only task is locked
    # ann walks away: move her lock's expiry into the past instead of waiting two minutes
    with env.db.write() as s:
        s.execute(
            update(Assignment)
            .where(Assignment.id == mine["assignment_id"])
            .values(expires_at=time.time() - 1)
        )
    theirs = claim(bob)
    assert theirs["assignment_id"] == mine["assignment_id"]
    assert submit(ann, mine["assignment_id"]).status_code == 403  # ann lost it
    assert submit(bob, theirs["assignment_id"]).status_code == 201
    env.db.dispose()


def test_own_expired_lock_comes_back_to_its_holder(db_url, tmp_path) -> None:
    """Back from lunch, the lock ran out but nobody took the task: it is still the
    holder's, renewed, rather than lost to them (and to everyone else, by the unique key)."""
    env = make_env(db_url, tmp_path, n_tasks=2, lock_seconds=120)
    ann, bob = env.client("ann"), env.client("bob")
    mine = claim(ann)
    with env.db.write() as s:
        s.execute(
            update(Assignment)
            .where(Assignment.id == mine["assignment_id"])
            .values(expires_at=time.time() - 1)
        )
    again = claim(ann)
    assert again["assignment_id"] == mine["assignment_id"] and again["status"] == "locked"
    assert again["expires_at"] > time.time() + 60  # renewed
    assert claim(bob)["task_id"] != mine["task_id"]  # and held again: bob gets the other task
    assert submit(ann, mine["assignment_id"]).status_code == 201
    env.db.dispose()


def test_release_gives_the_task_back(env) -> None:
    ann, bob = env.client("ann"), env.client("bob")
    # bob holds task 1, ann task 2; ann skips hers, bob submits and gets the released one
    b = claim(bob)
    a = claim(ann)
    assert ann.post(f"/api/assignments/{a['assignment_id']}/release").status_code == 200
    assert submit(bob, b["assignment_id"]).status_code == 201
    assert claim(bob)["assignment_id"] == a["assignment_id"]


def test_skipped_task_is_not_offered_again_to_who_skipped_it(db_url, tmp_path) -> None:
    env = make_env(db_url, tmp_path, n_tasks=3)
    ann, bob = env.client("ann"), env.client("bob")
    skipped = []
    for _ in range(3):
        task = claim(ann)
        skipped.append(task["task_id"])
        assert ann.post(f"/api/assignments/{task['assignment_id']}/release").status_code == 200
    assert len(set(skipped)) == 3  # each skip moves on to another task
    # the skips are ann's: bob gets the first task
    assert claim(bob)["task_id"] == skipped[0]
    # only tasks ann skipped are left: the one skipped longest ago comes back
    assert claim(ann)["task_id"] == skipped[1]
    env.db.dispose()


# ---------------------------------------------------------------- submit


def test_submit_records_the_correction_with_spans_and_categories(env) -> None:
    ann = env.client("ann")
    task = claim(ann)
    res = submit(ann, task["assignment_id"])
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["corrected"] == APPLES_CORRECTED
    assert body["segments"] == APPLES_SEGMENTS
    assert ann.get("/api/me").json()["progress"]["done"] == 1
    assert submit(ann, task["assignment_id"], key="key-0002").status_code == 409  # already submitted
    export = env.client("ada").get("/api/admin/export")
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert len(rows) == 1
    assert rows[0]["corrected"] == body["corrected"] and rows[0]["segments"] == body["segments"]
    assert rows[0]["original"] == task["answer"] and rows[0]["annotator"] == "ann"


def test_retried_submit_is_recorded_once(env) -> None:
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    first = submit(ann, aid, key="retry-key-1")
    again = submit(ann, aid, key="retry-key-1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["duplicate"] and again.json()["submission_id"] == first.json()["submission_id"]
    assert n_submissions(env) == 1
    # the same key cannot be reused for another task
    other = claim(ann)["assignment_id"]
    assert submit(ann, other, key="retry-key-1").status_code == 409


def test_reused_key_with_another_body_is_refused(env) -> None:
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    assert submit(ann, aid, key="body-key-1").status_code == 201
    # the annotator changed the edits after a lost answer, the client kept the key
    for edits, correct in [(EDITS[:1], False), ([], True)]:
        res = submit(ann, aid, key="body-key-1", edits=edits, correct=correct)
        assert res.status_code == 409 and "different" in res.json()["detail"]
    # the same edits (in any order) are the same submit
    again = submit(ann, aid, key="body-key-1", edits=EDITS[::-1])
    assert again.status_code == 200 and again.json()["duplicate"]
    assert n_submissions(env) == 1


def test_concurrent_retries_of_one_submit_make_one_record(env) -> None:
    aid = claim(env.client("ann"))["assignment_id"]
    token = env.token("ann")
    with LiveServer(env.app) as server:

        def post(_: int) -> int:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as c:
                body = {"idempotency_key": "same-key-42", "edits": EDITS}
                return c.post(f"/api/assignments/{aid}/submit", json=body, timeout=30).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(post, range(6)))
    assert codes == [200] * 5 + [201]
    assert n_submissions(env) == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("abc", "String should have at least 4 characters"),
        ("k" * 129, "String should have at most 128 characters"),
        ("key 0001", "String should match pattern '^[A-Za-z0-9_.:-]+$'"),
    ],
)
def test_idempotency_key_rules_are_documented_and_named_in_the_422(env, key, message) -> None:
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    res = submit(ann, aid, key=key)
    assert res.status_code == 422 and n_submissions(env) == 0
    [error] = res.json()["detail"]
    assert error["loc"] == ["body", "idempotency_key"] and error["msg"] == message
    # docs/annotate.md states the same rule to API clients
    doc = " ".join((REPO / "docs" / "annotate.md").read_text().split())
    assert "`idempotency_key` must have **4 to 128 characters** from `A-Z a-z 0-9 _ . : -`" in doc
    assert submit(ann, aid, key="abcd").status_code == 201  # 4 characters are enough


@pytest.mark.parametrize(
    ("edits", "correct"),
    [
        ([{"start": 10, "end": 13, "text": "one", "category": "colour"}], False),  # unknown category
        ([{"start": 50, "end": 99, "text": "x", "category": "object"}], False),  # outside the answer
        (
            [
                {"start": 10, "end": 13, "text": "one", "category": "number"},
                {"start": 12, "end": 16, "text": "y", "category": "object"},
            ],
            False,
        ),
        ([{"start": 10, "end": 13, "text": "two", "category": "number"}], False),  # no change
        ([{"start": 10, "end": 10, "text": "", "category": "number"}], False),  # empty insertion
        ([], False),  # nothing at all
        (EDITS, True),  # marked correct but edited
    ],
)
def test_invalid_corrections_are_rejected_and_not_stored(env, edits, correct) -> None:
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    assert submit(ann, aid, edits=edits, correct=correct).status_code == 422
    assert n_submissions(env) == 0


APPLES = ANSWERS[0][1]


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        # "two" -> "two red" and " red" deleted: the edits cancel out
        (
            [
                {"start": 10, "end": 13, "text": "two red", "category": "number"},
                {"start": 13, "end": 17, "text": "", "category": "attribute"},
            ],
            "the corrected answer is identical to the original",
        ),
        (
            [{"start": 0, "end": len(APPLES), "text": "", "category": "other"}],
            "the corrected answer is empty",
        ),
        (
            [{"start": 0, "end": len(APPLES), "text": " \n", "category": "other"}],
            "the corrected answer is empty",
        ),
    ],
)
def test_corrections_leaving_an_empty_or_unchanged_answer_are_rejected(env, edits, message) -> None:
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    res = submit(ann, aid, edits=edits)
    assert res.status_code == 422 and res.json()["detail"].startswith(message)
    assert n_submissions(env) == 0


def test_corrections_changing_only_whitespace_are_rejected_as_the_exporter_would(env) -> None:
    """The data layer drops a pair that differs only in whitespace (``check_correction``,
    reason ``whitespace_only``): the submit refuses it, saying what to do."""
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    space = APPLES.index(" red")
    for edits in [
        [{"start": space, "end": space + 1, "text": "  ", "category": "other"}],  # "two  red"
        [
            {"start": len(APPLES), "end": len(APPLES), "text": "\n", "category": "other"}
        ],  # a line break at the end
    ]:
        res = submit(ann, aid, edits=edits)
        assert res.status_code == 422
        assert res.json()["detail"].startswith(
            "the corrected answer differs from the original only in whitespace"
        )
        assert "mark the answer correct" in res.json()["detail"]
        corrected, _ = apply_edits(APPLES, [Edit(**e) for e in edits])
        with pytest.raises(InputError) as refused:
            check_correction(
                Correction(image=str(IMAGES[0]), question="?", original=APPLES, corrected=corrected)
            )
        assert refused.value.reason == "whitespace_only"
    assert n_submissions(env) == 0
    # whitespace changed beside a word is a correction
    edits = [{"start": space - 3, "end": space + 1, "text": "one  ", "category": "number"}]
    assert submit(ann, aid, edits=edits).status_code == 201


def test_marked_correct_answer(env) -> None:
    ann = env.client("ann")
    task = claim(ann)
    res = submit(ann, task["assignment_id"], edits=[], correct=True)
    assert (
        res.status_code == 201 and res.json()["corrected"] == task["answer"] and res.json()["segments"] == []
    )
    admin = env.client("ada")
    # no preference signal (chosen == rejected): not exported, but counted
    assert admin.get("/api/admin/export").text == ""
    stats = admin.get("/api/admin/stats").json()
    assert stats["answers"] == 1 and stats["marked_correct"] == 1


def test_spans_are_code_point_offsets(db_url, tmp_path) -> None:
    """Characters outside the BMP (one code point, two UTF-16 units) count once."""
    env = make_env(db_url, tmp_path, n_tasks=0)
    gen = tmp_path / "emoji.jsonl"
    answer = "A 🐕 and a 🐈 sit on the mat."
    gen.write_text(
        json.dumps({"id": "e1", "image": str(IMAGES[0]), "question": "Who?", "answer": answer}) + "\n"
    )
    from rlhfv.annotate.store import import_generations

    import_generations(env.db, gen, env.store)
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    start = answer.index("🐈")
    res = submit(ann, aid, edits=[{"start": start, "end": start + 1, "text": "🐇", "category": "object"}])
    assert res.status_code == 201
    assert res.json()["corrected"] == "A 🐕 and a 🐇 sit on the mat."
    # "A 🐕 and a " is 10 code points (11 UTF-16 units: the dog is a surrogate pair)
    assert res.json()["segments"][0]["original_start"] == 10
    env.db.dispose()


# ---------------------------------------------------------------- review, double annotation


def test_review_accept_and_return_with_comment(env) -> None:
    ann, rita = env.client("ann"), env.client("rita")
    first = claim(ann)
    submit(ann, first["assignment_id"], key="k-first-1")
    second = claim(ann)
    submit(
        ann,
        second["assignment_id"],
        key="k-second-1",
        edits=[{"start": 2, "end": 5, "text": "woman", "category": "object"}],
    )
    queue = rita.get("/api/review/queue").json()["items"]
    assert [q["assignment_id"] for q in queue] == [first["assignment_id"], second["assignment_id"]]
    assert rita.post(f"/api/review/{first['assignment_id']}", json={"accept": False}).status_code == 422
    assert rita.post(
        f"/api/review/{first['assignment_id']}", json={"accept": False, "comment": "knife is a fork"}
    ).json() == {"status": "returned"}
    assert rita.post(f"/api/review/{second['assignment_id']}", json={"accept": True}).json() == {
        "status": "accepted"
    }
    assert rita.post(f"/api/review/{second['assignment_id']}", json={"accept": True}).status_code == 409
    # the returned task comes back first, with the comment and the previous correction
    back = claim(ann)
    assert back["assignment_id"] == first["assignment_id"] and back["status"] == "returned"
    assert back["review_comment"] == "knife is a fork" and len(back["submission"]["segments"]) == 2
    knife = first["answer"].index("knife")
    edits = [*EDITS, {"start": knife, "end": knife + 5, "text": "fork", "category": "object"}]
    assert submit(ann, first["assignment_id"], key="k-first-2", edits=edits).status_code == 201
    admin = env.client("ada")
    accepted = admin.get("/api/admin/export", params={"accepted_only": True}).text.splitlines()
    assert [json.loads(r)["source"]["task_id"] for r in accepted] == [second["task_id"]]
    rows = [json.loads(r) for r in admin.get("/api/admin/export").text.splitlines()]
    assert rows[0]["corrected"] == "There are one green apples and a fork on the wooden table."
    # nobody reviews their own work
    service.add_user(env.db, "rex", "reviewer", PASSWORD)
    rex = env.client("rex")
    mine = claim(rex)
    assert submit(rex, mine["assignment_id"], key="k-rex-1").status_code == 201
    assert rex.post(f"/api/review/{mine['assignment_id']}", json={"accept": True}).status_code == 403


def test_review_queue_holds_others_work_not_the_reviewers_own(env) -> None:
    """A reviewer who also annotates sees the work of others, never her own (which she may
    not review): her own submits must not fill the queue and hide theirs."""
    ann, rita, ada = env.client("ann"), env.client("rita"), env.client("ada")
    own = claim(rita)["assignment_id"]
    assert submit(rita, own, key="k-rita-1").status_code == 201
    other = claim(ann)["assignment_id"]
    assert submit(ann, other, key="k-ann-1").status_code == 201
    assert [q["assignment_id"] for q in rita.get("/api/review/queue").json()["items"]] == [other]
    assert [q["assignment_id"] for q in ada.get("/api/review/queue").json()["items"]] == [own, other]
    # the queue's limit counts only what the reviewer may review
    assert [q["assignment_id"] for q in service.review_queue(env.db, env.user("rita"), limit=1)] == [other]


def test_double_annotation_two_different_annotators_and_agreement(db_url, tmp_path) -> None:
    env = make_env(db_url, tmp_path, n_tasks=2, double_share=1.0)
    ann, bob = env.client("ann"), env.client("bob")
    with env.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)) == 4
    a1 = claim(ann)
    submit(ann, a1["assignment_id"], key="ann-1")
    a2 = claim(ann)
    assert a2["task_id"] != a1["task_id"]  # never both slots of one task
    submit(ann, a2["assignment_id"], key="ann-2")
    assert claim(ann) is None  # the second slots are for someone else
    b1 = claim(bob)
    submit(
        bob,
        b1["assignment_id"],
        key="bob-1",
        edits=EDITS[:1]
        if b1["task_id"] == a1["task_id"]
        else [{"start": 2, "end": 5, "text": "woman", "category": "object"}],
    )
    b2 = claim(bob)
    submit(bob, b2["assignment_id"], edits=[], correct=True, key="bob-2")
    stats = env.client("ada").get("/api/admin/stats").json()
    ag = stats["agreement"]
    assert ag["pairs"] == 2
    # labels "needed correction": ann (yes, yes), bob (yes, no): p_o = 1/2, p_e = 1*1/2 + 0 = 1/2 -> kappa 0
    assert ag["hallucination_kappa"] == pytest.approx(0.0)
    assert stats["categories"]["number"] == 3 and stats["categories"]["attribute"] == 2
    rows = [json.loads(r) for r in env.client("ada").get("/api/admin/export").text.splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == 3  # bob's "correct" answer is left out
    env.db.dispose()


# ---------------------------------------------------------------- images, text, sizes


def test_image_route_serves_the_task_image_and_nothing_else(env) -> None:
    ann = env.client("ann")
    task = claim(ann)
    res = ann.get(task["image_url"])
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    assert res.content == IMAGES[0].read_bytes()
    # a tampered database row cannot point the route outside the store
    secret = env.tmp / "secret.txt"
    secret.write_text("top secret")
    for bad in [
        "../secret.txt",
        str(secret),
        "../../../../etc/passwd",
        "/etc/passwd",
        "images/../secret.txt",
    ]:
        with env.db.write() as s:
            s.execute(update(Task).where(Task.id == task["task_id"]).values(image_name=bad))
        res = ann.get(task["image_url"])
        assert res.status_code == 404 and b"secret" not in res.content and b"root:" not in res.content
    for path in [
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/db.py",
        "/api/tasks/..%2f..%2fetc%2fpasswd/image",
    ]:
        res = ann.get(path)
        assert res.status_code in (404, 422), path
        assert b"import" not in res.content


def test_model_text_is_returned_verbatim_and_the_page_forbids_inline_script(db_url, tmp_path) -> None:
    env = make_env(db_url, tmp_path, n_tasks=0)
    evil = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
    gen = tmp_path / "evil.jsonl"
    gen.write_text(json.dumps({"id": "x", "image": str(IMAGES[1]), "question": evil, "answer": evil}) + "\n")
    from rlhfv.annotate.store import import_generations

    import_generations(env.db, gen, env.store)
    ann = env.client("ann")
    task = claim(ann)
    assert task["answer"] == evil and task["question"] == evil
    page = ann.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    env.db.dispose()


def test_text_no_database_can_store_is_refused_with_422(env) -> None:
    """A NUL character (PostgreSQL's text cannot hold it: a 500 there) or a lone surrogate
    in any text of a request: 422 naming the field, on every backend; nothing stored."""
    ann, rita = env.client("ann"), env.client("rita")
    aid = claim(ann)["assignment_id"]
    for text in ["o\\u0000ne", "o\\ud83dne"]:  # as JSON escapes
        body = (
            '{"idempotency_key": "k-bad-1", "correct": false, "edits": '
            f'[{{"start": 10, "end": 13, "text": "{text}", "category": "number"}}]}}'
        )
        res = ann.post(
            f"/api/assignments/{aid}/submit", content=body, headers={"content-type": "application/json"}
        )
        assert res.status_code == 422, res.text
        (error,) = res.json()["detail"]  # names the field, and never echoes the bad input
        assert error["loc"] == ["body", "edits", 0, "text"] and "input" not in error
    assert "lone UTF-16 surrogate" in error["msg"]
    # a password is not sent back either; the surrogate in the name is named as such
    res = env.client().post(
        "/api/login",
        content='{"name": "a\\udc00", "password": "hunter2-secret\\u0000"}',
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 422 and "hunter2" not in res.text
    assert [e["loc"] for e in res.json()["detail"]] == [["body", "name"], ["body", "password"]]
    res = submit(ann, aid, edits=[{"start": 10, "end": 13, "text": "o\x00ne", "category": "number"}])
    assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "edits", 0, "text"]
    assert "NUL" in res.json()["detail"][0]["msg"]
    assert n_submissions(env) == 0
    assert env.client().post("/api/login", json={"name": "ann\x00", "password": PASSWORD}).status_code == 422
    assert submit(ann, aid).status_code == 201
    res = rita.post(f"/api/review/{aid}", json={"accept": False, "comment": "fix\x00 this"})
    assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "comment"]
    res = env.client("ada").post(
        "/api/admin/users", json={"name": "eve\x00", "role": "annotator", "password": PASSWORD}
    )
    assert res.status_code == 422
    assert rita.post(f"/api/review/{aid}", json={"accept": True}).json() == {"status": "accepted"}


def test_an_unexpected_value_error_is_a_500_that_does_not_echo_its_text(env, caplog) -> None:
    """Only the service's refusals (``Refused``, ``EditError``) are 422s showing their text:
    a ValueError from deep in a library (here ``json.loads`` of a corrupt stored row) is a
    bug, a generic 500 with its traceback in the server's log."""
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    assert submit(ann, aid).status_code == 201
    with env.db.write() as s:
        s.execute(update(Submission).where(Submission.assignment_id == aid).values(segments_json="{secret"))
    with pytest.raises(json.JSONDecodeError):  # what the route meets: a ValueError, not a Refused
        service.assignment_view(env.db, env.user("ann"), aid)
    quiet = TestClient(env.app, raise_server_exceptions=False)
    quiet.headers["Authorization"] = f"Bearer {env.token('ann')}"
    with caplog.at_level(logging.ERROR, logger="rlhfv.annotate.app"):
        res = quiet.get(f"/api/assignments/{aid}")
    assert res.status_code == 500 and res.json() == {"detail": "internal server error"}
    assert "secret" not in res.text and "Expecting" not in res.text
    assert res.headers["x-content-type-options"] == "nosniff"
    (record,) = [r for r in caplog.records if r.name == "rlhfv.annotate.app"]
    assert f"/api/assignments/{aid}" in record.getMessage()
    assert isinstance(record.exc_info[1], json.JSONDecodeError)
    assert ann.get(f"/api/assignments/{aid + 1}").status_code in (403, 404)  # the app still answers


def test_ids_beyond_the_integer_range_are_refused(env) -> None:
    ann, rita = env.client("ann"), env.client("rita")
    aid = claim(ann)["assignment_id"]
    # docs/annotate.md: ids outside 1 .. 2^31-1 are 422; 2^63 and up overflowed SQLite (500)
    for big in (0, 2**31, 2**63, 2**64, 10**23):
        for method, path in [
            ("GET", f"/api/assignments/{big}"),
            ("GET", f"/api/tasks/{big}/image"),
            ("POST", f"/api/assignments/{big}/release"),
            ("POST", f"/api/assignments/{big}/extend"),
        ]:
            assert ann.request(method, path).status_code == 422, (method, path)
        assert submit(ann, big).status_code == 422
        assert rita.post(f"/api/review/{big}", json={"accept": True}).status_code == 422
    assert ann.get(f"/api/assignments/{aid}").status_code == 200


def test_request_size_is_limited(env) -> None:
    ann = env.client("ann")
    aid = claim(ann)["assignment_id"]
    huge = {
        "idempotency_key": "big-key-1",
        "edits": [{"start": 0, "end": 1, "text": "x" * 300_000, "category": "object"}],
    }
    assert ann.post(f"/api/assignments/{aid}/submit", json=huge).status_code == 413

    def chunks():  # noqa: ANN202 - a streamed body without Content-Length
        for _ in range(100):
            yield b"x" * 10_000

    assert ann.post(f"/api/assignments/{aid}/submit", content=chunks()).status_code == 413
    many = {
        "idempotency_key": "many-key-1",
        "edits": [{"start": i, "end": i + 1, "text": "y", "category": "other"} for i in range(201)],
    }
    assert ann.post(f"/api/assignments/{aid}/submit", json=many).status_code == 422
    long_text = {
        "idempotency_key": "long-key-1",
        "edits": [{"start": 0, "end": 1, "text": "z" * 6000, "category": "other"}],
    }
    assert ann.post(f"/api/assignments/{aid}/submit", json=long_text).status_code == 422
    assert n_submissions(env) == 0


def test_admin_can_add_users_over_the_api(env) -> None:
    admin = env.client("ada")
    assert (
        admin.post(
            "/api/admin/users", json={"name": "cy", "role": "annotator", "password": "longenough"}
        ).status_code
        == 201
    )
    assert (
        admin.post(
            "/api/admin/users", json={"name": "cy", "role": "annotator", "password": "longenough"}
        ).status_code
        == 422
    )
    assert (
        admin.post(
            "/api/admin/users", json={"name": "dee", "role": "root", "password": "longenough"}
        ).status_code
        == 422
    )
    assert [u["name"] for u in admin.get("/api/admin/users").json()["users"]] == [
        "ada",
        "rita",
        "ann",
        "bob",
        "cy",
    ]
