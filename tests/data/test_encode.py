"""Encoding through processors that differ from the tiny built-ins: a Python (slow) tokenizer
without offsets, an image processor that refuses some images."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rlhfv.data.encode import PromptEncoder, encode_correction, open_image, prompt_ids
from rlhfv.data.prepare import load_prepared, prepare
from rlhfv.data.schema import Correction
from rlhfv.errors import InputError
from rlhfv.tiny import DEFAULT_WORDS, PUNCTUATION, build_tiny


def _png(size=(40, 30), colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _slow_llava(fast):
    """``fast`` (the tiny LLaVA processor) with its word-level vocabulary in a Python tokenizer:
    same ids, but no ``offset_mapping`` (transformers ignores the request for these)."""
    from transformers import LlavaProcessor, PythonBackend

    class WordTokenizer(PythonBackend):
        vocab_files_names = {}  # no files: the vocabulary is passed in

        def __init__(self, vocab=None, **kwargs):
            self._vocab = dict(vocab)
            self._words = {i: w for w, i in self._vocab.items()}
            super().__init__(**kwargs)

        @property
        def vocab_size(self):
            return len(self._vocab)

        def get_vocab(self):
            return dict(self._vocab)

        def _tokenize(self, text, **kwargs):  # the fast one: lower-cased, punctuation split off
            return re.findall(r"\w+|[^\w\s]", text.lower())

        def _convert_token_to_id(self, token):
            return self._vocab.get(token, self._vocab["<unk>"])

        def _convert_id_to_token(self, index):
            return self._words.get(index, "<unk>")

    slow = WordTokenizer(
        vocab=fast.tokenizer.get_vocab(),
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    return LlavaProcessor(
        image_processor=fast.image_processor,
        tokenizer=slow,
        patch_size=fast.patch_size,
        vision_feature_select_strategy=fast.vision_feature_select_strategy,
        num_additional_image_tokens=fast.num_additional_image_tokens,
        chat_template=fast.chat_template,
    )


@pytest.fixture(scope="module")
def llava_pair():
    fast = build_tiny("llava")[1]
    return fast, _slow_llava(fast)


_answer = st.lists(st.sampled_from([*DEFAULT_WORDS[:80], *PUNCTUATION[:4]]), min_size=1, max_size=12).map(
    " ".join
)


@settings(max_examples=30, deadline=None)
@given(_answer, _answer)
def test_reference_alignment_needs_no_offsets_and_matches_the_fast_tokenizer(llava_pair, original, corrected):
    fast, slow = llava_pair
    assert "offset_mapping" not in slow.tokenizer("a red dog", return_offsets_mapping=True)
    if original == corrected:
        return
    c = Correction(image=_png(), question="what is it?", original=original, corrected=corrected)
    assert encode_correction(c, slow, alignment="reference") == encode_correction(
        c, fast, alignment="reference"
    )


def test_paper_alignment_without_offsets_says_what_to_do(llava_pair, tmp_path):
    _, slow = llava_pair
    c = Correction(image=_png(), question="what is it?", original="a red dog", corrected="a blue dog")
    with pytest.raises(InputError) as info:
        encode_correction(c, slow, alignment="paper")
    assert (info.value.field, info.value.reason) == ("--processor", "no_offsets")
    assert "gives no character offsets" in str(info.value) and "--alignment reference" in str(info.value)
    # prepare refuses before the first row, so --skip-bad cannot turn it into "no usable rows"
    f = tmp_path / "c.jsonl"
    (tmp_path / "p.png").write_bytes(_png())
    f.write_text(
        json.dumps(
            {"image": "p.png", "question": c.question, "original": c.original, "corrected": c.corrected}
        )
    )
    with pytest.raises(InputError, match="no character offsets") as info:
        prepare(f, tmp_path / "out", slow, processor_name="slow-llava", skip_bad=True)
    assert info.value.path == "slow-llava" and not (tmp_path / "out").exists()
    summary = prepare(f, tmp_path / "out", slow, alignment="reference")
    assert summary.rows_written == 1
    assert sum(load_prepared(tmp_path / "out")[0][0]["chosen_changed"]) > 0


@pytest.mark.parametrize("cached", [False, True])
def test_an_image_the_processor_refuses_is_a_bad_image_row(cached):
    processor = build_tiny("qwen2_vl")[1]
    thin = Correction(
        image=_png((1000, 2)), question="what is it?", original="a red dog", corrected="a blue dog"
    )
    encoder = PromptEncoder(processor) if cached else None
    with pytest.raises(InputError) as info:
        encode_correction(thin, processor, path="c.jsonl", row=7, prompt_encoder=encoder)
    err = info.value
    assert (err.path, err.row, err.field, err.reason) == ("c.jsonl", 7, "image", "bad_image")
    assert str(err).startswith("c.jsonl: row 7: field image: the processor refuses this 1000x2 image (")
    assert "aspect ratio" in str(err)


@pytest.mark.parametrize(
    ("has_image_processor", "message"),
    [
        # the image processor is fine, the processor as a whole is not
        (True, "tokens and images do not match"),
        # a setup problem: nothing to check the image with alone
        (False, "no image processor"),
    ],
)
def test_a_processor_failure_is_not_blamed_on_the_image(has_image_processor, message):
    processor = build_tiny("llava")[1]

    class Failing:
        if not has_image_processor:
            image_processor = None

        def __getattr__(self, name):
            return getattr(processor, name)

        def __call__(self, **kwargs):
            raise ValueError(message)

    with pytest.raises(ValueError, match=message):
        prompt_ids(Failing(), open_image(_png()), "what is it?", row=1)


# ---- annotator segments must be a complete diff of the two answers ----------------------

_piece = st.sampled_from(["a", "red", "dog", "two", "cats", " ", "  ", ".", ",", "🐶", "é"])
_segment_text = st.lists(_piece, max_size=12).map("".join)


@settings(max_examples=200, deadline=None)
@given(_segment_text, _segment_text, st.data())
def test_segments_pass_the_check_iff_they_rebuild_both_answers_at_their_offsets(a, b, data):
    from rlhfv.data.diff import apply_segments, changed_segments
    from rlhfv.data.encode import check_segments
    from rlhfv.data.schema import ChangedSegment

    segments = changed_segments(a, b)
    assert check_segments(segments, a, b) == segments  # the diff's own segments always pass
    if not segments:
        return
    # move one offset of one segment: refused, or (rarely) still a complete diff
    k = data.draw(st.integers(0, len(segments) - 1))
    key = data.draw(st.sampled_from(["original_start", "original_end", "corrected_start", "corrected_end"]))
    moved = {
        **segments[k].to_dict(),
        key: getattr(segments[k], key) + data.draw(st.sampled_from([-2, -1, 1, 2])),
    }
    changed = [*segments[:k], ChangedSegment(**moved), *segments[k + 1 :]]
    try:
        check_segments(changed, a, b, path="c.jsonl", row=3)
    except InputError as err:
        assert (err.path, err.row, err.field, err.reason) == ("c.jsonl", 3, "segments", "bad_segments")
    else:
        assert apply_segments(a, b, changed) == b
        assert apply_segments(b, a, changed, reverse=True) == a


def test_segments_with_utf16_offsets_are_refused_naming_the_record(tmp_path):
    from rlhfv.data.io import read_jsonl
    from rlhfv.data.schema import ChangedSegment

    o, c = "🐶🐱🐭 a red car is here.", "🐶🐱🐭 a blue car is here."
    # what a JavaScript annotation tool computes: each emoji counts two UTF-16 units
    seg = {
        "kind": "replace",
        "original_start": 9,
        "original_end": 12,
        "corrected_start": 9,
        "corrected_end": 13,
    }
    good = {**seg, "original_start": 6, "original_end": 9, "corrected_start": 6, "corrected_end": 10}
    rows = [
        {
            "id": "js",
            "image_base64": base64.b64encode(_png()).decode(),
            "question": "q",
            "original": o,
            "corrected": c,
        }
    ]
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps({**r, "segments": [s]}) for r in rows for s in (good, seg)) + "\n")
    errors: list[InputError] = []
    (record,) = read_jsonl(f, on_error=errors.append)
    assert record.segments[0].original_text(o) == "red"
    (err,) = errors
    assert (err.path, err.row, err.field, err.reason) == (str(f), 2, "segments", "bad_segments")
    assert "segments do not turn the original answer into the corrected one" in str(err)
    assert "'🐶🐱🐭 a red' where the corrected has '🐶🐱🐭 a blu'" in str(err) and "UTF-16" in str(err)
    # encoding a record built in code checks them too
    bad = Correction(image=_png(), question="q", original=o, corrected=c, segments=[ChangedSegment(**seg)])
    with pytest.raises(InputError, match="segments do not turn"):
        encode_correction(bad, build_tiny("llava")[1], row=5)


def test_a_segment_whose_kind_does_not_match_its_spans_is_refused():
    from rlhfv.data.encode import check_segments
    from rlhfv.data.schema import ChangedSegment

    with pytest.raises(InputError, match="is a insert but covers 'red' -> 'blue'"):
        check_segments([ChangedSegment("insert", 2, 5, 2, 6)], "a red car", "a blue car")


# ---- special tokens, chat templates that trim the message ------------------------------


@pytest.mark.parametrize(
    ("field", "text", "token"),
    [
        ("corrected", "a red car </s> on grass.", "</s>"),
        ("corrected", "a <pad> car", "<pad>"),
        ("question", "What is it?</s> Describe it.", "</s>"),
        ("question", "What <pad> is it?", "<pad>"),
    ],
)
def test_special_token_text_is_refused_naming_the_field_and_token(field, text, token):
    processor = build_tiny("llava")[1]
    fields = {"question": "q", "original": "a blue car.", "corrected": "a red car."} | {field: text}
    with pytest.raises(InputError) as info:
        encode_correction(Correction(image=_png(), **fields), processor, path="c.jsonl", row=2)
    err = info.value
    reason = "special_token_in_question" if field == "question" else "special_token_in_answer"
    assert (err.path, err.row, err.field, err.reason) == ("c.jsonl", 2, field, reason)
    assert f"special token {token!r}" in str(err)


def test_placeholder_and_angle_brackets_in_an_answer():
    processor = build_tiny("llava")[1]
    # the image placeholder keeps its own reason; a "<" that is no special token is text
    c = Correction(image=_png(), question="q", original="a <image> car", corrected="a red car")
    with pytest.raises(InputError, match="image placeholder") as info:
        encode_correction(c, processor)
    assert info.value.field == "original"
    c = Correction(image=_png(), question="q", original="a < b car", corrected="a <b> car")
    assert encode_correction(c, processor)["num_segments"] > 0


def test_a_typed_image_placeholder_in_a_question_is_no_error():
    processor = build_tiny("llava")[1]
    # a typed image placeholder is no error: the prompt holds the one image either way
    plain = Correction(image=_png(), question="What is it?", original="a blue car.", corrected="a red car.")
    for question in ("<image>\nWhat is it?", "What is it? <image>"):
        typed = Correction(
            image=plain.image, question=question, original=plain.original, corrected=plain.corrected
        )
        assert encode_correction(typed, processor) == encode_correction(plain, processor)


GEMMA_LIKE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture(scope="module")
def gemma_like():
    """A byte-level BPE tokenizer trained here, with a Gemma-style template that trims messages."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<bos>", "<eos>", "<pad>", "<image>", "<start_of_turn>", "<end_of_turn>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(
        ["A red car is on a blue road.", "What is in the picture? user model"] * 20, trainer
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        additional_special_tokens=["<image>", "<start_of_turn>", "<end_of_turn>"],
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=GEMMA_LIKE,
    )


