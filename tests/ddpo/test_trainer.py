"""Tiny real models trained a few CPU steps: loss falls, parameters move, outputs load back."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from rlhfv.ddpo.trainer import (
    Trainer,
    TrainState,
    data_fingerprint,
    freeze_parts,
    lora_target_regex,
    parameter_group,
    train_ddpo,
    train_sft,
)
from rlhfv.errors import InputError
from rlhfv.tiny import build_tiny

from .conftest import fast_config, make_prepared

METRIC_KEYS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "lr",
    "tokens_per_second",
    "step",
    "epoch",
}


def assert_same_weights(got: torch.nn.Module, expected: torch.nn.Module) -> None:
    """Bit-identical parameters and buffers, named on failure."""
    have, want = got.state_dict(), expected.state_dict()
    assert have.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(have[name], value, atol=0, rtol=0, msg=name)


def train_twice(config_a, config_b, model, processor, prepared, tmp_path):  # noqa: ANN001, ANN201
    """Train a copy of ``model`` under ``config_a`` (in tmp/a), then ``model`` itself under
    ``config_b`` (in tmp/b), on the same data: for runs that must agree."""
    a = train_ddpo(config_a, copy.deepcopy(model), processor, prepared, tmp_path / "a", progress=False)
    b = train_ddpo(config_b, model, processor, prepared, tmp_path / "b", progress=False)
    return a, b


def assert_same_training(a, b, weights_atol: float) -> None:  # noqa: ANN001
    """Two training results with the same per-step losses (to 1e-5) and final weights (to ``weights_atol``)."""
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history], abs=1e-5)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for name in sa:
        torch.testing.assert_close(
            sa[name], sb[name], atol=weights_atol, rtol=0, msg=lambda m, name=name: f"{name}: {m}"
        )


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "idefics3"])
def test_ddpo_full_finetune_loss_falls_on_a_fixed_batch(tmp_path, arch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = build_tiny(arch, seed=0)
    before = snapshot(model)
    prepared = make_prepared(processor, n=4)
    # one global batch of all 4 pairs, no shuffling: the same batch every step
    result = train_ddpo(fast_config(max_steps=5), model, processor, prepared, tmp_path, progress=False)

    losses = [h["loss"] for h in result.history]
    assert len(losses) == 5
    assert losses[0] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)  # policy == reference
    assert losses[-1] < losses[0] - 0.05
    assert result.history[-1]["rewards/margins"] > 0
    after = result.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lm_head" in k for k in changed) and any(parameter_group(k) == "vision" for k in changed)

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and set(lines[0]) >= METRIC_KEYS
    assert lines[-1]["tokens_per_second"] > 0
    # the final model and processor load back through the Auto classes
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    AutoProcessor.from_pretrained(tmp_path)
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, after[name], msg=name)
    assert (tmp_path / "train_config.yaml").is_file()


def test_lora_trains_adapters_only_and_saves_an_adapter(tmp_path, tiny_llava):
    from peft import PeftModel

    model, processor = tiny_llava
    base_before = snapshot(model)
    prepared = make_prepared(processor, n=4)
    config = fast_config(
        lora=True, lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=2e-2, max_steps=5
    )
    result = train_ddpo(config, model, processor, prepared, tmp_path, progress=False)

    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.02
    peft_model = result.model
    lora_params = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert lora_params and all(p.requires_grad for p in lora_params.values())
    # adapters only on the language model's projections
    assert all(parameter_group(n) == "language" for n in lora_params)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in lora_params.items())
    base_after = peft_model.get_base_model()
    with peft_model.disable_adapter():
        for name, param in base_after.named_parameters():
            if "lora_" not in name and ".base_layer." not in name:
                torch.testing.assert_close(param, base_before[name], msg=name)

    assert (tmp_path / "adapter_model.safetensors").is_file()
    fresh, _ = build_tiny("llava", seed=0)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path)
    for name, param in reloaded.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(param, dict(peft_model.named_parameters())[name], msg=name)


def test_lora_with_adapters_disabled_reference_matches_precomputed(tmp_path, tiny_llava):
    """The base model under disabled adapters is the initial model: same run as a precomputed reference."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    config = dict(lora=True, lora_dropout=0.0, learning_rate=2e-2, max_steps=3)
    a, b = train_twice(
        fast_config(**config, reference="adapters_disabled"),
        fast_config(**config),
        model,
        processor,
        prepared,
        tmp_path,
    )
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["loss"] == pytest.approx(hb["loss"], abs=1e-5)
        assert ha["rewards/margins"] == pytest.approx(hb["rewards/margins"], abs=1e-5)


