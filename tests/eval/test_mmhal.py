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
    assert main(cmd) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["n_rated"] == 0 and summary["score"] is None
    assert summary["problems"]["endpoint_unreachable"]["count"] == 10
    assert "10 x endpoint_unreachable" in captured.err
