"""One client for OpenAI-compatible chat endpoints, with retries and an on-disk cache.

Used by the LLM object-extraction step of Object HalBench and by the MMHal-Bench judge.
Every reply is stored under ``cache_dir`` keyed by the SHA-256 of the request body
(model, messages, sampling settings: not the URL or the key), so a rerun, or a run that
was interrupted, makes no call for anything already answered.

The API key is read from an environment variable (``api_key_env``), never from the
command line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfv.errors import InputError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def check_base_url(url: str) -> None:
    """InputError unless ``url`` is an http(s) URL with a host.

    Checked up front: httpx would raise on a malformed URL at the first request, and
    report one without a scheme as a transport error that retries cannot cure."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as err:
        raise InputError(f"--base-url {url!r}: not a valid URL ({err})", reason="bad_base_url") from err
    if parsed.scheme not in ("http", "https") or not parsed.host or any(c.isspace() for c in url):
        raise InputError(
            f"--base-url {url!r}: expected an http:// or https:// URL with a host,"
            " e.g. http://localhost:8000/v1",
            reason="bad_base_url",
        )


class EndpointError(Exception):
    """The endpoint answered with an error or an unusable body (``kind`` says which)."""

    def __init__(self, message: str, kind: str = "endpoint_error") -> None:
        self.kind = kind
        super().__init__(message)


class EndpointUnreachable(EndpointError):
    """No connection after all retries: later items should not try again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="endpoint_unreachable")


@dataclass
class ReplyCache:
    """One JSON file per request hash under ``directory`` (written atomically)."""

    directory: Path

    def path(self, key: str) -> Path:
        return Path(self.directory) / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            return json.loads(self.path(key).read_text("utf-8"))["reply"]
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, request: dict[str, Any], reply: str) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"request": request, "reply": reply}), "utf-8")
        os.replace(tmp, path)


def request_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ChatClient:
    """POST ``{base_url}/chat/completions``; retries connection errors, timeouts, 429 and
    5xx with exponential backoff (``backoff_s * 2**attempt``, or the server's Retry-After);
    caches replies on disk.

    ``calls`` counts HTTP requests actually sent (tests use it; so can progress output).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | Path | None = None,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 120.0,
    ) -> None:
        import httpx

        check_base_url(base_url)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.cache = ReplyCache(Path(cache_dir)) if cache_dir is not None else None
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.calls = 0
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def complete(
        self, messages: list[dict[str, Any]], *, temperature: float = 0.0, max_tokens: int = 512
    ) -> str:
        """The assistant's reply text, from the cache if this exact request was answered."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        key = request_key(body)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        reply = self._post(body)
        if self.cache is not None:
            self.cache.put(key, body, reply)
        return reply

    def _post(self, body: dict[str, Any]) -> str:
        import httpx

        url = f"{self.base_url}/chat/completions"
        last, last_response = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, last_response))
            last_response = None
            self.calls += 1
            try:
                response = self._http.post(url, json=body)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as err:
                last = f"{type(err).__name__}: {err}"
                continue
            except httpx.TransportError as err:  # proxy or protocol misuse: a retry cannot help
                raise EndpointError(f"{url}: {type(err).__name__}: {err}") from err
            if response.status_code in RETRY_STATUS:
                last, last_response = f"HTTP {response.status_code}", response
                continue
            if response.status_code >= 400:
                raise EndpointError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
            try:
                return response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as err:
                raise EndpointError(f"{url}: reply is not a chat completion: {response.text[:200]}") from err
        if last.startswith("HTTP"):
            raise EndpointError(f"{url}: {last} after {self.max_retries + 1} attempts")
        raise EndpointUnreachable(f"{url}: unreachable after {self.max_retries + 1} attempts ({last})")

    def _delay(self, attempt: int, response: Any) -> float:
        if response is not None:
            try:
                wait = float(response.headers.get("retry-after", ""))
            except ValueError:
                wait = math.nan
            # a negative Retry-After means "now", not a time.sleep error; NaN means nothing
            if not math.isnan(wait):
                return min(max(wait, 0.0), self.max_backoff_s)
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
