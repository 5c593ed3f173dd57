"""`rlhfv annotate import | user add | export | stats`, the image store, the SQLite setup."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, inspect, select

from rlhfv.annotate import service
from rlhfv.annotate.app import Settings
from rlhfv.annotate.db import Database, Submission, Task
from rlhfv.annotate.edits import Edit
from rlhfv.annotate.export import corrections_for_export
from rlhfv.annotate.store import image_file, import_generations, store_image
from rlhfv.cli import main
from rlhfv.data.io import read_jsonl, read_parquet
from tests.annotate.conftest import IMAGES, PASSWORD, REPO, cli, make_env, write_generations
from tests.data.bad_images import BAD_IMAGES


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
        (
            {"image": "notes.txt", "question": "q", "answer": "a"},
            "row 2: field image: TMP/notes.txt is not a JPEG/PNG/WebP/GIF image (or a corrupt one)",
        ),
        (
            {"image": "pic.svg", "question": "q", "answer": "a"},
            "row 2: field image: TMP/pic.svg is not a JPEG/PNG/WebP/GIF image (or a corrupt one)",
        ),
        (
            {"image": "TRUNCATED", "question": "q", "answer": "a"},
            "row 2: field image: not a JPEG/PNG/WebP/GIF image (or a corrupt one: Truncated File Read)",
        ),
        ({"image": "IMG", "question": "q", "answer": ""}, "row 2: field answer: must be a non-empty string"),
        ({"image": "IMG", "answer": "a"}, "row 2: field question: must be a non-empty string"),
        # text no database can store (PostgreSQL: no NUL; nothing: a lone surrogate)
        (
            {"image": "IMG", "question": "q", "answer": "a \x00 b"},
            "row 2: field answer: contains the NUL character (\\u0000), which the database cannot store",
        ),
        (
            {"image": "IMG", "question": "cut \ud83d emoji", "answer": "a"},
            "row 2: field question: contains a lone UTF-16 surrogate (\\ud83d, half an emoji) at character 4",
        ),
        (
            {"image": "IMG", "question": "q", "answer": "a", "id": "x\x00"},
            "row 2: field id: contains the NUL",
        ),
        (
            {"image": "IMG", "question": "q", "answer": "a", "note": ["\udfff"]},
            "row 2: field note: contains a lone UTF-16 surrogate",
        ),
        # image bytes as a string (JSON has no bytes)
        (
            {"image": {"bytes": "iVBORw0KGgo=", "path": None}, "question": "q", "answer": "a"},
            "row 2: field image: image bytes must be binary, not str: in JSONL give a path or a data:image/",
        ),
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
    if row["image"] == "TRUNCATED":  # image bytes in the row: no file to name
        gen = tmp_path / "gen.parquet"
        data = IMAGES[0].read_bytes()
        pq.write_table(
            pa.table({"image": [data, data[:100]], "question": ["q", "q"], "answer": ["a", "b"]}),
            gen,
        )
    else:
        gen = tmp_path / "gen.jsonl"
        gen.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    assert run(["import", str(gen), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.replace("TMP", str(tmp_path)) in err
    assert "<_io." not in err


@pytest.mark.parametrize("given_as", ["path", "data URI", "parquet bytes"])
def test_truncated_image_is_refused_naming_file_row_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture, given_as: str
) -> None:
    # half a JPEG passes Image.verify() (it reads no pixels) but cannot be decoded: the
    # annotator would get a broken image and `rlhfv data prepare` would refuse the record
    data = IMAGES[0].read_bytes()
    half = data[: len(data) // 2]
    good = {"image": str(IMAGES[0]), "question": "q", "answer": "a"}
    if given_as == "parquet bytes":
        gen = tmp_path / "gen.parquet"
        pq.write_table(pa.table({"image": [data, half], "question": ["q", "q"], "answer": ["a", "b"]}), gen)
        what = "not"  # bytes: no file to name
    else:
        (tmp_path / "cut.jpg").write_bytes(half)
        image = (
            "cut.jpg" if given_as == "path" else "data:image/jpeg;base64," + base64.b64encode(half).decode()
        )
        gen = tmp_path / "gen.jsonl"
        gen.write_text(json.dumps(good) + "\n" + json.dumps({**good, "image": image}) + "\n")
        what = f"{tmp_path / 'cut.jpg'} is not" if given_as == "path" else "not"
    home = tmp_path / "home"
    assert run(["import", str(gen), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"rlhfv: error: {gen}: row 2: field image: {what} a JPEG/PNG/WebP/GIF image"
        " (or a corrupt one: image file is truncated (29 bytes not processed))\n"
    )
    assert count_tasks(home) == 0  # the batch with the bad row is not committed


def test_bare_base64_image_in_jsonl_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # too long for a file name: the path check itself failed (ENAMETOOLONG) before
    b64 = base64.b64encode(IMAGES[0].read_bytes()).decode()
    gen = tmp_path / "gen.jsonl"
    gen.write_text(json.dumps({"image": b64, "question": "q", "answer": "a"}) + "\n")
    assert run(["import", str(gen), "--home", str(tmp_path / "home")]) == 2
    assert capsys.readouterr().err == (
        f"rlhfv: error: {gen}: row 1: field image: "
        "image is neither a file path nor a data:image/...;base64,... URI\n"
    )


def test_image_as_data_uri_is_imported(tmp_path: Path) -> None:
    data = IMAGES[0].read_bytes()
    gen = tmp_path / "gen.jsonl"
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    gen.write_text(json.dumps({"image": uri, "question": "q", "answer": "a"}) + "\n")
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.create_all()
    assert import_generations(db, gen, tmp_path / "images") == {"added": 1, "skipped": 0}
    with db.read() as s:
        name = s.scalar(select(Task.image_name))
    assert (tmp_path / "images" / name).read_bytes() == data
    db.dispose()


def test_bad_double_share_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gen = write_generations(tmp_path / "gen.jsonl", n=1)
    assert run(["import", str(gen), "--double-share", "2", "--home", str(tmp_path / "h")]) == 2
    assert capsys.readouterr().err == "rlhfv: error: field --double-share: must be in [0, 1]\n"


def test_bad_json_and_bad_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = json.dumps({"image": str(IMAGES[0]), "question": "q", "answer": "a"})
    (tmp_path / "gen.jsonl").write_text(good + "\n{oops\n")
    assert run(["import", str(tmp_path / "gen.jsonl"), "--home", str(tmp_path / "h")]) == 2
    assert "row 2: malformed JSON" in capsys.readouterr().err
    (tmp_path / "gen.csv").write_text("a,b\n")
    assert run(["import", str(tmp_path / "gen.csv"), "--home", str(tmp_path / "h")]) == 2
    assert "expected a .jsonl or .parquet file" in capsys.readouterr().err
    assert run(["stats", "--db", "nosuchdriver://x", "--home", str(tmp_path / "h")]) == 2
    assert "cannot open database" in capsys.readouterr().err
    assert run(["export", str(tmp_path / "out.jsonl"), "--home", str(tmp_path / "empty")]) == 2
    assert "no annotation database" in capsys.readouterr().err


def test_unreadable_inputs_and_unwritable_outputs_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = str(tmp_path / "h")
    good = json.dumps({"image": str(IMAGES[0]), "question": "q", "answer": "a"}).encode()
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(good + b"\n" + '{"question": "caf\u00e9"}\n'.encode("latin-1"))
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    for gen, message in [(latin1, "row 2: not UTF-8 text"), (fake, "not a readable parquet file")]:
        assert run(["import", str(gen), "--home", home]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rlhfv: error: {gen}: {message}") and len(err.splitlines()) == 1
    (tmp_path / "a-file").write_text("")
    for out, message in [
        (tmp_path / "outdir", "is a directory"),
        (tmp_path / "a-file" / "c.jsonl", "cannot write"),
    ]:
        if out.name == "outdir":
            out.mkdir()
        assert run(["export", str(out), "--home", home]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rlhfv: error: {out}: {message}") and len(err.splitlines()) == 1
    assert not [p.name for p in tmp_path.rglob("*tmp*")]  # no temporary file left behind


@pytest.mark.parametrize(
    "minutes", ["nan", "inf", "-inf", "0", "-5", "0.001", "0.99", "1e307", "10081", "soon"]
)
def test_serve_refuses_a_lock_time_outside_a_minute_to_a_week(
    tmp_path: Path, capsys: pytest.CaptureFixture, minutes: str
) -> None:
    """Under a minute the page (renewing every third of the lock, at most every 5 s)
    could lose its lock between renewals."""
    with pytest.raises(SystemExit) as exit_:
        run(["serve", f"--lock-minutes={minutes}", "--home", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --lock-minutes: invalid" in err and "Traceback" not in err
    if minutes != "soon":
        assert "from 1 to 10080" in err
    if minutes in ("nan", "inf", "-inf", "0", "-5"):
        with pytest.raises(ValueError, match="lock_seconds"):
            Settings(store=tmp_path, lock_seconds=float(minutes) * 60)


@pytest.mark.parametrize("minutes", ["1", "10080"])
def test_serve_takes_a_lock_time_of_a_minute_to_a_week(
    tmp_path: Path, capsys: pytest.CaptureFixture, minutes: str
) -> None:
    # past argparse, serve stops at the missing database
    assert run(["serve", f"--lock-minutes={minutes}", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "--lock-minutes" not in err and "import tasks first" in err


def test_a_home_that_cannot_be_one_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = write_generations(tmp_path / "gen.jsonl", n=1)
    (tmp_path / "a-file").write_text("")
    for home, message in [
        (tmp_path / "a-file", "--home is a file, not a directory"),
        (tmp_path / "a-file" / "home", "cannot create the --home directory (Not a directory)"),
    ]:
        assert run(["import", str(gen), "--home", str(home)]) == 2
        assert capsys.readouterr().err == f"rlhfv: error: {home}: {message}\n"
        stdin = PASSWORD + "\n"
        assert (
            run(["user", "add", "ann", "--role", "annotator", "--home", str(home)], stdin, monkeypatch) == 2
        )
        assert capsys.readouterr().err == f"rlhfv: error: {home}: {message}\n"
    home = tmp_path / "home"
    (home / "images").parent.mkdir()
    (home / "images").write_text("")  # the image store's place is taken
    assert run(["import", str(gen), "--home", str(home)]) == 2
    assert capsys.readouterr().err == (
        f"rlhfv: error: {home / 'images'}: cannot create the image store (a file is in the way)\n"
    )


def test_an_older_database_gets_the_tables_added_since(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(["import", str(write_generations(tmp_path / "gen.jsonl", n=1)), "--home", str(home)]) == 0
    db = Database(f"sqlite:///{home / 'annotate.db'}")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE task_skips")  # as made before skips were recorded
    db.dispose()
    assert run(["stats", "--home", str(home)]) == 0
    db = Database(f"sqlite:///{home / 'annotate.db'}")
    assert inspect(db.engine).has_table("task_skips")
    db.dispose()


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
    assert "field name: user 'ann' exists" in capsys.readouterr().err
    assert run(["user", "add", "bob", "--role", "annotator", "--home", home], "short\n", monkeypatch) == 2
    assert capsys.readouterr().err == "rlhfv: error: field password: must have at least 8 characters\n"
    with pytest.raises(SystemExit):
        run(["user", "add", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert f"at least {service.MIN_PASSWORD_CHARS} characters" in usage
    assert "over the HTTP API (/api/admin/...)" in usage  # the web app has no admin screens
    db = Database(f"sqlite:///{tmp_path / 'home' / 'annotate.db'}")
    assert service.login(db, "ann", PASSWORD) is not None and service.login(db, "ann", "wrong!!!!") is None
    db.dispose()


@pytest.fixture
def busy_port() -> int:
    """A port something else listens on (so a server that wrongly starts fails at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_refuses_a_home_without_database_or_accounts(
    tmp_path: Path, capsys: pytest.CaptureFixture, busy_port: int
) -> None:
    home = tmp_path / "nohome"
    assert run(["serve", "--home", str(home), "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no annotation database in" in err
    assert "rlhfv annotate import FILE" in err and "rlhfv annotate user add NAME --role admin" in err
    assert not home.exists()  # nothing created behind the user's back
    # tasks but nobody to log in: refused too, saying how to add an account
    assert run(["import", str(write_generations(tmp_path / "gen.jsonl", n=1)), "--home", str(home)]) == 0
    capsys.readouterr()
    assert run(["serve", "--home", str(home), "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no accounts yet" in err and "rlhfv annotate user add" in err


def test_serve_checks_the_port_before_announcing_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, busy_port: int
) -> None:
    home = str(tmp_path / "home")
    assert run(["user", "add", "ada", "--role", "admin", "--home", home], PASSWORD + "\n", monkeypatch) == 0
    capsys.readouterr()
    assert run(["serve", "--home", home, "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err
    assert err == f"rlhfv: error: port {busy_port} is in use; choose another with --port\n"  # no URL first
    for bad in ("99999", "-1", "http"):
        with pytest.raises(SystemExit) as exit_:
            run(["serve", "--home", home, "--port", bad])
        assert exit_.value.code == 2
        assert "argument --port: invalid port" in capsys.readouterr().err
    # --port 0: the URL printed is the port the server really listens on
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfv.cli", "annotate", "serve", "--home", home, "--port", "0"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = re.fullmatch(r"rlhfv annotate: (http://127\.0\.0\.1:\d+/)\n", proc.stderr.readline()).group(1)
        assert url != "http://127.0.0.1:0/"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(url + "api/me", timeout=1).status_code == 401
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


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
    assert stats["tasks"] == {"imported": 3, "completed": 1, "in_progress": 0, "open": 2}
    assert run(["stats", "--home", str(home)]) == 0
    text = capsys.readouterr().out
    assert "agreement on 1 double-annotated tasks" in text
    assert text.startswith("tasks: 3 imported, 1 completed, 0 in progress, 2 open\n")


def test_export_keeps_imported_fields_named_like_the_apps_own(tmp_path: Path) -> None:
    gen = tmp_path / "gen.jsonl"
    row = {"image": str(IMAGES[0]), "question": "q", "answer": "a cat", "task_id": "b7-42", "slot": "am"}
    gen.write_text(json.dumps(row) + "\n")
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.create_all()
    import_generations(db, gen, tmp_path / "images")
    service.add_user(db, "ann", "annotator", PASSWORD)
    ann = service.user_for_token(db, service.login(db, "ann", PASSWORD))
    service.submit(db, ann, service.claim_next(db, ann), "k-1", [Edit(2, 5, "dog", "object")], False)
    (record,) = corrections_for_export(service.current_corrections(db), tmp_path / "images")[0]
    assert record.source["imported_fields"] == {"task_id": "b7-42", "slot": "am"}
    assert record.source["task_id"] == 1 and record.source["slot"] == 0
    db.dispose()


def test_export_leaves_out_and_reports_records_the_data_layer_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = make_env(f"sqlite:///{home / 'annotate.db'}", home, n_tasks=3)
    ann = env.user("ann")
    for k in range(3):
        service.submit(
            env.db, ann, service.claim_next(env.db, ann), f"key-{k}", [Edit(0, 5, "Here", "object")], False
        )
    # rows that submit no longer accepts (saved before it checked, or edited by hand)
    with env.db.write() as s:
        blank, same, _ = s.scalars(select(Submission).order_by(Submission.id)).all()
        blank.corrected = " "
        same.corrected = s.get(Task, same.task_id).answer
    res = env.client("ada").get("/api/admin/export")
    assert [json.loads(line)["id"] for line in res.text.splitlines()] == ["gen-0002"]
    assert res.headers["x-rlhfv-left-out"] == "2"
    env.db.dispose()
    for out in (tmp_path / "c.jsonl", tmp_path / "c.parquet"):
        assert run(["export", str(out), "--home", str(home)]) == 0
        captured = capsys.readouterr()
        assert f"wrote 1 corrections to {out}" in captured.out
        blank_line, same_line = captured.err.splitlines()
        assert (
            blank_line.startswith("rlhfv annotate: left out gen-0000: field corrected:")
            and "empty" in blank_line
        )
        assert (
            same_line.startswith("rlhfv annotate: left out gen-0001: field corrected:")
            and "identical" in same_line
        )
        read = read_parquet if out.suffix == ".parquet" else read_jsonl
        assert [c.id for c in read(out)] == ["gen-0002"]


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
    with pytest.raises(ValueError, match=r"^not a JPEG/PNG/WebP/GIF image \(or a corrupt one\)$"):
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
    layer's readers/writers and image decoding, and the error type; and no torch at import time."""
    import ast

    allowed = {"rlhfv.data.schema", "rlhfv.data.io", "rlhfv.data.images", "rlhfv.errors", "rlhfv.cli"}
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


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_images_pillow_refuses_oddly_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    (tmp_path / "bad.png").write_bytes(BAD_IMAGES[kind](monkeypatch))
    good = {"image": str(IMAGES[0]), "question": "q", "answer": "a"}
    gen = tmp_path / "gen.jsonl"
    gen.write_text(json.dumps(good) + "\n" + json.dumps({**good, "image": "bad.png"}) + "\n")
    assert run(["import", str(gen), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"row 2: field image: {tmp_path / 'bad.png'} is not a JPEG/PNG/WebP/GIF image" in err
