"""Database of the annotation app: tables, engine setup, transactions.

Any SQLAlchemy URL works; SQLite (the default) is opened in WAL mode with
``synchronous=FULL`` so a commit is on disk (fsync of the WAL) before the server
acknowledges it, and write transactions start with ``BEGIN IMMEDIATE`` so concurrent
writers queue on the busy timeout instead of failing on a stale snapshot.

Times are stored as float seconds since the epoch: the same on every backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROLES: tuple[str, ...] = ("annotator", "reviewer", "admin")
# assignment life cycle: open -> locked -> submitted -> accepted | returned -> submitted ...
# a locked assignment whose lock expired counts as open again
ASSIGNMENT_STATES: tuple[str, ...] = ("open", "locked", "submitted", "accepted", "returned")
# ids are Integer columns: 32-bit on PostgreSQL; a larger one in a URL can name no row
MAX_ID = 2**31 - 1


def now() -> float:
    return time.time()


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None: PostgreSQL's text type cannot hold the NUL
    character, and a lone UTF-16 surrogate (half an emoji) is no UTF-8 on any backend."""
    if "\x00" in text:
        return "contains the NUL character (\\u0000), which the database cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        return f"contains a lone UTF-16 surrogate (\\u{code:04x}, half an emoji) at character {err.start}"
    return None


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class AuthSession(Base):
    """A login: the sha256 of a random 256-bit token (the token itself is never stored)."""

    __tablename__ = "auth_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float)


class Task(Base):
    """One model generation to annotate: image, question, the model's answer."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    image_name: Mapped[str] = mapped_column(String(200))  # file name inside the image store
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    source_json: Mapped[str] = mapped_column(Text, default="{}")
    n_annotations: Mapped[int] = mapped_column(Integer, default=1)  # 2: double-annotated
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Assignment(Base):
    """One annotation slot of a task; a task has ``n_annotations`` of them.

    The unique ``(task_id, slot)`` row is the lock: claiming is a conditional UPDATE of
    this row, so two annotators can never hold the same slot, and ``(task_id,
    annotator_id)`` unique means nobody annotates both slots of a double-annotated task.
    """

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "slot"),
        UniqueConstraint("task_id", "annotator_id"),
        Index("ix_assignments_state", "status", "task_id", "slot"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    slot: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="open")
    annotator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    locked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    review_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class TaskSkip(Base):
    """A task an annotator skipped: offered to them again only when nothing else is left."""

    __tablename__ = "task_skips"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    skipped_at: Mapped[float] = mapped_column(Float, default=now)


class Submission(Base):
    """One acknowledged submit (immutable). The latest per assignment is the current one."""

    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("annotator_id", "idempotency_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    corrected: Mapped[str] = mapped_column(Text)
    is_correct: Mapped[bool] = mapped_column(Boolean, default=False)
    segments_json: Mapped[str] = mapped_column(Text)  # list of ChangedSegment dicts
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # lock time
    created_at: Mapped[float] = mapped_column(Float, default=now)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        # take transaction control from pysqlite so "begin" below decides the BEGIN kind
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged submit survives
        # a killed process and a power cut (NORMAL would only survive a killed process)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        mode = "DEFERRED" if conn.get_execution_options().get("rlhfv_read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An engine plus short explicit transactions: ``with db.write() as s: ...``."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database in (None, "", ":memory:"):
                raise ValueError("the annotation database must be a file (SQLite in memory is not durable)")
            self.engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=20,
                max_overflow=40,
            )
            _sqlite_setup(self.engine)
        else:
            self.engine = create_engine(self.url, pool_size=20, max_overflow=40, pool_pre_ping=True)
        self._read_engine = self.engine.execution_options(rlhfv_read_only=True)
        self._write_lock = threading.Lock() if self.is_sqlite else nullcontext()

    def create_all(self) -> None:
        """Create the tables that do not exist yet: also brings a database made by an
        older version up to date, as long as versions only add tables."""
        Base.metadata.create_all(self.engine)

    def drop_all(self) -> None:
        Base.metadata.drop_all(self.engine)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction, committed on success (durable when this returns)."""
        # SQLite has one writer at a time; queueing this process's writers on a lock hands
        # over at once, where SQLite's busy handler would poll with sleeps of up to 100 ms
        with self._write_lock, Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._read_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
