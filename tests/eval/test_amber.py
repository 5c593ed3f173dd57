"""AMBER: generative metrics and discriminative accuracy/F1 ("no" positive) from AMBER-layout files."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.cli import main
from rlhfv.eval.amber import (
    AMBER_GENERATIVE_METRICS,
    AmberItem,
    load_amber,
    score_amber,
    score_generative,
)
from rlhfv.eval.metrics import compute_metrics

RELATION = {
    "dog": ["puppy", "hound"],
    "grass": ["lawn"],
    "frisbee": [],
    "cat": ["kitten"],
    "ball": [],
    "car": ["vehicle"],
    "tree": [],
    "sky": [],
}
ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass", "frisbee"], "hallu": ["cat", "ball"]},
    {"id": 2, "type": "generative", "truth": ["car", "tree"], "hallu": ["dog"]},
    {"id": 3, "type": "discriminative-existence", "truth": "no"},
    {"id": 4, "type": "discriminative-existence", "truth": "yes"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 6, "type": "discriminative-relation", "truth": "no"},
]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    (tmp_path / "relation.json").write_text(json.dumps(RELATION))
    (tmp_path / "safe_words.txt").write_text("sky\n")
    return tmp_path


def test_hand_worked(files):
    bench = load_amber(files / "annotations.json", files / "relation.json", files / "safe_words.txt")
    answers = [
        # words: puppies(dog) lawn(grass) kitten(hallu cat) ball(hallu ball) sky(safe): 5 words, 2 hallucinated
        (1, "Two puppies play on the lawn with a kitten and a ball under the sky."),
        # words: vehicle(car) dog(hallu) hound(hallu dog): 3 words, 2 hallucinated
        (2, "A vehicle, a dog and a hound."),
        (3, "No, there is not."),  # truth no, said no  -> tp
        (4, "No."),  # truth yes, said no                 -> fp
        (5, "Yes it is."),  # truth no, said yes          -> fn
        (6, "No"),  # truth no, said no                   -> tp
        (7, "unknown id"),
        (4, "Perhaps."),
    ]
    result = score_amber(bench, answers)
    g = result.generative
    assert g["chair"] == pytest.approx(4 / 8)
    assert g["cover"] == pytest.approx((2 + 1) / (3 + 2))
    assert g["hal"] == pytest.approx(2 / 2)
    assert g["cog"] == pytest.approx((2 + 1) / (2 + 1))
    d = result.discriminative["all"]
    assert d["accuracy"] == pytest.approx(2 / 4)
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == pytest.approx(2 / 3)
    assert d["f1"] == pytest.approx(2 / 3)
    assert result.discriminative["existence"]["accuracy"] == pytest.approx(1 / 2)
    assert result.n_generative == 2 and result.n_discriminative == 4
    # the second answer to item 4 is not scored: the item would weigh double
    assert {k: v["count"] for k, v in result.problems.items()} == {"unknown_id": 1, "duplicate_id": 1}
    unparsed = score_amber(bench, [(3, "Perhaps."), (4, "Yes")])
    assert unparsed.n_discriminative == 1 and unparsed.problems["unparsed_answer"]["count"] == 1
    assert {m.name: m.higher_is_better for m in AMBER_GENERATIVE_METRICS} == {
        "chair": False,
        "cover": True,
        "hal": False,
        "cog": False,
    }


_OBJECTS = ["dog", "cat", "car", "tree", "ball", "cup"]
_ASSOC = {o: (f"{o}x",) for o in _OBJECTS}  # disjoint association lists


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(_OBJECTS + [f"{o}x" for o in _OBJECTS] + ["safe"]), max_size=8),
            st.lists(st.sampled_from(_OBJECTS), max_size=4, unique=True),
            st.lists(st.sampled_from(_OBJECTS), max_size=3, unique=True),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_generative_metrics_match_brute_force(cases):
    class Bench:
        association = _ASSOC
        safe_words = frozenset({"safe"})

    records, words_total, hal_words, hal_resp, truth_total, covered, hallu_total, named = (
        [],
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    )
    for words, truth, hallu in cases:
        hallu = [h for h in hallu if h not in truth]
        records.append(score_generative(words, AmberItem(0, "generative", tuple(truth), tuple(hallu)), Bench))
        base = [w.removesuffix("x") for w in words if w != "safe"]
        words_total += len(words)
        bad = [b for b in base if b not in truth]
        hal_words += len(bad)
        hal_resp += bool(bad)
        truth_total += len(truth)
        covered += len(set(base) & set(truth))
        hallu_total += len(hallu)
        named += len(set(base) & set(hallu))
    got = compute_metrics(AMBER_GENERATIVE_METRICS, records)

    def div(a, b):
        return a / b if b else math.nan

    want = {
        "chair": div(hal_words, words_total),
        "cover": div(covered, truth_total),
        "hal": div(hal_resp, len(cases)),
        "cog": div(named, hallu_total),
    }
    for k, v in want.items():
        assert (math.isnan(v) and math.isnan(got[k])) or got[k] == pytest.approx(v)


def test_cli_amber(files, capsys):
    answers = files / "answers.json"
    answers.write_text(json.dumps([{"id": 1, "response": "A dog on grass."}, {"id": 3, "response": "No"}]))
    args = ["eval", "amber", "--answers", str(answers), "--annotations", str(files / "annotations.json")]
    assert main([*args, "--relation", str(files / "relation.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["generative/chair"] == 0 and out["generative/cover"] == pytest.approx(2 / 3)
    assert out["discriminative/all/accuracy"] == 1
    assert main([*args, "--relation", str(files / "missing.json")]) == 2
    assert "cannot read file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"id": 1, "type": "weird", "truth": "yes"}, "row 1: field type: unknown item type 'weird'"),
        ({"id": 1, "type": "generative"}, "row 1: field truth: missing"),
        ({"type": "generative", "truth": []}, "row 1: field id: missing"),
        ("not an object", "row 1: not a JSON object"),
        # a string would be read letter by letter, null crash later
        (
            {"id": 1, "type": "generative", "truth": "dog"},
            "row 1: field truth: expected a list of words, got str",
        ),
        (
            {"id": 1, "type": "generative", "truth": None},
            "row 1: field truth: expected a list of words, got NoneType",
        ),
        (
            {"id": 1, "type": "generative", "truth": ["dog"], "hallu": "cat"},
            "row 1: field hallu: expected a list of words, got str",
        ),
        (
            {"id": 1, "type": "generative", "truth": ["dog", 3]},
            "row 1: field truth: expected a list of words, got a list with non-strings",
        ),
        (
            {"id": 1, "type": "discriminative-existence", "truth": None},
            "row 1: field truth: a discriminative item's truth is 'yes' or 'no', got None",
        ),
        (
            {"id": 1, "type": "discriminative-existence", "truth": "maybe"},
            "row 1: field truth: a discriminative item's truth is 'yes' or 'no', got 'maybe'",
        ),
        ({"id": 1.5, "type": "generative", "truth": []}, "row 1: field id: not an integer: 1.5"),
        ({"id": True, "type": "generative", "truth": []}, "row 1: field id: not an integer: True"),
    ],
)
def test_bad_annotation_items_name_the_row_and_field(tmp_path, item, message):
    from rlhfv.errors import InputError

    annotations, relation = tmp_path / "a.json", tmp_path / "r.json"
    annotations.write_text(json.dumps([item]))
    relation.write_text("{}")
    with pytest.raises(InputError) as err:
        load_amber(annotations, relation)
    assert message in str(err.value)


def test_cli_amber_finds_truncated_and_missing_images_before_loading_the_model(tmp_path, capsys):
    from tests.eval.conftest import IMAGES, truncated_jpeg

    queries = [{"id": i, "image": f"AMBER_{i}.jpg", "query": "Describe this image."} for i in (1, 2, 3)]
    (tmp_path / "queries.json").write_text(json.dumps(queries))
    (tmp_path / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    (tmp_path / "relation.json").write_text(json.dumps(RELATION))
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    (image_dir / "AMBER_1.jpg").write_bytes(IMAGES[0].read_bytes())
    (image_dir / "AMBER_2.jpg").write_bytes(truncated_jpeg())  # AMBER_3.jpg is missing
    args = ["eval", "amber", "--annotations", str(tmp_path / "annotations.json")]
    args += ["--relation", str(tmp_path / "relation.json"), "--queries", str(tmp_path / "queries.json")]
    # the model does not exist: had it been loaded first, the error would say so
    args += ["--image-dir", str(image_dir), "--model", str(tmp_path / "no-model"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"rlhfv: error: {tmp_path / 'queries.json'}: field image: 2 of 3 images not found or unreadable, "
        f"e.g. row 2: image file {image_dir / 'AMBER_2.jpg'} cannot be decoded (image file is truncated"
    )


def test_annotation_ids_and_relation_lists_are_checked(tmp_path):
    from rlhfv.errors import InputError

    annotations, relation = tmp_path / "a.json", tmp_path / "r.json"
    relation.write_text("{}")
    item = {"id": 4, "type": "generative", "truth": ["dog"]}
    annotations.write_text(json.dumps([item, item | {"id": "4"}]))
    with pytest.raises(InputError, match="row 2: field id: id 4 repeats row 1; ids must be unique"):
        load_amber(annotations, relation)
    annotations.write_text(json.dumps([item, {"id": "null", "hallu": None} | item | {"id": "5"}]))
    relation.write_text(json.dumps({"dog": "puppy"}))
    with pytest.raises(InputError, match="field 'dog': expected a list of words, got str"):
        load_amber(annotations, relation)
    relation.write_text(json.dumps({"dog": ["puppy"]}))
    bench = load_amber(annotations, relation)
    assert sorted(bench.items) == [4, 5] and bench.items[5].hallu == ()  # null hallu: none listed


def test_answer_ids_that_repeat_or_are_no_integers_are_reported(files):
    bench = load_amber(files / "annotations.json", files / "relation.json")
    answers = [(3, "No."), ("3", "Yes."), (4.0, "Yes."), (True, "Yes."), ("four", "Yes."), (4, "Yes.")]
    result = score_amber(bench, answers)
    assert result.n_discriminative == 2  # the first answer to 3, and 4
    assert result.problems["duplicate_id"]["examples"] == [
        "answer id '3' answered again; the first answer is kept"
    ]
    assert result.problems["unknown_id"]["count"] == 3
    assert result.problems["unknown_id"]["examples"][:2] == [
        "answer id 4.0 is not an integer",
        "answer id True is not an integer",
    ]
