"""POPE: question building, yes/no parsing, metrics against hand-worked and brute-force values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.cli import main
from rlhfv.eval.metrics import BinaryRecord, binary_metrics, compute_metrics
from rlhfv.eval.pope import (
    POPE_METRICS,
    SPLITS,
    ImageObjects,
    build_pope_questions,
    load_object_annotations,
    parse_yes_no,
    read_questions,
    score_pope,
)
from tests.eval.conftest import COCO80


def _ann(objs: dict[str, set[str]]) -> dict[str, ImageObjects]:
    return {k: ImageObjects(k, f"{k}.jpg", frozenset(v)) for k, v in objs.items()}


# dog in 4 images, person 3, cat 2, car 2 (with person), frisbee 1, bus 1
TOY = _ann(
    {
        "1": {"dog", "person", "frisbee"},
        "2": {"dog", "cat"},
        "3": {"dog", "person", "car"},
        "4": {"dog", "cat"},
        "5": {"person", "car", "bus"},
    }
)


def test_popular_negatives_are_the_most_frequent_absent_classes():
    qs = build_pope_questions(TOY, "popular", n_images=5, per_image=1, seed=0)
    no = {q.image_id: q.object for q in qs if q.label == "no"}
    # image 2 lacks person (3 images), car (2) ...: person first
    assert no["2"] == "person"
    # image 5 lacks dog (4 images)
    assert no["5"] == "dog"


def test_adversarial_negatives_cooccur_with_the_image_objects():
    qs = build_pope_questions(TOY, "adversarial", n_images=5, per_image=1, seed=0)
    no = {q.image_id: q.object for q in qs if q.label == "no"}
    # image 2 = {dog, cat}: co-occurrence with dog: person 2, car 1, frisbee 1; with cat: 0
    assert no["2"] == "person"
    # image 5 = {person, car, bus}: dog co-occurs with person twice and with car once (3)
    assert no["5"] == "dog"


@pytest.mark.parametrize("split", ["random", "popular", "adversarial"])
def test_questions_are_balanced_correct_and_seeded(split):
    annotations = load_object_annotations([COCO80])
    qs = build_pope_questions(annotations, split, n_images=20, per_image=2, seed=3)
    assert qs == build_pope_questions(annotations, split, n_images=20, per_image=2, seed=3)
    assert qs != build_pope_questions(annotations, split, n_images=20, per_image=2, seed=4)
    assert sum(q.label == "yes" for q in qs) == sum(q.label == "no" for q in qs) == 40
    for q in qs:
        present = q.object in annotations[q.image_id].objects
        assert present == (q.label == "yes")
        assert q.text in (f"Is there a {q.object} in the image?", f"Is there an {q.object} in the image?")
    assert len({q.image_id for q in qs}) == 20


def test_splits_share_images_and_positives_and_differ_in_negatives():
    annotations = load_object_annotations([COCO80])
    qs = {s: build_pope_questions(annotations, s, n_images=12, per_image=3, seed=7) for s in SPLITS}
    images = {s: [q.image_id for q in split_qs[::6]] for s, split_qs in qs.items()}
    assert len(set(images["random"])) == 12
    assert images["random"] == images["popular"] == images["adversarial"]
    yes = {s: [(q.image_id, q.object) for q in split_qs if q.label == "yes"] for s, split_qs in qs.items()}
    assert yes["random"] == yes["popular"] == yes["adversarial"]
    # each split's negatives follow its strategy, worked out here by brute force
    counts = {
        c: sum(c in a.objects for a in annotations.values())
        for c in {c for a in annotations.values() for c in a.objects}
    }
    for image_id in images["random"]:
        present = annotations[image_id].objects
        absent = sorted(set(counts) - present)
        no = {
            s: [q.object for q in split_qs if q.image_id == image_id and q.label == "no"]
            for s, split_qs in qs.items()
        }
        assert len(set(no["random"])) == 3 and set(no["random"]) <= set(absent)
        assert no["popular"] == sorted(absent, key=lambda c: (-counts[c], c))[:3]

        # co-occurrences with the image's objects, pair by pair over all images
        together = {
            c: sum(c in a.objects and o in a.objects for a in annotations.values() for o in present)
            for c in absent
        }
        assert no["adversarial"] == sorted(absent, key=lambda c: (-together[c], c))[:3]

    # of the negatives, only the random ones depend on the seed: on the images a seed-8
    # build shares with this one, they change; the popular and adversarial ones do not
    def negatives(split_qs):
        no = {}
        for q in split_qs:
            if q.label == "no":
                no.setdefault(q.image_id, []).append(q.object)
        return no

    for split in SPLITS:
        now = negatives(qs[split])
        other = negatives(build_pope_questions(annotations, split, n_images=12, per_image=3, seed=8))
        shared = sorted(now.keys() & other.keys())
        assert shared
        same = [sorted(now[i]) == sorted(other[i]) for i in shared]
        assert not all(same) if split == "random" else all(same), split


def test_cli_build_refuses_malformed_coco_instances(tmp_path, capsys):
    dog = [{"id": 1, "name": "dog"}]
    cases = [
        (
            {"annotations": [{"image_id": 1, "category_id": 99}], "categories": dog},
            "annotations[0].category_id",
        ),
        (
            {"annotations": [{"image_id": 1, "category_id": 1}, {"category_id": 1}], "categories": dog},
            "annotations[1].image_id",
        ),
        ({"images": [{"file_name": "a.jpg"}], "annotations": [], "categories": dog}, "images[0].id"),
    ]
    for data, field in cases:
        annotations = tmp_path / "inst.json"
        annotations.write_text(json.dumps(data))
        args = [
            "eval",
            "pope",
            "build",
            "--annotations",
            str(annotations),
            "--out",
            str(tmp_path / "p.jsonl"),
        ]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rlhfv: error: {annotations}: field {field}: ") and err.count("\n") == 1


def _llava_eval_pope(text: str) -> str:
    """LLaVA's eval_pope.py: the text before the first ".", commas removed, split at spaces;
    "no" if a token is exactly No, not or no, otherwise "yes" (an answer saying neither too)."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if {"No", "not", "no"} & set(words) else "yes"