def test_live_reference_model_matches_precomputed(tmp_path, tiny_llava):
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    a, b = train_twice(
        fast_config(reference="model", max_steps=3),
        fast_config(max_steps=3),
        model,
        processor,
        prepared,
        tmp_path,
    )
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history], abs=1e-5)


def test_sft_on_chosen_answers(tmp_path):
    model, processor = build_tiny("qwen2_vl", seed=1)
    prepared = make_prepared(processor, n=4)
    result = train_sft(fast_config(max_steps=5), model, processor, prepared, tmp_path, progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.5
    assert set(result.history[0]) >= {"loss", "logps/chosen", "lr", "tokens_per_second"}
    # the initial loss is the NLL of the chosen answers only (rejected rows are not trained on)
    fresh, _ = build_tiny("qwen2_vl", seed=1)
    from rlhfv.data.collator import PreferenceCollator
    from rlhfv.ddpo.batches import PreparedPairs, image_transform
    from rlhfv.ddpo.forward import token_logps

    pairs = PreparedPairs(prepared[0], image_transform("pad", processor.image_processor))
    batch = PreferenceCollator(processor)([pairs[i] for i in range(4)])
    with torch.no_grad():
        logps = token_logps(fresh, batch, mode="plain")
    chosen_mask = batch["labels"][:4, 1:] != -100
    expected = -(logps[:4] * chosen_mask).sum() / chosen_mask.sum()
    assert losses[0] == pytest.approx(expected.item(), abs=1e-4)


def test_freeze_vision_tower_and_projector(tmp_path, tiny_llava):
    model, processor = tiny_llava
    before = snapshot(model)
    prepared = make_prepared(processor, n=4)
    config = fast_config(freeze_vision_tower=True, freeze_projector=True, max_steps=2)
    result = train_ddpo(config, model, processor, prepared, tmp_path, progress=False)
    after = result.model.state_dict()
    for name, tensor in before.items():
        moved = not torch.equal(tensor, after[name])
        if parameter_group(name) in ("vision", "projector"):
            assert not moved, name
    assert any(not torch.equal(before[n], after[n]) for n in before if parameter_group(n) == "language")


@pytest.mark.parametrize("arch", ["llava", "llava_next", "qwen2_vl", "idefics3"])
def test_parameter_groups_and_lora_targets_per_architecture(arch):
    import re

    model, _ = build_tiny(arch)
    groups = {parameter_group(n) for n, _ in model.named_parameters()}
    assert groups == {"vision", "projector", "language"}
    pattern = re.compile(lora_target_regex(model))
    targets = [n for n, _ in model.named_modules() if pattern.match(n)]
    assert targets and all(parameter_group(n) == "language" for n in targets)
    assert {t.rsplit(".", 1)[-1] for t in targets} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    frozen = freeze_parts(model, vision=True, projector=False)
    assert frozen > 0
    assert all(not p.requires_grad for n, p in model.named_parameters() if parameter_group(n) == "vision")


@pytest.mark.parametrize(
    ("lora", "batch"),
    [(False, 2), (True, 2), (True, 1)],
    ids=["full", "lora-dropout", "lora-dropout-mid-epoch"],
)
def test_resume_is_exact(tmp_path, tiny_llava, lora, batch):
    """Crash after step 3 (checkpoint at 2), resume: the same weights as the uninterrupted run.

    With LoRA dropout the resumed run must also restore the RNG to draw the same masks. With
    batch 1 an epoch is 4 steps, so checkpoint-2 falls mid-epoch: the resumed run builds a
    DataLoader the uninterrupted run built before the checkpoint, which must not draw from
    the restored RNG.
    """
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=8)
    extra = dict(lora=True, lora_dropout=0.3, learning_rate=1e-2) if lora else {}
    config = fast_config(
        **extra,
        per_device_batch_size=batch,
        gradient_accumulation_steps=2,
        shuffle=True,
        max_steps=5,
        save_steps=2,
        lr_scheduler="cosine",
        warmup_ratio=0.2,
        image_pipeline="random_crop",  # seeded per (epoch, pair): must replay identically
    )
    straight = train_ddpo(config, copy.deepcopy(model), processor, prepared, tmp_path / "a", progress=False)

    class Crash(RuntimeError):
        pass

    def crash_at_3(state: TrainState):
        if state.step == 3:
            raise Crash

    with pytest.raises(Crash):
        train_ddpo(
            config,
            copy.deepcopy(model),
            processor,
            prepared,
            tmp_path / "b",
            callbacks=[crash_at_3],
            progress=False,
        )
    assert (tmp_path / "b" / "checkpoint-2" / "training_state").is_dir()
    resumed = train_ddpo(
        config,
        copy.deepcopy(model),
        processor,
        prepared,
        tmp_path / "b",
        resume_from="latest",
        progress=False,
    )

    assert resumed.global_step == straight.global_step == 5
    assert_same_weights(resumed.model, straight.model)
    # the resumed run logged steps 3..5 with the uninterrupted run's numbers
    tail = {h["step"]: h["loss"] for h in straight.history}
    for h in resumed.history:
        assert h["loss"] == pytest.approx(tail[h["step"]], abs=1e-6)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, tiny_llava):
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    config = fast_config(reference="model", save_steps=2, max_steps=6)

    def poison_after_2(state: TrainState):
        if state.step == 2:
            with torch.no_grad():
                next(model.get_output_embeddings().parameters()).fill_(float("nan"))

    with pytest.raises(InputError) as err:
        train_ddpo(
            config,
            model,
            processor,
            prepared,
            tmp_path,
            callbacks=[poison_after_2],
            progress=False,
            ref_model=copy.deepcopy(model),
        )
    message = str(err.value)
    assert "loss is nan at step 3" in message and "checkpoint-2" in message
    saved = tmp_path / "checkpoint-2" / "model.safetensors"
    assert saved.is_file()
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(saved).values())
    assert not (tmp_path / "model.safetensors").exists()  # no final model from a diverged run


