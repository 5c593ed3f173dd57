"""The scene model: a real LLaVA that plain transformers loads, over the world's vocabulary."""

from __future__ import annotations

import random

import pytest

from rlhfv.scenes.language import PROMPTS, describe
from rlhfv.scenes.model import CHECKPOINT_DIR, SceneModelConfig, build_scene_model, has_shipped_checkpoint
from rlhfv.scenes.world import scene_for


def test_tokenizer_knows_every_word_of_the_world():
    _, processor = build_scene_model(SceneModelConfig(hidden_size=32, num_layers=1))
    tok = processor.tokenizer
    rng = random.Random(0)
    texts = [*PROMPTS, *(describe(scene_for("sft", i), rng) for i in range(100))]
    for text in texts:
        assert tok.unk_token_id not in tok(text)["input_ids"], text
    # the word-level decode round-trips a description up to case
    text = texts[-1]
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text.lower()


@pytest.mark.parametrize(("patch_size", "tokens_per_cell"), [(8, 4), (16, 1)])
def test_image_tokens_tile_the_grid_cells(patch_size, tokens_per_cell):
    """The processor cuts a render into patches that tile the 3x3 grid: 2x2 tokens per cell
    (the default, the shipped checkpoint) or exactly one token per cell (patch 16)."""
    import torch

    from rlhfv.scenes.render import render_scene

    config = SceneModelConfig(hidden_size=32, num_layers=1, patch_size=patch_size)
    model, processor = build_scene_model(config)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPTS[0]}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=[render_scene(scene_for("test", 0))], text=[prompt], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 9 * tokens_per_cell
    assert model.config.vision_config.patch_size == patch_size
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_saved_model_loads_with_plain_transformers(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rlhfv.scenes.render import render_scene

    model, processor = build_scene_model(SceneModelConfig(hidden_size=32, num_layers=1))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    prompt = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPTS[0]}]}],
        add_generation_prompt=True,
    )
    inputs = proc(images=[render_scene(scene_for("test", 0))], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        a = model(**inputs).logits
        b = loaded(**inputs).logits
    torch.testing.assert_close(a, b)


@pytest.mark.skipif(not has_shipped_checkpoint(), reason="no shipped SFT checkpoint in this checkout")
def test_shipped_checkpoint_is_small_and_describes_scenes():
    from rlhfv.scenes.language import claims_of
    from rlhfv.scenes.model import load_scene_model
    from rlhfv.scenes.pipeline import eval_set, generate

    size = sum(p.stat().st_size for p in CHECKPOINT_DIR.iterdir())
    assert size < 10 * 2**20
    model, processor = load_scene_model()
    scenes, prompts = eval_set(8)
    answers = generate(model, processor, scenes, prompts, "test")
    # a trained model answers in the world's grammar: most answers make grammatical claims
    grammatical = [any(c.template is not None for c in claims_of(a)) for a in answers]
    assert sum(grammatical) >= 6
