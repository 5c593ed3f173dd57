"""``rlhfv data prepare`` / ``show`` end to end, through ``rlhfv.cli.main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rlhfv.cli import main
from rlhfv.data.collator import PreferenceCollator
from rlhfv.data.io import read_jsonl
from rlhfv.data.prepare import EXAMPLE_PATH, load_prepared
from rlhfv.tiny import build_tiny
from tests.data.bad_images import BAD_IMAGES

JPEG = (Path(__file__).parents[2] / ".." / "shared" / "data" / "images" / "000155304.jpg").resolve()


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tiny_llava():
    return build_tiny("llava")


def test_prepare_example_writes_a_dataset_the_collator_and_model_accept(tmp_path, capsys, tiny_llava):
    out = tmp_path / "prepared"
    rc, stdout, _ = _run(
        capsys, "data", "prepare", "example", out, "--processor", "tiny-llava", "--json", "--gamma", "3"
    )
    assert rc == 0
    summary = json.loads(stdout)
    assert (
        summary["rows_read"],
        summary["rows_written"],
        summary["rows_skipped"],
        summary["skipped_reasons"],
    ) == (
        8,
        8,
        0,
        {},
    )
    ds, meta = load_prepared(out)
    assert ds.num_rows == 8 and meta["gamma"] == 3.0 and meta["alignment"] == "paper"
    assert meta["change_kinds"] == ["replace", "insert", "delete"] and meta["processor"] == "tiny-llava"
    assert len(meta["fingerprint"]) == 64

    # the summary's numbers, recomputed from the saved rows and the example file
    records = list(read_jsonl(EXAMPLE_PATH))
    assert summary["mean_changed_segments"] == pytest.approx(
        sum(len(r.segments) for r in records) / 8, abs=1e-4
    )
    answer = changed = 0
    for row in ds:
        for side in ("chosen", "rejected"):
            start = row[f"{side}_labels_start"]
            answer += len(row[f"{side}_input_ids"]) - start
            changed += sum(row[f"{side}_changed"][start:])
    assert summary["changed_token_share"] == pytest.approx(changed / answer, abs=1e-4)

    model, processor = tiny_llava
    rows = [ds[i] for i in range(3)]
    batch = PreferenceCollator(processor, gamma=meta["gamma"])(rows)
    assert batch["pair_index"].tolist() == [0, 1, 2]
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k not in ("token_weights", "pair_index")})
    tok = processor.tokenizer
    for k, rec in enumerate(records[:3]):
        labelled = batch["labels"][k][batch["labels"][k] != -100].tolist()
        assert labelled == tok(rec.corrected, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert set(batch["token_weights"].unique().tolist()) == {0.0, 1.0, 3.0}


def test_prepare_twice_replaces_and_refuses_foreign_folders(tmp_path, capsys):
    out = tmp_path / "p"
    assert _run(capsys, "data", "prepare", "--example", out, "--processor", "tiny-idefics3")[0] == 0
    rc, stdout, _ = _run(
        capsys,
        "data",
        "prepare",
        "--example",
        out,
        "--processor",
        "tiny-idefics3",
        "--alignment",
        "reference",
    )
    assert rc == 0 and "prepared 8 of 8 rows" in stdout
    assert load_prepared(out)[1]["alignment"] == "reference"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or cache left behind
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    rc, _, err = _run(capsys, "data", "prepare", "example", foreign, "--processor", "tiny-llava")
    assert rc == 2 and "is not a prepared dataset" in err and (foreign / "notes.txt").exists()


def test_processor_from_a_save_pretrained_folder_matches_the_built_in(tmp_path, capsys, tiny_llava):
    _, processor = tiny_llava
    processor.save_pretrained(tmp_path / "proc")
    for name, proc in (("a", tmp_path / "proc"), ("b", "tiny-llava")):
        assert _run(capsys, "data", "prepare", "example", tmp_path / name, "--processor", proc)[0] == 0
    a, b = load_prepared(tmp_path / "a")[0], load_prepared(tmp_path / "b")[0]
    assert a["chosen_input_ids"] == b["chosen_input_ids"] and a["rejected_changed"] == b["rejected_changed"]
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, "data", "prepare", "example", tmp_path / "c", "--processor", tmp_path / "empty")
    assert rc == 2 and "field --processor: cannot load a processor" in err


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"image": str(JPEG), "question": "What is it?", "original": "a red dog", "corrected": "a blue cat"}
SEGMENT_KEYS = ("original_start", "original_end", "corrected_start", "corrected_end")


@pytest.mark.parametrize(
    ("bad", "where", "reason"),
    [
        ({**GOOD, "image": "missing.jpg"}, "row 2: field image: image file not found", "missing_image"),
        (
            {**GOOD, "image": "garbage.jpg"},
            "row 2: field image: TMP/garbage.jpg is not a JPEG/PNG/WebP/GIF image (or a corrupt one)\n",
            "unreadable_image",
        ),
        ({**GOOD, "corrected": "  "}, "row 2: field corrected: answer is empty", "empty_answer"),
        (
            {**GOOD, "original": ["a", "list"]},
            "row 2: field original: answer is list, not a string",
            "not_a_string",
        ),
        (
            {**GOOD, "corrected": "a red dog"},
            "row 2: field corrected: corrected answer is identical",
            "identical_answers",
        ),
        ('{"image": "x.jpg", "question"', "row 2: malformed JSON", "malformed_json"),
        (
            {**GOOD, "corrected": "a " + "very " * 60 + "blue cat"},
            "row 2: field corrected: ",
            "too_long",
        ),
        (
            {**GOOD, "corrected": "a <image> cat"},
            "row 2: field corrected: answer contains",
            "placeholder_in_answer",
        ),
        (
            {**GOOD, "corrected": "a blue cat </s> on grass"},
            "row 2: field corrected: answer contains the tokenizer's special token '</s>'",
            "special_token_in_answer",
        ),
        (
            {**GOOD, "original": "a red dog \ud83d"},
            "row 2: field original: holds a lone surrogate '\\ud83d'",
            "lone_surrogate",
        ),
        (
            {**GOOD, "corrected": "a red  dog\n"},
            "row 2: field corrected: corrected answer differs from the original only in whitespace",
            "whitespace_only",
        ),
        (
            {**GOOD, "segments": [{"kind": "replace", **dict.fromkeys(SEGMENT_KEYS, 2), "original_end": 5}]},
            "row 2: field segments: ",
            "bad_segments",
        ),
        (
            {
                **GOOD,
                "segments": [{"kind": "replace", **dict(zip(SEGMENT_KEYS, (2, 5, 2, 6), strict=True))}],
            },
            "row 2: field segments: segments do not turn the original answer into the corrected one",
            "bad_segments",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_skip_bad_counts_it(tmp_path, capsys, bad, where, reason):
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a jpeg")
    f = _write_jsonl(tmp_path / "in.jsonl", [GOOD, bad, GOOD])
    rc, _, err = _run(
        capsys, "data", "prepare", f, tmp_path / "out", "--processor", "tiny-llava", "--max-length", 60
    )
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"rlhfv: error: {f}: {where.replace('TMP', str(tmp_path))}")
    if reason == "too_long":
        assert "tokens with the prompt, over the limit of 60" in err
    rc, stdout, _ = _run(
        capsys,
        "data",
        "prepare",
        f,
        tmp_path / "out",
        "--processor",
        "tiny-llava",
        "--max-length",
        60,
        "--skip-bad",
        "--json",
    )
    summary = json.loads(stdout)
    assert rc == 0 and (summary["rows_read"], summary["rows_written"]) == (3, 2)
    assert summary["skipped_reasons"] == {reason: 1}


def test_skip_bad_counts_every_reason(tmp_path, capsys):
    (tmp_path / "garbage.jpg").write_bytes(b"nope")
    f = _write_jsonl(
        tmp_path / "in.jsonl",
        [
            GOOD,
            {**GOOD, "image": "missing.jpg"},
            {**GOOD, "image": "missing2.jpg"},
            {**GOOD, "image": "garbage.jpg"},
            {**GOOD, "corrected": ""},
            "{oops",
            {**GOOD, "corrected": GOOD["original"]},
            GOOD,
        ],
    )
    rc, stdout, _ = _run(
        capsys, "data", "prepare", f, tmp_path / "o", "--processor", "tiny-qwen2-vl", "--skip-bad", "--json"
    )
    summary = json.loads(stdout)
    assert rc == 0
    assert summary["skipped_reasons"] == {
        "empty_answer": 1,
        "identical_answers": 1,
        "malformed_json": 1,
        "missing_image": 2,
        "unreadable_image": 1,
    }
    assert (summary["rows_read"], summary["rows_written"], summary["rows_skipped"]) == (8, 2, 6)
    assert load_prepared(tmp_path / "o")[0]["pair_index"] == [0, 1]


def test_all_rows_bad_and_parquet_without_columns(tmp_path, capsys):
    f = _write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "image": "missing.jpg"}])
    rc, _, err = _run(capsys, "data", "prepare", f, tmp_path / "o", "--processor", "tiny-llava", "--skip-bad")
    assert rc == 2 and "no usable rows (skipped missing_image: 1)" in err
    bad = tmp_path / "x.parquet"
    pq.write_table(pa.table({"image": [b"x"], "text": [None]}).drop(["text"]), bad)
    rc, _, err = _run(capsys, "data", "prepare", bad, tmp_path / "o", "--processor", "tiny-llava")
    assert rc == 2 and str(bad) in err and "columns match no known layout" in err
    rc, _, err = _run(
        capsys, "data", "prepare", bad, tmp_path / "o", "--processor", "tiny-llava", "--format", "rlaif-v"
    )
    assert rc == 2 and "missing column(s) question, chosen, rejected" in err


def test_prepare_reads_the_published_rlaifv_layout(tmp_path, capsys):
    shard = tmp_path / "RLAIF-V-Dataset_000.parquet"
    jpeg = JPEG.read_bytes()
    pq.write_table(
        pa.table(
            {
                "ds_name": ["RLAIF-V"] * 2,
                "image": pa.array(
                    [{"bytes": jpeg, "path": None}] * 2,
                    type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                ),
                "question": ["What is shown?", "Describe it."],
                "chosen": ["a man on a bus", "two cats"],
                "rejected": ["a woman on a bus", "three cats"],
                "origin_dataset": ["x"] * 2,
                "origin_split": ["{}"] * 2,
                "idx": pa.array([3, 4], type=pa.int64()),
                "image_path": ["a.jpg", "b.jpg"],
            }
        ),
        shard,
    )
    rc, stdout, _ = _run(
        capsys, "data", "prepare", tmp_path, tmp_path / "out", "--processor", "tiny-llava-next", "--json"
    )
    assert rc == 0 and json.loads(stdout)["rows_written"] == 2
    ds, meta = load_prepared(tmp_path / "out")
    assert ds["id"] == ["3", "4"] and meta["source_format"] == "rlaif-v"


def test_show_highlights_segments_plainly_when_not_a_terminal(tmp_path, capsys):
    rc, stdout, _ = _run(capsys, "data", "show", "example", "--index", "1")
    assert rc == 0
    assert "[-blue-]{+red+}<attribute> roof" in stdout
    assert "[- A dog is sitting in front of the door.-]<object>" in stdout
    assert "\033[" not in stdout
    rc, stdout, _ = _run(capsys, "data", "show", "example", "--index", "1", "--color", "always")
    assert "\033[31;9mblue\033[0m\033[32;1mred\033[0m" in stdout
    # records without annotator segments are diffed
    f = _write_jsonl(tmp_path / "a.jsonl", [GOOD])
    rc, stdout, _ = _run(capsys, "data", "show", f)
    assert "a [-red dog-]{+blue cat+}" in stdout and "(from the diff)" in stdout
    rc, _, err = _run(capsys, "data", "show", f, "--index", "5")
    assert rc == 2 and "field --index: has no record 5" in err


def test_show_into_a_closed_pipe_stops_quietly():
    """`rlhfv data show example | head -1`: the reader is gone before rlhfv writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed early: every write fails with EPIPE
    try:
        res = subprocess.run(
            [sys.executable, "-m", "rlhfv.cli", "data", "show", "example", "--color", "never"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert res.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit
    assert res.returncode == 141  # 128 + SIGPIPE, as a shell reports for `cat` in the same place


def test_a_local_path_named_example_wins_over_the_shipped_example(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "example", [GOOD])
    rc, stdout, _ = _run(capsys, "data", "show", "example", "--format", "jsonl")
    assert rc == 0 and "record 0 (row 1) of example" in stdout
    assert "a [-red dog-]{+blue cat+}" in stdout
    args = ["example", "out", "--processor", "tiny-llava", "--format", "jsonl", "--json"]
    rc, stdout, _ = _run(capsys, "data", "prepare", *args)
    assert rc == 0 and json.loads(stdout)["rows_read"] == 1
    # --example always means the shipped one
    shipped = len(list(read_jsonl(EXAMPLE_PATH)))
    rc, stdout, _ = _run(
        capsys, "data", "prepare", "--example", "out2", "--processor", "tiny-llava", "--json"
    )
    assert rc == 0 and json.loads(stdout)["rows_read"] == shipped > 1


def test_example_file_is_what_the_builder_makes():
    from tests.data.example_builder import build

    shipped = list(read_jsonl(EXAMPLE_PATH))
    built = build()
    assert [(c.id, c.question, c.original, c.corrected, c.segments) for c in shipped] == [
        (c.id, c.question, c.original, c.corrected, c.segments) for c in built
    ]
    assert [c.load_image().tobytes() for c in shipped] == [c.load_image().tobytes() for c in built]


def test_help_of_every_data_subcommand(capsys):
    for argv in (["data", "--help"], ["data", "prepare", "--help"], ["data", "show", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    assert "rlhfv data prepare example OUT --processor tiny-llava" in " ".join(
        capsys.readouterr().out.split()
    )


def test_shipped_example_is_self_contained():
    # images are embedded, so an installed (non-editable) package needs only the .jsonl
    assert all(isinstance(c.image, bytes) for c in read_jsonl(EXAMPLE_PATH))


def test_kinds_option_limits_what_counts_as_changed(tmp_path, capsys):
    f = _write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "original": "a red dog", "corrected": "a red big dog"}])
    for kinds, name in (("replace,insert,delete", "all"), ("replace", "replace")):
        rc = _run(
            capsys, "data", "prepare", f, tmp_path / name, "--processor", "tiny-llava", "--kinds", kinds
        )[0]
        assert rc == 0
    all_kinds, meta_all = load_prepared(tmp_path / "all")
    replace_only, meta = load_prepared(tmp_path / "replace")
    assert meta["change_kinds"] == ["replace"] and meta_all["change_kinds"] == ["replace", "insert", "delete"]
    start = all_kinds[0]["chosen_labels_start"]
    assert all_kinds[0]["chosen_changed"][start:] == [0, 0, 1, 0, 0]  # a red [big] dog </s>
    assert replace_only[0]["chosen_changed"][start:] == [0, 0, 0, 0, 0]
    rc, _, err = _run(
        capsys, "data", "prepare", f, tmp_path / "x", "--processor", "tiny-llava", "--kinds", "swap"
    )
    assert rc == 2 and "field --kinds" in err


def test_show_a_prepared_row_brackets_the_changed_tokens(tmp_path, capsys):
    f = _write_jsonl(
        tmp_path / "in.jsonl",
        [{**GOOD, "original": "a red dog on the grass", "corrected": "a blue dog on the grass"}],
    )
    assert _run(capsys, "data", "prepare", f, tmp_path / "p", "--processor", "tiny-llava")[0] == 0
    rc, stdout, _ = _run(capsys, "data", "show", tmp_path / "p")
    assert rc == 0
    assert "chosen:   a [blue] dog on the grass </s>" in stdout
    assert "rejected: a [red] dog on the grass </s>" in stdout
    assert "1 of 7 answer tokens changed" in stdout
    rc, _, err = _run(capsys, "data", "show", tmp_path / "p", "--index", "3")
    assert rc == 2 and "has no record 3 (1 rows)" in err


def test_in_and_out_usage_errors(tmp_path, capsys):
    rc, _, err = _run(capsys, "data", "prepare", "example", "--processor", "tiny-llava")
    assert rc == 2 and "field OUT: give IN and OUT" in err
    rc, _, err = _run(capsys, "data", "prepare", "--example", "a", "b", "--processor", "tiny-llava")
    assert rc == 2 and "with --example give only OUT" in err
    rc, _, err = _run(
        capsys, "data", "prepare", tmp_path / "nope.jsonl", tmp_path / "o", "--processor", "tiny-llava"
    )
    assert rc == 2 and "nope.jsonl: no such file or folder" in err


def test_processor_without_chat_template_is_named_not_an_empty_input(tmp_path, capsys, tiny_llava):
    _, processor = tiny_llava
    processor.save_pretrained(tmp_path / "proc")
    (tmp_path / "proc" / "chat_template.jinja").unlink()
    rc, _, err = _run(
        capsys, "data", "prepare", "example", tmp_path / "out", "--processor", tmp_path / "proc"
    )
    assert rc == 2 and "Traceback" not in err
    assert f"{tmp_path / 'proc'}: field --processor: the processor has no chat template" in err
    assert "no usable rows" not in err and not (tmp_path / "out").exists()


def test_an_error_while_encoding_is_raised_as_itself_not_as_an_empty_input(tmp_path):
    import jinja2

    from rlhfv.data.prepare import prepare

    processor = build_tiny("llava")[1]
    processor.chat_template = "{{ raise_exception('broken template') }}"
    with pytest.raises(jinja2.TemplateError, match="broken template"):
        prepare("example", tmp_path / "out", processor)
    assert not (tmp_path / "out").exists()


def test_a_processor_folder_is_recorded_by_absolute_path_and_a_missing_one_is_named(
    tmp_path, capsys, tiny_llava, monkeypatch
):
    _, processor = tiny_llava
    processor.save_pretrained(tmp_path / "proc")
    monkeypatch.chdir(tmp_path)
    assert _run(capsys, "data", "prepare", "example", "out", "--processor", "proc")[0] == 0
    assert load_prepared(tmp_path / "out")[1]["processor"] == str((tmp_path / "proc").resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # `data show` finds the processor from anywhere
    assert _run(capsys, "data", "show", tmp_path / "out")[0] == 0
    rc, _, err = _run(capsys, "data", "prepare", "example", "o2", "--processor", "../nope")
    assert rc == 2 and err.strip() == "rlhfv: error: ../nope: field --processor: no such processor directory"


@pytest.mark.parametrize("gamma", ["-3", "0", "nan", "inf"])
def test_gamma_must_be_positive_and_its_help_says_it_is_only_recorded(tmp_path, capsys, gamma):
    rc, _, err = _run(
        capsys, "data", "prepare", "example", tmp_path / "o", "--processor", "tiny-llava", "--gamma", gamma
    )
    assert rc == 2 and err.strip().startswith("rlhfv: error: field --gamma: must be a positive number")
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "only recorded in rlhfv_prepared.json" in help_text and "training default" not in help_text


def _thin_png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (1000, 2), "red").save(path)
    return path


def test_skip_bad_skips_an_image_the_processor_refuses(tmp_path, capsys):
    _thin_png(tmp_path / "thin.png")
    f = _write_jsonl(tmp_path / "in.jsonl", [GOOD, {**GOOD, "image": "thin.png"}, GOOD])
    argv = ("data", "prepare", f, tmp_path / "out", "--processor", "tiny-qwen2-vl")
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"rlhfv: error: {f}: row 2: field image: the processor refuses this 1000x2 image")
    rc, stdout, _ = _run(capsys, *argv, "--skip-bad", "--json")
    summary = json.loads(stdout)
    assert rc == 0 and (summary["rows_read"], summary["rows_written"]) == (3, 2)
    assert summary["skipped_reasons"] == {"bad_image": 1}