def test_resume_skips_an_incomplete_checkpoint_and_refuses_one_named(tmp_path, tiny_llava, caplog):
    """A run killed while saving checkpoint-4: its model is written, training_state/ and
    trainer_state.json are not. "latest" falls back to checkpoint-2; naming it is an InputError."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    config = fast_config(save_steps=2, max_steps=6)

    def run(model, **kwargs):  # noqa: ANN001, ANN202
        return train_ddpo(config, model, processor, prepared, tmp_path, progress=False, **kwargs)

    def crash_at_4(state: TrainState):
        if state.step == 4:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run(copy.deepcopy(model), callbacks=[crash_at_4])
    shutil.rmtree(tmp_path / "checkpoint-4" / "training_state")
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()

    with pytest.raises(
        InputError, match="incomplete checkpoint: no training_state/, trainer_state.json"
    ) as err:
        run(copy.deepcopy(model), resume_from=tmp_path / "checkpoint-4")
    assert err.value.field == "--resume" and "checkpoint-4" in str(err.value)

    resumed = copy.deepcopy(model)

    def poison_at_3(state: TrainState):
        if state.step == 3:
            with torch.no_grad():
                next(resumed.get_output_embeddings().parameters()).fill_(float("nan"))

    with pytest.raises(InputError) as err:
        run(resumed, resume_from="latest", callbacks=[poison_at_3])
    # the loss went NaN after resuming from checkpoint-2: the last good one, not checkpoint-4
    assert "loss is nan at step 4" in str(err.value)
    assert "checkpoint-2" in str(err.value) and "checkpoint-4" not in str(err.value)
    skipped = [r.getMessage() for r in caplog.records if "incomplete" in r.getMessage()]
    assert len(skipped) == 1 and "checkpoint-4" in skipped[0]


def test_live_reference_model_runs_under_the_policys_autocast(tmp_path, tiny_llava):
    """In bf16 the live reference equals the policy at step 0 (rewards exactly 0), as the precomputed one does."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    common = dict(mixed_precision="bf16", max_steps=1)
    a, b = train_twice(
        fast_config(reference="model", **common), fast_config(**common), model, processor, prepared, tmp_path
    )
    keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins")
    assert {k: a.history[0][k] for k in keys} == {k: b.history[0][k] for k in keys}
    assert b.history[0]["rewards/margins"] == 0.0


