"""The policy forward: plain vs shared-prefix per-token log-probs on tiny real models."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from PIL import Image

from rlhfv.data.collator import PreferenceCollator
from rlhfv.data.encode import encode_correction
from rlhfv.data.schema import Correction
from rlhfv.ddpo import forward
from rlhfv.ddpo.forward import (
    LengthGroupedSampler,
    length_grouped_indices,
    shared_prefix_unsupported_reason,
    token_logps,
)
from rlhfv.tiny import build_tiny

# (question, chosen, rejected): prompts of different lengths, answers of different
# lengths, one pair whose answers share their first words, one where chosen is longer.
PAIRS = [
    ("what is in the image ?", "a red dog is sitting on the grass .", "a cat ."),
    ("describe the image", "two people .", "two people near a blue car on the road ."),
    ("how many dogs are there ?", "there is one dog near the tree .", "there are two dogs ."),
]


def _image_bytes(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(24, 36, 3, generator=g) * 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def make_batch(processor, pairs=PAIRS, gamma: float = 5.0) -> dict[str, torch.Tensor]:
    """A batch per docs/architecture.md, through the project's encoder and collator."""
    rows = []
    for i, (question, chosen, rejected) in enumerate(pairs):
        record = Correction(image=_image_bytes(i), question=question, original=rejected, corrected=chosen)
        rows.append({**encode_correction(record, processor), "pair_index": i})
    return PreferenceCollator(processor, gamma=gamma)(rows)


@pytest.fixture(scope="module", params=["llava", "qwen2_vl", "llava_next", "idefics3"])
def arch_model(request):
    model, processor = build_tiny(request.param)
    return request.param, model.float(), make_batch(processor)


def test_plain_matches_independent_full_forward(arch_model):
    """plain mode (logits only from the first answer on) == log_softmax of the full model output."""
    _arch, model, batch = arch_model
    with torch.no_grad():
        got = token_logps(model, batch, mode="plain")
        inputs = forward.model_inputs(model, batch)
        logits = model(**inputs).logits.float()
    labels = batch["labels"]
    expected = torch.zeros(labels.shape[0], labels.shape[1] - 1)
    for r in range(labels.shape[0]):  # a plain loop over tokens
        for t in range(1, labels.shape[1]):
            if labels[r, t] != -100:
                expected[r, t - 1] = torch.log_softmax(logits[r, t - 1], -1)[labels[r, t]]
    assert got.shape == (labels.shape[0], labels.shape[1] - 1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert bool((got[labels[:, 1:] == -100] == 0).all())
    assert bool((got[labels[:, 1:] != -100] < 0).all())


def test_shared_prefix_equals_plain(arch_model):
    arch, model, batch = arch_model
    assert shared_prefix_unsupported_reason(model, batch) is None
    with torch.no_grad():
        plain = token_logps(model, batch, mode="plain")
        shared = token_logps(model, batch, mode="shared_prefix")
    assert shared.shape == plain.shape
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)
    # the shared forward really is different work: one packed row per pair
    assert (batch["labels"][:, 1:] != -100).sum() > 0


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_shared_prefix_gradients_equal_plain(arch):
    model, processor = build_tiny(arch)
    model.train()  # dropout is 0 in the tiny configs; train mode exercises the training path
    batch = make_batch(processor)
    weights = batch["token_weights"][:, 1:]
    grads = {}
    for mode in ("plain", "shared_prefix"):
        model.zero_grad()
        (token_logps(model, batch, mode=mode) * weights).sum().backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    names = [n for n in grads["plain"] if "vision" in n or "visual" in n][:2]
    names += [n for n in grads["plain"] if "layers.1." in n and "vision" not in n and "visual" not in n][:2]
    names += [n for n in grads["plain"] if "lm_head" in n or "projector" in n or "merger" in n][:2]
    assert len(names) >= 5
    assert set(grads["plain"]) == set(grads["shared_prefix"])
    for n in names:
        assert grads["plain"][n].abs().sum() > 0, n
        torch.testing.assert_close(grads["shared_prefix"][n], grads["plain"][n], atol=1e-5, rtol=1e-4)


def test_auto_uses_shared_prefix_when_supported(monkeypatch):
    model, processor = build_tiny("llava")
    batch = make_batch(processor)
    batch["ids"] = ["pair-a", "pair-b", "pair-c"]  # keys the model does not take are ignored
    calls = []
    real = forward.shared_prefix_token_logps
    monkeypatch.setattr(forward, "shared_prefix_token_logps", lambda m, b: calls.append(1) or real(m, b))
    with torch.no_grad():
        token_logps(model, batch)
    assert calls == [1]


def test_unsupported_attention_is_reported():
    model, processor = build_tiny("llava")
    batch = make_batch(processor)
    text_config = model.config.get_text_config()
    text_config._attn_implementation = "flash_attention_2"
    try:
        reason = shared_prefix_unsupported_reason(model, batch)
    finally:
        text_config._attn_implementation = "sdpa"
    assert reason is not None and "flash_attention_2" in reason
    assert shared_prefix_unsupported_reason(model, batch) is None


