"""The one interface every teacher backend implements, and every method talks to.

A batch of requests in, one ``Completion`` per request out, in the same order:

    teacher = ScriptedTeacher({...})          # or OpenAITeacher / VLLMTeacher / TransformersTeacher
    done = teacher.generate([ChatRequest.chat("Say hi", temperature=0.0)])
    if done[0].ok:
        print(done[0].text)

A failed request comes back with ``ok=False`` and ``error`` set; it is never an empty
success. ``n`` samples of one prompt are n requests with ``sample_index`` 0..n-1 (see
``ChatRequest.expand``): each has its own ledger key, so resuming skips exactly the
samples already paid for.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from storage.records import canonical_json, content_key


class SamplingParams(BaseModel):
    """Sampling parameters, as the OpenAI API names them. None = backend default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens to generate.")
    stop: tuple[str, ...] | None = Field(None, description="Stop sequences (not included in the text).")
    seed: int | None = Field(None, description="Sampling seed, where the backend honours one.")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: int | None = Field(None, ge=0, le=20, description="Return the top-k logprobs per token.")

    def merged_over(self, defaults: "SamplingParams | None") -> "SamplingParams":
        """These params, with unset fields taken from ``defaults``."""
        if defaults is None:
            return self
        base = defaults.model_dump(exclude_none=True)
        base.update(self.model_dump(exclude_none=True))
        return SamplingParams(**base)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, mode="json")


class ChatRequest(BaseModel):
    """One request: chat ``messages`` (chat API) or a plain ``prompt`` (completions API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[dict[str, str], ...] | None = None
    prompt: str | None = None
    params: SamplingParams = Field(default_factory=SamplingParams)
    sample_index: int = Field(0, ge=0, description="Which of n samples of the same prompt this is.")
    tag: str | None = Field(None, description="Caller's label; not part of the key.")

    @property
    def kind(self) -> Literal["chat", "completion"]:
        return "chat" if self.messages is not None else "completion"

    def model_post_init(self, __context: Any) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a request has exactly one of messages (chat) or prompt (completion)")

    @classmethod
    def chat(cls, user: str, *, system: str | None = None, sample_index: int = 0,
             tag: str | None = None, **params: Any) -> "ChatRequest":
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        return cls(messages=tuple(messages), params=SamplingParams(**params),
                   sample_index=sample_index, tag=tag)

    @classmethod
    def completion(cls, prompt: str, *, sample_index: int = 0, tag: str | None = None,
                   **params: Any) -> "ChatRequest":
        return cls(prompt=prompt, params=SamplingParams(**params), sample_index=sample_index, tag=tag)

    def expand(self, n: int) -> list["ChatRequest"]:
        """n samples of this request: copies with sample_index 0..n-1."""
        return [self.model_copy(update={"sample_index": i}) for i in range(n)]

    def merged_params_dict(self, defaults: SamplingParams | None = None) -> dict[str, Any]:
        """``self.params.merged_over(defaults).as_dict()``, without building a model (hot path)."""
        params = self.params.as_dict()
        return {**defaults.as_dict(), **params} if defaults is not None else params

    def key(self, model: str, defaults: SamplingParams | None = None) -> str:
        """Deterministic ledger key: hash(model, kind, messages/prompt, params, sample index)."""
        params = self.merged_params_dict(defaults)
        body = list(self.messages) if self.messages is not None else self.prompt
        return content_key(model, self.kind, canonical_json(body), canonical_json(params),
                           str(self.sample_index))


class TokenLogprob(BaseModel):
    """One generated token with its logprob and the top-k alternatives."""

    token: str
    logprob: float
    top: dict[str, float] = Field(default_factory=dict)


class Completion(BaseModel):
    """The outcome of one request. ``ok`` False means it failed; ``text`` is then None."""

    key: str
    ok: bool
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 1
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None
    cached: bool = Field(False, description="Served from the ledger; not paid again.")
    model: str | None = None
    tag: str | None = None

    @property
    def truncated(self) -> bool:
        """The teacher stopped at max_tokens: the text is cut off."""
        return self.finish_reason == "length"


class Teacher(abc.ABC):
    """A teacher model. Subclasses implement ``_agenerate`` for requests not in the ledger."""

    backend: str = "abstract"

    def __init__(self, model: str, *, defaults: SamplingParams | None = None) -> None:
        self.model = model
        self.defaults = defaults or SamplingParams()

    @abc.abstractmethod
    async def agenerate(self, requests: list[ChatRequest]) -> list[Completion]:
        """Complete every request; one Completion per request, in order."""

    async def astream(self, requests: list[ChatRequest]) -> AsyncIterator[tuple[int, Completion]]:
        """Yield ``(index, completion)`` as each request finishes, in any order.

        The ledger consumes this so results are recorded as they arrive. The default
        waits for the whole batch; backends that finish requests one by one (the HTTP
        ones) or in micro-batches (transformers) override it.
        """
        for i, done in enumerate(await self.agenerate(list(requests))):
            yield i, done

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        """Synchronous wrapper around ``agenerate`` for callers outside an event loop."""

        async def _run() -> list[Completion]:
            try:
                return await self.agenerate(list(requests))
            finally:
                await self.adetach()

        return asyncio.run(_run())

    def key(self, request: ChatRequest) -> str:
        return request.key(self.model, self.defaults)

    async def adetach(self) -> None:
        """Release what is bound to the current event loop (HTTP clients); the teacher stays
        usable from the next loop. ``generate`` calls it before its loop closes."""
        return None

    async def aclose(self) -> None:  # backends with servers/clients override
        return None

    def close(self) -> None:
        asyncio.run(self.aclose())