def test_too_little_data_is_an_input_error(tmp_path, tiny_llava):
    model, processor = tiny_llava
    with pytest.raises(InputError, match="fewer than one global batch"):
        Trainer(
            fast_config(per_device_batch_size=8), model, processor, make_prepared(processor, 4), tmp_path
        ).train()


@pytest.mark.parametrize(
    ("gamma", "normalisation", "noticed"), [(3.0, "mean", True), (1.0, "mean", True), (1.0, "sum", False)]
)
def test_a_gamma_other_than_the_data_records_is_noticed_unless_vanilla_dpo(
    tmp_path, tiny_llava, caplog, gamma, normalisation, noticed
):
    model, processor = tiny_llava
    dataset, metadata = make_prepared(processor, 4)
    config = fast_config(per_device_batch_size=8, gamma=gamma, normalisation=normalisation)
    # too little data: the run stops after the settings are checked, before any step
    with pytest.raises(InputError, match="fewer than one global batch"):
        Trainer(config, model, processor, (dataset, metadata | {"gamma": 5.0}), tmp_path).train()
    notices = [r for r in caplog.records if "the prepared data records gamma 5.0" in r.getMessage()]
    assert len(notices) == noticed


def test_gradient_accumulation_invariance(tmp_path, tiny_llava):
    """batch 1 x accumulation 4 == batch 4 x accumulation 1 (the DPO loss is a mean over pairs)."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    initial = snapshot(model)
    common = dict(max_steps=2, learning_rate=1e-3, forward="plain")
    a, b = train_twice(
        fast_config(per_device_batch_size=1, gradient_accumulation_steps=4, **common),
        fast_config(**common),
        model,
        processor,
        prepared,
        tmp_path,
    )
    # Adam's first updates are ~lr * sign(g): padding-dependent float noise in near-zero
    # gradients shows up at ~1e-5, a wrong batch or loss scale at the update size (~1e-3)
    sb = b.model.state_dict()
    assert max((sb[n] - initial[n]).abs().max().item() for n in sb) > 1e-3
    assert_same_training(a, b, weights_atol=1e-4)


def test_tensorboard_tracker_writes_events(tmp_path, tiny_llava):
    model, processor = tiny_llava
    config = fast_config(max_steps=2, report_to=["tensorboard"])
    train_ddpo(config, model, processor, make_prepared(processor, 4), tmp_path, progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb" / "rlhfv"))
    acc.Reload()
    assert {"loss", "rewards/margins", "lr", "tokens_per_second"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]


def test_wandb_without_the_package_is_an_input_error(tmp_path, tiny_llava):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    model, processor = tiny_llava
    with pytest.raises(InputError, match="wandb"):
        train_ddpo(fast_config(report_to=["wandb"]), model, processor, make_prepared(processor, 4), tmp_path)


def test_gradient_checkpointing_and_length_grouping_train_the_same_pairs(tmp_path, tiny_llava):
    """Activation checkpointing changes memory, not numbers (here with the length-grouped order)."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=8)
    common = dict(per_device_batch_size=2, max_steps=4, forward="plain", group_by_length=True, shuffle=True)
    a, b = train_twice(
        fast_config(**common),
        fast_config(**common, gradient_checkpointing=True),
        model,
        processor,
        prepared,
        tmp_path,
    )
    assert_same_training(a, b, weights_atol=1e-5)