@pytest.mark.parametrize("pad", [("", ""), ("", "\n"), (" ", ""), ("\n ", "  \n")])
def test_a_trimming_template_keeps_the_answer_and_its_end_of_turn(gemma_like, pad):
    from rlhfv.data.encode import answer_tokens

    tok = gemma_like.tokenizer
    lead, tail = pad
    ids, spans = answer_tokens(gemma_like, "What is in the picture?", lead + "A red car." + tail)
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == [*tok.tokenize("A red car."), "<end_of_turn>", "Ċ", "<eos>"]
    # each answer token's span is its text in the answer as given, whitespace included
    answer = lead + "A red car." + tail
    assert "".join(answer[s:e] for s, e in spans) == "A red car."
    assert spans[-3:] == [(0, 0)] * 3
    c = Correction(
        image=_png(),
        question="What is in the picture?",
        original=lead + "A red car." + tail,
        corrected="A blue car.",
    )
    row = encode_correction(c, gemma_like)
    start = row["rejected_labels_start"]
    rejected = tok.convert_ids_to_tokens(row["rejected_input_ids"][start:])
    assert rejected[-3:] == ["<end_of_turn>", "Ċ", "<eos>"]
    marked = [t for t, m in zip(rejected, row["rejected_changed"][start:], strict=True) if m]
    assert "".join(marked).replace("Ġ", " ").strip() == "red"
