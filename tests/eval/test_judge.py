"""The chat endpoint client against a real local HTTP server: retries, cache, failures."""

from __future__ import annotations

import json
import time

import pytest

from rlhfv.cli import main
from rlhfv.eval.judge import ChatClient, EndpointError, EndpointUnreachable
from rlhfv.eval.llm_objects import EXTRACTION_PROMPT, llm_mentions
from rlhfv.eval.objects import coco_extractor
from rlhfv.eval.problems import Problems
from tests.eval.conftest import COCO80

MSG = [{"role": "user", "content": "hello"}]


def test_retries_a_500_then_succeeds_and_caches(judge_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge_server.script = [(500, "boom"), (200, "first answer")]
    with ChatClient(
        judge_server.url, "judge-1", api_key_env="TEST_JUDGE_KEY", cache_dir=tmp_path, backoff_s=0.01
    ) as client:
        assert client.complete(MSG) == "first answer"
        assert client.calls == 2
    assert len(judge_server.requests) == 2
    req = judge_server.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["model"] == "judge-1" and req["messages"] == MSG
    assert req["auth"] == "Bearer sk-test"
    # a fresh client (a rerun) with the same cache makes no request at all
    judge_server.reply = lambda body: "different"
    with ChatClient(judge_server.url, "judge-1", cache_dir=tmp_path) as again:
        assert again.complete(MSG) == "first answer"
        assert again.calls == 0
        # a different request is not served from the cache
        assert again.complete(MSG, temperature=0.5) == "different"
    assert len(judge_server.requests) == 3


def test_429_honours_retry_after_and_gives_up_with_an_error(judge_server, tmp_path):
    judge_server.script = [(429, "slow down")] * 3
    start = time.monotonic()
    # backoff_s=5 would wait 5 + 10 s; the server's "Retry-After: 0" wins
    with (
        ChatClient(judge_server.url, "m", cache_dir=tmp_path, max_retries=2, backoff_s=5) as client,
        pytest.raises(EndpointError, match="HTTP 429 after 3 attempts") as err,
    ):
        client.complete(MSG)
    assert time.monotonic() - start < 4
    assert err.value.kind == "endpoint_error"
    assert len(judge_server.requests) == 3
    assert not list(tmp_path.rglob("*.json"))  # failures are not cached


@pytest.mark.parametrize("header", ["-1", "-0.5", "nan"])
def test_a_negative_or_nan_retry_after_is_retried_at_once(judge_server, tmp_path, header):
    """time.sleep(-1) raised ValueError: the retry crashed instead of happening."""
    judge_server.retry_after = header
    judge_server.script = [(429, "slow down"), (200, "fine")]
    start = time.monotonic()
    with ChatClient(judge_server.url, "m", cache_dir=tmp_path, max_retries=1, backoff_s=0.01) as client:
        assert client.complete(MSG) == "fine"
    assert time.monotonic() - start < 4 and len(judge_server.requests) == 2


def test_client_errors_are_not_retried(judge_server):
    judge_server.script = [(401, "bad key")]
    with (
        ChatClient(judge_server.url, "m", backoff_s=0.01) as client,
        pytest.raises(EndpointError, match="401"),
    ):
        client.complete(MSG)
    assert len(judge_server.requests) == 1


def test_unreachable_endpoint(closed_port_url):
    with ChatClient(closed_port_url, "m", max_retries=1, backoff_s=0.01, timeout_s=2) as client:
        with pytest.raises(EndpointUnreachable, match="unreachable after 2 attempts"):
            client.complete(MSG)
        assert client.calls == 2


@pytest.mark.parametrize(
    "url",
    [
        "localhost:8000/v1",
        "127.0.0.1:8000",
        "ftp://example.com/v1",
        "http:///v1",
        "http://[::1/v1",
        "http://exa mple.com/v1",
    ],
)
def test_a_base_url_that_is_no_http_url_is_an_input_error(url):
    from rlhfv.errors import InputError

    start = time.monotonic()
    with pytest.raises(InputError, match=r"^--base-url '.*': "):
        ChatClient(url, "m", backoff_s=0.01)
    assert time.monotonic() - start < 1  # refused, not retried


def test_a_transport_error_no_retry_can_cure_is_not_retried():
    import httpx

    with ChatClient("http://127.0.0.1:1/v1", "m", backoff_s=0.01) as client:
        client._http = httpx.Client(transport=httpx.MockTransport(_raise_local_protocol_error))
        with pytest.raises(EndpointError, match="LocalProtocolError") as err:
            client.complete(MSG)
        assert err.value.kind == "endpoint_error" and client.calls == 1


def _raise_local_protocol_error(request):
    import httpx

    raise httpx.LocalProtocolError("illegal header", request=request)


def test_cli_mmhal_refuses_a_malformed_base_url_before_any_work(tmp_path, capsys):
    questions = tmp_path / "mmhal.json"
    questions.write_text(
        json.dumps(
            [
                {
                    "question_type": "attribute",
                    "image_id": "x",
                    "question": "q",
                    "gt_answer": "a",
                    "model_answer": "b",
                }
            ]
        )
    )
    args = ["eval", "mmhal", "--questions", str(questions), "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--base-url", "http://[::1/v1"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("rlhfv: error: --base-url 'http://[::1/v1': not a valid URL") and err.count("\n") == 1
    )
    assert main([*args, "--base-url", "localhost:8000/v1"]) == 2
    assert "expected an http:// or https:// URL with a host" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _extraction_reply(body):
    text = body["messages"][0]["content"]
    description = text.split("Description:\n", 1)[1].split("\n\nObjects:", 1)[0]
    # a deterministic "LLM": list the capitalised words of the description
    found = [w.strip(".,") for w in description.split() if w[:1].isupper()]
    return "\n".join(f"- {w.lower()}" for w in found) or "None"


def test_llm_extraction_maps_phrases_and_resumes_from_cache(judge_server, tmp_path):
    judge_server.reply = _extraction_reply
    responses = ["A Dog chases a ball near a Frisbee.", "Two Puppies and no cat at all.", "A dog.", 5]
    ex = coco_extractor()
    with ChatClient(judge_server.url, "m", cache_dir=tmp_path) as client:
        problems = Problems()
        found = llm_mentions(responses, client, ex, problems)
    # the rule extractor would also find "ball" and "cat"; the LLM list decides here
    assert found == {
        "A Dog chases a ball near a Frisbee.": ["dog", "frisbee"],
        "Two Puppies and no cat at all.": ["dog"],
        "A dog.": [],  # three words or fewer: no call
    }
    assert len(judge_server.requests) == 2
    assert judge_server.requests[0]["temperature"] == pytest.approx(0.2)
    assert "A Dog chases" in judge_server.requests[0]["messages"][0]["content"]
    assert EXTRACTION_PROMPT.split("\n")[0] in judge_server.requests[0]["messages"][0]["content"]
    with ChatClient(judge_server.url, "m", cache_dir=tmp_path) as client:
        assert llm_mentions(responses, client, ex, Problems()) == found
    assert len(judge_server.requests) == 2  # the rerun made zero requests


def test_cli_chair_llm_extract(judge_server, tmp_path, capsys):
    judge_server.reply = _extraction_reply
    responses = tmp_path / "r.jsonl"
    responses.write_text(
        json.dumps({"image_id": 296284, "response": "Many Donuts sit in a case beside a Cup."}) + "\n"
    )
    args = [
        "eval", "chair", "--responses", str(responses), "--annotations", str(COCO80), "--json",
        "--llm-extract", "--base-url", judge_server.url, "--judge-model", "m", "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_mentions"] == 2 and out["chair_i"] == pytest.approx(0.5)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == out
    assert len(judge_server.requests) == 1


def test_llm_extraction_stops_calling_an_unreachable_endpoint(closed_port_url, tmp_path, capsys):
    responses = tmp_path / "r.jsonl"
    rows = [{"image_id": 296284, "response": f"Donuts number {i} in a glass case."} for i in range(5)]
    rows.append({"image_id": 296284, "response": "Donuts."})  # short: scored without a call
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "eval", "chair", "--responses", str(responses), "--annotations", str(COCO80), "--json",
        "--llm-extract", "--base-url", closed_port_url, "--max-retries", "0", "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    # the one short response alone gives chair_s 0.0: reported, but not as a clean result
    assert main(args) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["n_responses"] == 1
    assert out["problems"]["endpoint_unreachable"]["count"] == 5
    assert "5 x endpoint_unreachable" in captured.err
    warning = (
        "rlhfv: warning: 5 responses not scored because the judge endpoint failed; "
        "the aggregates cover only the 1 scored"
    )
    assert f"{warning} (exit status 1; rerun to retry them, or pass --allow-partial)\n" in captured.err
    assert main([*args, "--allow-partial"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == out
    assert captured.err.endswith(f"{warning}\n")


def test_cli_chair_llm_extract_needs_the_openai_key_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"image_id": 296284, "response": "Many donuts sit in a case."}) + "\n")
    args = ["eval", "chair", "--responses", str(responses), "--annotations", str(COCO80)]
    assert main([*args, "--llm-extract", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "needs an API key: set the environment variable OPENAI_API_KEY" in capsys.readouterr().err
    # a cache folder that is a file is refused before any call, too
    (tmp_path / "cfile").write_text("")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert main([*args, "--llm-extract", "--cache-dir", str(tmp_path / "cfile")]) == 2
    assert f"--cache-dir {tmp_path / 'cfile'}: is not a directory" in capsys.readouterr().err


def test_judge_failures_count_unscored_responses_and_skip_unknown_images(closed_port_url, tmp_path, capsys):
    """Every judge failure is one response left unscored, counted alike in ``problems`` and
    the warning; a response with no ground truth is never sent, so cannot fail the run."""
    responses = tmp_path / "r.jsonl"
    twice = {"image_id": 296284, "response": "Donuts in a glass case."}
    unknown = {"image_id": 1, "response": "Donuts on a plate somewhere."}
    short = {"image_id": 296284, "response": "Donuts."}  # scored without a call
    args = [
        "eval", "chair", "--responses", str(responses), "--annotations", str(COCO80), "--json",
        "--llm-extract", "--base-url", closed_port_url, "--max-retries", "0", "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    responses.write_text("".join(json.dumps(r) + "\n" for r in [twice, twice, twice, unknown, short]))
    assert main(args) == 1
    captured = capsys.readouterr()
    problems = json.loads(captured.out)["problems"]
    assert problems["endpoint_unreachable"]["count"] == 3 and problems["unknown_image_id"]["count"] == 1
    assert "rlhfv: warning: 3 responses not scored because the judge endpoint failed" in captured.err
    responses.write_text("".join(json.dumps(r) + "\n" for r in [unknown, short]))
    assert main(args) == 0
    assert set(json.loads(capsys.readouterr().out)["problems"]) == {"unknown_image_id"}