def test_lora_sft_then_lora_ddpo_and_checkpoint_limit(tmp_path, tiny_llava):
    """The scene-world pipeline: SFT with LoRA, then DDPO with LoRA on its result (merged first)."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    lora = dict(lora=True, lora_dropout=0.0, learning_rate=2e-2)
    sft = train_sft(
        fast_config(**lora, max_steps=2), model, processor, prepared, tmp_path / "sft", progress=False
    )
    merged_reference = copy.deepcopy(sft.model).merge_and_unload()
    ddpo = train_ddpo(
        fast_config(**lora, max_steps=4, save_steps=1, save_total_limit=2),
        sft.model,
        processor,
        prepared,
        tmp_path / "ddpo",
        progress=False,
    )
    assert ddpo.history[0]["loss"] == pytest.approx(0.693147, abs=1e-5)  # reference = the SFT model
    assert ddpo.history[-1]["loss"] < ddpo.history[0]["loss"]
    with ddpo.model.disable_adapter():  # the base of the new adapters is the merged SFT model
        for name, param in ddpo.model.get_base_model().named_parameters():
            if "lora_" not in name:
                torch.testing.assert_close(
                    param, merged_reference.get_parameter(name.replace(".base_layer", ""))
                )
    assert sorted(p.name for p in (tmp_path / "ddpo").glob("checkpoint-*")) == [
        "checkpoint-3",
        "checkpoint-4",
    ]


def test_runs_in_one_process_may_change_precision_and_accumulation(tmp_path, tiny_llava):
    """SFT in fp32, then DDPO in bf16 autocast with accumulation, from the same Python process."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    sft = train_sft(fast_config(max_steps=1), model, processor, prepared, tmp_path / "sft", progress=False)
    config = fast_config(
        max_steps=2, mixed_precision="bf16", per_device_batch_size=2, gradient_accumulation_steps=2
    )
    ddpo = train_ddpo(config, sft.model, processor, prepared, tmp_path / "ddpo", progress=False)
    assert ddpo.history[0]["loss"] == pytest.approx(0.6931, abs=5e-3)  # bf16 rounding around log 2
    assert ddpo.history[1]["loss"] < ddpo.history[0]["loss"]
    assert next(ddpo.model.parameters()).dtype == torch.float32  # autocast: fp32 master weights


def test_data_prepared_for_another_processor_is_an_input_error(tmp_path):
    """Qwen2-VL-prepared data (other image tokens, other ids) fed to a tiny LLaVA."""
    _, qwen_processor = build_tiny("qwen2_vl")
    model, processor = build_tiny("llava")
    prepared = make_prepared(qwen_processor, n=4)
    for reference in ("precomputed", "model"):  # caught in the reference pass and in training
        with pytest.raises(InputError, match="prepare it again") as err:
            train_ddpo(fast_config(reference=reference), model, processor, prepared, tmp_path, progress=False)
        assert err.value.field == "--data"


def test_api_refuses_a_used_output_and_a_resume_on_other_data(tmp_path, tiny_llava):
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    config = fast_config(max_steps=2, save_steps=1)
    train_ddpo(config, copy.deepcopy(model), processor, prepared, tmp_path, progress=False)
    with pytest.raises(InputError, match="already holds a training run"):
        train_ddpo(config, copy.deepcopy(model), processor, prepared, tmp_path, progress=False)
    other = make_prepared(processor, n=4, offset=4)
    with pytest.raises(InputError, match="other settings \\(prepared data "):
        train_ddpo(
            config, copy.deepcopy(model), processor, other, tmp_path, resume_from="latest", progress=False
        )
    (
        tmp_path / "checkpoint-1" / "train_config.yaml"
    ).unlink()  # an older checkpoint: the run's config is used
    changed = fast_config(max_steps=2, save_steps=1, learning_rate=1e-4, lora=True)
    with pytest.raises(InputError, match="learning_rate 0.005 -> 0.0001; lora False -> True"):
        train_ddpo(
            changed, copy.deepcopy(model), processor, prepared, tmp_path, resume_from="latest", progress=False
        )
    result = train_ddpo(
        config, copy.deepcopy(model), processor, other, tmp_path, overwrite=True, progress=False
    )
    assert result.global_step == 2
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_data_fingerprint_covers_answer_spans_and_changed_masks(tiny_llava):
    """Data prepared with another --alignment differs in its masks only: the reference reads the
    same ids and images (same cache key), the loss does not (a resume is refused)."""
    _, processor = tiny_llava
    dataset, metadata = make_prepared(processor, n=4)
    remasked = dataset.map(lambda row: {"chosen_changed": [1 - x for x in row["chosen_changed"]]})
    respanned = dataset.map(lambda row: {"rejected_labels_start": row["rejected_labels_start"] + 1})
    for meta in (metadata, {}):  # the prepared data's own fingerprint, or none (columns hashed)
        loss = data_fingerprint(dataset, meta, loss=True)
        assert data_fingerprint(dataset, meta, loss=True) == loss
        assert data_fingerprint(remasked, meta) == data_fingerprint(dataset, meta)
        assert data_fingerprint(remasked, meta, loss=True) != loss
        assert data_fingerprint(respanned, meta, loss=True) != loss
    other, _ = make_prepared(processor, n=4, offset=4)
    assert data_fingerprint(other, {}) != data_fingerprint(dataset, {})


