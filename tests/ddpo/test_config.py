"""TrainConfig: paper defaults, presets, YAML + overrides, refusals naming the field."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from rlhfv.ddpo.config import PRESETS, TrainConfig, load_config, parse_overrides
from rlhfv.errors import InputError


def test_paper_defaults_and_reference_preset():
    paper = TrainConfig()
    assert (paper.beta, paper.gamma, paper.normalisation, paper.learning_rate, paper.warmup_ratio) == (
        0.5,
        5.0,
        "mean",
        5e-7,
        0.1,
    )
    ref = TrainConfig.from_preset("reference")
    assert (ref.beta, ref.gamma, ref.normalisation, ref.warmup_ratio, ref.preset) == (
        0.1,
        1.1,
        "sum",
        0.03,
        "reference",
    )
    assert set(PRESETS) == {"paper", "reference"}


def test_every_field_has_help():
    assert all(f.metadata.get("help") for f in fields(TrainConfig))


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: reference\nbeta: 0.2\nlora: true\nreport_to: none\n")
    config = load_config(
        path, parse_overrides(["gamma=3", "lora_target_modules=q_proj,v_proj", "max_steps=7"])
    )
    assert (config.beta, config.gamma, config.normalisation, config.lora) == (0.2, 3.0, "sum", True)
    assert (
        config.lora_target_modules == ["q_proj", "v_proj"]
        and config.max_steps == 7
        and config.report_to == []
    )


def test_saved_config_loads_back_equal(tmp_path):
    config = TrainConfig.from_preset("reference", lora=True, max_steps=3, report_to=["tensorboard"])
    config.save(tmp_path / "train_config.yaml")
    text = (tmp_path / "train_config.yaml").read_text()
    assert "# DPO KL strength" in text  # the help strings travel with the values
    assert yaml.safe_load(text)["gamma"] == 1.1
    assert load_config(tmp_path / "train_config.yaml") == config


@pytest.mark.parametrize(
    ("values", "field", "why"),
    [
        ({"beta": -1}, "beta", "positive"),
        ({"gamma": 0}, "gamma", "positive"),
        ({"beta": "high"}, "beta", "expected float"),
        ({"normalisation": "median"}, "normalisation", "not one of"),
        ({"warmup_ratio": 1.5}, "warmup_ratio", "[0, 1)"),
        ({"max_steps": 0}, "max_steps", "positive"),
        ({"reference": "adapters_disabled"}, "reference", "lora"),
        ({"report_to": ["mlflow"]}, "report_to", "not one of"),
        ({"lora": "yes"}, "lora", "expected bool"),
        ({"learning_rate": float("nan")}, "learning_rate", "positive"),
        ({"adam_beta2": -0.5}, "adam_beta2", ">= 0"),
        ({"adam_beta2": 1.0}, "adam_beta2", "below 1"),
        ({"seed": -1}, "seed", "[0, 4294967295]"),
        ({"seed": 2**32}, "seed", "[0, 4294967295]"),
    ],
)
def test_bad_values_name_the_field(values, field, why):
    with pytest.raises(InputError) as err:
        TrainConfig.from_dict(values)
    assert err.value.field == field and why in str(err.value)


def test_preset_on_the_command_line_wins_over_the_files(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: paper\nper_device_batch_size: 2\n")
    config = load_config(path, preset="reference")
    assert (config.preset, config.beta, config.normalisation) == ("reference", 0.1, "sum")
    assert config.per_device_batch_size == 2
    assert load_config(path).preset == "paper"  # the file's, without --preset
    assert load_config(path, {"preset": "paper"}, preset="reference").beta == 0.5  # --set preset= last


def test_report_to_none_is_accepted_and_named_in_the_error():
    # the help says "tensorboard, wandb, or none": the error for a bad value says so too
    for value in ("none", ["none"], [], None):
        assert TrainConfig.from_dict({"report_to": value}).report_to == []
    assert load_config(None, parse_overrides(["report_to=[]"])).report_to == []
    with pytest.raises(InputError, match="tensorboard, wandb, none"):
        TrainConfig.from_dict({"report_to": "mlflow"})


def test_unknown_keys_and_bad_files(tmp_path):
    with pytest.raises(InputError, match="unknown config key"):
        load_config(None, {"betta": 0.1})
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="key=value"):
        parse_overrides(["beta"])
    listed = tmp_path / "list.yaml"
    listed.write_text("- beta\n")
    with pytest.raises(InputError, match="mapping") as err:
        load_config(listed)
    assert err.value.path == str(listed)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("lora: true\nbeta: [1, 2\n", "line 3, column 1: expected ',' or ']'"),
        ("beta: 0.1\n gamma: 2\n", "line 2, column 7: mapping values are not allowed here"),
        ("beta:\t0.1\n", "line 1, column 6: found character '\\t' that cannot start any token"),
    ],
)
def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(tmp_path, text, where):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(bad)
    assert err.value.path == str(bad) and f"not valid YAML at {where}" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(InputError) as err:
        parse_overrides(["beta=[1"])
    assert str(err.value).startswith("field beta: cannot parse value '[1': expected") and "\n" not in str(
        err.value
    )


def test_a_yaml_error_without_a_position_does_not_say_at(tmp_path):
    """A control character fails in PyYAML's reader, whose errors carry no line and column."""
    bad = tmp_path / "bell.yaml"
    bad.write_text("beta: 0.1\x07\n")
    with pytest.raises(InputError) as err:
        load_config(bad)
    assert "not valid YAML: unacceptable character #x0007" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_shipped_training_yamls_load():
    from pathlib import Path

    root = Path(__file__).parents[2] / "configs"
    paper = load_config(root / "paper.yaml")
    reference = load_config(root / "reference.yaml")
    assert (paper.beta, paper.gamma, paper.normalisation) == (0.5, 5.0, "mean")
    assert (reference.beta, reference.gamma, reference.normalisation, reference.warmup_ratio) == (
        0.1,
        1.1,
        "sum",
        0.03,
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ddp", "MULTI_GPU"),
        ("fsdp", "FSDP"),
        ("deepspeed_zero2", "DEEPSPEED"),
        ("deepspeed_zero3", "DEEPSPEED"),
    ],
)
def test_shipped_accelerate_configs_load(name, kind):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(Path(__file__).parents[2] / "configs" / "accelerate" / f"{name}.yaml"))
    assert str(config.distributed_type).endswith(kind) and config.num_processes == 8
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
