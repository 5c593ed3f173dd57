"""The benchmark scripts start, explain themselves, and refuse bad arguments in one line
before any work (they run for minutes, so a typo must not cost that)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_has_a_help(script):
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and len(done.stdout.splitlines()) > 3


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("annotate_load.py", ["--db", "sqlite:////tmp/never-made.db"], "--drop-tables"),
        ("annotate_load.py", ["--clients", "0"], "--clients must be at least 1"),
        ("chair_speed.py", ["--n", "0"], "--n must be at least 1"),
        ("scene_heldout_pairs.py", ["/no/such/model"], "not a saved model directory"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(script, args, message):
    done = run(script, *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
