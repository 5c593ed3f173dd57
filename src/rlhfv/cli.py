"""The ``rlhfv`` command: a thin shell over the subpackages.

Each subpackage's ``commands`` module owns its subcommands: ``register(subparsers)``
adds them, and each sets ``func`` to a handler ``(args) -> int``. Handlers import heavy
libraries (torch, transformers) themselves, so ``rlhfv --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

from rlhfv import __version__
from rlhfv.errors import InputError

COMMAND_MODULES = (
    "rlhfv.scenes.commands",  # demo
    "rlhfv.data.commands",  # data prepare | show
    "rlhfv.ddpo.commands",  # train, sft
    "rlhfv.eval.commands",  # eval chair | objhal | pope | amber | mmhal
    "rlhfv.annotate.commands",  # annotate serve | import | user | export | stats
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhfv",
        description=(
            "Make a vision-language model trustworthy the RLHF-V way: collect fine-grained "
            "corrections, turn them into dense preference data, train with Dense DPO, and "
            "measure hallucination. Start with `rlhfv demo`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rlhfv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


@contextlib.contextmanager
def _sigterm_raises():
    """While the command runs, SIGTERM (``kill``, a job scheduler's stop) raises
    ``SystemExit(143)`` instead of ending the process at once, so ``finally`` blocks and
    context managers still run (a half-written output or cache folder is removed). The
    previous handler comes back after; outside the main thread nothing changes."""

    def terminate(signum, frame):  # noqa: ANN001, ARG001
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if args.command is None else 0
    try:
        with _sigterm_raises():
            status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        # the reader went away (`rlhfv ... | head`): stop quietly, as `cat` would. Python
        # flushes stdout again at exit; point it at devnull so that cannot fail too.
        with contextlib.suppress(OSError, ValueError):  # ValueError: stdout is not a file (tests)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a program a closed pipe stopped
    except InputError as err:
        print(f"rlhfv: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlhfv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