# rlhfv's parser gives what LLaVA's does here...
AGREES = [
    ("Yes", "yes"),
    ("yes, there is a dog in the image.", "yes"),
    ("Yes. No other animals.", "yes"),
    ("No", "no"),
    ("No, there is no cat.", "no"),
    ("There is no cat in the image.", "no"),
    ("The image does not contain a cat.", "no"),
    ("There is a cat on the sofa.", "yes"),
    ("I can see a cat on the sofa.", "yes"),
    ("There's a dog in the image.", "yes"),
    ("There are two dogs.", "yes"),
    ("There\u2019s a dog.", "yes"),
    ("There is a cat, not a dog.", "no"),
    ("Yes, there's a dog. There is no cat.", "yes"),  # judged on the first sentence
    ("**No**, there's no dog.", "no"),
]
# ...and deliberately not here: contractions, "cannot" and other negative words mean no
# (LLaVA: yes), a leading yes/no word wins over a later one, case and ! ? end nothing
# differently, and an answer saying neither is left out (None) rather than counted as yes
DIFFERS = [
    ("There isn't a cat.", "no"),
    ("There isn\u2019t a dog.", "no"),
    ("There aren\u2019t any dogs.", "no"),
    ("I cannot see a dog.", "no"),
    ("I can't see a dog.", "no"),
    ("I don\u2019t see a dog.", "no"),
    ("Nope.", "no"),
    ("NO", "no"),
    ("No!", "no"),
    ("Yes, but not clearly.", "yes"),
    ("A cat.", None),
    ("", None),
    ("The image shows a dog.", None),
]


@pytest.mark.parametrize(("text", "expected"), AGREES + DIFFERS)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize(("text", "expected"), AGREES)
def test_parse_yes_no_agrees_with_llava_eval_pope(text, expected):
    assert _llava_eval_pope(text) == expected


@pytest.mark.parametrize(("text", "expected"), DIFFERS)
def test_parse_yes_no_differs_from_llava_eval_pope_on_purpose(text, expected):
    assert _llava_eval_pope(text) != expected


