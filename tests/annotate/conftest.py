"""Fixtures for the annotation app: a database on each backend, tasks, users, clients.

The API tests run on SQLite and on PostgreSQL (``RLHFV_TEST_POSTGRES_URL``, set by
``scripts/services.sh``). Without that variable the PostgreSQL tests FAIL, unless
``RLHFV_ALLOW_NO_POSTGRES=1`` says a missing server is expected.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from rlhfv.annotate import security, service
from rlhfv.annotate.app import Settings, create_app
from rlhfv.annotate.db import Database
from rlhfv.annotate.store import import_generations

SHARED = Path(__file__).parents[2] / ".." / "shared"
IMAGES = sorted((SHARED / "data" / "images").glob("*.jpg"))
PASSWORD = "correct horse battery"
REPO = Path(__file__).parents[2]

ANSWERS = [
    ("What is on the table?", "There are two red apples and a knife on the wooden table."),
    ("Describe the image.", "A man is riding a horse next to three dogs under a cloudy sky."),
    ("What color is the bus?", "The bus is yellow and it is parked to the left of the station."),
    ("How many people are there?", "There are four people standing near the fountain in the park."),
    ("What is the cat doing?", "The cat is sleeping on a blue sofa beside a lamp."),
    ("Describe the scene.", "Ruins of stone columns stand in a desert under a clear blue sky."),
]
# The correction the API and browser tests make to ANSWERS[0]: "two" -> "one" (number),
# "red" -> "green" (attribute), and the segments the server must derive from it.
APPLES_CORRECTED = "There are one green apples and a knife on the wooden table."
APPLES_SEGMENTS = [
    {
        "kind": "replace",
        "original_start": 10,
        "original_end": 13,
        "corrected_start": 10,
        "corrected_end": 13,
        "category": "number",
    },
    {
        "kind": "replace",
        "original_start": 14,
        "original_end": 17,
        "corrected_start": 14,
        "corrected_end": 19,
        "category": "attribute",
    },
]


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2id, at test-sized cost: a hash carries its parameters, so logins of
    these users verify at the same cost (the production default takes ~0.25 s here)."""
    monkeypatch.setattr(security, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def write_generations(path: Path, rows: list[tuple[str, str]] | None = None, n: int | None = None) -> Path:
    """A JSONL of model generations over the shared real JPEGs, images relative to the file."""
    rows = rows or ANSWERS
    n = len(rows) if n is None else n
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q, a = rows[i % len(rows)]
            image = os.path.relpath(IMAGES[i % len(IMAGES)].resolve(), path.parent.resolve())
            f.write(
                json.dumps(
                    {"id": f"gen-{i:04d}", "image": image, "question": q, "answer": a, "model": "tiny"}
                )
            )
            f.write("\n")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A fresh database on the test PostgreSQL server, dropped at the end of the session."""
    base = os.environ.get("RLHFV_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("RLHFV_ALLOW_NO_POSTGRES") == "1":
            pytest.skip("no PostgreSQL (RLHFV_ALLOW_NO_POSTGRES=1)")
        pytest.fail(
            "RLHFV_TEST_POSTGRES_URL is not set: run the tests via scripts/test.sh, or set RLHFV_ALLOW_NO_POSTGRES=1"
        )
    name = f"rlhfv_annotate_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'annotate.db'}"
    url = request.getfixturevalue("postgres_url")
    db = Database(url)
    db.drop_all()
    db.dispose()
    return url


@dataclass
class Env:
    db: Database
    store: Path
    tmp: Path
    settings: Settings
    app: object = None
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, name: str | None = None) -> TestClient:
        c = TestClient(self.app)
        if name is not None:
            c.headers["Authorization"] = f"Bearer {self.token(name)}"
        return c

    def token(self, name: str) -> str:
        if name not in self.tokens:
            self.tokens[name] = service.login(self.db, name, PASSWORD)
        return self.tokens[name]

    def user(self, name: str) -> service.CurrentUser:
        return service.user_for_token(self.db, self.token(name))


def make_env(
    db_url: str, tmp: Path, n_tasks: int = 6, double_share: float = 0.0, lock_seconds: float = 600
) -> Env:
    db = Database(db_url)
    db.create_all()
    store = tmp / "images"
    import_generations(db, write_generations(tmp / "gen.jsonl", n=n_tasks), store, double_share)
    for name, role in [("ada", "admin"), ("rita", "reviewer"), ("ann", "annotator"), ("bob", "annotator")]:
        service.add_user(db, name, role, PASSWORD)
    settings = Settings(store=store, lock_seconds=lock_seconds)
    return Env(db=db, store=store, tmp=tmp, settings=settings, app=create_app(db, settings))


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Env:
    e = make_env(db_url, tmp_path)
    yield e
    e.db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a thread of this process, for truly concurrent requests."""

    def __init__(self, app) -> None:  # noqa: ANN001
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.server.should_exit = True
        self.thread.join(10)


def cli(
    *args: str, stdin: str | None = None, home: Path | None = None, db: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``rlhfv annotate ...`` as a user would, in a subprocess."""
    cmd = [sys.executable, "-m", "rlhfv.cli", "annotate", *args]
    if home is not None:
        cmd += ["--home", str(home)]
    if db is not None:
        cmd += ["--db", db]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO)


class ServerProcess:
    """``rlhfv annotate serve`` in a subprocess (the way it runs in production)."""

    def __init__(self, home: Path, db: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "rlhfv.cli", "annotate", "serve", "--home", str(home)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *extra]
        if db:
            cmd += ["--db", db]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, timeout: float = 30) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()}")
            try:
                if httpx.get(self.url + "/api/me", timeout=1).status_code == 401:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
