"""`rlhfv annotate serve | import | user add | export | stats`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_HOME = "rlhfv-annotate"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rlhfv annotate ...``."""
    p = subparsers.add_parser(
        "annotate",
        help="the annotation web app: collect fine-grained corrections of model answers",
        description=(
            "A web app where annotators correct the hallucinated segments of model answers. "
            "Data lives in --home (SQLite database and image store) unless --db names another "
            "SQLAlchemy URL (e.g. postgresql+psycopg://...)."
        ),
    )
    sub = p.add_subparsers(dest="annotate_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--home",
            default=os.environ.get("RLHFV_ANNOTATE_HOME", DEFAULT_HOME),
            help="directory of the image store (and of the default SQLite database) [%(default)s]",
        )
        q.add_argument("--db", default=None, help="SQLAlchemy database URL [sqlite:///HOME/annotate.db]")

    q = sub.add_parser("serve", help="run the web server")
    common(q)
    q.add_argument("--host", default="127.0.0.1", help="[%(default)s]")
    q.add_argument("--port", type=int, default=8000, help="[%(default)s]")
    q.add_argument("--lock-minutes", type=float, default=30.0, help="task lock time limit [%(default)s]")
    q.add_argument(
        "--secure-cookie", action="store_true", help="mark the session cookie Secure (behind an HTTPS proxy)"
    )
    q.set_defaults(func=_serve)

    q = sub.add_parser(
        "import", help="add model generations (JSONL or parquet: image, question, answer) as tasks"
    )
    common(q)
    q.add_argument("file", type=Path)
    q.add_argument(
        "--double-share",
        type=float,
        default=0.0,
        help="share of tasks annotated twice, to measure agreement [%(default)s]",
    )
    q.set_defaults(func=_import)

    q = sub.add_parser("user", help="manage accounts")
    user_sub = q.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    q = user_sub.add_parser("add", help="create an account (password read from the terminal or stdin)")
    common(q)
    q.add_argument("name")
    q.add_argument("--role", choices=("annotator", "reviewer", "admin"), required=True)
    q.set_defaults(func=_user_add)

    q = sub.add_parser(
        "export",
        help="write the corrections as Correction records (OUT.jsonl, or OUT.parquet with images embedded)",
    )
    common(q)
    q.add_argument("out", type=Path)
    q.add_argument("--accepted-only", action="store_true", help="only corrections a reviewer accepted")
    q.add_argument("--embed-images", action="store_true", help="JSONL: images as base64, not store paths")
    q.set_defaults(func=_export)

    q = sub.add_parser("stats", help="categories, segments per answer, throughput, agreement")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_stats)


def _open(args: argparse.Namespace, create: bool = True):  # noqa: ANN202
    from rlhfv.annotate.db import Database
    from rlhfv.errors import InputError

    home = Path(args.home)
    url = args.db
    if url is None:
        if not create and not (home / "annotate.db").is_file():
            raise InputError(
                f"no annotation database in {home} (import tasks first)", field="home", reason="no_database"
            )
        home.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(home / 'annotate.db').resolve()}"
    try:
        db = Database(url)
        if create:
            db.create_all()
        else:
            from sqlalchemy import inspect

            has_tables = inspect(db.engine).has_table("tasks")
    except Exception as err:  # a bad URL or an unreachable server is the user's to fix
        raise InputError(f"cannot open database: {err}".splitlines()[0], field="db", reason="bad_db") from err
    if not create and not has_tables:
        raise InputError(
            f"no annotation database at {db.url.render_as_string()} (import tasks first)",
            field="db",
            reason="no_database",
        )
    return db, home / "images"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlhfv.annotate.app import Settings, create_app
    from rlhfv.errors import InputError

    db, store = _open(args)
    if args.lock_minutes <= 0:
        raise InputError("must be positive", field="lock-minutes", reason="bad_option")
    settings = Settings(store=store, lock_seconds=args.lock_minutes * 60, secure_cookie=args.secure_cookie)
    app = create_app(db, settings)
    print(f"rlhfv annotate: http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _import(args: argparse.Namespace) -> int:
    from rlhfv.annotate.store import import_generations

    db, store = _open(args)
    counts = import_generations(db, args.file, store, args.double_share)
    print(f"imported {counts['added']} tasks ({counts['skipped']} already present)")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    import getpass

    from rlhfv.annotate.service import add_user
    from rlhfv.errors import InputError

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise InputError("passwords differ", field="password", reason="password_mismatch")
    else:
        password = sys.stdin.readline().rstrip("\n")
    db, _ = _open(args)
    try:
        add_user(db, args.name, args.role, password)
    except ValueError as err:
        raise InputError(str(err), field="user", reason="bad_user") from err
    print(f"added {args.role} {args.name}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from rlhfv.annotate.export import corrections_for_export, write_corrections
    from rlhfv.annotate.service import current_corrections

    db, store = _open(args, create=False)
    records = corrections_for_export(current_corrections(db, args.accepted_only), store)
    write_corrections(records, args.out, embed_images=args.embed_images)
    print(f"wrote {len(records)} corrections to {args.out}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json

    from rlhfv.annotate.service import current_corrections
    from rlhfv.annotate.stats import annotation_stats, format_stats

    db, _ = _open(args, create=False)
    stats = annotation_stats(current_corrections(db))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
