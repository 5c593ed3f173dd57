"""The scene world's supervised data (``rlhfv.scenes.pipeline``)."""

from __future__ import annotations

import pytest

from rlhfv.scenes.language import claims_of
from rlhfv.scenes.pipeline import png_bytes, sft_corrections
from rlhfv.scenes.world import scene_for


def test_sft_records_show_the_whole_scene_but_subset_captions_name_part_of_it():
    full = sft_corrections(40, seed=5)
    part = sft_corrections(40, seed=5, captions="subset")
    fewer = 0
    for i, (a, b) in enumerate(zip(full, part, strict=True)):
        scene = scene_for("sft", i, 5)
        assert a.image == b.image == png_bytes(scene)
        named_all = {c.cls for c in claims_of(a.corrected)}
        named_part = {c.cls for c in claims_of(b.corrected)}
        assert named_all == scene.classes
        assert named_part and named_part <= scene.classes
        fewer += len(named_part) < len(scene.classes)
    assert fewer > 10  # subsets are proper most of the time for multi-object scenes
    with pytest.raises(ValueError, match="captions must be one of"):
        sft_corrections(1, captions="some")


def test_train_scene_sft_runs_every_pass_ending_with_subset_captions(tmp_path):
    from rlhfv.data import read_jsonl
    from rlhfv.scenes.model import SceneModelConfig
    from rlhfv.scenes.pipeline import SFTSettings, train_scene_sft

    settings = SFTSettings(
        n_scenes=24, epochs=0.4, second_epochs=0.4, passes=2, subset_epochs=0.4, batch_size=8
    )
    model, processor = train_scene_sft(settings, tmp_path, SceneModelConfig(hidden_size=32, num_layers=1))
    assert not model.training
    # passes: data0 (seed 0, all objects), data1 (seed 1, all), data2 (seed 2, subset captions)
    assert sorted(p.name for p in tmp_path.glob("data*")) == ["data0", "data1", "data2"]
    for k, captions in ((0, "all"), (1, "all"), (2, "subset")):
        records = list(read_jsonl(tmp_path / f"data{k}" / "corrections.jsonl"))
        expected = sft_corrections(24, k, captions=captions)
        assert [r.corrected for r in records] == [r.corrected for r in expected]
    subset = list(read_jsonl(tmp_path / "data2" / "corrections.jsonl"))
    assert any(
        len(claims_of(r.corrected)) < len(scene_for("sft", i, 2).objects) for i, r in enumerate(subset)
    )
    assert (tmp_path / "model2" / "model.safetensors").is_file()
