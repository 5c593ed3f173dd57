"""Reference log-prob cache: right values, reused when unchanged, recomputed when model or data change."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.ddpo.reference import (
    CACHE_DIRNAME,
    FINGERPRINT_FILE,
    answer_logps,
    fingerprint_model,
    scatter_answer_logps,
)
from rlhfv.ddpo.trainer import Trainer
from rlhfv.errors import InputError

from .conftest import fast_config, make_prepared


def cache_folders(root):
    folder = root / CACHE_DIRNAME
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def reference_table(tmp_path, model, processor, prepared, cache, **config):
    trainer = Trainer(
        fast_config(**config),
        model,
        processor,
        prepared,
        tmp_path / "run",
        reference_cache=cache,
        progress=False,
    )
    accelerator = trainer._make_accelerator()
    return trainer._precomputed_table(accelerator, model)


def test_cached_values_are_the_frozen_models_token_logps(tmp_path, tiny_llava):
    from rlhfv.data.collator import PreferenceCollator
    from rlhfv.ddpo.batches import PreparedPairs, image_transform
    from rlhfv.ddpo.forward import token_logps

    model, processor = tiny_llava
    prepared = make_prepared(processor, n=3)
    table = reference_table(tmp_path, model, processor, prepared, tmp_path / "cache", reference_batch_size=2)
    assert len(table) == 3

    pairs = PreparedPairs(prepared[0], image_transform("pad", processor.image_processor))
    for i in range(3):  # one pair at a time: no padding, a different batch from the precompute's
        batch = PreferenceCollator(processor, gamma=5.0)([pairs[i]])
        with torch.no_grad():
            logps = token_logps(model, batch, mode="plain")
        chosen, rejected = answer_logps(logps, batch["labels"])
        assert table[i]["chosen_logps"] == pytest.approx(chosen, abs=1e-5)
        assert table[i]["rejected_logps"] == pytest.approx(rejected, abs=1e-5)
        assert len(chosen) == sum(
            1 for x in prepared[0][i]["chosen_input_ids"][prepared[0][i]["chosen_labels_start"] :]
        )


def test_cache_is_reused_and_recomputed_when_model_or_data_change(tmp_path, tiny_llava):
    model, processor = tiny_llava
    prepared = make_prepared(processor, n=2)
    cache = tmp_path / "cache"
    reference_table(tmp_path, model, processor, prepared, cache)
    (first,) = cache_folders(cache)
    marker = cache / CACHE_DIRNAME / first / FINGERPRINT_FILE
    stamp = marker.stat().st_mtime_ns

    # unchanged model and data, a different gamma: the same cache, not rewritten
    reference_table(tmp_path, model, processor, prepared, cache, gamma=2.0)
    assert cache_folders(cache) == [first] and marker.stat().st_mtime_ns == stamp
    # nor other changed-token masks (another --alignment): the cache holds raw per-token
    # log-probs, the masks weigh them at train time
    dataset, metadata = prepared
    remasked = dataset.map(lambda row: {"rejected_changed": [1 - x for x in row["rejected_changed"]]})
    reference_table(tmp_path, model, processor, (remasked, metadata), cache)
    assert cache_folders(cache) == [first] and marker.stat().st_mtime_ns == stamp

    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.lm_head.weight[0, 0] += 1e-3
    reference_table(tmp_path, changed, processor, prepared, cache)
    assert len(cache_folders(cache)) == 2

    other_data = make_prepared(processor, n=2, offset=2)
    reference_table(tmp_path, model, processor, other_data, cache)
    assert len(cache_folders(cache)) == 3


def test_fingerprint_sees_every_parameter(tiny_llava):
    model, _ = tiny_llava
    before = fingerprint_model(model)
    assert fingerprint_model(copy.deepcopy(model)) == before
    with torch.no_grad():
        next(model.model.vision_tower.parameters()).view(-1)[3] += 1e-6
    assert fingerprint_model(model) != before


def test_fingerprint_takes_a_0_dim_buffer(tiny_llava):
    """A registered scalar buffer (as CLIP's logit_scale) is hashed too, and weights still count."""
    model, _ = tiny_llava
    model.register_buffer("logit_scale", torch.tensor(2.6592))
    before = fingerprint_model(model)
    with torch.no_grad():
        model.logit_scale += 1
    scaled = fingerprint_model(model)
    assert scaled != before
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1e-6
    assert fingerprint_model(model) != scaled


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
def test_answer_logps_round_trip(lengths, seed):
    """Packing per-token values by answer position and scattering them back is the identity on answers."""
    width = max(p + a for p, a in lengths) + 2
    labels = torch.full((len(lengths), width), -100)
    for n, (prompt, answer) in enumerate(lengths):
        labels[n, prompt + 1 : prompt + 1 + answer] = 7
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(len(lengths), width - 1, generator=gen) * (labels[:, 1:] != -100)
    packed = answer_logps(values, labels)
    assert [len(r) for r in packed] == [a for _, a in lengths]
    torch.testing.assert_close(scatter_answer_logps(packed, labels), values)


def test_stale_cache_row_is_an_input_error():
    labels = torch.tensor([[-100, 5, 6, -100]])
    with pytest.raises(InputError, match="reference_logps"):
        scatter_answer_logps([[0.1]], labels)
