"""Readers and writers: every layout round trip, fixtures written with pyarrow, bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rlhfv.data.io import (
    read_corrections,
    read_corrections_with_rows,
    read_jsonl,
    read_parquet,
    read_rlaifv_dataset,
    read_rlhfv_dataset,
    sniff_format,
    to_hf_dataset,
    to_trl_dataset,
    write_jsonl,
    write_parquet,
    write_rlaifv_dataset,
    write_rlhfv_dataset,
)
from rlhfv.data.schema import ChangedSegment, Correction
from rlhfv.errors import InputError

JPEG = Path(__file__).parents[2] / ".." / "shared" / "data" / "images" / "000122635.jpg"
HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _png(colour="red", size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _records(tmp_path: Path) -> list[Correction]:
    jpeg = tmp_path / "pics" / "coco.jpg"
    jpeg.parent.mkdir(exist_ok=True)
    shutil.copy(JPEG, jpeg)
    return [
        Correction(
            image=str(jpeg.resolve()),
            question="What is on the grass?",
            original="Two dogs are on the grass.",
            corrected="One dog is on the grass.",
            annotator="ann-1",
            segments=[ChangedSegment("replace", 0, 12, 0, 10, "number")],
            source={"model": "tiny", "split": "train"},
            id="r1",
        ),
        Correction(
            image=_png(),
            question="Describe the picture.",
            original="A red square, with a cat.",
            corrected="A red square.",
            id="r2",
        ),
    ]


def _same(a: Correction, b: Correction, *, keep_meta: bool = True) -> None:
    def img(x):
        return x.image if isinstance(x.image, bytes) else Path(x.image).read_bytes()

    assert (a.question, a.original, a.corrected, a.id) == (b.question, b.original, b.corrected, b.id)
    assert img(a) == img(b)
    if keep_meta:
        assert (a.annotator, a.segments, a.source) == (b.annotator, b.segments, b.source)


# ---- round trips -----------------------------------------------------------------------


def test_jsonl_round_trip_with_relative_paths_and_image_files(tmp_path):
    recs = _records(tmp_path)
    out = tmp_path / "out" / "c.jsonl"
    assert write_jsonl(recs, out, image_dir="imgs") == 2
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[1]["image"] == "imgs/r2.png"  # bytes went to a file next to the JSONL
    # a path outside the file's folder stays absolute
    assert lines[0]["image"] == str((tmp_path / "pics" / "coco.jpg").resolve())
    # move the whole folder: relative paths still resolve against the file
    moved = tmp_path / "moved"
    shutil.copytree(out.parent, moved)
    back = list(read_jsonl(moved / "c.jsonl"))
    for a, b in zip(recs, back, strict=True):
        _same(a, b)
    assert Path(back[1].image).parent == (moved / "imgs").resolve()


def test_jsonl_round_trip_with_base64_images(tmp_path):
    recs = _records(tmp_path)
    out = tmp_path / "b64.jsonl"
    write_jsonl(recs, out, embed_images=True)
    assert all("image_base64" in json.loads(x) for x in out.read_text().splitlines())
    back = list(read_corrections(out))
    assert all(isinstance(c.image, bytes) for c in back)
    for a, b in zip(recs, back, strict=True):
        _same(a, b)


def test_jsonl_accepts_data_uri_and_chosen_rejected_aliases(tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(_png()).decode()
    f = tmp_path / "a.jsonl"
    f.write_text(
        json.dumps({"image": uri, "question": "q?", "rejected": "a cat", "chosen": "a dog"}) + "\n\n"
    )
    (c,) = read_jsonl(f)
    assert (c.original, c.corrected, c.image) == ("a cat", "a dog", _png())


def test_native_parquet_round_trip_in_row_groups(tmp_path):
    recs = _records(tmp_path) * 3
    out = tmp_path / "c.parquet"
    assert write_parquet(recs, out, row_group_size=2) == 6
    assert pq.ParquetFile(out).num_row_groups == 3
    assert sniff_format(out) == "parquet"
    back = list(read_parquet(out))
    assert len(back) == 6
    for a, b in zip(recs, back, strict=True):
        _same(a, b)


def test_rlhfv_layout_as_published_is_read(tmp_path):
    """A fixture written with pyarrow in the RLHF-V-Dataset layout, real JPEG inside."""
    jpeg = JPEG.read_bytes()
    table = pa.table(
        {
            "ds_name": ["RLHF-V", "RLHF-V"],
            "image": pa.array([{"bytes": jpeg, "path": None}, {"bytes": None, "path": None}], type=HF_IMAGE),
            "text": [
                json.dumps({"question": "What is in the image?", "chosen": "A dog.", "rejected": "A cat."}),
                json.dumps({"question": "How many?", "chosen": "One.", "rejected": "Two."}),
            ],
            "origin_dataset": ["VQAv2", "OKVQA"],
            "origin_split": [json.dumps({"model": "muffin", "type": "detail"}), json.dumps({"model": "m"})],
            "idx": pa.array([5, 6], type=pa.int64()),
            "image_path": ["", "images/000122635.jpg"],
        }
    )
    (tmp_path / "images").mkdir()
    shutil.copy(JPEG, tmp_path / "images" / "000122635.jpg")  # second row: image by path only
    f = tmp_path / "RLHF-V-Dataset.parquet"
    pq.write_table(table, f)
    assert sniff_format(f) == "rlhf-v"
    a, b = read_corrections(f)
    assert (a.question, a.corrected, a.original, a.id) == ("What is in the image?", "A dog.", "A cat.", "5")
    assert a.image == jpeg and a.load_image().size == (448, 336)
    assert a.source["origin_split"] == {"model": "muffin", "type": "detail"}
    assert a.source["origin_dataset"] == "VQAv2" and a.source["layout"] == "rlhf-v"
    assert Path(b.image) == (tmp_path / "images" / "000122635.jpg").resolve()
    # and the writer produces the same layout back
    out = tmp_path / "again.parquet"
    write_rlhfv_dataset([a, b], out)
    assert pq.read_schema(out).names == list(table.column_names)
    for x, y in zip([a, b], read_rlhfv_dataset(out), strict=True):
        _same(x, y, keep_meta=False)
        assert x.source["origin_split"] == y.source["origin_split"]


def test_rlhfv_layout_with_raw_image_bytes(tmp_path):
    table = pa.table(
        {
            "ds_name": ["RLHF-V"],
            "image": pa.array([JPEG.read_bytes()], type=pa.binary()),
            "text": [json.dumps({"question": "q", "chosen": "yes", "rejected": "no"})],
            "origin_dataset": ["x"],
            "origin_split": ["{}"],
            "idx": pa.array([0], type=pa.int64()),
            "image_path": ["a.jpg"],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    (c,) = read_rlhfv_dataset(tmp_path / "d.parquet")
    assert c.image == JPEG.read_bytes()


def test_rlaifv_layout_as_published_in_shards(tmp_path):
    jpeg = JPEG.read_bytes()
    shards = tmp_path / "RLAIF-V-Dataset"
    shards.mkdir()
    for k in range(2):
        table = pa.table(
            {
                "ds_name": ["RLAIF-V"],
                "image": pa.array([{"bytes": jpeg, "path": f"{k}.jpg"}], type=HF_IMAGE),
                "question": [f"Question {k}?"],
                "chosen": [f"good {k}"],
                "rejected": [f"bad {k}"],
                "origin_dataset": ["COCO"],
                "origin_split": ['{"model": "llava"}'],
                "idx": pa.array([100 + k], type=pa.int64()),
                "image_path": [f"{k}.jpg"],
            }
        )
        pq.write_table(table, shards / f"RLAIF-V-Dataset_{k:03d}.parquet")
    assert sniff_format(shards) == "rlaif-v"
    recs = list(read_corrections(shards))
    assert [(c.question, c.corrected, c.original, c.id) for c in recs] == [
        ("Question 0?", "good 0", "bad 0", "100"),
        ("Question 1?", "good 1", "bad 1", "101"),
    ]
    assert recs[0].image == jpeg
    out = tmp_path / "out.parquet"
    write_rlaifv_dataset(recs, out)
    assert pq.read_schema(out).names == list(table.column_names)
    for x, y in zip(recs, read_rlaifv_dataset(out), strict=True):
        _same(x, y, keep_meta=False)


def test_export_to_hf_dataset_and_trl_format(tmp_path):
    recs = _records(tmp_path)
    f = tmp_path / "c.jsonl"
    write_jsonl(recs, f, embed_images=True)
    ds = to_hf_dataset(f, cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 2 and ds[0]["corrected"] == recs[0].corrected
    assert ds[0]["image"].size == (448, 336)
    assert ds[0]["segments"][0]["category"] == "number" and ds[1]["segments"] is None
    assert json.loads(ds[0]["source"]) == recs[0].source
    trl = to_trl_dataset(f, cache_dir=str(tmp_path / "cache"))
    row = trl[1]
    assert set(trl.column_names) == {"images", "prompt", "chosen", "rejected"}
    # TRL's vision format: an image entry, then the question, in the user turn
    assert row["prompt"] == [
        {
            "role": "user",
            "content": [{"type": "image", "text": None}, {"type": "text", "text": "Describe the picture."}],
        }
    ]
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "A red square."}]}]
    assert row["rejected"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "A red square, with a cat."}]}
    ]
    assert row["images"][0].size == (8, 6)
    from trl.data_utils import is_conversational
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from rlhfv.tiny import build_tiny

    assert is_conversational(row)
    # TRL's own vision preference collator takes the rows as they are
    processor = build_tiny("llava")[1]
    batch = DataCollatorForVisionPreference(processor)([trl[0], trl[1]])
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[0] == 4
    completion = batch["input_ids"][0][batch["completion_mask"][0].bool()]
    assert processor.tokenizer.decode(completion).startswith("one dog is on the grass.")
    plain = to_trl_dataset(f, conversational=False, cache_dir=str(tmp_path / "cache"))
    assert plain[0]["chosen"] == recs[0].corrected


def test_trl_export_of_a_llava_style_question_has_one_image_placeholder(tmp_path):
    from trl.data_utils import prepare_multimodal_messages
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from rlhfv.data.encode import render_prompt
    from rlhfv.tiny import build_tiny

    processor = build_tiny("llava")[1]
    c = Correction(
        image=_png(),
        question="<image>\nWhat is in the image?",
        original="a red car.",
        corrected="a blue car.",
    )
    (row,) = to_trl_dataset([c], cache_dir=str(tmp_path / "cache"))
    assert row["prompt"][0]["content"][1] == {"type": "text", "text": "What is in the image?"}
    # the prompt TRL renders is the one `rlhfv data prepare` renders: one placeholder, one image
    text = processor.apply_chat_template(
        prepare_multimodal_messages(row["prompt"], row["images"]), add_generation_prompt=True, tokenize=False
    )
    assert text == render_prompt(processor, c.question) and text.count("<image>") == 1
    batch = DataCollatorForVisionPreference(processor)([row])
    assert batch["pixel_values"].shape[0] == 2


def test_plain_trl_export_has_one_image_placeholder_before_the_question(tmp_path):
    from trl.data_utils import is_conversational
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from rlhfv.data.encode import prompt_ids
    from rlhfv.tiny import build_tiny

    processor = build_tiny("llava")[1]
    questions = ("<image>\nWhat is in the image?", "What is in the image? <image>", "What is in the image?")
    recs = [
        Correction(image=_png(), question=q, original="a red car.", corrected="a blue car.", id=str(k))
        for k, q in enumerate(questions)
    ]
    rows = list(to_trl_dataset(recs, conversational=False, cache_dir=str(tmp_path / "cache")))
    # typed or not, the placeholder is removed and the one TRL's plain format needs comes first
    assert [r["prompt"] for r in rows] == ["<image>\nWhat is in the image?"] * 3
    assert not is_conversational(rows[0])
    # TRL hands the plain prompt to the processor as it is: one image, expanded once
    batch = DataCollatorForVisionPreference(processor)(rows)
    assert batch["pixel_values"].shape[0] == 6
    # ... into as many image tokens as `rlhfv data prepare` gives the prompt
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    expected = prompt_ids(processor, rows[0]["images"][0], questions[0]).count(image_id)
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [expected] * 6


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: s.strip()
)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(_text, _text, _text), min_size=1, max_size=5))
def test_any_text_survives_every_writer(triples):
    import tempfile

    img = _png()
    recs = [
        Correction(image=img, question=q, original=o, corrected=c + "!" if c == o else c, id=str(k))
        for k, (q, o, c) in enumerate(triples)
    ]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for writer, reader, name in (
            (lambda r, p: write_jsonl(r, p, embed_images=True), read_jsonl, "a.jsonl"),
            (write_parquet, read_parquet, "a.parquet"),
            (write_rlhfv_dataset, read_rlhfv_dataset, "b.parquet"),
            (write_rlaifv_dataset, read_rlaifv_dataset, "c.parquet"),
        ):
            writer(recs, d / name)
            back = list(reader(d / name))
            assert [(c.question, c.original, c.corrected, c.image) for c in back] == [
                (c.question, c.original, c.corrected, c.image) for c in recs
            ]


# ---- bad input -------------------------------------------------------------------------


def _jsonl(tmp_path, *objs_or_lines) -> Path:
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in objs_or_lines) + "\n")
    return f


GOOD = {"image": str(JPEG.resolve()), "question": "q", "original": "a cat", "corrected": "a dog"}
SEGMENT = {
    "kind": "replace",
    "original_start": 2,
    "original_end": 5,
    "corrected_start": 2,
    "corrected_end": 5,
}


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({**GOOD, "image": "nope/missing.jpg"}, "image", "missing_image"),
        ({**GOOD, "corrected": ""}, "corrected", "empty_answer"),
        ({**GOOD, "original": 42}, "original", "not_a_string"),
        ({**GOOD, "corrected": "a cat"}, "corrected", "identical_answers"),
        ({k: v for k, v in GOOD.items() if k != "question"}, "question", "missing_field"),
        ({**GOOD, "image": None, "image_base64": "%%%"}, "image_base64", "unreadable_image"),
        ({**GOOD, "image": None, "image_base64": ["iVBO", "Rw0K"]}, "image_base64", "not_a_string"),
        ('{"image": "x", "question": ', None, "malformed_json"),
        ({**GOOD, "segments": [{**SEGMENT, "original_start": "2"}]}, "segments", "bad_segments"),
        ({**GOOD, "segments": [{**SEGMENT, "corrected_end": 3.5}]}, "segments", "bad_segments"),
        ({**GOOD, "segments": [{**SEGMENT, "original_end": True}]}, "segments", "bad_segments"),
        ({**GOOD, "segments": [{**SEGMENT, "kind": ["replace"]}]}, "segments", "bad_segments"),
        (
            {**GOOD, "segments": [{k: v for k, v in SEGMENT.items() if k != "original_end"}]},
            "segments",
            "bad_segments",
        ),
        ({**GOOD, "segments": {"kind": "replace"}}, "segments", "bad_segments"),
        ({**GOOD, "segments": ["replace"]}, "segments", "bad_segments"),
        # segments that do not turn the original into the corrected answer
        ({**GOOD, "segments": [{**SEGMENT, "original_start": 1}]}, "segments", "bad_segments"),
        ({**GOOD, "corrected": "a big dog", "segments": [SEGMENT]}, "segments", "bad_segments"),
        # half an emoji (a JSON "\ud83d" escape) is no text: no tokenizer or writer takes it
        ({**GOOD, "corrected": "a dog \ud83d"}, "corrected", "lone_surrogate"),
        ({**GOOD, "question": "\udc36?"}, "question", "lone_surrogate"),
        ({**GOOD, "corrected": " a  cat\n"}, "corrected", "whitespace_only"),
    ],
)
def test_bad_jsonl_rows_name_file_row_and_field(tmp_path, bad, field, reason):
    f = _jsonl(tmp_path, GOOD, bad)
    with pytest.raises(InputError) as info:
        list(read_jsonl(f))
    err = info.value
    assert (err.path, err.row, err.field, err.reason) == (str(f), 2, field, reason)
    assert str(err).startswith(f"{f}: row 2")


def test_on_error_skips_bad_rows_and_keeps_going(tmp_path):
    f = _jsonl(tmp_path, {**GOOD, "corrected": ""}, "{not json", GOOD, {**GOOD, "corrected": "a cat"})
    errors: list[InputError] = []
    good = list(read_jsonl(f, on_error=errors.append))
    assert len(good) == 1
    assert [(e.row, e.reason) for e in errors] == [
        (1, "empty_answer"),
        (2, "malformed_json"),
        (4, "identical_answers"),
    ]


def test_parquet_without_expected_columns(tmp_path):
    f = tmp_path / "x.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), f)
    with pytest.raises(InputError, match="columns match no known layout") as info:
        list(read_corrections(f))
    assert info.value.reason == "missing_columns"
    with pytest.raises(InputError, match=r"missing column\(s\) image, text") as info:
        list(read_rlhfv_dataset(f))
    assert info.value.field == "image"


def test_parquet_row_with_no_image_anywhere(tmp_path):
    table = pa.table(
        {
            "image": pa.array([{"bytes": None, "path": None}], type=HF_IMAGE),
            "question": ["q"],
            "chosen": ["a"],
            "rejected": ["b"],
            "image_path": ["gone.jpg"],
        }
    )
    pq.write_table(table, tmp_path / "s.parquet")
    with pytest.raises(InputError, match="no image bytes") as info:
        list(read_rlaifv_dataset(tmp_path / "s.parquet"))
    # rows count from 1, as JSONL lines do
    assert (info.value.row, info.value.field, info.value.reason) == (1, "image", "missing_image")
    assert str(info.value).startswith(f"{tmp_path / 's.parquet'}: row 1: field image: ")


def test_unknown_and_missing_paths(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(InputError, match="unknown format"):
        sniff_format(tmp_path / "a.csv")
    with pytest.raises(InputError, match="no such file"):
        sniff_format(tmp_path / "nope.jsonl")


def test_hf_export_from_an_iterable_and_an_edited_file_is_read_again(tmp_path):
    recs = _records(tmp_path)
    ds = to_hf_dataset(iter(recs), cache_dir=str(tmp_path / "cache"))
    assert ds["id"] == ["r1", "r2"]
    f = tmp_path / "c.jsonl"
    write_jsonl(recs[:1], f, embed_images=True)
    assert to_hf_dataset(f, cache_dir=str(tmp_path / "cache")).num_rows == 1
    write_jsonl(recs, f, embed_images=True)
    assert to_hf_dataset(f, cache_dir=str(tmp_path / "cache")).num_rows == 2


def test_parquet_reading_holds_one_batch_not_the_file(tmp_path):
    rows, blob = 4000, 20_000  # 80 MB of image bytes in the file
    table = pa.table(
        {
            "image": pa.array([os.urandom(blob) for _ in range(rows)], type=pa.binary()),
            "question": ["q"] * rows,
            "original": ["a cat"] * rows,
            "corrected": ["a dog"] * rows,
        }
    )
    f = tmp_path / "big.parquet"
    pq.write_table(table, f, row_group_size=250)
    del table
    base = pa.total_allocated_bytes()
    peak = n = 0
    for _ in read_parquet(f):
        n += 1
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert n == rows
    assert peak < 24 * 1024 * 1024  # a batch of 256 rows is ~5 MB (plus a row group read ahead)


def test_jsonl_image_files_of_records_sharing_an_id_do_not_overwrite_each_other(tmp_path):
    recs = [
        Correction(image=_png("red"), question="q", original="a", corrected="b", id="same"),
        Correction(image=_png("blue"), question="q", original="a", corrected="c", id="same"),
        Correction(image=_png("green"), question="q", original="a", corrected="d", id="no/slash"),
    ]
    write_jsonl(recs, tmp_path / "c.jsonl", image_dir="imgs")
    back = list(read_jsonl(tmp_path / "c.jsonl"))
    assert [Path(c.image).read_bytes() for c in back] == [c.image for c in recs]
    assert len(set(os.listdir(tmp_path / "imgs"))) == 3


def test_integral_float_offsets_are_taken_as_integers(tmp_path):
    f = _jsonl(tmp_path, {**GOOD, "segments": [{**SEGMENT, "original_start": 2.0, "original_end": 5.0}]})
    (c,) = read_jsonl(f)
    assert c.segments == [ChangedSegment("replace", 2, 5, 2, 5)]
    assert all(type(v) is int for k, v in c.segments[0].to_dict().items() if k.endswith(("start", "end")))


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)


@settings(max_examples=80, deadline=None)
@given(_JSON_SCALARS)
def test_a_segment_offset_is_read_as_its_integer_or_refused_as_bad_segments(value):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        f = _jsonl(Path(tmp), {**GOOD, "segments": [{**SEGMENT, "original_start": value}]})
        errors: list[InputError] = []
        got = list(read_jsonl(f, on_error=errors.append))
    integral = not isinstance(value, bool | str | None) and float(value).is_integer()
    if integral and value == SEGMENT["original_start"]:
        assert not errors and got[0].segments[0].original_start == value
        assert type(got[0].segments[0].original_start) is int
    else:
        assert not got
        assert [(e.row, e.field, e.reason) for e in errors] == [(1, "segments", "bad_segments")]
        # any other integer reads, then fails the check that the segment fits the answers
        assert ("original_start must be an integer" in errors[0].message) == (not integral)


# ---- encodings and JSON arrays ---------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=8), st.booleans())
def test_each_line_that_is_not_utf8_is_one_bad_row_and_a_bom_is_ignored(bad_lines, bom):
    import tempfile

    lines = [
        json.dumps({**GOOD, "question": f"caf\u00e9 {k}"}, ensure_ascii=False).encode(
            "latin-1" if bad else "utf-8"
        )
        for k, bad in enumerate(bad_lines)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "c.jsonl"
        f.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
        errors: list[InputError] = []
        got = list(read_jsonl(f, on_error=errors.append))
    assert [c.question for c in got] == [f"caf\u00e9 {k}" for k, bad in enumerate(bad_lines) if not bad]
    assert [(e.row, e.reason) for e in errors] == [
        (k + 1, "not_utf8") for k, bad in enumerate(bad_lines) if bad
    ]
    assert all(str(e).endswith("not UTF-8 text (byte 0xe9); save the file as UTF-8") for e in errors)


def test_a_json_array_file_is_read_with_rows_numbered_by_element(tmp_path):
    f = tmp_path / "llava.json"
    f.write_text(json.dumps([GOOD, {**GOOD, "corrected": "a cat"}, {**GOOD, "corrected": "a cow"}], indent=1))
    assert sniff_format(f) == "jsonl"
    errors: list[InputError] = []
    got = list(read_corrections_with_rows(f, on_error=errors.append))
    assert [(row, c.corrected) for row, c in got] == [(1, "a dog"), (3, "a cow")]
    assert [(e.row, e.reason) for e in errors] == [(2, "identical_answers")]
    # one record per line in a .json file is still JSONL
    lines = _jsonl(tmp_path, GOOD, GOOD).rename(tmp_path / "lines.json")
    assert len(list(read_corrections(lines))) == 2


def test_a_broken_json_array_or_one_not_in_utf8_is_a_file_error(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('[{"question": "q"},\n {"question": }]')
    with pytest.raises(
        InputError, match=r"malformed JSON array \(Expecting value at line 2 column 15\)"
    ) as info:
        list(read_corrections(f, on_error=lambda e: None))
    assert (info.value.path, info.value.row, info.value.reason) == (str(f), None, "malformed_json")
    f.write_bytes(b'[\n{"question": "caf\xe9"}]')
    with pytest.raises(InputError, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        list(read_corrections(f))


def test_jsonl_format_on_a_parquet_file_names_the_mistake(tmp_path):
    f = tmp_path / "c.parquet"
    write_parquet(_records(tmp_path), f)
    with pytest.raises(InputError, match="is a parquet file, not JSONL") as info:
        list(read_corrections(f, format="jsonl", on_error=lambda e: None))
    assert info.value.path == str(f)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["\n", "\r\n", "\r"])), min_size=1, max_size=8))
def test_line_endings_never_change_the_rows_read(lines):
    """Text mode read \\r, \\r\\n and \\n alike; the byte reader must too, and so must the
    progress bar's count and annotate's import (blank lines: False)."""
    import tempfile

    from rlhfv.annotate.store import read_generations
    from rlhfv.data.prepare import count_rows

    row = {"image": str(JPEG), "question": "q", "original": "a cat", "corrected": "a dog"}
    body = [json.dumps({**row, "id": str(k)}) if real else " " for k, (real, _) in enumerate(lines)]
    expected = [(k + 1, str(k)) for k, (real, _) in enumerate(lines) if real]
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "a.jsonl"
        f.write_bytes("".join(text + end for text, (_, end) in zip(body, lines, strict=True)).encode())
        assert [(n, c.id) for n, c in read_corrections_with_rows(f)] == expected
        assert count_rows(f, "jsonl") == len(expected)
        assert [(n, r["id"]) for n, r in read_generations(f)] == expected


# ---- writing over the file being read ----------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "reader", "name"),
    [(write_jsonl, read_jsonl, "c.jsonl"), (write_parquet, read_parquet, "c.parquet")],
)
def test_a_file_rewritten_from_itself_keeps_every_record(tmp_path, writer, reader, name):
    recs = _records(tmp_path) * 300  # more than one parquet batch: the reader is still reading
    f = tmp_path / name
    writer(recs, f)
    assert writer(reader(f), f) == len(recs)
    back = list(reader(f))
    assert len(back) == len(recs)
    for a, b in zip(recs[:2], back[:2], strict=True):
        _same(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "pics"])  # no temp file left


def test_a_write_that_fails_leaves_the_old_file_whole(tmp_path):
    recs = _records(tmp_path)
    f = tmp_path / "c.jsonl"
    write_jsonl(recs, f)
    before = f.read_bytes()

    def failing():
        yield from recs
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        write_jsonl(failing(), f)
    assert f.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "pics"]