def test_prepare_reads_a_json_array_and_skips_its_elements_not_its_lines(tmp_path, capsys):
    f = tmp_path / "llava.json"
    f.write_text(json.dumps([GOOD, {**GOOD, "corrected": ""}, GOOD], indent=2))
    rc, stdout, _ = _run(
        capsys, "data", "prepare", f, tmp_path / "out", "--processor", "tiny-llava", "--skip-bad", "--json"
    )
    summary = json.loads(stdout)
    assert rc == 0 and (summary["rows_read"], summary["rows_written"]) == (3, 2)
    assert summary["skipped_reasons"] == {"empty_answer": 1}
    assert load_prepared(tmp_path / "out")[0]["id"] == ["1", "3"]


def test_skip_bad_skips_lines_that_are_not_utf8_and_reads_a_bom(tmp_path, capsys):
    line = json.dumps({**GOOD, "question": "Qu'est-ce que c'est, café?"}, ensure_ascii=False)
    f = tmp_path / "in.jsonl"  # a BOM, the line in UTF-8, the same line in Latin-1
    f.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\n" + line.encode("latin-1") + b"\n")
    rc, _, err = _run(capsys, "data", "prepare", f, tmp_path / "out", "--processor", "tiny-llava")
    assert (
        rc == 2 and err == f"rlhfv: error: {f}: row 2: not UTF-8 text (byte 0xe9); save the file as UTF-8\n"
    )
    rc, stdout, _ = _run(
        capsys, "data", "prepare", f, tmp_path / "out", "--processor", "tiny-llava", "--skip-bad", "--json"
    )
    assert rc == 0 and json.loads(stdout)["skipped_reasons"] == {"not_utf8": 1}
    rc, out, _ = _run(capsys, "data", "show", f)
    assert rc == 0 and "café" in out


