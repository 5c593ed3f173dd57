"""Shared test data paths, one COCO-80 extractor, and a real OpenAI-compatible chat
endpoint on loopback, started per test.

``judge_server.script`` is a list of (status, reply text) answered in order; when it is
empty, ``judge_server.reply(request_json) -> str`` answers with status 200. A 429 carries
``Retry-After: judge_server.retry_after`` ("0" unless a test sets it). Every request
received is kept in ``judge_server.requests``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rlhfv.eval.objects import ObjectExtractor, coco_extractor

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
COCO80 = SHARED / "coco2014_val_80_caps_boxes.jsonl"
IMAGES = sorted((SHARED / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def coco() -> ObjectExtractor:
    """The built-in COCO-80 extractor, built once (it is not changed by use)."""
    return coco_extractor()


@dataclass
class JudgeServer:
    url: str
    script: list[tuple[int, str]] = field(default_factory=list)
    reply: Callable[[dict[str, Any]], str] = lambda request: "None"
    requests: list[dict[str, Any]] = field(default_factory=list)
    retry_after: str = "0"


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    state = JudgeServer(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            with lock:
                state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                status, text = state.script.pop(0) if state.script else (200, state.reply(body))
            payload = (
                {"choices": [{"message": {"role": "assistant", "content": text}}]}
                if status == 200
                else {"error": {"message": text}}
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", state.retry_after)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def truncated_jpeg() -> bytes:
    """The first half of a shared JPEG: its header reads fine, its pixels do not decode."""
    data = IMAGES[0].read_bytes()
    return data[: len(data) // 2]