@pytest.mark.parametrize(("final", "saved"), [(True, ["checkpoint-3"]), (False, ["checkpoint-2"])])
def test_save_final_checkpoint_decides_the_last_steps_checkpoint(tmp_path, tiny_llava, final, saved):
    """Off, only the save_steps checkpoints remain: no extra full save at the end."""
    model, processor = tiny_llava
    config = fast_config(max_steps=3, save_steps=2, save_total_limit=1, save_final_checkpoint=final)
    train_ddpo(
        config, copy.deepcopy(model), processor, make_prepared(processor, n=4), tmp_path, progress=False
    )
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == saved
    assert (tmp_path / "model.safetensors").is_file()


def test_a_finished_run_is_checkpointed_and_extended_like_a_longer_run(tmp_path, tiny_llava):
    """save_steps 500 and 2 steps: checkpoint-2 at the end all the same; resumed with max_steps
    4 it ends with the weights of a 4-step run, and a cosine schedule goes on at the longer
    schedule's rate, not at the finished one's 0."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    longer = fast_config(max_steps=4, save_steps=500)
    straight = train_ddpo(longer, copy.deepcopy(model), processor, prepared, tmp_path / "a", progress=False)
    short = fast_config(max_steps=2, save_steps=500)
    train_ddpo(short, copy.deepcopy(model), processor, prepared, tmp_path / "b", progress=False)
    assert [p.name for p in (tmp_path / "b").glob("checkpoint-*")] == ["checkpoint-2"]
    extended = train_ddpo(
        longer,
        copy.deepcopy(model),
        processor,
        prepared,
        tmp_path / "b",
        resume_from="latest",
        progress=False,
    )
    assert extended.global_step == 4 and [h["step"] for h in extended.history] == [3, 4]
    assert_same_weights(extended.model, straight.model)
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    cosine = dict(lr_scheduler="cosine", save_steps=3, save_total_limit=1)
    straight = train_ddpo(
        fast_config(**cosine, max_steps=4),
        copy.deepcopy(model),
        processor,
        prepared,
        tmp_path / "c",
        progress=False,
    )
    train_ddpo(
        fast_config(**cosine, max_steps=2),
        copy.deepcopy(model),
        processor,
        prepared,
        tmp_path / "d",
        progress=False,
    )
    extended = train_ddpo(
        fast_config(**cosine, max_steps=4),
        copy.deepcopy(model),
        processor,
        prepared,
        tmp_path / "d",
        resume_from="latest",
        progress=False,
    )
    assert extended.history[0]["lr"] == straight.history[2]["lr"] > 0
    # checkpoint-3 then the final checkpoint-4, the limit keeping the newest one only
    assert [p.name for p in (tmp_path / "c").glob("checkpoint-*")] == ["checkpoint-4"]


def test_a_checkpoint_from_before_the_mask_fingerprint_still_resumes(tmp_path, tiny_llava, caplog):
    """trainer_state.json used to record the prepared data's own fingerprint (ids and images):
    such a checkpoint resumes on that data, with a warning that the masks are not checked."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    config = fast_config(max_steps=1)
    train_ddpo(config, copy.deepcopy(model), processor, prepared, tmp_path, progress=False)
    marker = tmp_path / "checkpoint-1" / "trainer_state.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "data": prepared[1]["fingerprint"]}))
    longer = fast_config(max_steps=2)
    result = train_ddpo(
        longer, copy.deepcopy(model), processor, prepared, tmp_path, resume_from="latest", progress=False
    )
    assert result.global_step == 2 and any("predates" in r.getMessage() for r in caplog.records)
    other = make_prepared(processor, n=4, offset=4)
    with pytest.raises(InputError, match="prepared data test-4-0 -> "):
        train_ddpo(
            longer,
            copy.deepcopy(model),
            processor,
            other,
            tmp_path,
            resume_from=tmp_path / "checkpoint-1",
            progress=False,
        )


