"""Load test of the annotation app: concurrent annotators submitting corrections.

Starts ``rlhfv annotate serve`` (one uvicorn process) on 127.0.0.1 and a free port,
imports synthetic tasks, then runs N annotator clients (asyncio + httpx, one process)
that each log in and loop "next task -> submit a correction" until exactly M
corrections are acknowledged. A share of submits is sent twice with the same
idempotency key (a client retry). Afterwards the database is read directly and checked:
every acknowledged submit stored once with the content that was sent, no extra records.

    python benchmarks/annotate_load.py --clients 50 --submissions 2000

Loopback only, bounded by --submissions and --time-limit. Exit status 1 on any loss,
duplicate or mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from PIL import Image
from sqlalchemy import select

from rlhfv.annotate import security, service
from rlhfv.annotate.db import Database, Submission
from rlhfv.annotate.store import import_generations
from rlhfv.data.schema import CHANGE_CATEGORIES

PASSWORD = "load test password"
WORDS = "a red cat two dogs sit on the blue mat near three green chairs under a small lamp".split()
REPLACEMENTS = ["black", "one", "four", "bird", "table", "left", "standing", "white", "tree"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below it."""
    ordered = sorted(values)
    if not ordered:  # nothing was measured (e.g. no submit got through): undefined, not an error
        return math.nan
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100)
    return ordered[int(rank) - 1]


def make_tasks(home: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    images = []
    for i in range(8):
        path = home / "src" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), tuple(rng.randrange(256) for _ in range(3))).save(path)
        images.append(path)
    gen = home / "src" / "generations.jsonl"
    with open(gen, "w") as f:
        for i in range(n):
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))).capitalize() + "."
            row = {
                "id": f"load-{i:05d}",
                "image": images[i % len(images)].name,
                "question": "Describe it.",
                "answer": answer,
            }
            f.write(json.dumps(row) + "\n")
    return gen


def random_edits(answer: str, rng: random.Random) -> tuple[list[dict], str]:
    """1-3 word replacements and the corrected answer they make (computed here, independently)."""
    spans, pos = [], 0
    for word in answer.split(" "):
        spans.append((pos, pos + len(word)))
        pos += len(word) + 1
    picked = sorted(rng.sample(spans[:-1], k=min(len(spans) - 1, rng.randint(1, 3))))
    edits = []
    for s, e in picked:
        text = rng.choice([r for r in REPLACEMENTS if r != answer[s:e]])
        edits.append({"start": s, "end": e, "text": text, "category": rng.choice(CHANGE_CATEGORIES)})
    corrected = answer
    for ed in reversed(edits):
        corrected = corrected[: ed["start"]] + ed["text"] + corrected[ed["end"] :]
    return edits, corrected


class Run:
    def __init__(self, target: int, retry_share: float) -> None:
        self.target, self.retry_share = target, retry_share
        self.reserved = 0
        self.acked: dict[str, tuple[int, str]] = {}  # key -> (submission id, expected corrected)
        self.submit_ms: list[float] = []
        self.next_ms: list[float] = []
        self.retries = 0
        self.errors: list[str] = []


