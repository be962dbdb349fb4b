"""A fake OpenAI-compatible server for tests and benchmarks, with injectable faults.

It answers ``POST /v1/chat/completions`` and ``POST /v1/completions`` like vLLM or OpenAI
would (usage, finish_reason, top-k logprobs), after a fixed latency, and can be told to
misbehave for a given prompt, one fault per request, in order:

    server = FakeOpenAIServer(latency=0.1).start()          # 127.0.0.1, random port
    server.set_faults("Say hi", ["429:1.5", "500", "ok"])   # 429 (Retry-After 1.5 s), 500, then fine
    AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)
    server.counts["Say hi"]                                 # requests seen for that prompt
    server.stop()

The "prompt" is the last user message (chat) or the prompt text (completions). Faults:

    ok                 answer normally ("echo: <prompt>" unless a responder is given)
    429[:s]            429 with Retry-After s seconds (default 1)
    500, 503, 4xx...   that status with an OpenAI-style error body
    hang[:s]           sleep s seconds (default 30) before answering: past any client timeout
    drop               send headers, then close the connection mid-body
    malformed          200 with a body that is not JSON
    empty              200 with empty content
    length             200, text cut to max_tokens words, finish_reason "length"
    content_filter     200, finish_reason "content_filter", content null
    slow:s             answer normally after s extra seconds

A prompt may also carry its faults inline, for clients in another process:
``"[[faults=429:1,500]] Say hi"``. Standalone (benchmarks, the flows engineer's load tests):

    python tests/fake_openai_server.py --port 8011 --latency 0.1

prints ``listening on http://127.0.0.1:8011/v1`` and serves until killed. ``GET /_stats``
returns the per-prompt counts and, as ``time.monotonic()`` values (one clock for every
process on Linux, so a client can compare them with its own), when the first and the last
request arrived (``first_t``, ``last_t``) and when the last answer was ready
(``last_done_t``); null before any request. ``POST /_faults`` {"prompt", "faults"} and
``POST /_reset`` control it remotely.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

_INLINE = re.compile(r"\[\[faults=([^\]]*)\]\]")


@dataclass(frozen=True)
class Hit:
    """One request the server saw."""

    t: float          # time.monotonic() on arrival (same clock as the test process)
    path: str
    prompt: str
    fault: str
    headers: dict[str, str]


class _Dropped(Response):
    """Headers promise 4 KiB, the body stops after a few bytes: the client sees a cut connection."""

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"id": "cut', "more_body": False})


class _QuietDrops(logging.Filter):
    """uvicorn logs the deliberately cut responses of the ``drop`` fault as errors; hide those."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.exc_info[1]) if record.exc_info and record.exc_info[1] else record.getMessage()
        return "Content-Length" not in text and "without completing response" not in text


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def _json(payload: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers=headers)


