"""`rlhfv train` / `rlhfv sft` end to end on a tiny model; user mistakes exit 2 with one line."""

from __future__ import annotations

import json
import shutil

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
    import datasets
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    def bars_on() -> bool:
        return hf_logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()

    assert bars_on()
    run = tmp_path / "run"
    code = main(run_args("train", model_dir, prepared, run, "--max-steps", "2"))
    assert code == 0
    captured = capsys.readouterr()
    assert "trained 2 steps" in captured.out
    # --no-progress (in FAST) also silences transformers' and datasets' bars ("Loading
    # weights", "Writing model shards", "Saving the dataset") for the run, then restores them
    assert "%|" not in captured.err
    assert bars_on()
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
    assert (run / "checkpoint-2" / "trainer_state.json").is_file()  # the last step too
    assert main([*args, "--max-steps", "3", "--resume"]) == 0  # extended from checkpoint-2: step 3
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert main([*args, "--max-steps", "3", "--resume", str(run / "checkpoint-1")]) == 0  # steps 2, 3 again
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_resume_on_data_prepared_with_another_alignment_is_refused(tmp_path, prepared, capsys):
    """The same corrections prepared with --alignment reference: the same token ids and images
    (and the same fingerprint in rlhfv_prepared.json), other changed-token masks."""
    other = tmp_path / "reference-aligned"
    argv = ["data", "prepare", "example", str(other), "--processor", "tiny-llava", "--alignment", "reference"]
    assert main(argv) == 0
    run = tmp_path / "run"
    args = ["--set", "save_steps=1", "--max-steps"]
    assert main([*run_args("train", "tiny-llava", prepared, run, *args, "2")]) == 0
    capsys.readouterr()
    assert main([*run_args("train", "tiny-llava", other, run, *args, "3"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained with other settings (prepared data " in err
    assert not (run / "checkpoint-3").exists()
    # the same data resumes
    assert main([*run_args("train", "tiny-llava", prepared, run, *args, "3"), "--resume"]) == 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "beta=-1"], "field beta: must be a positive number"),
        (["--set", "nonsense=1"], "unknown config key"),
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
        (["--data", "/nonexistent/data"], "prepared data directory not found"),
        # the option's name, not the Trainer's argument (resume_from)
        (["--resume"], "field --resume: no checkpoint-N folder to resume from"),
        (["--resume", "/nonexistent/ckpt"], "/nonexistent/ckpt: field --resume: not a checkpoint folder"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, prepared, extra, needle, capsys):
    args = {"--model": "tiny-llava", "--data": str(prepared), "--output": str(tmp_path / "o")}
    flags = [x for k, v in args.items() if k not in extra for x in (k, v)]
    assert main(["train", *flags, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_a_config_file_with_a_yaml_error_is_one_line_naming_where(tmp_path, prepared, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("beta: 0.1\nreport_to: [none\n")
    assert main(run_args("train", "tiny-llava", prepared, tmp_path / "o", "--config", str(config))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        f"rlhfv: error: {config}: not valid YAML at line 3, column 1"
    )
    assert "from line 2, column 12" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra", [["--reference-cache", "refcache"], ["--preset", "reference"]])
def test_sft_refuses_ddpo_only_options(tmp_path, prepared, extra, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(run_args("sft", "tiny-llava", prepared, tmp_path / "o", *extra))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{extra[0]} is for `rlhfv train` (DDPO) only" in err
    assert not (tmp_path / "refcache").exists() and not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    shown = capsys.readouterr().out
    assert "--reference-cache" not in shown and "--preset" not in shown
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    assert "--reference-cache" in shown and "--preset" in shown


def test_help_config_lists_fields(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "beta = 0.5" in out and "gamma = 5.0" in out and "reference:" in out


def test_a_used_output_is_refused_unless_resumed_with_its_settings_or_overwritten(tmp_path, prepared, capsys):
    run = tmp_path / "run"
    args = run_args("train", "tiny-llava", prepared, run, "--set", "save_steps=1")
    assert main([*args, "--max-steps", "3"]) == 0
    capsys.readouterr()
    # a fresh run would mix with the first one's checkpoints and metrics
    assert main([*args, "--max-steps", "1", "--set", "beta=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "field --output: already holds a training run (checkpoint-1" in err
    assert "--resume" in err and "--overwrite" in err
    assert (run / "checkpoint-2").is_dir()
    # resuming a checkpoint of a run with other settings is refused, naming the difference
    assert main([*args, "--max-steps", "4", "--set", "beta=0.1", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "checkpoint-3: field --resume: the checkpoint was trained with other settings (beta 0.5 -> 0.1)"
        in err
    )
    assert main([*args, "--max-steps", "1", "--resume", "--overwrite"]) == 2
    assert "not both" in capsys.readouterr().err
    # --overwrite clears the earlier run first
    assert main([*args, "--max-steps", "1", "--set", "beta=0.1", "--overwrite"]) == 0
    assert [p.name for p in run.glob("checkpoint-*")] == ["checkpoint-1"]  # the new run's end
    assert "beta: 0.1" in (run / "checkpoint-1" / "train_config.yaml").read_text()
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert "beta: 0.1" in (run / "train_config.yaml").read_text()


def test_resume_mistakes_are_found_before_the_model_loads(tmp_path, prepared, model_dir, capsys, monkeypatch):
    """The run's model folder is gone after training: each resume mistake below is reported
    all the same (the model would load only after these checks), in one line naming both values."""
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    run = tmp_path / "run"
    assert main(run_args("train", model, prepared, run, "--max-steps", "2")) == 0
    shutil.rmtree(model)
    capsys.readouterr()

    def refused(model, output, *extra: str) -> str:  # noqa: ANN001
        assert main(run_args("train", model, prepared, output, "--resume", *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "field --model" not in err
        return err

    err = refused(model, run, "--max-steps", "3", "--set", "beta=0.1", "--dtype", "bfloat16")
    assert "other settings (weights dtype float32 -> bfloat16; beta 0.5 -> 0.1)" in err
    err = refused("/nonexistent/model", run, "--max-steps", "3")
    assert f"other settings (model {model} -> /nonexistent/model)" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "other settings (processes 1 -> 2)" in refused(model, run, "--max-steps", "3")
    monkeypatch.delenv("WORLD_SIZE")
    assert "at step 2 and this run ends at step 2: nothing to train" in refused(
        model, run, "--max-steps", "2"
    )
    err = refused(model, tmp_path / "other", str(run / "checkpoint-2"), "--max-steps", "3")
    assert f"belongs to the run in {run}, not to --output {tmp_path / 'other'}" in err
    assert not (tmp_path / "other").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path, prepared, capsys):
    output = tmp_path / "afile"
    output.write_text("hi\n")
    assert main(run_args("train", "tiny-llava", prepared, output, "--max-steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{output}: field --output: is a file, not a directory" in err


def test_lora_output_records_the_model_folder_by_its_absolute_path(
    tmp_path, prepared, model_dir, monkeypatch
):
    monkeypatch.chdir(model_dir.parent)
    run = tmp_path / "lora"
    assert main(run_args("train", model_dir.name, prepared, run, "--max-steps", "1", "--lora")) == 0
    recorded = json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(model_dir.resolve())
    monkeypatch.chdir(tmp_path)  # the adapter (base model + LoRA) loads from anywhere, without the hub
    from transformers import AutoModelForImageTextToText

    assert hasattr(AutoModelForImageTextToText.from_pretrained(run), "peft_config")


@pytest.mark.parametrize(
    "model", ["/nonexistent/x/nomodel", "./nomodel", "../nomodel", "runs/a/b", "~/nomodel"]
)
def test_a_missing_model_folder_is_named_at_once(tmp_path, prepared, model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(run_args("train", model, prepared, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rlhfv: error: {model}: field --model: no such model directory"


def test_a_bare_name_that_is_not_local_says_why_the_hub_did_not_help(tmp_path, prepared, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(run_args("train", "nomodel", prepared, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert "nomodel: field --model: not a local directory" in err and "HF_HUB_OFFLINE is set" in err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert main(run_args("train", "someone/nomodel", prepared, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert "someone/nomodel: field --model: not a local directory" in err
    assert "the hub (http://127.0.0.1:9) cannot be reached" in err and len(err.splitlines()) == 1


def test_hub_ids_are_not_paths():
    from rlhfv.data.pretrained import looks_like_path

    assert not any(map(looks_like_path, ["llava-hf/llava-1.5-7b-hf", "nomodel", "Qwen/Qwen2-VL-2B-Instruct"]))
    assert all(map(looks_like_path, ["/a", "./a", "../a", "~/a", "a/b/c", "a//b", "."]))


def test_a_lora_output_is_the_merged_starting_model_of_the_next_run(
    tmp_path, prepared, model_dir, capsys, caplog
):
    """SFT with --lora, then DDPO with --model on its output (without and with --lora): the
    adapter is merged into the base model it records, and that merge is what trains and what
    the reference log-probs come from."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from rlhfv.ddpo.commands import load_model
    from rlhfv.ddpo.config import TrainConfig
    from rlhfv.ddpo.reference import CACHE_DIRNAME, fingerprint_model, reference_fingerprint
    from rlhfv.ddpo.trainer import data_fingerprint, load_prepared_data, prepare_model
    from rlhfv.errors import InputError

    sft = tmp_path / "sft"
    assert main(run_args("sft", model_dir, prepared, sft, "--max-steps", "2", "--lora")) == 0
    base = AutoModelForImageTextToText.from_pretrained(model_dir)
    merged = PeftModel.from_pretrained(base, sft).merge_and_unload()  # independent of rlhfv's loader
    expected = {k: v.clone() for k, v in merged.state_dict().items()}
    start = AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()
    assert any(not torch.equal(expected[k], start[k]) for k in expected)  # the adapter changed something

    loaded, _ = load_model(str(sft))  # what `rlhfv train --model SFT` starts from
    state = loaded.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    assert all(p.requires_grad for p in loaded.parameters())
    assert f"{sft}: a LoRA adapter folder: loaded its base model {model_dir}" in caplog.text

    cache = tmp_path / "refcache"
    full, lora = tmp_path / "full", tmp_path / "lora"
    for run, extra in ((full, []), (lora, ["--lora"])):
        args = run_args(
            "train", sft, prepared, run, "--max-steps", "2", "--reference-cache", str(cache), *extra
        )
        assert main(args) == 0
        assert "trained 2 steps" in capsys.readouterr().out
    # both runs' reference (the initial model) was exactly the independent merge, config included
    dataset, metadata = load_prepared_data(prepared)
    key = reference_fingerprint(
        fingerprint_model(merged),
        data_fingerprint(dataset, metadata),
        image_pipeline="pad",
        mixed_precision="no",
        forward="auto",
    )
    assert [p.name for p in (cache / CACHE_DIRNAME).iterdir()] == [key]
    trained = AutoModelForImageTextToText.from_pretrained(full).state_dict()
    assert any(not torch.equal(trained[k], expected[k]) for k in expected)  # full fine-tuning moved it
    # the new adapter records the SFT adapter folder as its base, and loads as the two merges
    recorded = json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(sft.resolve())
    twice = PeftModel.from_pretrained(merged, lora).merge_and_unload().state_dict()
    chained = load_model(str(lora))[0].state_dict()
    assert any(not torch.equal(twice[k], expected[k]) for k in expected)
    assert all(torch.equal(chained[k], twice[k]) for k in twice)
    # through the Python API, adapter layers that transformers attached (unmerged) are refused
    attached = AutoModelForImageTextToText.from_pretrained(sft)
    with pytest.raises(InputError, match="peft adapter layers outside a PeftModel"):
        prepare_model(attached, TrainConfig())
