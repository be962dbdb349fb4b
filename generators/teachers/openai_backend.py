"""Any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, llama.cpp, Ollama) as a teacher.

    teacher = OpenAITeacher("gpt-4o-mini", api_key=os.environ["OPENAI_API_KEY"],
                            concurrency=32, rpm=500, tpm=200_000)
    teacher = OpenAITeacher("SmolLM2-135M-Instruct", base_url="http://127.0.0.1:8000/v1")
    done = await teacher.agenerate([ChatRequest.chat("Say hi", max_tokens=16)])

Chat requests go to ``/v1/chat/completions``, prompt requests to ``/v1/completions``.
Each request holds one of ``concurrency`` slots while it is on the wire, waits for the
requests-per-minute and tokens-per-minute limiters just before it is sent, and is retried
on 429/408/409/5xx, timeouts, dropped connections and unparseable bodies with exponential
backoff and jitter, or exactly as long as the server's ``Retry-After`` says. The client's
own retries are off (``max_retries=0``) so every attempt is counted here. A request that
finally fails comes back ``ok=False`` with a short reason ("http 503", "timeout",
"connection error", "parse error: ...", "content_filter", "empty content"); it is never an
empty success. The API key lives only inside the client; error texts are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import openai

from generators.teachers.base import ChatRequest, Completion, SamplingParams, Teacher, TokenLogprob
from generators.teachers.limits import RequestRateLimiter, TokenBucket

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class _Failure(Exception):
    """One attempt failed: ``reason`` is what the ledger records; ``retry`` says whether to try again."""

    def __init__(self, reason: str, *, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        parsed = email.utils.parsedate_to_datetime(value) if name == "retry-after" else None
        if parsed is not None:
            return max(0.0, parsed.timestamp() - time.time())
    return None


class OpenAITeacher(Teacher):
    backend = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        extra_body: dict[str, Any] | None = None,
        http_client: str = "aiohttp",
        defaults: SamplingParams | None = None,
    ) -> None:
        super().__init__(model, defaults=defaults)
        self.base_url = base_url
        self.concurrency = concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.extra_body = dict(extra_body or {})
        if http_client not in ("aiohttp", "httpx"):
            raise ValueError(f"http_client must be 'aiohttp' or 'httpx', not {http_client!r}")
        self.http_client = http_client
        # Local servers (vLLM, llama.cpp) ignore the key but the client insists on one.
        self.__api_key = api_key or "EMPTY"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None
        self._rpm: RequestRateLimiter | None = None
        self._tpm: TokenBucket | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- loop-bound resources ------------------------------------------------------------------
    def _bind(self) -> openai.AsyncOpenAI:
        """Client, semaphore and limiters belong to one event loop; make them for this one."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            # aiohttp: the SDK's documented backend for high concurrency. httpx's connection
            # pool inspects every pooled connection on every request; bench_teacher.py's
            # httpx row measures the difference.
            http = openai.DefaultAioHttpClient() if self.http_client == "aiohttp" else None
            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.__api_key,
                                              max_retries=0, timeout=self.timeout_s, http_client=http)
            self._sem = asyncio.Semaphore(self.concurrency)
            self._rpm = RequestRateLimiter(self.rpm) if self.rpm else None
            self._tpm = TokenBucket(self.tpm) if self.tpm else None
        return self._client

    async def adetach(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()

    async def aclose(self) -> None:
        await self.adetach()

    def _redact(self, text: str) -> str:
        key = self.__api_key
        return text.replace(key, "***") if key and len(key) >= 4 else text

    # -- requests ------------------------------------------------------------------------------
    def _payload(self, request: ChatRequest, p: dict[str, Any]) -> dict[str, Any]:
        """The JSON body for ``request`` with merged sampling params ``p`` (``as_dict`` form)."""
        body: dict[str, Any] = {"model": self.model}
        for name in ("temperature", "top_p", "max_tokens", "seed", "presence_penalty", "frequency_penalty"):
            if name in p:
                body[name] = p[name]
        if "stop" in p:
            body["stop"] = list(p["stop"])
        if request.kind == "chat":
            body["messages"] = [dict(m) for m in request.messages or ()]
            if "logprobs" in p:
                body["logprobs"] = True
                body["top_logprobs"] = p["logprobs"]
        else:
            body["prompt"] = request.prompt
            if "logprobs" in p:
                body["logprobs"] = p["logprobs"]
        if self.extra_body:  # server-specific fields (vLLM's top_k, guided decoding) go in as they are
            body.update(self.extra_body)
        return body

    def _estimate_tokens(self, request: ChatRequest, p: dict[str, Any]) -> int:
        text = request.prompt or "".join(m.get("content", "") for m in request.messages or ())
        return len(text) // 4 + 8 + (p.get("max_tokens") or 256)

    async def _send(self, client: openai.AsyncOpenAI, request: ChatRequest, body: dict[str, Any]) -> Any:
        """POST the body through the client; the decoded JSON, or a _Failure.

        ``client.post`` (the client's documented way to call an endpoint) rather than
        ``chat.completions.create``: the same auth, headers, timeout and error classes,
        without walking our plain-dict body through the SDK's TypedDict transform or
        building response models we would only flatten again (client CPU per request is
        the limit at high concurrency; see bench_teacher.py).
        """
        path = "/chat/completions" if request.kind == "chat" else "/completions"
        try:
            return await client.post(path, body=body, cast_to=object)
        except openai.APITimeoutError as exc:
            raise _Failure("timeout", retry=True) from exc
        except openai.APIConnectionError as exc:
            raise _Failure("connection error", retry=True) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = ""
            if isinstance(exc.body, dict):
                err = exc.body.get("error", exc.body)
                detail = str(err.get("message", "") if isinstance(err, dict) else err)[:200]
            reason = f"http {status}" + (f": {self._redact(detail)}" if detail else "")
            raise _Failure(reason, retry=status in RETRYABLE_STATUS,
                           retry_after=parse_retry_after(exc.response.headers)) from exc
        except (ValueError, openai.APIResponseValidationError) as exc:  # JSONDecodeError is a ValueError
            raise _Failure(f"parse error: {type(exc).__name__}", retry=True) from exc

    def _read(self, request: ChatRequest, response: Any) -> dict[str, Any]:
        """The fields of a Completion from a decoded response body, or a _Failure."""
        if not isinstance(response, dict):  # a body that is not JSON comes back as text
            raise _Failure("parse error: response is not a JSON object", retry=True)
        choices = response.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise _Failure("parse error: no choices in response", retry=True)
        choice = choices[0]
        finish = choice.get("finish_reason")
        try:
            if request.kind == "chat":
                message = choice.get("message") or {}
                text = message.get("content")
                logprobs = _chat_logprobs(choice.get("logprobs"))
            else:
                text = choice.get("text")
                logprobs = _completion_logprobs(choice.get("logprobs"))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise _Failure(f"parse error: malformed choice ({type(exc).__name__})", retry=True) from exc
        if finish == "content_filter":
            raise _Failure("content_filter", retry=False)
        if not isinstance(text, str) or not text.strip():
            raise _Failure("empty content", retry=False)
        usage = response.get("usage") or {}
        return {"text": text, "finish_reason": finish, "logprobs": logprobs,
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens")}

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s) * random.uniform(1.0, 1.1)
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter"

    async def _one(self, request: ChatRequest) -> Completion:
        client = self._bind()
        assert self._sem is not None
        key = self.key(request)
        params = request.merged_params_dict(self.defaults)
        body = self._payload(request, params)
        estimate = self._estimate_tokens(request, params) if self._tpm else 0
        attempt = 0
        while True:
            attempt += 1
            async with self._sem:
                if self._rpm is not None:
                    await self._rpm.acquire()
                if self._tpm is not None:
                    await self._tpm.acquire(estimate)
                start = time.perf_counter()
                try:
                    fields = self._read(request, await self._send(client, request, body))
                except _Failure as failure:
                    if self._tpm is not None:
                        self._tpm.settle(estimate, 0)
                    if not failure.retry or attempt > self.max_retries:
                        return Completion(key=key, ok=False, error=failure.reason, attempts=attempt,
                                          latency_s=time.perf_counter() - start, model=self.model,
                                          tag=request.tag)
                    delay = self._delay(attempt, failure.retry_after)
                    log.debug("request %s attempt %d failed (%s); retrying in %.2fs",
                              key[:8], attempt, failure.reason, delay)
                else:
                    latency = time.perf_counter() - start
                    if self._tpm is not None:
                        used = (fields["prompt_tokens"] or 0) + (fields["completion_tokens"] or 0)
                        self._tpm.settle(estimate, used or estimate)
                    return Completion(key=key, ok=True, attempts=attempt, latency_s=latency,
                                      model=self.model, tag=request.tag, **fields)
            await asyncio.sleep(delay)  # outside the slot: a backing-off request holds no slot

    async def _indexed(self, index: int, request: ChatRequest) -> tuple[int, Completion]:
        return index, await self._one(request)

    async def astream(self, requests: list[ChatRequest]) -> AsyncIterator[tuple[int, Completion]]:
        self._bind()
        tasks = [asyncio.ensure_future(self._indexed(i, r)) for i, r in enumerate(requests)]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                task.cancel()

    async def agenerate(self, requests: list[ChatRequest]) -> list[Completion]:
        self._bind()
        return list(await asyncio.gather(*(self._one(r) for r in requests)))


def _chat_logprobs(lp: dict[str, Any] | None) -> list[TokenLogprob] | None:
    content = lp.get("content") if lp else None
    if not content:
        return None
    return [TokenLogprob(token=t["token"], logprob=t["logprob"],
                         top={alt["token"]: alt["logprob"] for alt in (t.get("top_logprobs") or [])})
            for t in content]


def _completion_logprobs(lp: dict[str, Any] | None) -> list[TokenLogprob] | None:
    tokens = lp.get("tokens") if lp else None
    if not tokens:
        return None
    values = lp.get("token_logprobs") or [None] * len(tokens)
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    return [TokenLogprob(token=tok, logprob=val if val is not None else 0.0, top=dict(top or {}))
            for tok, val, top in zip(tokens, values, tops)]
