"""`rlhfv train` / `rlhfv sft` end to end on a tiny model; user mistakes exit 2 with one line."""

from __future__ import annotations

import json

import pytest

from rlhfv.cli import main

FAST = [
    "--set",
    "mixed_precision=no",
    "--set",
    "report_to=none",
    "--set",
    "per_device_batch_size=2",
    "--set",
    "gradient_accumulation_steps=1",
    "--set",
    "learning_rate=1e-3",
    "--no-progress",
]


def run_args(command: str, model, data, output, *extra: str) -> list[str]:  # noqa: ANN001
    """``COMMAND --model M --data D --output O EXTRA... FAST`` for ``rlhfv.cli.main``."""
    return [command, "--model", str(model), "--data", str(data), "--output", str(output), *extra, *FAST]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "prepared"
    assert main(["data", "prepare", "example", str(out), "--processor", "tiny-llava"]) == 0
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rlhfv.tiny import build_tiny

    path = tmp_path_factory.mktemp("model") / "tiny-llava-local"
    model, processor = build_tiny("llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_train_from_a_local_model_directory(tmp_path, prepared, model_dir, capsys):
    from transformers import AutoModelForImageTextToText

    run = tmp_path / "run"
    code = main(run_args("train", model_dir, prepared, run, "--max-steps", "2"))
    assert code == 0
    assert "trained 2 steps" in capsys.readouterr().out
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert (prepared / "reference_logps").is_dir()  # cached beside the prepared data
    AutoModelForImageTextToText.from_pretrained(run)
    assert "max_steps: 2" in (run / "train_config.yaml").read_text()


def test_sft_with_lora_and_a_config_file(tmp_path, prepared, model_dir):
    config = tmp_path / "sft.yaml"
    config.write_text("learning_rate: 0.001\nwarmup_ratio: 0.0\n")
    run = tmp_path / "sft"
    code = main(
        run_args("sft", model_dir, prepared, run, "--config", str(config), "--max-steps", "1", "--lora")
    )
    assert code == 0
    assert (run / "adapter_config.json").is_file()


def test_train_resume_latest(tmp_path, prepared):
    run = tmp_path / "run"
    args = run_args("train", "tiny-llava", prepared, run, "--set", "save_steps=1")
    assert main([*args, "--max-steps", "2"]) == 0
    assert (run / "checkpoint-1" / "training_state").is_dir()
    assert not (run / "checkpoint-2").exists()  # the last step is the final model in OUTPUT
    assert main([*args, "--max-steps", "3", "--resume"]) == 0  # from checkpoint-1: steps 2 and 3
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "beta=-1"], "field beta: must be a positive number"),
        (["--set", "nonsense=1"], "unknown config key"),
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
        (["--data", "/nonexistent/data"], "prepared data directory not found"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, prepared, extra, needle, capsys):
    args = {"--model": "tiny-llava", "--data": str(prepared), "--output": str(tmp_path / "o")}
    flags = [x for k, v in args.items() if k not in extra for x in (k, v)]
    assert main(["train", *flags, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_help_config_lists_fields(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "beta = 0.5" in out and "gamma = 5.0" in out and "reference:" in out