def test_auto_falls_back_to_plain_with_one_warning(caplog):
    """A batch whose rejected row has another image than its chosen row cannot share the prefix."""
    model, processor = build_tiny("llava")
    batch = make_batch(processor)
    n_pairs = batch["pair_index"].shape[0]
    batch["pixel_values"][n_pairs] += 1.0  # rejected row of pair 0 gets another image
    forward._warned.clear()
    with caplog.at_level(logging.WARNING, logger="rlhfv.ddpo.forward"), torch.no_grad():
        got = token_logps(model, batch)
        token_logps(model, batch)
        plain = token_logps(model, batch, mode="plain")
    warnings = [r for r in caplog.records if "shared-prefix forward unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "image" in warnings[0].getMessage()
    torch.testing.assert_close(got, plain, atol=0, rtol=0)
    with pytest.raises(ValueError, match="shared-prefix forward unavailable"):
        token_logps(model, batch, mode="shared_prefix")


def test_single_pair_and_identical_answers():
    """Edge cases: B = 1; chosen == rejected (the whole row is the shared prefix)."""
    model, processor = build_tiny("qwen2_vl")
    for pairs in ([PAIRS[0]], [("what is this ?", "a dog .", "a dog .")]):
        batch = make_batch(processor, pairs)
        with torch.no_grad():
            plain = token_logps(model, batch, mode="plain")
            shared = token_logps(model, batch, mode="shared_prefix")
        torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)


def test_length_grouped_indices_is_a_permutation_with_sorted_batches():
    lengths = [5, 50, 7, 48, 6, 51, 8, 49, 3, 47, 52, 4]
    order = length_grouped_indices(lengths, batch_size=4, seed=1)
    assert sorted(order) == list(range(len(lengths)))
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert max(lengths[j] for j in batches[0]) == max(lengths)
    # with one mega-batch holding everything, each batch is a contiguous run of the sorted lengths
    spans = sorted((min(lengths[j] for j in b), max(lengths[j] for j in b)) for b in batches)
    for (_lo1, hi1), (lo2, _hi2) in zip(spans, spans[1:], strict=False):
        assert hi1 <= lo2
    padded = sum(len(b) * max(lengths[j] for j in b) for b in batches)
    naive = sum(4 * max(lengths[j] for j in range(i, i + 4)) for i in range(0, 12, 4))
    assert padded < naive
    sampler = LengthGroupedSampler(lengths, batch_size=4)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(list(sampler)) == sorted(first) and len(sampler) == len(lengths)


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_shared_prefix_runs_images_and_prefix_once_per_pair(arch):
    """The vision tower sees B images (not 2B); the language model gets B packed rows,
    each shorter than chosen + rejected rows together."""
    model, processor = build_tiny(arch)
    batch = make_batch(processor)
    n_pairs = batch["pair_index"].shape[0]
    seen = {}
    inner = model.model
    vision = inner.vision_tower if arch == "llava" else inner.visual

    def record(name):
        def hook(_module, args, kwargs):
            seen.setdefault(name, (args, kwargs))

        return hook

    h1 = vision.register_forward_pre_hook(record("vision"), with_kwargs=True)
    h2 = inner.language_model.register_forward_pre_hook(record("lm"), with_kwargs=True)
    try:
        with torch.no_grad():
            token_logps(model, batch, mode="shared_prefix")
    finally:
        h1.remove()
        h2.remove()
    args, kwargs = seen["vision"]
    pixels = args[0] if args else kwargs.get("pixel_values", kwargs.get("hidden_states"))
    full = batch["pixel_values"].shape[0]
    assert pixels.shape[0] == full // 2
    lengths = batch["attention_mask"].sum(1)
    lm_shape = seen["lm"][1]["inputs_embeds"].shape
    assert lm_shape[0] == n_pairs
    assert lm_shape[1] < int((lengths[:n_pairs] + lengths[n_pairs:]).max())


def test_shared_prefix_under_lora_and_gradient_checkpointing():
    """A peft-wrapped policy with gradient checkpointing: same log-probs and LoRA gradients."""
    from peft import LoraConfig, get_peft_model

    model, processor = build_tiny("llava")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.train()
    batch = make_batch(processor)
    assert shared_prefix_unsupported_reason(model, batch) is None
    weights = batch["token_weights"][:, 1:]
    grads, values = {}, {}
    for mode in ("plain", "shared_prefix"):
        model.zero_grad()
        values[mode] = token_logps(model, batch, mode=mode)
        (values[mode] * weights).sum().backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(values["shared_prefix"], values["plain"], atol=1e-5, rtol=0)
    assert grads["plain"] and all("lora_" in n for n in grads["plain"])
    for n, g in grads["plain"].items():
        torch.testing.assert_close(grads["shared_prefix"][n], g, atol=1e-5, rtol=1e-4)
