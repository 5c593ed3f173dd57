"""Object HalBench end to end with a tiny, locally built LLaVA on the shared JPEGs."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pytest

from rlhfv.cli import main
from rlhfv.eval.generate import generate_answers, generation_settings
from rlhfv.eval.objhal import run_object_halbench
from tests.data.bad_images import BAD_IMAGES
from tests.eval.conftest import COCO80, IMAGES

PROMPTS = ["Describe this image in detail.", "What is in the picture? Describe it.", "Describe the scene."]


@pytest.fixture(scope="module")
def tiny_llava():
    from rlhfv.tiny import build_tiny

    return build_tiny("llava", seed=0)


@pytest.fixture
def question_file(tmp_path):
    """The reference layout: base64 images; image ids borrowed from the 80 annotated images."""
    ids = [json.loads(line)["id"] for line in COCO80.read_text().splitlines()][: len(IMAGES)]
    rows = []
    for i, (image, image_id) in enumerate(zip(IMAGES, ids, strict=True)):
        encoded = base64.b64encode(image.read_bytes()).decode()
        # one question by path (relative to the question file), the rest base64
        if i == 0:
            (tmp_path / "img0.jpg").write_bytes(image.read_bytes())
            encoded = "img0.jpg"
        rows.append(
            {"image": encoded, "image_id": f"COCO_val2014_{image_id}.jpg", "question": PROMPTS[i % 3]}
        )
    path = tmp_path / "objhal.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generation_is_batch_invariant(tiny_llava):
    model, processor = tiny_llava
    settings = generation_settings("reference", max_new_tokens=6)
    one = generate_answers(model, processor, IMAGES[:3], PROMPTS, batch_size=1, **settings)
    three = generate_answers(model, processor, IMAGES[:3], PROMPTS, batch_size=3, **settings)
    assert one == three
    assert all(isinstance(a, str) and a for a in one)


def test_object_halbench_end_to_end(tiny_llava, question_file, tmp_path, capsys):
    model, processor = tiny_llava
    out = tmp_path / "run"
    settings = generation_settings("reference", max_new_tokens=12)
    result = run_object_halbench(
        question_file,
        [COCO80],
        out_dir=out,
        model=model,
        processor=processor,
        generation=settings,
        batch_size=3,
    )
    assert result.n_responses == len(IMAGES)
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == len(IMAGES) and all(a["response"] for a in answers)
    # the tiny model's vocabulary is COCO-heavy, so its babble names objects
    assert result.n_mentions > 0
    # result.json agrees with scoring the written answers again through the CLI
    saved = json.loads((out / "result.json").read_text())
    assert saved["generation"] == settings
    responses = tmp_path / "responses.jsonl"
    responses.write_text(
        "".join(json.dumps({"image_id": a["image_id"], "response": a["response"]}) + "\n" for a in answers)
    )
    assert main(["eval", "chair", "--responses", str(responses), "--annotations", str(COCO80), "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    for key in ("chair_s", "chair_s_mentioned", "chair_i", "recall", "n_responses", "n_mentions"):
        assert rescored[key] == saved[key]
    # the report shows every image inline and marks every hallucinated object
    report = (out / "report.html").read_text()
    assert report.count('<img src="data:image/jpeg;base64,') == len(IMAGES)
    n_hal_marks = len(re.findall(r'<mark class="hal"', report))
    assert n_hal_marks == sum(len(r.hallucinated) for r in result.records)


def test_report_escapes_model_text_and_highlights(question_file, tmp_path):
    answers = tmp_path / "answers.jsonl"
    first = json.loads(question_file.read_text().splitlines()[0])
    nasty = "<script>alert(1)</script> A dog & two pizzas near a <b>donut</b>."
    answers.write_text(json.dumps({"image_id": first["image_id"], "response": nasty}) + "\n")
    out = tmp_path / "run"
    result = run_object_halbench(question_file, [COCO80], out_dir=out, answers=answers)
    assert result.n_responses == 1
    assert result.problems["missing_answer"]["count"] == len(IMAGES) - 1
    report = (out / "report.html").read_text()
    assert "<script>" not in report and html.escape("<script>alert(1)</script>") in report
    gt = result.records[0].ground_truth
    for word, cls in (("dog", "dog"), ("pizzas", "pizza"), ("donut", "donut")):
        kind = "ok" if cls in gt else "hal"
        assert f'<mark class="{kind}" title="{cls}">{word}</mark>' in report


def test_cli_objhal_with_a_saved_model(tiny_llava, question_file, tmp_path, capsys):
    """The CLI path: AutoModelForImageTextToText / AutoProcessor load a saved tiny model."""
    model, processor = tiny_llava
    model_dir = tmp_path / "tiny-llava"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    out = tmp_path / "cli-run"
    args = ["eval", "objhal", "--questions", str(question_file), "--annotations", str(COCO80)]
    args += ["--model", str(model_dir), "--out", str(out), "--max-new-tokens", "6", "--num-beams", "1"]
    args += ["--batch-size", "6", "--device", "cpu", "--dtype", "bfloat16"]  # pixels cast to bf16
    assert main([*args, "--json", "--limit", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_responses"] == 4
    assert json.loads((out / "result.json").read_text())["generation"]["num_beams"] == 1


@pytest.mark.parametrize("arch", ["llava_next", "qwen2_vl", "idefics3"])
def test_generate_answers_works_for_other_architectures(arch):
    from rlhfv.tiny import build_tiny

    model, processor = build_tiny(arch, seed=0)
    settings = generation_settings("reference", max_new_tokens=4)
    batched = generate_answers(model, processor, IMAGES[:3], PROMPTS, batch_size=3, **settings)
    assert batched == generate_answers(model, processor, IMAGES[:3], PROMPTS, batch_size=1, **settings)
    assert all(isinstance(a, str) and a for a in batched)


def test_cli_objhal_finds_missing_images_before_loading_the_model(question_file, tmp_path, capsys):
    rows = [json.loads(line) for line in question_file.read_text().splitlines()]
    rows[2]["image"] = "/x/000000294073.jpg"
    rows[4]["image"] = "missing.jpg"  # relative to the question file
    question_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "objhal", "--questions", str(question_file), "--annotations", str(COCO80)]
    # the model does not exist: had it been loaded first, the error would say so
    args += ["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (
        f"rlhfv: error: {question_file}: field image: 2 of {len(rows)} images not found or unreadable, "
        "e.g. row 3: image file not found: /x/000000294073.jpg\n"
    )
    assert not (tmp_path / "run").exists()
    rows[2]["image"] = rows[0]["image"]
    question_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(args) == 2
    assert f"row 5: image file not found: {question_file.parent / 'missing.jpg'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--dtype", "float64x", "argument --dtype: invalid choice: 'float64x'"),
        ("--batch-size", "0", "argument --batch-size: must be 1 or more, got 0"),
        ("--limit", "0", "argument --limit: must be 1 or more, got 0"),
        ("--limit", "-2", "argument --limit: must be 1 or more, got -2"),
        ("--num-beams", "0", "argument --num-beams: must be 1 or more, got 0"),
        ("--repetition-penalty", "0", "argument --repetition-penalty: must be a number above 0, got 0"),
        ("--repetition-penalty", "-1.1", "argument --repetition-penalty: must be a number above 0, got -1.1"),
        ("--repetition-penalty", "nan", "argument --repetition-penalty: must be a number above 0, got nan"),
    ],
)
def test_cli_objhal_refuses_bad_option_values(question_file, tmp_path, capsys, option, value, message):
    args = ["eval", "objhal", "--questions", str(question_file), "--annotations", str(COCO80)]
    args += ["--model", "unused", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_objhal_refuses_an_unusable_device_before_loading(question_file, tmp_path, capsys):
    import torch

    args = ["eval", "objhal", "--questions", str(question_file), "--annotations", str(COCO80)]
    args += ["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "run")]
    assert main([*args, "--device", "gpu"]) == 2
    assert "rlhfv: error: --device 'gpu' is not a torch device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert (
            capsys.readouterr().err
            == "rlhfv: error: CUDA is not available on this machine; use --device cpu\n"
        )


def test_cli_objhal_checks_out_before_any_work(question_file, tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"image_id": "1", "response": "A dog."}) + "\n")
    # the annotations do not exist: the output folder is checked first
    args = [
        "eval",
        "objhal",
        "--questions",
        str(question_file),
        "--annotations",
        str(tmp_path / "nope.jsonl"),
    ]
    args += ["--answers", str(answers)]
    assert main([*args, "--out", str(answers)]) == 2  # an existing regular file
    assert capsys.readouterr().err == f"rlhfv: error: --out {answers}: is not a directory\n"
    assert main([*args, "--out", str(answers / "sub")]) == 2
    assert f"--out {answers / 'sub'}: {answers} is not a directory" in capsys.readouterr().err
    (tmp_path / "run" / "report.html").mkdir(parents=True)
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    assert "report.html in it is a directory" in capsys.readouterr().err


def test_load_questions_refuses_a_non_positive_limit(question_file):
    from rlhfv.errors import InputError
    from rlhfv.eval.objhal import load_questions

    assert len(load_questions(question_file, limit=1)) == 1
    with pytest.raises(InputError, match="limit must be 1 or more"):
        load_questions(question_file, limit=0)


def test_small_base64_images_are_data_not_file_names(tmp_path):
    """A base64 PNG of a few hundred characters is too long for a file name: the OS refuses
    to look it up (ENAMETOOLONG), which must read as "not a file", not as a broken image."""
    import io

    from PIL import Image

    from rlhfv.data.images import is_image_file
    from rlhfv.eval.generate import load_image
    from rlhfv.eval.objhal import check_question_images, load_questions

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    small = base64.b64encode(buf.getvalue()).decode()
    noisy = io.BytesIO()
    Image.effect_noise((12, 12), 60).convert("RGB").save(noisy, format="PNG")
    mid = base64.b64encode(noisy.getvalue()).decode()
    assert len(small) < 1024 and 255 < len(mid) < 1024  # between the file-name limit and the guard
    for data in (small, mid):
        assert not is_image_file(data, tmp_path)
        assert load_image(data).size in ((64, 64), (12, 12))
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"image_id": "1", "question": "Describe.", "image": mid}) + "\n")
    questions = load_questions(path)
    check_question_images(questions, path)  # no InputError
    assert questions[0].image == mid


def test_answers_file_duplicates_unknown_ids_and_null_responses_are_reported(question_file, tmp_path):
    ids = [json.loads(line)["image_id"] for line in question_file.read_text().splitlines()]
    answers = tmp_path / "answers.jsonl"
    rows = [
        {"image_id": ids[0], "response": "A dog."},
        {"image_id": ids[1], "response": None},  # there, but no text
        {"image_id": ids[0].removeprefix("COCO_val2014_"), "response": "A cat."},  # the same image again
        {"image_id": "424242", "response": "A bus."},  # not a question
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_object_halbench(question_file, [COCO80], out_dir=tmp_path / "run", answers=answers)
    assert [r.response for r in result.records] == ["A dog."]  # the first answer is kept
    assert {k: v["count"] for k, v in result.problems.items()} == {
        "duplicate_id": 1,
        "missing_answer": len(IMAGES) - 2,
        "response_not_string": 1,
        "unknown_id": 1,
    }
    assert result.problems["duplicate_id"]["examples"] == [
        f"{answers}: row 3: image id {rows[2]['image_id']!r} already answered on {answers}: row 1"
    ]
    assert result.problems["unknown_id"]["examples"] == [
        f"{answers}: row 4: image id '424242' is not in the questions"
    ]
    assert result.problems["response_not_string"]["examples"] == [f"{answers}: row 2: response is NoneType"]
    # with --limit the question file is cut, so answers beyond it are not "unknown"
    limited = run_object_halbench(
        question_file, [COCO80], out_dir=tmp_path / "run2", answers=answers, limit=1
    )
    assert "unknown_id" not in limited.problems and limited.problems["duplicate_id"]["count"] == 1


@pytest.mark.parametrize("form", ["path", "base64"])
def test_cli_objhal_finds_truncated_images_before_loading_the_model(question_file, tmp_path, capsys, form):
    """The early check decodes every pixel: a JPEG cut in half has a readable header."""
    from tests.eval.conftest import truncated_jpeg

    rows = [json.loads(line) for line in question_file.read_text().splitlines()]
    (tmp_path / "trunc.jpg").write_bytes(truncated_jpeg())
    rows[3]["image"] = "trunc.jpg" if form == "path" else base64.b64encode(truncated_jpeg()).decode()
    question_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "objhal", "--questions", str(question_file), "--annotations", str(COCO80)]
    # the model does not exist: had it been loaded first, the error would say so
    args += ["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    shown = tmp_path / "trunc.jpg" if form == "path" else f"{rows[3]['image'][:40]!r}..."
    kind = "image file" if form == "path" else "base64 image"
    assert err.startswith(
        f"rlhfv: error: {question_file}: field image: 1 of {len(rows)} images not found or unreadable, "
        f"e.g. row 4: {kind} {shown} cannot be decoded (image file is truncated"
    )
    assert err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_base64_that_is_no_image_is_named_briefly(tmp_path):
    from rlhfv.errors import InputError
    from rlhfv.eval.objhal import check_question_images, load_questions

    data = base64.b64encode(b"hello world, this is not an image at all " * 8).decode()
    assert 255 < len(data) < 1024  # the length that used to read as a file name
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"image_id": "1", "question": "Describe.", "image": data}) + "\n")
    with pytest.raises(InputError) as err:
        check_question_images(load_questions(path), path)
    assert str(err.value) == (
        f"{path}: field image: 1 of 1 images not found or unreadable, e.g. row 1: "
        f"neither an existing file nor base64 image data: {data[:40]!r}..."
    )


def test_image_problem_decodes_every_form(tmp_path):
    from PIL import Image

    from rlhfv.eval.generate import image_problem, load_image
    from tests.eval.conftest import truncated_jpeg

    good = IMAGES[0].read_bytes()
    encoded = base64.b64encode(good).decode()
    for source in (good, str(IMAGES[0]), IMAGES[0], encoded, f"data:image/jpeg;base64,{encoded}"):
        assert image_problem(source) is None
        assert load_image(source).size == Image.open(IMAGES[0]).size
    assert image_problem(truncated_jpeg()).startswith(
        "image bytes cannot be decoded (image file is truncated"
    )
    # a Path is never read as base64, whatever its name
    assert image_problem(Path("abcd")) == "image file not found: abcd"
    assert image_problem("abcd") == "neither an existing file nor base64 image data: 'abcd'"
    assert image_problem("gone.jpg", tmp_path) == f"image file not found: {tmp_path / 'gone.jpg'}"
    long_bad = encoded[:-1]  # broken padding
    problem = image_problem(long_bad)
    assert problem.startswith(
        f"neither an existing file nor base64 image data: {encoded[:40]!r}... (invalid base64"
    )
    assert len(problem) < 250


def test_cli_objhal_llm_extract_exits_1_when_the_judge_fails(
    question_file, closed_port_url, tmp_path, capsys
):
    ids = [json.loads(line)["image_id"] for line in question_file.read_text().splitlines()]
    answers = tmp_path / "answers.jsonl"
    rows = [
        {"image_id": ids[0], "response": "A dog sits on a red couch near a window."},  # needs a call
        {"image_id": ids[1], "response": "A dog."},  # three words: scored without a call
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["eval", "objhal", "--questions", str(question_file), "--annotations", str(COCO80)]
    args += ["--answers", str(answers), "--out", str(out), "--limit", "2", "--json", "--llm-extract"]
    args += ["--base-url", closed_port_url, "--max-retries", "0", "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_responses"] == 1
    assert json.loads((out / "result.json").read_text())["problems"]["endpoint_unreachable"]["count"] == 1
    assert "1 response not scored because the judge endpoint failed" in captured.err
    assert main([*args, "--allow-partial"]) == 0


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_cli_objhal_images_pillow_refuses_oddly_are_one_line_errors(
    question_file, tmp_path, capsys, monkeypatch, kind
):
    rows = [json.loads(line) for line in question_file.read_text().splitlines()]
    (tmp_path / "bad.png").write_bytes(BAD_IMAGES[kind](monkeypatch))
    rows[1]["image"] = "bad.png"
    question_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "objhal", "--questions", str(question_file), "--annotations", str(COCO80)]
    args += ["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"rlhfv: error: {question_file}: field image: 1 of {len(rows)} images not found or unreadable, "
        f"e.g. row 2: image file {tmp_path / 'bad.png'} cannot be decoded"
    )


def test_a_relative_question_path_resolves_images_once_from_any_cwd(tmp_path, monkeypatch, capsys):
    """An image path relative to a question file given by a relative path was joined with
    the file's folder twice ("sub/sub/imgs/a.jpg") and reported as missing."""
    from rlhfv.eval.generate import load_image
    from rlhfv.eval.objhal import check_question_images, load_questions

    (tmp_path / "sub" / "imgs").mkdir(parents=True)
    (tmp_path / "sub" / "imgs" / "a.jpg").write_bytes(IMAGES[0].read_bytes())
    row = {"image_id": json.loads(COCO80.read_text().splitlines()[0])["id"], "question": "Describe."}
    (tmp_path / "sub" / "q.jsonl").write_text(json.dumps(row | {"image": "imgs/a.jpg"}) + "\n")
    monkeypatch.chdir(tmp_path)
    for given in ("sub/q.jsonl", tmp_path / "sub" / "q.jsonl"):
        questions = load_questions(given)
        check_question_images(questions, given)  # no InputError
        assert Path(questions[0].image) == tmp_path / "sub" / "imgs" / "a.jpg"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the resolved path does not depend on the cwd
    assert load_image(questions[0].image).size == load_image(IMAGES[0]).size
    monkeypatch.chdir(tmp_path)
    # the CLI gets past the image check to the (missing) model
    args = ["eval", "objhal", "--questions", "sub/q.jsonl", "--annotations", str(COCO80)]
    assert main([*args, "--model", "no-model", "--out", "run", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no-model: field --model" in err and "image" not in err


def test_generate_answers_hands_over_each_batch(tiny_llava):
    model, processor = tiny_llava
    settings = generation_settings("greedy", max_new_tokens=4)
    batches: list[tuple[int, list[str]]] = []
    answers = generate_answers(
        model,
        processor,
        IMAGES[:3],
        PROMPTS,
        batch_size=2,
        on_batch=lambda s, b: batches.append((s, b)),
        **settings,
    )
    assert batches == [(0, answers[:2]), (2, answers[2:])]


def test_objhal_saves_answers_per_batch_and_resumes_from_them(tiny_llava, question_file, tmp_path):
    """An interrupted run leaves answers.partial.jsonl; a rerun with the same model and
    settings keeps those answers and generates only the rest."""
    from rlhfv.eval.objhal import PARTIAL, load_questions

    model, processor = tiny_llava
    model_dir = tmp_path / "tiny-llava"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    settings = generation_settings("greedy", max_new_tokens=4)
    qs = load_questions(question_file)
    out = tmp_path / "run"
    out.mkdir()
    # what an interrupted run with batch size 2 left: the first batch's answers
    saved = ["A dog sits on a bench.", "A cat and a pizza."]
    made_with = {"model": str(model_dir), "generation": settings}
    rows = [
        {"image_id": q.image_id, "question": q.question, "response": r} | made_with
        for q, r in zip(qs[:2], saved, strict=True)
    ]
    (out / PARTIAL).write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = dict(out_dir=out, model=str(model_dir), generation=settings, batch_size=2, device="cpu")
    result = run_object_halbench(question_file, [COCO80], **run)
    answers = [json.loads(line)["response"] for line in (out / "answers.jsonl").read_text().splitlines()]
    assert answers[:2] == saved and len(answers) == len(qs) and all(answers)
    assert result.n_responses == len(qs)
    assert not (out / PARTIAL).exists()  # the run finished: answers.jsonl holds them all
    # answers saved with other settings are not reused
    (out / PARTIAL).write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_object_halbench(question_file, [COCO80], **run | {"generation": settings | {"max_new_tokens": 3}})
    rerun = [json.loads(line)["response"] for line in (out / "answers.jsonl").read_text().splitlines()]
    assert rerun[:2] != saved


def test_answers_are_matched_by_question_id(tmp_path):
    """Two questions about one image: answers go by question_id, not by image id."""
    from rlhfv.eval.objhal import load_responses, match_answers

    image_id = json.loads(COCO80.read_text().splitlines()[0])["id"]
    qfile = tmp_path / "q.jsonl"
    questions = [
        {"question_id": 7, "image_id": image_id, "question": "Describe.", "image": "x"},
        {"question_id": 8, "image_id": image_id, "question": "What is there?", "image": "x"},
    ]
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    answers = tmp_path / "answers.jsonl"
    rows = [
        {"question_id": 8, "image_id": image_id, "response": "A bus."},
        {"question_id": 7, "image_id": image_id, "response": "A dog."},
        {"image_id": image_id, "response": "A cat."},  # which question? both ask about it
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_object_halbench(qfile, [COCO80], out_dir=tmp_path / "run", answers=answers)
    assert [r.response for r in result.records] == ["A dog.", "A bus."]
    assert result.problems["ambiguous_id"]["examples"] == [
        f"{answers}: row 3: image id {image_id!r} has 2 questions; give each answer its question_id"
    ]
    written = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert [(a["question_id"], a["response"]) for a in written] == [("7", "A dog."), ("8", "A bus.")]
    # a question id twice in the question file is an error naming the row
    qfile.write_text("".join(json.dumps(q | {"question_id": 7}) + "\n" for q in questions))
    with pytest.raises(Exception, match="row 2: field question_id: question_id '7' repeats row 1"):
        run_object_halbench(qfile, [COCO80], out_dir=tmp_path / "run", answers=answers)
    # without question ids, one answer per image still works
    given = load_responses(answers)
    from rlhfv.eval.objhal import load_questions

    qfile.write_text(json.dumps(questions[0] | {"question_id": None}) + "\n")
    responses, _ = match_answers(given, load_questions(qfile))
    assert responses == ["A bus."] and given.problems.counts["duplicate_id"] == 2


def test_report_shows_each_answer_with_its_own_question(tmp_path):
    """Two questions about one image: the report looked questions up by image id and
    showed the second question's text beside both answers."""
    image_id = json.loads(COCO80.read_text().splitlines()[0])["id"]
    (tmp_path / "img.jpg").write_bytes(IMAGES[0].read_bytes())
    qfile = tmp_path / "q.jsonl"
    asked = [("7", "Describe the animals."), ("8", "What vehicles are there?")]
    rows = [{"question_id": q, "image_id": image_id, "question": t, "image": "img.jpg"} for q, t in asked]
    qfile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = tmp_path / "answers.jsonl"
    given = [("8", "A bus."), ("7", "A dog.")]
    answers.write_text(
        "".join(json.dumps({"question_id": q, "image_id": image_id, "response": t}) + "\n" for q, t in given)
    )
    run_object_halbench(qfile, [COCO80], out_dir=tmp_path / "run", answers=answers)
    report = (tmp_path / "run" / "report.html").read_text()
    items = report.split('<div class="item">')[1:]
    shown = [(re.search(r'<p class="q">(.*?)</p>', it)[1], re.search(r"<p>(.*?)</p>", it)[1]) for it in items]
    assert [(q, re.sub("<[^>]+>", "", a)) for q, a in shown] == [
        ("Describe the animals.", "A dog."),
        ("What vehicles are there?", "A bus."),
    ]
    assert "question_id 7" in items[0] and "question_id 8" in items[1]
