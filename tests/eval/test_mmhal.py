"""MMHal-Bench with a judge served over real HTTP on loopback."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from rlhfv.cli import main
from rlhfv.eval.judge import ChatClient
from rlhfv.eval.metrics import compute_metrics
from rlhfv.eval.mmhal import MMHAL_METRICS, MMHalRecord, load_mmhal, parse_rating, score_mmhal
from tests.eval.conftest import SHARED

TEMPLATE = SHARED / "mmhal_bench_template.json"


def _judge(body):
    """A deterministic judge: the answer "says N" earns "Rating: N"; special answers misbehave."""
    prompt = body["messages"][0]["content"]
    answer = prompt.split("Assistant's answer: ", 1)[1].split("\n", 1)[0]
    if "ramble" in answer:
        return "It is hard to say."
    if "waver" in answer:
        return "Rating: 2. On reflection, Rating: 5"
    n = re.search(r"says (\d)", answer).group(1)
    return f"The answer is fine.\nRating: {n}"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Explanation.\nRating: 4", (4, None)),
        ("rating: [[6]]", (6, None)),
        ("**Rating:** 0", (0, None)),  # a real 0, with markup around it
        ("Rating: **3**", (3, None)),
        ("Rating: 4\nFinal Rating: 4", (4, None)),  # the same rating twice is one rating
        ("Rating: 7", (None, "no_rating")),
        ("Rating: 3.5", (None, "no_rating")),
        ("Rating: 1 or Rating: 2", (None, "several_ratings")),
    ],
)
def test_parse_rating(reply, expected):
    assert parse_rating(reply) == expected


def test_metrics_hand_worked():
    records = [MMHalRecord("attribute", r) for r in (6, 2, 3, 0)]
    m = compute_metrics(MMHAL_METRICS, records)
    assert m["score"] == pytest.approx(11 / 4)
    assert m["hallucination_rate"] == pytest.approx(2 / 4)  # 2 and 0 are below 3; 3 is not
    assert {x.name: x.higher_is_better for x in MMHAL_METRICS} == {"score": True, "hallucination_rate": False}


def test_scores_against_brute_force_with_bad_replies_counted(judge_server, tmp_path):
    judge_server.reply = _judge
    questions = load_mmhal(TEMPLATE)
    assert len(questions) == 96
    answers = [f"The picture says {i % 7}." for i in range(96)]
    answers[5] = "I ramble."
    answers[6] = "I waver."
    answers[7] = ""
    answers[8] = None
    judge_server.script = [(500, "overloaded")]  # the first call fails once, then succeeds
    with ChatClient(judge_server.url, "judge", cache_dir=tmp_path, backoff_s=0.01) as client:
        result = score_mmhal(questions, answers, client)
    assert len(judge_server.requests) == 94 + 1  # 2 answers not judged, 1 retry
    rated = [(q.question_type, i % 7) for i, q in enumerate(questions) if i not in (5, 6, 7, 8)]
    assert result.n_rated == len(rated) == 92
    assert result.metrics["score"] == pytest.approx(sum(r for _, r in rated) / 92)
    assert result.metrics["hallucination_rate"] == pytest.approx(sum(r < 3 for _, r in rated) / 92)
    by_type = defaultdict(list)
    for t, r in rated:
        by_type[t].append(r)
    assert result.per_type == pytest.approx({t: sum(v) / len(v) for t, v in by_type.items()})
    assert {k: v["count"] for k, v in result.problems.items()} == {
        "missing_answer": 1,
        "no_rating": 1,
        "response_not_string": 1,
        "several_ratings": 1,
    }
    assert result.items[5]["rating"] is None and result.items[5]["judge_reply"] == "It is hard to say."
    # the prompt carries the object list, the question and the reference answer
    first = judge_server.requests[0]["messages"][0]["content"]
    assert "Objects in the image: Fire hydrant" in first and questions[0].gt_answer in first
    # a rerun is served from the cache
    with ChatClient(judge_server.url, "judge", cache_dir=tmp_path) as client:
        again = score_mmhal(questions, answers, client)
        assert client.calls == 0
    assert again.summary() == result.summary()


def test_cli_mmhal_writes_results_and_reports_unreachable(judge_server, closed_port_url, tmp_path, capsys):
    judge_server.reply = _judge
    questions = json.loads(TEMPLATE.read_text())[:10]
    for i, q in enumerate(questions):
        q["model_answer"] = f"It says {i % 7}."
    qfile = tmp_path / "mmhal.json"
    qfile.write_text(json.dumps(questions))
    out = tmp_path / "result.json"
    base = ["eval", "mmhal", "--questions", str(qfile), "--cache-dir", str(tmp_path / "c"), "--json"]
    assert main([*base, "--base-url", judge_server.url, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_rated"] == 10
    assert summary["score"] == pytest.approx(sum(i % 7 for i in range(10)) / 10)
    saved = json.loads(out.read_text())
    assert [it["rating"] for it in saved["items"]] == [i % 7 for i in range(10)]
    # an unreachable endpoint: every item counted, the run still ends with a clear message
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([f"New answer {i}, says 3." for i in range(10)]))
    cmd = [*base, "--answers", str(answers), "--base-url", closed_port_url, "--max-retries", "0"]
    assert main(cmd) == 2  # nothing could be rated: an error, not a result of n_rated 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "rlhfv: error: no answer could be rated: 10 x endpoint_unreachable" in captured.err


def _mmhal_file(tmp_path, n=3, answer="It says 4."):
    questions = json.loads(TEMPLATE.read_text())[:n]
    for q in questions:
        q["model_answer"] = answer
    qfile = tmp_path / "mmhal.json"
    qfile.write_text(json.dumps(questions))
    return ["eval", "mmhal", "--questions", str(qfile), "--cache-dir", str(tmp_path / "c")]


def test_cli_mmhal_exits_2_when_the_judge_refuses_every_answer(judge_server, tmp_path, capsys):
    judge_server.script = [(401, "invalid api key")] * 3
    assert main([*_mmhal_file(tmp_path), "--base-url", judge_server.url, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert "no answer could be rated: 3 x endpoint_error" in captured.err
    assert "HTTP 401" in captured.err


def test_cli_mmhal_exits_2_when_every_answer_is_missing(judge_server, tmp_path, capsys):
    assert main([*_mmhal_file(tmp_path, answer=""), "--base-url", judge_server.url]) == 2
    assert "no answer could be rated: 3 x missing_answer" in capsys.readouterr().err
    assert judge_server.requests == []


def test_cli_mmhal_needs_a_key_for_openai_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    base = _mmhal_file(tmp_path)
    assert main(base) == 2  # the default base URL is OpenAI's
    err = capsys.readouterr().err
    assert "https://api.openai.com/v1 needs an API key" in err and "OPENAI_API_KEY" in err
    assert main([*base, "--api-key-env", "MY_JUDGE_KEY"]) == 2
    assert "set the environment variable MY_JUDGE_KEY" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # nothing was asked, nothing cached


def test_cli_mmhal_checks_out_before_judging(judge_server, tmp_path, capsys):
    judge_server.reply = _judge
    base = [*_mmhal_file(tmp_path), "--base-url", judge_server.url]
    assert main([*base, "--out", str(tmp_path / "nodir" / "x.json")]) == 2
    assert f"--out {tmp_path / 'nodir' / 'x.json'}: directory {tmp_path / 'nodir'} does not exist" in (
        capsys.readouterr().err
    )
    assert main([*base, "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert judge_server.requests == []  # no paid call was made


def test_score_mmhal_with_nothing_rated_is_an_error(closed_port_url, tmp_path):
    from rlhfv.errors import InputError

    questions = load_mmhal(TEMPLATE)[:2]
    with (
        ChatClient(closed_port_url, "judge", cache_dir=tmp_path, max_retries=0) as client,
        pytest.raises(InputError, match="2 x endpoint_unreachable"),
    ):
        score_mmhal(questions, ["It says 1.", "It says 2."], client)


def test_cli_mmhal_finds_truncated_images_before_loading_the_model(judge_server, tmp_path, capsys):
    from tests.eval.conftest import IMAGES, truncated_jpeg

    base = _mmhal_file(tmp_path, n=3)
    ids = [q["image_id"] for q in json.loads((tmp_path / "mmhal.json").read_text())]
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    (image_dir / f"{ids[0]}.jpg").write_bytes(IMAGES[0].read_bytes())
    (image_dir / f"{ids[1]}.jpg").write_bytes(truncated_jpeg())  # the third has no image
    args = [*base, "--base-url", judge_server.url, "--image-dir", str(image_dir)]
    # the model does not exist: had it been loaded first, the error would say so
    assert main([*args, "--model", str(tmp_path / "no-model"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"rlhfv: error: {tmp_path / 'mmhal.json'}: field image: 2 of 3 images not found or unreadable, "
        f"e.g. row 2: image file {image_dir / ids[1]}.jpg cannot be decoded (image file is truncated"
    )
    (image_dir / f"{ids[1]}.jpg").write_bytes(IMAGES[1].read_bytes())
    assert main([*args, "--model", str(tmp_path / "no-model"), "--device", "cpu"]) == 2
    assert f"1 of 3 images not found or unreadable, e.g. row 3: no image for {ids[2]} in {image_dir}" in (
        capsys.readouterr().err
    )
    assert judge_server.requests == []


def test_cli_mmhal_exits_1_when_the_judge_fails_for_some_answers(judge_server, tmp_path, capsys):
    judge_server.reply = _judge
    judge_server.script = [(401, "invalid api key")]  # the first answer only; not retried
    out = tmp_path / "result.json"
    args = [*_mmhal_file(tmp_path), "--base-url", judge_server.url, "--out", str(out), "--json"]
    assert main(args) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # still reported, and written
    assert summary["n_rated"] == 2 and summary["problems"]["endpoint_error"]["count"] == 1
    assert json.loads(out.read_text())["n_rated"] == 2
    assert captured.err.endswith(
        "rlhfv: warning: 1 answer not scored because the judge endpoint failed; the aggregates cover"
        " only the 2 scored (exit status 1; rerun to retry them, or pass --allow-partial)\n"
    )
    # a rerun asks again only for the answer that failed; the endpoint now answers
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["n_rated"] == 3
    assert len(judge_server.requests) == 4


def test_cli_mmhal_allow_partial_accepts_a_judge_failure(judge_server, tmp_path, capsys):
    judge_server.reply = _judge
    judge_server.script = [(401, "invalid api key")]
    args = [*_mmhal_file(tmp_path), "--base-url", judge_server.url, "--allow-partial"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "n_rated: 2" in captured.out
    assert "1 answer not scored because the judge endpoint failed" in captured.err
    assert "exit status 1" not in captured.err


@pytest.mark.parametrize("content", ["dog, cat", 3, ["dog", None]])
def test_image_content_must_be_a_list_of_names(tmp_path, content):
    """A string was listed to the judge letter by letter ("d, o, g, ...")."""
    from rlhfv.errors import InputError

    questions = json.loads(TEMPLATE.read_text())[:2]
    questions[1]["image_content"] = content
    path = tmp_path / "q.json"
    path.write_text(json.dumps(questions))
    with pytest.raises(InputError) as err:
        load_mmhal(path)
    assert str(err.value).startswith(f"{path}: row 2: field image_content: expected a list of object names")
    questions[1]["image_content"] = None  # absent or null: no objects listed
    path.write_text(json.dumps(questions))
    assert load_mmhal(path)[1].image_content == ()