_ANSWER_WORDS = [
    "yes",
    "no",
    "there",
    "is",
    "there's",
    "isn't",
    "not",
    "a",
    "dog",
    "i",
    "see",
    "cannot",
    ",",
    ".",
]


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.sampled_from(_ANSWER_WORDS), max_size=8),
    space=st.sampled_from(["", " ", "  \n", "\t"]),
    case=st.sampled_from([str.lower, str.upper, str.title, str.capitalize]),
    bold=st.booleans(),
    curly=st.booleans(),
)
def test_parse_yes_no_ignores_layout(words, space, case, bold, curly):
    """Leading whitespace, letter case, markdown bold and curly apostrophes never change the label."""
    text = " ".join(words)
    styled = case(text).replace("'", "\u2019" if curly else "'")
    assert parse_yes_no(space + (f"**{styled}**" if bold else styled)) == parse_yes_no(text)


def test_metrics_hand_worked():
    # labels:   y y y y n n n n n n
    # answers:  y y y n y n n n n n  -> tp 3, fn 1, fp 1, tn 5
    labels = ["yes"] * 4 + ["no"] * 6
    preds = ["yes", "yes", "yes", "no", "yes", "no", "no", "no", "no", "no"]
    m = compute_metrics(POPE_METRICS, [BinaryRecord(a, b) for a, b in zip(labels, preds, strict=True)])
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["yes_ratio"] == pytest.approx(4 / 10)
    assert {x.name: x.higher_is_better for x in POPE_METRICS}["yes_ratio"] is None


@pytest.mark.parametrize("positive", ["yes", "no"])  # POPE: "yes"; AMBER discriminative: "no"
@settings(max_examples=150, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["yes", "no"]), st.sampled_from(["yes", "no"])), min_size=1, max_size=30
    )
)
def test_binary_metrics_match_brute_force(positive, pairs):
    records = [BinaryRecord(label, pred) for label, pred in pairs]
    got = compute_metrics(binary_metrics(positive), records)
    n = len(pairs)
    correct = [label == pred for label, pred in pairs]
    said = [i for i, (_, p) in enumerate(pairs) if p == positive]
    truly = [i for i, (label, _) in enumerate(pairs) if label == positive]
    both = set(said) & set(truly)
    precision = len(both) / len(said) if said else math.nan
    recall = len(both) / len(truly) if truly else math.nan
    assert got["accuracy"] == pytest.approx(sum(correct) / n)
    assert got[f"{positive}_ratio"] == pytest.approx(len(said) / n)
    for name, want in (("precision", precision), ("recall", recall)):
        assert (math.isnan(want) and math.isnan(got[name])) or got[name] == pytest.approx(want)
    if math.isnan(precision) or math.isnan(recall):
        assert math.isnan(got["f1"])
    elif precision + recall == 0:
        assert got["f1"] == 0
    else:
        assert got["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_cli_build_and_score(tmp_path, capsys):
    questions = tmp_path / "pope.jsonl"
    args = ["eval", "pope", "build", "--annotations", str(COCO80), "--out", str(questions)]
    assert main([*args, "--n-images", "10", "--seed", "1"]) == 0
    capsys.readouterr()
    qs = read_questions(questions)
    assert len(qs) == 3 * 10 * 3 * 2
    assert len({q.question_id for q in qs}) == len(qs)
    # a model that always says yes except on popular questions, where it says "There is no X."
    answers = tmp_path / "answers.jsonl"
    rows = [
        {
            "question_id": q.question_id,
            "answer": f"There is no {q.object}." if q.split == "popular" else "Yes.",
        }
        for q in qs
    ]
    rows[0]["answer"] = "Maybe a dog?"
    rows[1]["answer"] = None
    del rows[2]["answer"]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(["eval", "pope", "score", "--questions", str(questions), "--answers", str(answers), "--json"])
        == 0
    )
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["popular/yes_ratio"] == 0 and out["popular/accuracy"] == pytest.approx(0.5)
    # questions alternate yes/no: the 3 unusable ones are yes, no, yes -> 28 yes + 29 no remain
    assert out["random/yes_ratio"] == 1 and out["random/precision"] == pytest.approx(28 / 57)
    assert out["random/recall"] == 1 and out["random/accuracy"] == pytest.approx(28 / 57)
    assert out["random/n"] == 60 - 3 and out["all/n"] == 180 - 3  # the 3 unusable answers are random ones
    assert out["problems"]["unparsed_answer"]["count"] == 1
    assert out["problems"]["missing_answer"]["count"] == 2
    assert "unparsed_answer" in captured.err


