"""`rlhfv annotate serve | import | user add | export | stats`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_HOME = "rlhfv-annotate"


def _port(text: str) -> int:
    """``--port``: a TCP port number, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number 0-65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: expected 0-65535")
    return port


# the open page renews its lock every third of the lock time, but no more often than every
# 5 s (static/app.js, startHeartbeat): a lock of a minute is renewed every 20 s, a shorter one
# would run out between renewals under a slow network or a throttled background tab
MIN_LOCK_MINUTES = 1
MAX_LOCK_MINUTES = 7 * 24 * 60


def _lock_minutes(text: str) -> float:
    """``--lock-minutes``: a number from a minute up to a week (nan, inf or a huge number
    would lock a task forever)."""
    try:
        minutes = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of minutes {text!r}") from None
    if not MIN_LOCK_MINUTES <= minutes <= MAX_LOCK_MINUTES:  # False for nan
        raise argparse.ArgumentTypeError(
            f"invalid lock time {text}: expected a number of minutes from {MIN_LOCK_MINUTES} "
            f"to {MAX_LOCK_MINUTES} (a week)"
        )
    return minutes


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
            help="directory of the image store (and of the default SQLite database); default: "
            f"$RLHFV_ANNOTATE_HOME if set, else ./{DEFAULT_HOME} [%(default)s]",
        )
        q.add_argument("--db", default=None, help="SQLAlchemy database URL [sqlite:///HOME/annotate.db]")

    q = sub.add_parser("serve", help="run the web server")
    common(q)
    q.add_argument("--host", default="127.0.0.1", help="[%(default)s]")
    q.add_argument("--port", type=_port, default=8000, help="[%(default)s]")
    q.add_argument(
        "--lock-minutes",
        type=_lock_minutes,
        default=30.0,
        help=f"task lock time limit, {MIN_LOCK_MINUTES} to {MAX_LOCK_MINUTES} [%(default)s]",
    )
    q.add_argument(
        "--secure-cookie", action="store_true", help="mark the session cookie Secure (behind an HTTPS proxy)"
    )
    q.set_defaults(func=_serve)

    q = sub.add_parser(
        "import", help="add model generations (JSONL or parquet: image, question, answer) as tasks"
    )
    common(q)
    q.add_argument(
        "file",
        type=Path,
        help="model generations: .jsonl or .parquet with image (a path relative to the file, or bytes), "
        "question, answer and optional id",
    )
    q.add_argument(
        "--double-share",
        type=float,
        default=0.0,
        help="share of tasks annotated twice, to measure agreement [%(default)s]",
    )
    q.set_defaults(func=_import)

    q = sub.add_parser("user", help="manage accounts")
    user_sub = q.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    q = user_sub.add_parser(
        "add",
        help="create an account (password read from the terminal or stdin)",
        description=(
            "Create an account. The password (at least 8 characters) is asked for twice on a terminal, "
            'or read as the first line of stdin: echo "$PASSWORD" | rlhfv annotate user add NAME --role ROLE'
        ),
    )
    common(q)
    q.add_argument("name", help="login name of the new account")
    q.add_argument(
        "--role",
        choices=("annotator", "reviewer", "admin"),
        required=True,
        help="annotator: corrects answers; reviewer: also accepts or rejects corrections; "
        "admin: also adds accounts, exports and reads stats over the HTTP API (/api/admin/...)",
    )
    q.set_defaults(func=_user_add)

    q = sub.add_parser(
        "export",
        help="write the corrections as Correction records (OUT.jsonl, or OUT.parquet with images embedded)",
    )
    common(q)
    q.add_argument(
        "out",
        type=Path,
        help="output file: .parquet writes parquet (images embedded), anything else JSONL",
    )
    q.add_argument("--accepted-only", action="store_true", help="only corrections a reviewer accepted")
    q.add_argument("--embed-images", action="store_true", help="JSONL: images as base64, not store paths")
    q.set_defaults(func=_export)

    q = sub.add_parser(
        "stats", help="progress (tasks done, in progress, open), categories, throughput, agreement"
    )
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_stats)


def _where(args: argparse.Namespace) -> str:
    """The ``--home``/``--db`` options to repeat in a suggested command (no URL: it may hold a password)."""
    import shlex

    where = f" --home {shlex.quote(str(args.home))}" if args.home != DEFAULT_HOME else ""
    return where + (" --db URL" if args.db else "")


def _setup_hint(args: argparse.Namespace) -> str:
    """What to run to make a database the command can use."""
    hint = f"import tasks first with `rlhfv annotate import FILE{_where(args)}`"
    if args.annotate_command == "serve":
        hint += f" and add an account with `rlhfv annotate user add NAME --role admin{_where(args)}`"
    return hint


