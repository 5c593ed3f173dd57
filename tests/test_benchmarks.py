"""The benchmark scripts start, explain themselves, and refuse bad arguments in one line
before any work (they run for minutes, so a typo must not cost that)."""

import importlib.util
import json
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
        ("scene_noun_confidence.py", ["--scenes", "0"], "--scenes must be at least 1"),
        ("scene_noun_confidence.py", ["--probe", "--probe-scenes", "0"], "--probe-scenes must be at least 1"),
        (
            "scene_noun_first.py",
            ["sft", "--output", "never-made", "--scenes", "0"],
            "--scenes must be at least 1",
        ),
        ("scene_noun_first.py", ["frontier", "--scenes", "0"], "--scenes must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(script, args, message):
    done = run(script, *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_train_step_json_has_the_promised_shape():
    """The smallest real run of the three variants: the JSON the issue specifies, one
    progress line per variant, and FLOP counts that show the shared prefix doing less work."""
    done = run(
        "train_step.py", "--pairs", "1", "--steps", "1", "--answer-words", "8", "--threads", "1", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    variants = result["variants"]
    assert set(variants) == {"trl", "plain", "shared_prefix"}
    for name, measured in variants.items():
        assert "error" not in measured, (name, measured)
        assert measured["tokens_per_second"] > 0 and measured["peak_memory_mb"] > 0
        assert measured["tokens_per_step"] == variants["plain"]["tokens_per_step"]
    assert variants["trl"]["trl_batch_tokens"] == variants["plain"]["tokens_per_step"]
    trl, shared = variants["trl"], variants["shared_prefix"]
    assert result["speedup_vs_trl"] == shared["tokens_per_second"] / trl["tokens_per_second"]
    assert result["memory_ratio_vs_trl"] == shared["peak_memory_mb"] / trl["peak_memory_mb"]
    # FLOPs do not depend on the machine's load: image and prompt once per pair is less work
    assert 0 < shared["gflop_per_step"] < variants["plain"]["gflop_per_step"] < trl["gflop_per_step"]
    progress = [line for line in done.stderr.splitlines() if "tokens/s" in line]
    assert [line.split(":")[0] for line in progress] == ["trl", "plain", "shared_prefix"]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_table_shows_a_missing_flop_count():
    train_step = load_benchmark("train_step")
    measured = dict(
        tokens_per_second=100.0, peak_memory_mb=50.0, seconds_per_step=1.0, cpu_seconds_per_step=1.0
    )
    result = train_step.summarise(
        {"trl": {**measured, "gflop_per_step": None}, "shared_prefix": {**measured, "gflop_per_step": 2.5}}
    )
    rows = train_step.table(result, "title").splitlines()
    assert "n/a" in rows[2] and "2.5" in rows[3]
    assert result["speedup_vs_trl"] == 1.0