def test_an_in_memory_checkpoint_from_before_the_mask_fingerprint_still_resumes(tmp_path, tiny_llava, caplog):
    """Data passed without a prepare fingerprint used to be recorded by ``dataset._fingerprint``."""
    model, processor = tiny_llava
    dataset, _ = make_prepared(processor, n=4)
    train_ddpo(
        fast_config(max_steps=1), copy.deepcopy(model), processor, (dataset, {}), tmp_path, progress=False
    )
    marker = tmp_path / "checkpoint-1" / "trainer_state.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "data": dataset._fingerprint}))
    rebuilt, _ = make_prepared(processor, n=4)  # as a resuming process would load it
    result = train_ddpo(
        fast_config(max_steps=2),
        copy.deepcopy(model),
        processor,
        (rebuilt, {}),
        tmp_path,
        resume_from="latest",
        progress=False,
    )
    assert result.global_step == 2 and any("predates" in r.getMessage() for r in caplog.records)


def test_resume_refuses_a_checkpoint_of_another_output(tmp_path, tiny_llava):
    """Run A's checkpoint resumed into run B's folder would append A's steps to B's metrics."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    config = fast_config(max_steps=1)
    train_ddpo(config, copy.deepcopy(model), processor, prepared, tmp_path / "a", progress=False)
    longer = fast_config(max_steps=2)
    with pytest.raises(InputError, match="belongs to the run in .*a, not to --output .*b") as err:
        train_ddpo(
            longer,
            copy.deepcopy(model),
            processor,
            prepared,
            tmp_path / "b",
            resume_from=tmp_path / "a" / "checkpoint-1",
            progress=False,
        )
    assert err.value.field == "--resume" and not (tmp_path / "b").exists()
    # the same checkpoint resumes into its own run, named by a path of another spelling
    result = train_ddpo(
        longer,
        copy.deepcopy(model),
        processor,
        prepared,
        tmp_path / "b" / ".." / "a",
        resume_from=tmp_path / "a" / "checkpoint-1",
        progress=False,
    )
    assert result.global_step == 2


def test_resume_with_no_steps_left_is_refused(tmp_path, tiny_llava):
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    train_ddpo(fast_config(max_steps=2), copy.deepcopy(model), processor, prepared, tmp_path, progress=False)
    for max_steps in (1, 2):
        with pytest.raises(InputError, match=f"at step 2 and this run ends at step {max_steps}: nothing"):
            train_ddpo(
                fast_config(max_steps=max_steps),
                copy.deepcopy(model),
                processor,
                prepared,
                tmp_path,
                resume_from="latest",
                progress=False,
            )
    # num_epochs decides the length when max_steps is unset: one epoch of 4 pairs is 1 step here
    with pytest.raises(InputError, match="ends at step 1: nothing to train"):
        train_ddpo(
            fast_config(max_steps=None, num_epochs=1),
            copy.deepcopy(model),
            processor,
            prepared,
            tmp_path,
            resume_from="latest",
            progress=False,
        )
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]


def test_resume_refuses_another_process_count_model_or_dtype(tmp_path, tiny_llava):
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    train_ddpo(fast_config(max_steps=1), copy.deepcopy(model), processor, prepared, tmp_path, progress=False)
    marker = tmp_path / "checkpoint-1" / "trainer_state.json"
    state = json.loads(marker.read_text())
    assert (state["processes"], state["model"], state["dtype"]) == (1, "llava", "float32")

    def resume(start: torch.nn.Module):  # noqa: ANN202
        return train_ddpo(
            fast_config(max_steps=2),
            start,
            processor,
            prepared,
            tmp_path,
            resume_from="latest",
            progress=False,
        )

    other = copy.deepcopy(model)
    other.config._name_or_path = "someone/another-model"
    with pytest.raises(InputError, match="other settings \\(model llava -> someone/another-model\\)"):
        resume(other)
    with pytest.raises(InputError, match="other settings \\(weights dtype float32 -> bfloat16\\)"):
        resume(copy.deepcopy(model).to(torch.bfloat16))
    marker.write_text(json.dumps({**state, "processes": 2}))  # as a 2-process run records it
    with pytest.raises(InputError, match="other settings \\(processes 2 -> 1\\)"):
        resume(copy.deepcopy(model))
    # a checkpoint from before these were recorded: not checked
    marker.write_text(
        json.dumps({k: v for k, v in state.items() if k not in ("processes", "model", "dtype")})
    )
    assert resume(other).global_step == 2


def test_resume_drops_a_partial_last_metrics_line(tmp_path, tiny_llava, caplog):
    """A run killed while appending step 3's line: the resume from checkpoint-2 drops it and goes on."""
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=4)
    train_ddpo(fast_config(max_steps=2), copy.deepcopy(model), processor, prepared, tmp_path, progress=False)
    metrics = tmp_path / "metrics.jsonl"
    with metrics.open("a") as fh:
        fh.write('{"loss": 0.69, "rewards/chosen": 0.0')
    result = train_ddpo(
        fast_config(max_steps=3),
        copy.deepcopy(model),
        processor,
        prepared,
        tmp_path,
        resume_from="latest",
        progress=False,
    )
    assert result.global_step == 3
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    dropped = [r.getMessage() for r in caplog.records if "dropped line" in r.getMessage()]
    assert len(dropped) == 1 and "line(s) 3" in dropped[0]


