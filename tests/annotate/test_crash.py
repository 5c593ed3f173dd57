"""SIGKILL the server in the middle of a burst of submits: nothing acknowledged is lost,
and retrying the unanswered submits after a restart makes no duplicates."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import select

from rlhfv.annotate import service
from rlhfv.annotate.db import Database, Submission
from rlhfv.annotate.store import import_generations
from tests.annotate.conftest import PASSWORD, ServerProcess, write_generations

N_CLIENTS = 8


def client_loop(url: str, name: str, acked: dict, in_flight: dict, stop: threading.Event) -> None:
    """Claim and submit until the server dies; record what was acknowledged."""
    with httpx.Client(base_url=url, timeout=30) as c:
        token = c.post("/api/login", json={"name": name, "password": PASSWORD}).json()["token"]
        c.headers["Authorization"] = f"Bearer {token}"
        i = 0
        while not stop.is_set():
            try:
                task = c.post("/api/next").json()["assignment"]
                if task is None:
                    return
                key = f"{name}-{i}"
                body = {
                    "idempotency_key": key,
                    "edits": [{"start": 0, "end": 1, "text": "X", "category": "other"}],
                }
                in_flight[name] = (task["assignment_id"], body)
                res = c.post(f"/api/assignments/{task['assignment_id']}/submit", json=body)
                if res.status_code in (200, 201):
                    acked[key] = res.json()["submission_id"]
                    in_flight.pop(name, None)
                i += 1
            except (httpx.TransportError, ValueError):
                return  # the server is gone


def test_sigkill_mid_burst_loses_no_acknowledged_submit(db_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = Database(db_url)
    db.create_all()
    import_generations(db, write_generations(tmp_path / "gen.jsonl", n=400), home / "images")
    names = [f"ann{i}" for i in range(N_CLIENTS)]
    for name in names:
        service.add_user(db, name, "annotator", PASSWORD)
    db.dispose()  # the server process opens the same database

    server = ServerProcess(home, db=db_url).wait_ready()
    acked: dict[str, int] = {}
    in_flight: dict[str, tuple] = {}
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(server.url, n, acked, in_flight, stop)) for n in names
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.proc.kill()  # SIGKILL: no shutdown handler, no flush
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 60, "the burst did not get going"

    with db.read() as s:
        rows = s.execute(select(Submission.id, Submission.idempotency_key)).all()
    stored = {key: sid for sid, key in rows}
    lost = {k for k in acked if stored.get(k) != acked[k]}
    assert not lost, f"{len(lost)} acknowledged submits lost"

    # restart and retry the submits that got no answer: each lands exactly once
    server = ServerProcess(home, db=db_url).wait_ready()
    try:
        retried = 0
        for name, (aid, body) in list(in_flight.items()):
            with httpx.Client(base_url=server.url, timeout=30) as c:
                token = c.post("/api/login", json={"name": name, "password": PASSWORD}).json()["token"]
                res = c.post(
                    f"/api/assignments/{aid}/submit", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                assert res.status_code in (200, 201), res.text
                retried += 1
    finally:
        server.stop()
    with db.read() as s:
        keys = Counter(s.scalars(select(Submission.idempotency_key)))
        per_assignment = Counter(s.scalars(select(Submission.assignment_id)))
    assert max(keys.values()) == 1 and max(per_assignment.values()) == 1
    retried_keys = {body["idempotency_key"] for _, body in in_flight.values()}
    assert set(acked) <= set(keys) and retried_keys <= set(keys) and retried == len(in_flight)
    if db.is_sqlite:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    db.dispose()