def _open(args: argparse.Namespace, create: bool = True):  # noqa: ANN202
    from rlhfv.annotate.db import Database
    from rlhfv.errors import InputError

    home = Path(args.home)
    url = args.db
    if url is None:
        if not create and not (home / "annotate.db").is_file():
            raise InputError(
                f"no annotation database in {home}: {_setup_hint(args)}", field="home", reason="no_database"
            )
        _make_home(home)
        url = f"sqlite:///{(home / 'annotate.db').resolve()}"
    try:
        db = Database(url)
        if create:
            db.create_all()
        else:
            from sqlalchemy import inspect

            has_tables = inspect(db.engine).has_table("tasks")
            if has_tables:
                db.create_all()  # a database made by an older version gains the tables added since
    except Exception as err:  # a bad URL or an unreachable server is the user's to fix
        raise InputError(f"cannot open database: {err}".splitlines()[0], field="db", reason="bad_db") from err
    if not create and not has_tables:
        raise InputError(
            f"no annotation database at {db.url.render_as_string()}: {_setup_hint(args)}",
            field="db",
            reason="no_database",
        )
    return db, home / "images"


def _make_home(home: Path) -> None:
    """Create ``--home`` (an InputError saying why not: a file there, no permission)."""
    from rlhfv.errors import InputError

    if home.exists() and not home.is_dir():
        raise InputError("--home is a file, not a directory", path=str(home), reason="bad_home")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"cannot create the --home directory ({err.strerror or err})", path=str(home), reason="bad_home"
        ) from err


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlhfv.annotate.app import Settings, create_app
    from rlhfv.errors import InputError

    db, store = _open(args, create=False)  # a fresh database would have no account to log in with
    from sqlalchemy import func, select

    from rlhfv.annotate.db import User

    with db.read() as s:
        has_users = bool(s.scalar(select(func.count()).select_from(User)))
    if not has_users:
        raise InputError(
            f"no accounts yet: add one with `rlhfv annotate user add NAME --role admin{_where(args)}`",
            reason="no_users",
        )
    sock = _listen(args.host, args.port)
    settings = Settings(store=store, lock_seconds=args.lock_minutes * 60, secure_cookie=args.secure_cookie)
    app = create_app(db, settings)
    port = sock.getsockname()[1]  # the one the system chose for --port 0
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"rlhfv annotate: http://{url_host}:{port}/", file=sys.stderr)
    config = uvicorn.Config(app, host=args.host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int):  # noqa: ANN202
    """A socket bound to ``host:port`` (handed to uvicorn), or an InputError saying why not."""
    import errno
    import socket

    from rlhfv.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} is in use; choose another with --port", reason="port_in_use"
            ) from err
        if err.errno == errno.EACCES:
            raise InputError(
                f"port {port} needs administrator rights; choose one above 1023 with --port",
                reason="bad_port",
            ) from err
        if err.errno == errno.EADDRNOTAVAIL or isinstance(err, socket.gaierror):
            raise InputError(
                f"cannot listen on {host!r}: not an address of this machine (try 127.0.0.1)",
                field="host",
                reason="bad_host",
            ) from err
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}", reason="bad_port") from err
    sock.set_inheritable(True)
    return sock


def _import(args: argparse.Namespace) -> int:
    from rlhfv.annotate.store import import_generations

    db, store = _open(args)
    counts = import_generations(db, args.file, store, args.double_share)
    print(f"imported {counts['added']} tasks ({counts['skipped']} already present)")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    import getpass

    from rlhfv.annotate.service import MIN_PASSWORD_CHARS, add_user
    from rlhfv.errors import InputError

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise InputError("passwords differ", field="password", reason="password_mismatch")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InputError(
            f"must have at least {MIN_PASSWORD_CHARS} characters", field="password", reason="short_password"
        )
    db, _ = _open(args)
    try:
        add_user(db, args.name, args.role, password)
    except ValueError as err:
        raise InputError(str(err), field="name", reason="bad_user") from err
    print(f"added {args.role} {args.name}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from rlhfv.annotate.export import corrections_for_export, write_corrections
    from rlhfv.annotate.service import current_corrections

    db, store = _open(args, create=False)
    records, left_out = corrections_for_export(current_corrections(db, args.accepted_only), store)
    for line in left_out:
        print(f"rlhfv annotate: {line}", file=sys.stderr)
    write_corrections(records, args.out, embed_images=args.embed_images)
    print(f"wrote {len(records)} corrections to {args.out}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json

    from rlhfv.annotate.service import current_corrections, task_progress
    from rlhfv.annotate.stats import annotation_stats, format_stats

    db, _ = _open(args, create=False)
    stats = annotation_stats(current_corrections(db), task_progress(db))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