def test_lora_target_modules_naming_no_layer_is_an_input_error(tiny_llava):
    from rlhfv.ddpo.trainer import apply_lora

    model, _ = tiny_llava
    for targets in (["nonexistent_proj"], ["q_proj", "nope"], ["language_model"]):
        with pytest.raises(InputError) as err:
            apply_lora(copy.deepcopy(model), fast_config(lora=True, lora_target_modules=targets))
        assert err.value.field == "lora_target_modules"
        assert f"{targets[-1]!r} names no single layer" in str(err.value) and "q_proj" in str(err.value)
    adapted = apply_lora(copy.deepcopy(model), fast_config(lora=True, lora_target_modules=["q_proj"]))
    assert any("lora_A" in name for name, _ in adapted.named_parameters())


def test_group_by_length_without_shuffle_keeps_dataset_order(tmp_path, tiny_llava):
    """shuffle false: the length groups are consecutive pairs (all 8 here), longest first,
    ties in dataset order, and every epoch the same."""
    from rlhfv.ddpo.batches import pair_lengths

    model, processor = tiny_llava
    dataset, metadata = make_prepared(processor, n=8)
    # a live reference: the collator then sees the training batches only (no precompute pass)
    config = fast_config(
        group_by_length=True, shuffle=False, per_device_batch_size=2, max_steps=8, reference="model"
    )
    trainer = Trainer(config, model, processor, (dataset, metadata), tmp_path, progress=False)
    seen: list[int] = []
    collator = trainer._collator()

    def recording(rows):  # noqa: ANN001, ANN202
        seen.extend(row["pair_index"] for row in rows)
        return collator(rows)

    trainer._collator = lambda: recording
    trainer.train()
    lengths = pair_lengths(dataset)
    by_length = sorted(range(8), key=lambda j: -lengths[j])
    assert len(set(lengths)) > 2 and by_length != list(range(8))
    assert seen == by_length + by_length  # two epochs


@pytest.mark.parametrize(("lora", "warned"), [(False, True), (True, False)])
def test_training_bfloat16_weights_directly_warns(tmp_path, tiny_llava, caplog, lora, warned):
    """AdamW steps bf16 weights in bf16: small updates round away. LoRA adapters are float32."""
    model, processor = tiny_llava
    config = fast_config(max_steps=1, lora=lora)
    train_ddpo(
        config, model.to(torch.bfloat16), processor, make_prepared(processor, n=4), tmp_path, progress=False
    )
    messages = [r.getMessage() for r in caplog.records if "training bfloat16 weights" in r.getMessage()]
    assert bool(messages) is warned
    if warned:
        assert "--dtype float32" in messages[0] and "DeepSpeed" in messages[0]
