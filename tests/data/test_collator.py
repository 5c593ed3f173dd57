"""Encoding + collation for the four processor families, checked against the real tiny models."""

from __future__ import annotations

import doctest
import io
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rlhfv.data.collator import PreferenceCollator
from rlhfv.data.diff import changed_segments
from rlhfv.data.encode import encode_correction
from rlhfv.data.schema import Correction
from rlhfv.tiny import ARCHITECTURES, build_tiny

IMAGES = Path(__file__).parents[2] / ".." / "shared" / "data" / "images"


def _png(size, colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


PAIRS = [
    Correction(
        image=str((IMAGES / "000122635.jpg").resolve()),
        question="<image>\nWhat is in the image?",
        original="There are two dogs on the grass.",
        corrected="There is one dog on the green grass.",
        id="a",
    ),
    Correction(
        image=_png((20, 64), "blue"),  # tall: LLaVA-NeXT picks another grid than for the photo
        question="Describe the picture.",
        original="A red car is parked next to a tree.",
        corrected="A blue car is parked.",
        id="b",
    ),
]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny(request):
    return build_tiny(request.param)


def test_batch_runs_through_the_real_model_and_lines_up_with_the_text(tiny):
    model, processor = tiny
    rows = [{**encode_correction(c, processor), "pair_index": i} for i, c in enumerate(PAIRS)]
    batch = PreferenceCollator(processor, gamma=3.0, pad_to_multiple_of=8)(rows)
    n, t = batch["input_ids"].shape
    assert n == 4 and t % 8 == 0
    assert batch["pair_index"].tolist() == [0, 1]

    # image tokens: the model itself raises when placeholders and image features disagree
    inputs = {k: v for k, v in batch.items() if k not in ("token_weights", "pair_index")}
    with torch.no_grad():
        out = model(**inputs)
    assert torch.isfinite(out.loss)
    image_token_id = model.config.image_token_id
    per_row = (batch["input_ids"] == image_token_id).sum(1)
    assert torch.equal(per_row[:2], per_row[2:])  # each image serves its chosen and rejected row
    assert (per_row > 0).all()

    tok = processor.tokenizer
    answers = [c.corrected for c in PAIRS] + [c.original for c in PAIRS]
    for k, answer in enumerate(answers):
        labelled = batch["labels"][k][batch["labels"][k] != -100]
        expected = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert labelled.tolist() == expected
        # labels are the answer tokens at the end of the real sequence, then padding
        real = int(batch["attention_mask"][k].sum())
        assert batch["attention_mask"][k, :real].all() and not batch["attention_mask"][k, real:].any()
        assert batch["labels"][k, real - len(expected) : real].tolist() == expected
        w = batch["token_weights"][k]
        assert (w[batch["labels"][k] == -100] == 0).all()
        assert set(w[batch["labels"][k] != -100].tolist()) <= {1.0, 3.0}


def test_changed_tokens_get_gamma_on_both_sides(tiny):
    _, processor = tiny
    batch = PreferenceCollator(processor, gamma=4.0)([encode_correction(PAIRS[0], processor)])
    tok = processor.tokenizer

    def weighted_words(k):
        keep = batch["labels"][k] != -100
        ids, w = batch["input_ids"][k][keep].tolist(), batch["token_weights"][k][keep].tolist()
        return [(tok.convert_ids_to_tokens(i), x) for i, x in zip(ids, w, strict=True)]

    # "There are two dogs on the grass." -> "There is one dog on the green grass."
    assert weighted_words(0) == [
        ("there", 1.0),
        ("is", 4.0),
        ("one", 4.0),
        ("dog", 4.0),
        ("on", 1.0),
        ("the", 1.0),
        ("green", 4.0),
        ("grass", 1.0),
        (".", 1.0),
        ("</s>", 1.0),
    ]
    assert [w for _, w in weighted_words(1)] == [1.0, 4.0, 4.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_reference_alignment_marks_the_short_match_between_replacements(tiny):
    _, processor = tiny
    row = encode_correction(PAIRS[0], processor, alignment="reference")
    start = row["chosen_labels_start"]
    # "on the" is a 2-token match between two changes: the reference code drops it
    assert row["chosen_changed"][start:] == [0, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert row["rejected_changed"][start:] == [0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert not any(row["chosen_changed"][:start])


def test_docstring_examples_run():
    import rlhfv.data.collator
    import rlhfv.data.diff
    import rlhfv.data.weights

    for module in (rlhfv.data.collator, rlhfv.data.diff, rlhfv.data.weights):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


_WORDS = ["a", "the", "red", "blue", "dog", "cat", "two", "one", "on", "grass", "sitting", ".", ",", "zebra"]
_answer = st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12).map(" ".join)


@pytest.fixture(scope="module")
def llava_processor():
    return build_tiny("llava")[1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_answer, _answer, st.floats(min_value=0.0, max_value=10.0, allow_nan=False))
def test_weights_are_gamma_exactly_on_tokens_overlapping_changes(llava_processor, original, corrected, gamma):
    processor = llava_processor
    if original == corrected:
        corrected = corrected + " zebra"
    pair = Correction(image=PAIRS[1].image, question="What is it?", original=original, corrected=corrected)
    batch = PreferenceCollator(processor, gamma=gamma)([encode_correction(pair, processor)])
    segs = changed_segments(original, corrected)
    tok = processor.tokenizer
    for k, (text, side) in enumerate(((corrected, "corrected"), (original, "original"))):
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        spans = [
            (s.corrected_start, s.corrected_end)
            if side == "corrected"
            else (s.original_start, s.original_end)
            for s in segs
        ]
        expected = [
            gamma if any(max(a, lo) < min(b, hi) for lo, hi in spans) else 1.0 for a, b in offsets
        ] + [1.0]  # eos
        keep = batch["labels"][k] != -100
        assert batch["token_weights"][k][keep].tolist() == pytest.approx(expected)
        assert (batch["token_weights"][k][~keep] == 0).all()


def _jpeg(size, colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_prompt_encoder_cache_gives_exactly_the_processors_ids(arch):
    from rlhfv.data.encode import PromptEncoder, open_image, prompt_ids

    _, processor = build_tiny(arch)
    if arch == "qwen2_vl":  # let the patch grid follow the image size
        processor.image_processor.size = {"shortest_edge": 8 * 8, "longest_edge": 64 * 64}
    encoder = PromptEncoder(processor, check_every=5)
    sizes = [(40, 30), (30, 40), (64, 16), (100, 100), (40, 30)]
    questions = ["What is in the image?", "<image>\nDescribe the picture in detail.", "How many dogs?"]
    expansions = set()
    for k in range(15):
        data = _jpeg(sizes[k % len(sizes)], ("red", "blue", "green")[k % 3])
        question = questions[k % len(questions)]
        full = prompt_ids(processor, open_image(data), question)
        assert encoder(data, question) == full
        expansions.add(full.count(processor.tokenizer.convert_tokens_to_ids(processor.image_token)))
    assert encoder.enabled
    assert encoder.full_runs < 15  # the cache was used
    if arch in ("llava_next", "qwen2_vl"):
        assert len(expansions) > 1  # the number of image tokens does depend on the size


def test_truncated_jpeg_is_an_unreadable_image():
    from rlhfv.data.encode import image_size
    from rlhfv.errors import InputError

    data = (IMAGES / "000122635.jpg").read_bytes()
    assert image_size(data) == (448, 336)
    # no Python object in the message: the file when there is one, and what is wrong
    with pytest.raises(InputError) as info:
        image_size(b"not an image", path="c.jsonl", row=3, image="pics/a.jpg")
    assert str(info.value) == (
        "c.jsonl: row 3: field image: pics/a.jpg is not a JPEG/PNG/WebP/GIF image (or a corrupt one)"
    )
    with pytest.raises(InputError) as info:
        image_size(data[: len(data) // 2])
    assert info.value.reason == "unreadable_image"
    assert str(info.value) == (
        "field image: not a JPEG/PNG/WebP/GIF image (or a corrupt one: image file is truncated "
        "(8 bytes not processed))"
    )


def test_idefics3_with_image_splitting_pads_tiles_and_the_model_accepts_them():
    # SmolVLM-style: images larger than the tile size are split into tiles + a global view
    model, processor = build_tiny("idefics3")
    ip = processor.image_processor
    ip.do_image_splitting, ip.size, ip.max_image_size = True, {"longest_edge": 64}, {"longest_edge": 32}
    pairs = [
        Correction(
            image=_png(size, "red"), question="What is it?", original="a red dog", corrected="a blue dog"
        )
        for size in ((64, 64), (20, 60))
    ]
    rows = [encode_correction(c, processor) for c in pairs]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    counts = [r["chosen_input_ids"].count(image_id) for r in rows]
    assert counts[0] > counts[1]  # 2x2 tiles + global view vs fewer tiles
    batch = PreferenceCollator(processor)(rows)
    assert batch["pixel_values"].shape[:2] == batch["pixel_attention_mask"].shape[:2]
    assert batch["pixel_values"].shape[0] == 4
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k not in ("token_weights", "pair_index")})
    assert torch.isfinite(out.loss)


TURN_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] | FILTER }}{% endif %}{% endfor %}"
    "</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


@pytest.mark.parametrize(("jinja_filter", "framed"), [("string", True), ("upper", False)])
def test_answer_takes_the_templates_end_of_turn_and_eos_appears_once(jinja_filter, framed):
    from rlhfv.data.encode import completion_text

    model, processor = build_tiny("llava")
    processor.chat_template = TURN_TEMPLATE.replace("FILTER", jinja_filter)
    text, at = completion_text(processor, "What is it?", "a blue dog.")
    # "string" keeps the answer: the turn is "a blue dog.</s>\n"; "upper" rewrites it, so
    # the bare answer is used and eos appended
    assert (text, at) == (("a blue dog.</s>\n", 0) if framed else ("a blue dog.", 0))
    pair = Correction(
        image=PAIRS[1].image, question="What is it?", original="a red dog.", corrected="a blue dog."
    )
    row = encode_correction(pair, processor)
    tok = processor.tokenizer
    start = row["chosen_labels_start"]
    assert row["chosen_input_ids"][:2] == tok.convert_tokens_to_ids(["<s>", "user"])
    assert row["chosen_input_ids"][start:] == tok("a blue dog.", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert row["chosen_changed"][start:] == [0, 1, 0, 0, 0]
    batch = PreferenceCollator(processor, gamma=2.0)([row])
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k not in ("token_weights", "pair_index")})
