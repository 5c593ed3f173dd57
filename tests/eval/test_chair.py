"""CHAIR: hand-worked values, a brute-force cross-check, ground truth loading, the CLI."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.cli import main
from rlhfv.eval.chair import (
    CHAIR_METRICS,
    ChairRecord,
    load_ground_truth,
    normalize_image_id,
    score_chair,
)
from rlhfv.eval.metrics import compute_metrics
from tests.eval.conftest import COCO80, SHARED


def test_hand_worked_example(coco):
    gt = {"1": frozenset({"dog", "person", "frisbee"}), "2": frozenset({"cat", "couch"})}
    responses = [
        ("1", "A man throws a frisbee to his dog. Another dog watches."),  # 4 mentions, 0 hallucinated
        ("2", "A cat sleeps on a sofa next to a laptop and a cup."),  # 4 mentions, 2 hallucinated
        ("1", "A sunny afternoon."),  # no mention
        ("2", "A dog on the couch."),  # 2 mentions, 1 hallucinated
    ]
    result = score_chair(responses, gt, coco)
    assert [r.hallucinated for r in result.records] == [(), ("laptop", "cup"), (), ("dog",)]
    assert result.n_responses == 4 and result.n_mentions == 10
    m = result.metrics
    assert m["chair_s"] == pytest.approx(2 / 4)
    assert m["chair_s_mentioned"] == pytest.approx(2 / 3)
    assert m["chair_i"] == pytest.approx(3 / 10)
    # covered gt objects: {person, frisbee, dog} + {cat, couch} + {} + {couch} = 6 of 3+2+3+2
    assert m["recall"] == pytest.approx(6 / 10)
    assert {x.name: x.higher_is_better for x in CHAIR_METRICS} == {
        "chair_s": False,
        "chair_s_mentioned": False,
        "chair_i": False,
        "recall": True,
    }


def test_nothing_mentioned_is_undefined_not_zero(coco):
    result = score_chair([("1", "Nice weather.")], {"1": frozenset({"dog"})}, coco)
    assert result.metrics["chair_s"] == 0.0
    assert math.isnan(result.metrics["chair_s_mentioned"])
    assert math.isnan(result.metrics["chair_i"])
    assert result.summary()["chair_i"] is None


def test_bad_responses_are_counted_by_kind(coco):
    gt = {"1": frozenset({"dog"})}
    result = score_chair([("1", None), ("1", 42), ("7", "a dog"), ("1", "a dog")], gt, coco)
    assert result.n_responses == 1
    assert {k: v["count"] for k, v in result.problems.items()} == {
        "response_not_string": 2,
        "unknown_image_id": 1,
    }
    assert "'7'" in result.problems["unknown_image_id"]["examples"][0]


_CLASSES = ["dog", "cat", "person", "car", "pizza", "tv"]


def _brute_force(items):
    """Plain loops straight from the definitions, over (mentions, gt) pairs."""
    n = len(items)
    with_hal = with_mention = hal = mentions = covered = gt_total = 0
    for mentioned, gt in items:
        h = [c for c in mentioned if c not in gt]
        with_hal += bool(h)
        with_mention += bool(mentioned)
        hal += len(h)
        mentions += len(mentioned)
        covered += len(set(mentioned) & set(gt))
        gt_total += len(gt)

    def div(a, b):
        return a / b if b else math.nan

    return {
        "chair_s": div(with_hal, n),
        "chair_s_mentioned": div(with_hal, with_mention),
        "chair_i": div(hal, mentions),
        "recall": div(covered, gt_total),
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(_CLASSES), max_size=6),
            st.frozensets(st.sampled_from(_CLASSES), max_size=4),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_metrics_match_brute_force_on_records(items):
    records = [ChairRecord(str(i), tuple(m), gt) for i, (m, gt) in enumerate(items)]
    got = compute_metrics(CHAIR_METRICS, records)
    want = _brute_force(items)
    for name, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[name])
        else:
            assert got[name] == pytest.approx(value)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.sampled_from(_CLASSES), max_size=5), st.integers(0, 2)),
        min_size=1,
        max_size=8,
    )
)
def test_end_to_end_text_scoring_matches_brute_force(coco, items):
    """Texts written from known class lists score the same as the lists themselves."""
    gts = {"0": frozenset({"dog", "cat"}), "1": frozenset(), "2": frozenset({"tv", "pizza", "person"})}
    words = {
        "dog": "dogs",
        "cat": "kitten",
        "person": "woman",
        "car": "sedan",
        "pizza": "pizza",
        "tv": "television",
    }
    responses = [(str(img), " and ".join(f"a {words[c]}" for c in m) + ".") for m, img in items]
    result = score_chair(responses, gts, coco)
    want = _brute_force([(m, gts[str(img)]) for m, img in items])
    for name, value in want.items():
        assert (math.isnan(value) and math.isnan(result.metrics[name])) or result.metrics[
            name
        ] == pytest.approx(value)


def test_image_ids_are_normalised():
    assert normalize_image_id(296284) == normalize_image_id("COCO_val2014_000000296284.jpg") == "296284"
    assert normalize_image_id("images/000000296284.jpg") == "296284"
    assert normalize_image_id("62ed0efe9c8256b7") == "62ed0efe9c8256b7"


def test_ground_truth_from_shared_jsonl(coco):
    gt = load_ground_truth([COCO80], coco)
    assert len(gt) == 80
    # 296284: donuts in a display case; "bakery" and "cabinet" are no COCO objects
    assert gt["296284"] == frozenset({"donut"})
    # 151358: instances include tie, apple, book, teddy bear; captions add no new class
    assert {"apple", "book", "teddy bear", "tie"} <= gt["151358"]


def test_ground_truth_from_coco_instances_and_captions(tmp_path, coco):
    instances = {
        "images": [{"id": 9}, {"id": 10}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 67, "name": "dining table"}],
        "annotations": [{"image_id": 9, "category_id": 18}, {"image_id": 9, "category_id": 67}],
    }
    captions = {
        "annotations": [
            {"image_id": 9, "caption": "A puppy and a kitten."},
            {"image_id": 10, "caption": "A bus."},
        ]
    }
    (tmp_path / "inst.json").write_text(json.dumps(instances))
    (tmp_path / "caps.json").write_text(json.dumps(captions))
    gt = load_ground_truth([tmp_path / "inst.json", tmp_path / "caps.json"], coco)
    assert gt == {"9": frozenset({"dog", "dining table", "cat"}), "10": frozenset({"bus"})}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")


def test_cli_chair_json(tmp_path, capsys):
    responses = tmp_path / "r.jsonl"
    _write_jsonl(
        responses,
        [
            {"image_id": "000000296284", "response": "Donuts and a cup of coffee on the table."},
            {"image_id": 296284, "response": "Glazed doughnuts."},
            {"image_id": 1, "response": "Unknown image."},
            {"image_id": 296284, "response": ["not", "text"]},
        ],
    )
    assert main(["eval", "chair", "--responses", str(responses), "--annotations", str(COCO80), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["n_responses"] == 2 and out["n_mentions"] == 4
    assert out["chair_i"] == pytest.approx(2 / 4)  # cup, dining table hallucinated
    assert out["chair_s"] == pytest.approx(1 / 2) and out["recall"] == pytest.approx(2 / 2)
    assert {k: v["count"] for k, v in out["problems"].items()} == {
        "invalid_json": 1,
        "response_not_string": 1,
        "unknown_image_id": 1,
    }
    assert "unknown_image_id" in captured.err and "row 3" in captured.err


def test_cli_chair_with_reference_synonyms_and_bad_input(tmp_path, capsys):
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"image_id": 296284, "response": "bagels"}) + "\n")
    args = ["eval", "chair", "--responses", str(responses), "--annotations", str(COCO80), "--json"]
    assert main([*args, "--synonyms", str(SHARED / "chair_synonyms_refine.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["n_mentions"] == 1  # bagel -> donut (reference table)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["n_mentions"] == 0  # not in the project's table
    assert (
        main(["eval", "chair", "--responses", str(tmp_path / "nope.jsonl"), "--annotations", str(COCO80)])
        == 2
    )
    assert "cannot read file" in capsys.readouterr().err
    responses.write_text(json.dumps({"image_id": 5, "response": "a dog"}) + "\n")
    assert main(args) == 2
    assert "no response could be scored" in capsys.readouterr().err


def test_cli_chair_refuses_a_binary_synonym_table(tmp_path, capsys):
    from tests.eval.conftest import IMAGES

    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"image_id": 296284, "response": "donuts"}) + "\n")
    args = ["eval", "chair", "--responses", str(responses), "--annotations", str(COCO80)]
    assert main([*args, "--synonyms", str(IMAGES[0])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhfv: error: {IMAGES[0]}: not a text synonym table") and "Traceback" not in err


@pytest.mark.parametrize("where", ["missing_dir", "a_directory", "parent_is_a_file"])
def test_cli_chair_checks_per_response_before_scoring(tmp_path, capsys, where):
    (tmp_path / "file.txt").write_text("x")
    target = {
        "missing_dir": tmp_path / "nodir" / "x.jsonl",
        "a_directory": tmp_path,
        "parent_is_a_file": tmp_path / "file.txt" / "x.jsonl",
    }[where]
    # the responses file does not exist either: the output path is checked first
    args = ["eval", "chair", "--responses", str(tmp_path / "nope.jsonl"), "--annotations", str(COCO80)]
    assert main([*args, "--per-response", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhfv: error: --per-response {target}: ")
    assert {
        "missing_dir": f"directory {tmp_path / 'nodir'} does not exist",
        "a_directory": "is a directory",
        "parent_is_a_file": f"{tmp_path / 'file.txt'} is not a directory",
    }[where] in err


def test_cli_chair_reads_a_json_array_like_jsonl(tmp_path, capsys):
    rows = [
        {"image_id": "000000296284", "response": "Donuts and a cup of coffee on the table."},
        {"image_id": 296284, "response": "Glazed doughnuts."},
        "not an object",
    ]
    as_array = tmp_path / "r.json"
    as_array.write_text(json.dumps(rows, indent=2))
    as_lines = tmp_path / "r.jsonl"
    as_lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = []
    for path in (as_array, as_lines):
        assert main(["eval", "chair", "--responses", str(path), "--annotations", str(COCO80), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    examples = [r.pop("problems")["invalid_json"]["examples"] for r in results]
    assert results[0] == results[1] and results[0]["n_responses"] == 2
    assert examples == [[f"{as_array}: item 3: not a JSON object"], [f"{as_lines}: row 3: not a JSON object"]]


DOG = [{"id": 1, "name": "dog"}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"images": [{"id": 1}], "annotations": [{"image_id": 1, "category_id": 99}], "categories": DOG},
            "field annotations[0].category_id: category id 99 is not declared in 'categories'",
        ),
        (
            {"images": [{"id": 1}], "annotations": [{"category_id": 1}], "categories": DOG},
            "field annotations[0].image_id: is missing",
        ),
        (
            {"annotations": [{"image_id": 1, "caption": "A dog."}, {"image_id": 1, "caption": None}]},
            "field annotations[1].caption: is null",
        ),
        ({"annotations": [{"image_id": 1, "caption": 7}]}, "field annotations[0].caption: caption is int"),
        (
            {"annotations": [{"image_id": 1, "category_id": 1}], "categories": [{"id": 1}]},
            "categories[0].name",
        ),
        ({"images": ["1.jpg"], "annotations": []}, "field images[0]: expected a JSON object"),
    ],
)
def test_cli_malformed_coco_files_name_the_file_record_and_field(tmp_path, capsys, data, message):
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps(data))
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"image_id": 1, "response": "A dog."}) + "\n")
    assert main(["eval", "chair", "--responses", str(responses), "--annotations", str(annotations)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhfv: error: {annotations}: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"id": 1, "captions": "A dog on a couch."}, "captions", "expected a list, got str"),
        ({"id": 1, "captions": ["A dog.", None]}, "captions[1]", "caption is NoneType"),
        ({"id": 1, "instances": "dog"}, "instances", "expected a list, got str"),
        ({"id": 1, "instances": [{"bbox": [0, 0, 1, 1]}]}, "instances[0]", "expected a category name"),
        ({"id": 1, "objects": {"dog": 1}}, "objects", "expected a list, got dict"),
    ],
)
def test_jsonl_ground_truth_refuses_fields_that_are_no_list(tmp_path, coco, row, field, message):
    from rlhfv.errors import InputError

    path = tmp_path / "gt.jsonl"
    path.write_text(json.dumps({"id": 0, "captions": ["A cat."]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as err:
        load_ground_truth([path], coco)
    assert str(err.value).startswith(f"{path}: row 2: field {field}: {message}")


def test_jsonl_ground_truth_lists_and_nulls_still_load(tmp_path, coco):
    path = tmp_path / "gt.jsonl"
    rows = [{"id": 1, "captions": ["A dog on a couch."], "instances": ["cat"]}, {"id": 2, "captions": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_ground_truth([path], coco) == {"1": frozenset({"dog", "couch", "cat"}), "2": frozenset()}