@pytest.mark.parametrize(("offset", "ok"), [(2.0, True), ("2", False), (2.5, False)])
def test_show_and_prepare_with_segment_offsets_that_are_not_ints(tmp_path, capsys, offset, ok):
    seg = {
        "kind": "replace",
        "original_start": offset,
        "original_end": 9,  # "red dog" -> "blue cat"
        "corrected_start": 2,
        "corrected_end": 10,
    }
    f = _write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "segments": [seg]}])
    for argv in (("data", "show", f), ("data", "prepare", f, tmp_path / "out", "--processor", "tiny-llava")):
        rc, out, err = _run(capsys, *argv)
        if ok:
            assert rc == 0
        else:
            assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
            assert err.startswith(
                f"rlhfv: error: {f}: row 1: field segments: segment 1: original_start must be"
            )
    if ok:
        assert load_prepared(tmp_path / "out")[1]["summary"]["rows_written"] == 1


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_images_pillow_refuses_oddly_are_one_line_errors(tmp_path, capsys, monkeypatch, kind):
    (tmp_path / "bad.png").write_bytes(BAD_IMAGES[kind](monkeypatch))
    f = _write_jsonl(tmp_path / "in.jsonl", [GOOD, {**GOOD, "image": "bad.png"}])
    rc, _, err = _run(capsys, "data", "prepare", f, tmp_path / "out", "--processor", "tiny-llava")
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"rlhfv: error: {f}: row 2: field image: {tmp_path / 'bad.png'} is not a JPEG/PNG")


