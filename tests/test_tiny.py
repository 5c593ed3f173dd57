"""The tiny models are the real transformers classes: forward, image tokens, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlhfv.tiny import ARCHITECTURES, build_tiny, word_level_tokenizer, words_of


def test_word_level_tokenizer_offsets_and_unknown_words():
    tok = word_level_tokenizer(["a", "red", "dog"])
    enc = tok("A red dog, zebra.", add_special_tokens=False, return_offsets_mapping=True)
    pieces = ["A red dog, zebra."[s:e] for s, e in enc["offset_mapping"]]
    assert pieces == ["A", "red", "dog", ",", "zebra", "."]
    assert enc["input_ids"][4] == tok.unk_token_id
    assert tok.decode(enc["input_ids"][:4]) == "a red dog,"


def test_words_of_keeps_first_seen_order():
    assert words_of(["The dog, the cat.", "A dog"]) == ["the", "dog", "cat", "a"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_forward_and_reload(arch, tmp_path):
    model, processor = build_tiny(arch)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (48, 40), "red")
    inputs = processor(images=[image], text=[prompt + " a red dog."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert logits.shape[-1] == model.config.get_text_config().vocab_size
    image_token_id = getattr(model.config, "image_token_id", None) or model.config.image_token_index
    assert (inputs["input_ids"] == image_token_id).sum() > 1  # the placeholder was expanded

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    reprocessed = AutoProcessor.from_pretrained(tmp_path)(
        images=[image], text=[prompt + " a red dog."], return_tensors="pt"
    )
    assert torch.equal(reprocessed["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**reprocessed).logits, logits)
