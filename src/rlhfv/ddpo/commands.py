"""`rlhfv` subcommands of rlhfv.ddpo (placeholder until implemented)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this subpackage's subcommands (none yet)."""