async def annotator(url: str, name: str, run: Run, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        res = await c.post("/api/login", json={"name": name, "password": PASSWORD})
        c.headers["Authorization"] = f"Bearer {res.json()['token']}"
        while run.reserved < run.target:
            run.reserved += 1  # single event loop: no lock needed
            t0 = time.perf_counter()
            res = await c.post("/api/next")
            run.next_ms.append(1000 * (time.perf_counter() - t0))
            task = res.json()["assignment"]
            if task is None:
                run.errors.append(f"{name}: no task left")
                return
            edits, corrected = random_edits(task["answer"], rng)
            key = f"{name}-{rng.getrandbits(64):016x}"
            body = {"idempotency_key": key, "edits": edits}
            path = f"/api/assignments/{task['assignment_id']}/submit"
            t0 = time.perf_counter()
            res = await c.post(path, json=body)
            run.submit_ms.append(1000 * (time.perf_counter() - t0))
            if res.status_code != 201:
                run.errors.append(f"{name}: submit {res.status_code} {res.text[:200]}")
                continue
            sid = res.json()["submission_id"]
            run.acked[key] = (sid, corrected)
            if rng.random() < run.retry_share:  # the client did not see the answer: retry
                run.retries += 1
                again = await c.post(path, json=body)
                if again.status_code != 200 or again.json()["submission_id"] != sid:
                    run.errors.append(f"{name}: retry gave {again.status_code}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--submissions", type=int, default=2000)
    p.add_argument(
        "--db",
        default=None,
        help="SQLAlchemy URL of a throwaway database: its annotation tables are DROPPED first "
        "(needs --drop-tables) [a fresh SQLite file]",
    )
    p.add_argument("--drop-tables", action="store_true", help="allow dropping the tables of --db")
    p.add_argument("--retry-share", type=float, default=0.05, help="share of submits sent twice")
    p.add_argument("--time-limit", type=float, default=600, help="seconds for the load phase")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.db and not args.drop_tables:
        p.error(
            "--db: the benchmark drops that database's annotation tables; add --drop-tables if it is a throwaway one"
        )
    for name in ("clients", "submissions"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")

    # setup only: accounts hashed at a low argon2 cost so 50 logins do not dominate (not measured)
    security._hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    with tempfile.TemporaryDirectory(prefix="rlhfv-load-") as tmp:
        home = Path(tmp)
        url = args.db or f"sqlite:///{home / 'annotate.db'}"
        db = Database(url)
        db.drop_all()
        db.create_all()
        t0 = time.perf_counter()
        counts = import_generations(
            db, make_tasks(home, args.submissions + args.clients, args.seed), home / "images"
        )
        import_s = time.perf_counter() - t0
        names = [f"annotator{i:02d}" for i in range(args.clients)]
        for name in names:
            service.add_user(db, name, "annotator", PASSWORD)

        port = free_port()
        server_url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "rlhfv.cli", "annotate", "serve", "--home", str(home), "--db", url]
        proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(server_url + "/api/me", timeout=1).status_code == 401:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("server did not start") from None
                    time.sleep(0.1)
            run = Run(args.submissions, args.retry_share)

            async def all_clients() -> None:
                await asyncio.gather(
                    *(annotator(server_url, n, run, args.seed * 1000 + i) for i, n in enumerate(names))
                )

            t0 = time.perf_counter()
            try:
                asyncio.run(asyncio.wait_for(all_clients(), args.time_limit))
            except asyncio.TimeoutError:  # (the builtin TimeoutError from 3.11 on)
                print(
                    f"FAILED: the load phase ran past --time-limit {args.time_limit:g} s "
                    f"({len(run.acked)} of {args.submissions} submissions acknowledged)",
                    file=sys.stderr,
                )
                return 1
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)

        with db.read() as s:
            rows = s.execute(
                select(
                    Submission.id, Submission.idempotency_key, Submission.corrected, Submission.assignment_id
                )
            ).all()
        db.dispose()
    by_key = Counter(key for _, key, _, _ in rows)
    stored = {key: (sid, corrected) for sid, key, corrected, _ in rows}
    lost = [k for k, v in run.acked.items() if stored.get(k) != v]
    duplicated = sum(n - 1 for n in by_key.values()) + sum(
        n - 1 for n in Counter(aid for _, _, _, aid in rows).values()
    )
    unexpected = len(set(stored) - set(run.acked))
    result = {
        "clients": args.clients,
        "submissions_acknowledged": len(run.acked),
        "records_stored": len(rows),
        "lost": len(lost),
        "duplicated": duplicated,
        "unacknowledged_extra": unexpected,
        "retried_submits": run.retries,
        "errors": run.errors[:10],
        "load_seconds": round(wall, 2),
        "submits_per_second": round(len(run.acked) / wall, 1),
        "submit_ms": {
            q: round(percentile(run.submit_ms, v), 1)
            for q, v in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
        "next_ms": {q: round(percentile(run.next_ms, v), 1) for q, v in (("p50", 50), ("p99", 99))},
        "import": {"tasks": counts["added"], "seconds": round(import_s, 2)},
        "backend": "sqlite" if url.startswith("sqlite") else url.split(":", 1)[0],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = (
        len(run.acked) == args.submissions
        and not lost
        and not duplicated
        and not unexpected
        and not run.errors
    )
    print("OK: none lost, none duplicated" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
