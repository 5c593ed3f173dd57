"""The scene world's supervised data (``rlhfv.scenes.pipeline``)."""

from __future__ import annotations

import pytest

from rlhfv.scenes.language import claims_of
from rlhfv.scenes.pipeline import png_bytes, sft_corrections
from rlhfv.scenes.world import partner_of, scene_for


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


def test_partner_text_names_an_absent_partner_right_after_its_anchor():
    plain = sft_corrections(300, seed=2, captions="subset")
    assert [r.corrected for r in sft_corrections(300, seed=2, captions="subset", partner_text_prob=0.0)] == [
        r.corrected for r in plain
    ]
    noisy = sft_corrections(300, seed=2, captions="subset", partner_text_prob=1.0)
    possible = named_partner = 0
    for i, (record, clean) in enumerate(zip(noisy, plain, strict=True)):
        scene = scene_for("sft", i, 2)
        assert record.image == clean.image  # only the text changes
        claims = claims_of(record.corrected)
        absent = [c for c in claims if c.cls not in scene.classes]
        assert len(absent) <= 1
        # where a named object's partner is missing from the scene, the caption must name it
        named = [c.cls for c in claims if c.cls in scene.classes]
        possible += any(partner_of(c) and partner_of(c) not in scene.classes for c in named)
        if absent:
            named_partner += 1
            k = claims.index(absent[0])
            anchor = claims[k - 1]  # the sentence right before names the object it goes with
            assert partner_of(anchor.cls) == absent[0].cls and anchor.cls in scene.classes
    assert named_partner > 50
    # p=1 names one wherever a named object's partner is missing (a scene of at most 6 objects
    # always leaves a free cell for it)
    assert named_partner == possible
    with pytest.raises(ValueError, match="partner_text_prob"):
        sft_corrections(1, partner_text_prob=1.5)


def test_train_scene_sft_runs_every_pass_ending_with_subset_captions(tmp_path):
    from rlhfv.data import read_jsonl
    from rlhfv.scenes.model import SceneModelConfig
    from rlhfv.scenes.pipeline import SFTSettings, train_scene_sft

    settings = SFTSettings(
        n_scenes=24,
        epochs=0.4,
        second_epochs=0.4,
        passes=2,
        subset_epochs=0.4,
        batch_size=8,
        partner_text_prob=0.7,
    )
    model, processor = train_scene_sft(settings, tmp_path, SceneModelConfig(hidden_size=32, num_layers=1))
    assert not model.training
    # passes: data0 (seed 0, all objects), data1 (seed 1, all), data2 (seed 2, subset captions,
    # 70% of them naming an absent partner where the scene allows it)
    assert sorted(p.name for p in tmp_path.glob("data*")) == ["data0", "data1", "data2"]
    for k, captions, partner_text_prob in ((0, "all", 0.0), (1, "all", 0.0), (2, "subset", 0.7)):
        records = list(read_jsonl(tmp_path / f"data{k}" / "corrections.jsonl"))
        expected = sft_corrections(24, k, captions=captions, partner_text_prob=partner_text_prob)
        assert [r.corrected for r in records] == [r.corrected for r in expected]
    subset = list(read_jsonl(tmp_path / "data2" / "corrections.jsonl"))
    assert any(
        len(claims_of(r.corrected)) < len(scene_for("sft", i, 2).objects) for i, r in enumerate(subset)
    )
    assert (tmp_path / "model2" / "model.safetensors").is_file()


def test_bad_counts_and_settings_are_refused_before_any_work():
    from rlhfv.errors import InputError
    from rlhfv.scenes.pipeline import SFTSettings, collect_corrections, eval_set

    # chunk 0 used to loop for ever; the checks come before the model is used
    with pytest.raises(ValueError, match="chunk must be a whole number >= 1, got 0"):
        collect_corrections(None, None, 10, chunk=0)
    with pytest.raises(ValueError, match="n must be a whole number >= 0, got -1"):
        collect_corrections(None, None, -1)
    with pytest.raises(ValueError, match="max_answers"):
        collect_corrections(None, None, 10, max_answers=0)
    with pytest.raises(ValueError, match="n must be"):
        eval_set(-3)
    with pytest.raises(ValueError, match="n must be"):
        sft_corrections(2.5)
    # SFT settings that would fail part-way through 30 minutes of training, named by their field
    for bad, field in (
        ({"n_scenes": 0}, "n_scenes"),
        ({"n_scenes": 16}, "n_scenes"),  # fewer than one batch of 32
        ({"passes": 0}, "passes"),
        ({"epochs": 0}, "epochs"),
        ({"second_learning_rate": -1.0}, "second_learning_rate"),
        ({"subset_epochs": float("nan")}, "subset_epochs"),
        ({"partner_text_prob": 1.5}, "partner_text_prob"),
        ({"image_pipeline": "crop"}, "image_pipeline"),
        ({"seed": -1}, "seed"),
    ):
        with pytest.raises(InputError) as err:
            SFTSettings(**bad)
        assert err.value.field == field, bad