def test_score_with_no_usable_answer_is_an_error():
    from rlhfv.errors import InputError

    qs = build_pope_questions(TOY, "random", n_images=1, per_image=1, seed=0)
    with pytest.raises(InputError, match="missing_answer"):
        score_pope(qs, {})


@pytest.mark.parametrize(
    ("option", "value"), [("--n-images", "-3"), ("--n-images", "0"), ("--per-image", "0")]
)
def test_cli_build_refuses_non_positive_counts(tmp_path, capsys, option, value):
    args = ["eval", "pope", "build", "--annotations", str(COCO80), "--out", str(tmp_path / "p.jsonl")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: must be 1 or more, got {int(value)}" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_cli_build_checks_out_before_building(tmp_path, capsys):
    args = ["eval", "pope", "build", "--annotations", str(tmp_path / "missing.jsonl")]
    assert main([*args, "--out", str(tmp_path / "nodir" / "p.jsonl")]) == 2
    assert f"--out {tmp_path / 'nodir' / 'p.jsonl'}: directory" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def _questions(tmp_path):
    questions = tmp_path / "pope.jsonl"
    args = ["eval", "pope", "build", "--annotations", str(COCO80), "--out", str(questions)]
    assert main([*args, "--n-images", "2", "--per-image", "1", "--split", "random"]) == 0
    return questions, read_questions(questions)


def test_cli_score_counts_bad_answer_rows_with_file_and_row(tmp_path, capsys):
    questions, qs = _questions(tmp_path)
    capsys.readouterr()
    assert [q.question_id for q in qs] == [0, 1, 2, 3]
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "\n".join(
            [
                json.dumps({"question_id": 0, "answer": "Yes."}),
                '{"question_id": 1, "answer": "No."',  # row 2: malformed JSON
                json.dumps({"question_id": "x", "answer": "No."}),  # row 3: not an integer
                json.dumps({"answer": "No."}),  # row 4: no question_id
                json.dumps({"question_id": 99, "answer": "No."}),  # row 5: not a question
                json.dumps({"question_id": 0, "answer": "No."}),  # row 6: answered twice
                json.dumps({"question_id": "2", "answer": "No, there is none."}),  # "2" is fine
            ]
        )
        + "\n"
    )
    args = ["eval", "pope", "score", "--questions", str(questions), "--answers", str(answers), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["all/n"] == 2  # questions 0 and 2
    problems = out["problems"]
    assert {k: v["count"] for k, v in problems.items()} == {
        "duplicate_id": 1,
        "invalid_json": 1,
        "missing_answer": 2,  # questions 1 and 3
        "missing_field": 1,
        "unknown_id": 2,
    }
    assert problems["invalid_json"]["examples"] == [f"{answers}: row 2: Expecting ',' delimiter"]
    assert problems["missing_field"]["examples"] == [f"{answers}: row 4: no 'question_id'"]
    assert problems["unknown_id"]["examples"] == [
        f"{answers}: row 3: question_id 'x' is not an integer",
        f"{answers}: row 5: question_id 99 is not in the questions",
    ]
    assert (
        f"{answers}: row 6: question_id 0 already answered on {answers}: row 1"
        in (problems["duplicate_id"]["examples"])
    )
    assert "Traceback" not in captured.err and "2 x unknown_id" in captured.err


def test_cli_score_with_a_model_finds_missing_images_before_loading_it(tmp_path, capsys):
    questions, qs = _questions(tmp_path)
    capsys.readouterr()
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    args = ["eval", "pope", "score", "--questions", str(questions), "--image-dir", str(image_dir)]
    # the model does not exist: had it been loaded first, the error would say so
    assert main([*args, "--model", str(tmp_path / "no-model"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"rlhfv: error: {questions}: field image: 4 of 4 images not found or unreadable, e.g. row 1: "
        f"image file not found: {image_dir / qs[0].image}\n"
    )


def test_cli_score_with_a_model_finds_truncated_images_before_loading_it(tmp_path, capsys):
    from tests.eval.conftest import IMAGES, truncated_jpeg

    questions, qs = _questions(tmp_path)
    capsys.readouterr()
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    (image_dir / qs[0].image).write_bytes(IMAGES[0].read_bytes())
    (image_dir / qs[-1].image).write_bytes(truncated_jpeg())  # the header reads fine
    assert qs[0].image != qs[-1].image
    args = ["eval", "pope", "score", "--questions", str(questions), "--image-dir", str(image_dir)]
    assert main([*args, "--model", str(tmp_path / "no-model"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    bad = [q for q in qs if q.image == qs[-1].image]
    assert err.startswith(
        f"rlhfv: error: {questions}: field image: {len(bad)} of 4 images not found or unreadable, "
        f"e.g. row {bad[0].row}: image file {image_dir / qs[-1].image} cannot be decoded "
        "(image file is truncated"
    )


def test_cli_score_refuses_answers_and_model_together(tmp_path, capsys):
    questions, _ = _questions(tmp_path)
    capsys.readouterr()
    args = ["eval", "pope", "score", "--questions", str(questions), "--answers", str(tmp_path / "a.jsonl")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--model", "some-model", "--image-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --model: not allowed with argument --answers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "pope", "score", "--questions", str(questions)])
    assert "one of the arguments --answers --model is required" in capsys.readouterr().err
    assert main(["eval", "pope", "score", "--questions", str(questions), "--model", "m"]) == 2
    assert capsys.readouterr().err == "rlhfv: error: --model needs --image-dir\n"


def test_cli_build_warns_when_fewer_images_qualify_than_asked(tmp_path, capsys):
    out = tmp_path / "pope.jsonl"
    args = ["eval", "pope", "build", "--annotations", str(COCO80), "--out", str(out), "--split", "random"]
    assert main(args) == 0  # 32 of the 80 images have 3 or more objects; 500 are asked for
    captured = capsys.readouterr()
    assert captured.err == (
        "rlhfv: warning: --n-images 500 but only 32 images have 3 or more annotated objects; "
        "using 32 per split\n"
    )
    assert len({q.image_id for q in read_questions(out)}) == 32
    assert main([*args, "--n-images", "32"]) == 0
    assert capsys.readouterr().err == ""


def _question_rows(n: int = 4) -> list[dict]:
    return [
        {
            "question_id": i,
            "image_id": "1",
            "image": "1.jpg",
            "text": f"Is there a {obj} in the image?",
            "label": label,
            "object": obj,
            "split": "random",
        }
        for i, (obj, label) in enumerate([("dog", "yes"), ("cat", "no"), ("car", "yes"), ("bus", "no")][:n])
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": "maybe"}, "row 2: field label: expected 'yes' or 'no', got 'maybe'"),
        ({"label": None}, "row 2: field label: expected 'yes' or 'no', got None"),
        ({"question_id": "q1"}, "row 2: field question_id: not an integer: 'q1'"),
        ({"question_id": 1.5}, "row 2: field question_id: not an integer: 1.5"),
        ({"question_id": 0}, "row 2: field question_id: question_id 0 repeats row 1; ids must be unique"),
        ({"question_id": "0"}, "row 2: field question_id: question_id 0 repeats row 1; ids must be unique"),
        ({"split": "all"}, "row 2: field split: expected a split name other than 'all', got 'all'"),
    ],
)
def test_bad_question_rows_name_the_row_and_field(tmp_path, change, message):
    from rlhfv.errors import InputError

    rows = _question_rows()
    rows[1] |= change
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as err:
        read_questions(path)
    assert str(err.value) == f"{path}: {message}"


def test_question_ids_as_strings_capitalised_labels_and_other_splits_are_scored(tmp_path, capsys):
    rows = _question_rows()
    for r in rows:
        r["question_id"] = str(r["question_id"])  # as some converted question sets store them
        r["label"] = r["label"].capitalize()
    rows[3]["split"] = "val"
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = tmp_path / "a.jsonl"
    said = ["Yes.", "No.", "Yes.", "No."]  # all correct
    answers.write_text(
        "".join(json.dumps({"question_id": i, "answer": a}) + "\n" for i, a in enumerate(said))
    )
    assert [q.label for q in read_questions(questions)] == ["yes", "no", "yes", "no"]
    assert (
        main(["eval", "pope", "score", "--questions", str(questions), "--answers", str(answers), "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["all/accuracy"] == 1 and out["all/n"] == 4 and "problems" not in out
    assert out["random/n"] == 3 and out["val/n"] == 1 and out["val/accuracy"] == 1
