"""`rlhfv annotate import | user add | export | stats`, the image store, the SQLite setup."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from rlhfv.annotate import service
from rlhfv.annotate.db import Database, Task
from rlhfv.annotate.edits import Edit
from rlhfv.annotate.store import image_file, import_generations, store_image
from rlhfv.cli import main
from rlhfv.data.io import read_jsonl, read_parquet
from tests.annotate.conftest import IMAGES, PASSWORD, cli, write_generations


def run(argv: list[str], stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["annotate", *argv])


def count_tasks(home: Path) -> int:
    db = Database(f"sqlite:///{home / 'annotate.db'}")
    with db.read() as s:
        n = s.scalar(select(func.count()).select_from(Task))
    db.dispose()
    return n


def test_import_jsonl_is_idempotent_and_copies_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "home"
    gen = write_generations(tmp_path / "gen.jsonl", n=8)
    assert run(["import", str(gen), "--home", str(home)]) == 0
    assert "imported 8 tasks (0 already present)" in capsys.readouterr().out
    assert run(["import", str(gen), "--home", str(home)]) == 0
    assert "imported 0 tasks (8 already present)" in capsys.readouterr().out
    assert count_tasks(home) == 8
    stored = sorted(p.name for p in (home / "images").iterdir())
    assert len(stored) == len(IMAGES)  # content-addressed: each distinct image once
    # named by content and by the format Pillow found (one shared ".jpg" is really WebP)
    assert all(re.fullmatch(r"[0-9a-f]{64}\.(jpg|webp)", name) for name in stored)
    assert sum(name.endswith(".webp") for name in stored) == 1


def test_import_parquet_with_image_bytes(tmp_path: Path) -> None:
    table = pa.table(
        {
            "image": [
                {"bytes": IMAGES[2].read_bytes(), "path": None},
                {"bytes": None, "path": str(IMAGES[3])},
            ],
            "question": ["What is this?", "Where?"],
            "answer": ["A bus on a road.", "In a park."],
            "model": ["m1", "m1"],
        }
    )
    pq.write_table(table, tmp_path / "gen.parquet")
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.create_all()
    assert import_generations(db, tmp_path / "gen.parquet", tmp_path / "images") == {"added": 2, "skipped": 0}
    with db.read() as s:
        tasks = s.scalars(select(Task).order_by(Task.id)).all()
    assert [t.answer for t in tasks] == ["A bus on a road.", "In a park."]
    assert json.loads(tasks[0].source_json) == {"model": "m1"}
    assert (tmp_path / "images" / tasks[0].image_name).read_bytes() == IMAGES[2].read_bytes()
    db.dispose()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"image": "missing.jpg", "question": "q", "answer": "a"},
            "row 2: field image: image file not found",
        ),
        ({"image": "notes.txt", "question": "q", "answer": "a"}, "row 2: field image: not a readable image"),
        ({"image": "pic.svg", "question": "q", "answer": "a"}, "row 2: field image: not a readable image"),
        ({"image": "IMG", "question": "q", "answer": ""}, "row 2: field answer: must be a non-empty string"),
        ({"image": "IMG", "answer": "a"}, "row 2: field question: must be a non-empty string"),
    ],
)
def test_bad_rows_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, row: dict, message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "pic.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    )
    good = {"image": str(IMAGES[0]), "question": "q", "answer": "a"}
    row = {k: (str(IMAGES[0]) if v == "IMG" else v) for k, v in row.items()}
    gen = tmp_path / "gen.jsonl"
    gen.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    assert run(["import", str(gen), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_bad_json_and_bad_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = json.dumps({"image": str(IMAGES[0]), "question": "q", "answer": "a"})
    (tmp_path / "gen.jsonl").write_text(good + "\n{oops\n")
    assert run(["import", str(tmp_path / "gen.jsonl"), "--home", str(tmp_path / "h")]) == 2
    assert "row 2: invalid JSON" in capsys.readouterr().err
    (tmp_path / "gen.csv").write_text("a,b\n")
    assert run(["import", str(tmp_path / "gen.csv"), "--home", str(tmp_path / "h")]) == 2
    assert "expected a .jsonl or .parquet file" in capsys.readouterr().err
    assert run(["stats", "--db", "nosuchdriver://x", "--home", str(tmp_path / "h")]) == 2
    assert "cannot open database" in capsys.readouterr().err
    assert run(["export", str(tmp_path / "out.jsonl"), "--home", str(tmp_path / "empty")]) == 2
    assert "no annotation database" in capsys.readouterr().err


def test_user_add_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home = str(tmp_path / "home")
    assert (
        run(["user", "add", "ann", "--role", "annotator", "--home", home], PASSWORD + "\n", monkeypatch) == 0
    )
    assert (
        run(["user", "add", "ann", "--role", "annotator", "--home", home], PASSWORD + "\n", monkeypatch) == 2
    )
    assert "exists" in capsys.readouterr().err
    assert run(["user", "add", "bob", "--role", "annotator", "--home", home], "short\n", monkeypatch) == 2
    assert "at least 8" in capsys.readouterr().err
    db = Database(f"sqlite:///{tmp_path / 'home' / 'annotate.db'}")
    assert service.login(db, "ann", PASSWORD) is not None and service.login(db, "ann", "wrong!!!!") is None
    db.dispose()


def test_cli_user_add_uses_production_argon2_cost(tmp_path: Path) -> None:
    res = cli("user", "add", "ada", "--role", "admin", stdin=PASSWORD + "\n", home=tmp_path)
    assert res.returncode == 0, res.stderr
    db = Database(f"sqlite:///{tmp_path / 'annotate.db'}")
    with db.read() as s:
        h = s.scalar(select(service.User.password_hash))
    assert h.startswith("$argon2id$") and "m=65536,t=3" in h
    db.dispose()


def test_export_and_stats_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = Database(f"sqlite:///{home / 'annotate.db'}")
    db.create_all()
    import_generations(db, write_generations(tmp_path / "gen.jsonl", n=3), home / "images", double_share=1.0)
    for name in ("ann", "bob"):
        service.add_user(db, name, "annotator", PASSWORD)
    for name in ("ann", "bob"):
        user = service.user_for_token(db, service.login(db, name, PASSWORD))
        aid = service.claim_next(db, user)
        edits = [Edit(0, 5, "Here", "object")] if name == "ann" else [Edit(0, 5, "Where", "other")]
        service.submit(db, user, aid, f"{name}-k1", edits, False)
    db.dispose()
    out = tmp_path / "out" / "c.jsonl"
    assert run(["export", str(out), "--home", str(home)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["corrected"][:6]) for r in records] == [
        ("gen-0000@ann", "Here a"),
        ("gen-0000@bob", "Where "),
    ]
    assert records[0]["segments"][0]["category"] == "object" and records[0]["source"]["double_annotated"]
    # parquet (images embedded) and JSONL read back by the data layer as the same records
    assert run(["export", str(tmp_path / "c.parquet"), "--home", str(home)]) == 0
    from_parquet = list(read_parquet(tmp_path / "c.parquet"))
    from_jsonl = list(read_jsonl(out))
    assert [(c.id, c.corrected, c.segments) for c in from_parquet] == [
        (c.id, c.corrected, c.segments) for c in from_jsonl
    ]
    assert from_parquet[0].image == IMAGES[0].read_bytes()
    capsys.readouterr()
    assert run(["stats", "--json", "--home", str(home)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["agreement"]["pairs"] == 1 and stats["agreement"]["span_f1"] == 1.0
    assert stats["agreement"]["category_agreement"] == 0.0
    assert run(["stats", "--home", str(home)]) == 0
    assert "agreement on 1 double-annotated tasks" in capsys.readouterr().out


def test_image_store_names_cannot_escape(tmp_path: Path) -> None:
    store = tmp_path / "images"
    name = store_image(store, IMAGES[0].read_bytes())
    assert image_file(store, name) == (store / name).resolve()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    for bad in ["../secret.jpg", "/etc/passwd", name.upper(), name + "/..", "a" * 64 + ".jpg", "..", ""]:
        assert image_file(store, bad) is None, bad
    # a symlink planted in the store is not followed out of it
    link = store / ("b" * 64 + ".jpg")
    link.symlink_to(tmp_path / "secret.jpg")
    assert image_file(store, link.name) is None
    with pytest.raises(ValueError, match="not a readable image"):
        store_image(store, b"<html>")


def test_sqlite_is_wal_with_full_sync_and_never_in_memory(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()
    with pytest.raises(ValueError, match="must be a file"):
        Database("sqlite://")


def test_annotate_imports_only_the_schema_and_writers_from_rlhfv() -> None:
    """The web app stays light: from the rest of rlhfv only the record schema, the data
    layer's readers/writers and the error type; and no torch at import time."""
    import ast

    allowed = {"rlhfv.data.schema", "rlhfv.data.io", "rlhfv.errors", "rlhfv.cli"}
    pkg = Path(__file__).parents[2] / "src" / "rlhfv" / "annotate"
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlhfv"):
                assert node.module.startswith("rlhfv.annotate") or node.module in allowed, (
                    path.name,
                    node.module,
                )
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("rlhfv", "torch")) for a in node.names), path.name
    code = "import sys, rlhfv.annotate.app, rlhfv.annotate.commands; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