# ---- the output folder: checked before any work, replaced only when the new one is whole --


def test_output_that_is_the_current_folder_a_symlink_or_holds_the_input_is_refused_first(
    tmp_path, capsys, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    f = _write_jsonl(work / "in.jsonl", [GOOD])
    for out in (".", "..", str(work)):
        rc, _, err = _run(capsys, "data", "prepare", f, out, "--processor", "tiny-llava")
        assert rc == 2 and err.count("\n") == 1
        assert "field OUT: is the current folder or holds it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["in.jsonl"]

    # a prepared dataset reached through a symbolic link is left as it is
    assert _run(capsys, "data", "prepare", f, tmp_path / "real", "--processor", "tiny-llava")[0] == 0
    before = sorted(p.name for p in (tmp_path / "real").iterdir())
    (tmp_path / "link").symlink_to(tmp_path / "real")
    rc, _, err = _run(capsys, "data", "prepare", f, tmp_path / "link", "--processor", "tiny-llava")
    assert rc == 2 and f"{tmp_path / 'link'}: field OUT: is a symbolic link (to {tmp_path / 'real'})" in err
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == before

    # an input kept inside the prepared dataset it would replace
    inside = _write_jsonl(tmp_path / "real" / "in.jsonl", [GOOD])
    rc, _, err = _run(capsys, "data", "prepare", inside, tmp_path / "real", "--processor", "tiny-llava")
    assert rc == 2 and "holds the input" in err and inside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "work"]