class FakeOpenAIServer:
    """The server's state and its uvicorn instance (in a background thread)."""

    def __init__(self, *, latency: float = 0.0, host: str = "127.0.0.1", port: int = 0,
                 responder: Callable[[str], str] | None = None) -> None:
        self.latency = latency
        self.host = host
        self.port = port
        self.responder = responder or (lambda prompt: f"echo: {prompt}")
        self._lock = threading.Lock()
        self.faults: dict[str, deque[str]] = {}
        self.counts: Counter[str] = Counter()
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_done: float | None = None  # time.monotonic() when the last answer was ready
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def set_faults(self, prompt: str, faults: list[str]) -> None:
        """The next len(faults) requests for ``prompt`` get these faults, in order; then ok."""
        with self._lock:
            self.faults[prompt] = deque(faults)

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.counts.clear()
            self.hits.clear()
            self.max_in_flight = self.in_flight
            self.last_done = None

    def times(self, prompt: str | None = None) -> list[float]:
        """Arrival times (monotonic) of every request, or of one prompt's requests."""
        return [h.t for h in self.hits if prompt is None or h.prompt == prompt]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    # -- serving ---------------------------------------------------------------------------
    def _next_fault(self, prompt: str) -> str:
        with self._lock:
            self.counts[prompt] += 1
            if prompt not in self.faults:
                inline = _INLINE.search(prompt)
                self.faults[prompt] = deque(inline.group(1).split(",") if inline else [])
            queue = self.faults[prompt]
            return queue.popleft() if queue else "ok"

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.get("/health")
        async def health() -> Response:
            return Response(status_code=200)

        @app.get("/v1/models")
        async def models() -> Response:
            return _json({"object": "list", "data": [{"id": "fake", "object": "model"}]})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            return await self._complete(request, chat=True)

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            return await self._complete(request, chat=False)

        @app.get("/_stats")
        async def stats() -> Response:
            first = self.hits[0].t if self.hits else None
            last = self.hits[-1].t if self.hits else None
            return _json({"total": self.total, "counts": dict(self.counts), "first_t": first, "last_t": last,
                          "last_done_t": self.last_done})

        @app.post("/_faults")
        async def faults(request: Request) -> Response:
            body = await request.json()
            self.set_faults(body["prompt"], list(body["faults"]))
            return _json({"ok": True})

        @app.post("/_reset")
        async def reset() -> Response:
            self.reset()
            return _json({"ok": True})

        return app

    async def _complete(self, request: Request, *, chat: bool) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, chat=chat)
        finally:
            self.in_flight -= 1
            self.last_done = time.monotonic()

    async def _answer(self, request: Request, *, chat: bool) -> Response:
        body = await request.json()
        if chat:
            users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
            prompt = users[-1] if users else ""
        else:
            prompt = body.get("prompt", "")
            prompt = prompt[0] if isinstance(prompt, list) else prompt
        fault = self._next_fault(prompt)
        self.hits.append(Hit(time.monotonic(), request.url.path, prompt, fault, dict(request.headers)))
        delay = self.latency
        kind, _, arg = fault.partition(":")
        if kind == "slow":
            delay += float(arg or 1)
        if kind == "hang":
            delay += float(arg or 30)
        if delay:
            await asyncio.sleep(delay)

        if kind == "429":
            return _json({"error": {"message": "rate limited", "type": "rate_limit"}}, 429,
                         {"retry-after": arg or "1"})
        if kind.isdigit():
            message = f"fake error {kind}"
            if kind in ("401", "403"):  # like OpenAI, echo (part of) the key the client sent
                message += f": incorrect API key provided: {request.headers.get('authorization', '')}"
            return _json({"error": {"message": message, "type": "server_error"}}, int(kind))
        if kind == "drop":
            return _Dropped()
        if kind == "malformed":
            return Response('{"id": "x", "choices": [', media_type="application/json")

        text: str | None = self.responder(prompt)
        finish = "stop"
        words = text.split()
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if kind == "length" or (max_tokens and len(words) > max_tokens):
            words = words[: max(1, (max_tokens or len(words) // 2 or 1))]
            text, finish = " ".join(words), "length"
        elif kind == "empty":
            text, words = "", []
        elif kind == "content_filter":
            text, words, finish = None, [], "content_filter"
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words),
                 "total_tokens": len(prompt.split()) + len(words)}
        model = body.get("model", "fake")
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": finish, "logprobs": None}
            if body.get("logprobs"):
                k = body.get("top_logprobs") or 0
                choice["logprobs"] = {"content": [
                    {"token": w, "logprob": -0.1 * (i + 1), "bytes": None,
                     "top_logprobs": [{"token": w if j == 0 else f"{w}~{j}", "logprob": -0.1 * (i + 1) - j,
                                       "bytes": None} for j in range(k)]}
                    for i, w in enumerate(words)]}
            payload = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                       "model": model, "choices": [choice], "usage": usage}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            if body.get("logprobs") is not None:
                k = body["logprobs"]
                choice["logprobs"] = {
                    "tokens": words,
                    "token_logprobs": [-0.1 * (i + 1) for i in range(len(words))],
                    "top_logprobs": [{(w if j == 0 else f"{w}~{j}"): -0.1 * (i + 1) - j for j in range(k)}
                                     for i, w in enumerate(words)],
                    "text_offset": [0] * len(words)}
            payload = {"id": "cmpl-fake", "object": "text_completion", "created": 0,
                       "model": model, "choices": [choice], "usage": usage}
        return _json(payload)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, backlog=2048)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def spawn_fake_server(latency: float = 0.0, *, python: str = sys.executable) -> Iterator[str]:
    """Run the server in its own process (so it does not share the caller's event loop
    or GIL); yields its base URL and kills it afterwards."""
    proc = subprocess.Popen([python, os.path.abspath(__file__), "--port", "0", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"fake server failed to start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- pytest fixtures (re-exported by tests/conftest.py) ---------------------------------------
try:
    import pytest
except ImportError:  # standalone use without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def _fake_openai_session() -> Iterator[FakeOpenAIServer]:
        server = FakeOpenAIServer().start()
        yield server
        server.stop()

    @pytest.fixture
    def fake_openai(_fake_openai_session: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
        """A running fake OpenAI server, reset for this test (no latency, no faults)."""
        server = _fake_openai_session
        server.reset()
        server.latency = 0.0
        server.responder = lambda prompt: f"echo: {prompt}"
        yield server
        server.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    server = FakeOpenAIServer(latency=args.latency, host=args.host, port=args.port).start()
    print(f"listening on {server.url}", flush=True)
    try:
        while server._thread is not None and server._thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    main()