def test_an_interrupt_while_replacing_keeps_the_old_dataset(tmp_path, monkeypatch, tiny_llava):
    from rlhfv.data.prepare import prepare

    processor = tiny_llava[1]
    out = tmp_path / "out"
    prepare(EXAMPLE_PATH, out, processor, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rename = Path.rename

    def interrupted(self, target):
        if self.name.startswith(".out.staging-"):
            raise KeyboardInterrupt  # Ctrl-C just as the new dataset would move in
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(EXAMPLE_PATH, out, processor, progress=False, alignment="reference")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing renamed aside, no staging left
    monkeypatch.setattr(Path, "rename", rename)
    prepare(EXAMPLE_PATH, out, processor, progress=False, alignment="reference")
    assert load_prepared(out)[1]["alignment"] == "reference"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_show_passes_over_bad_rows_and_names_the_one_asked_for(tmp_path, capsys):
    f = _write_jsonl(
        tmp_path / "in.jsonl",
        [
            {**GOOD, "id": "first"},
            {**GOOD, "corrected": ""},
            "{oops",
            {**GOOD, "id": "fourth"},
            {**GOOD, "corrected": " "},
        ],
    )
    rc, out, err = _run(capsys, "data", "show", f, "--index", "3")
    assert rc == 0 and out.startswith(f"record 3 (row 4) of {f}, id fourth")
    assert (
        err
        == f"rlhfv: warning: passed over 2 bad row(s) before it (first: {f}: row 2: field corrected: answer is empty)\n"
    )
    for index, message in (
        (1, "row 2: field corrected: answer is empty"),
        (2, "row 3: malformed JSON"),
        (4, "row 5: field corrected: answer is empty"),
    ):
        rc, out, err = _run(capsys, "data", "show", f, "--index", index)
        assert rc == 2 and out == "" and err.startswith(f"rlhfv: error: {f}: {message}")
    rc, _, err = _run(capsys, "data", "show", f, "--index", 5)
    assert rc == 2 and "field --index: has no record 5" in err


def test_sigterm_during_prepare_removes_the_cache_and_staging_folders(tmp_path):
    import signal
    import time

    lines = EXAMPLE_PATH.read_text().splitlines()
    (tmp_path / "in.jsonl").write_text("\n".join(lines * 1000) + "\n")  # long enough to be stopped
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlhfv.cli",
            "data",
            "prepare",
            "in.jsonl",
            "out",
            "--processor",
            "tiny-llava",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".out.cache-") for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        time.sleep(0.3)  # rows are being encoded and written to the cache
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
