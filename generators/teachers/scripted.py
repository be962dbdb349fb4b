"""A deterministic teacher for tests and dry runs: responses come from a script.

    teacher = ScriptedTeacher({"Say hi": "hi"})                  # exact last user message / prompt
    teacher = ScriptedTeacher(lambda req: "yes" if "classif" in req.prompt_text else "no")

The script maps the request's prompt text (the last user message for chat requests, the
prompt for completions) to a response. A callable script may also return a ``Completion``
(to script failures or truncation) or raise ``KeyError`` for "no answer", which becomes a
failed completion, never an empty sample. Every call is counted in ``calls``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Union

from generators.teachers.base import ChatRequest, Completion, SamplingParams, Teacher

Script = Union[Mapping[str, str], Callable[[ChatRequest], Union[str, Completion]]]


def prompt_text(request: ChatRequest) -> str:
    """The text a script is keyed on: last user message (chat) or the prompt (completion)."""
    if request.messages is not None:
        users = [m["content"] for m in request.messages if m.get("role") == "user"]
        return users[-1] if users else ""
    return request.prompt or ""


class ScriptedTeacher(Teacher):
    backend = "scripted"

    def __init__(self, script: Script, *, model: str = "scripted", default: str | None = None,
                 defaults: SamplingParams | None = None) -> None:
        super().__init__(model, defaults=defaults)
        self.script = script
        self.default = default
        self.calls: list[ChatRequest] = []

    def _answer(self, request: ChatRequest) -> Completion:
        key = self.key(request)
        start = time.perf_counter()
        try:
            if callable(self.script):
                out = self.script(request)
            else:
                text = prompt_text(request)
                out = self.script[text] if text in self.script else self._fallback(text)
        except KeyError as exc:
            return Completion(key=key, ok=False, error=f"no scripted answer: {exc}", model=self.model,
                              tag=request.tag)
        if isinstance(out, Completion):
            return out.model_copy(update={"key": key, "tag": request.tag, "model": self.model})
        return Completion(key=key, ok=True, text=out, finish_reason="stop",
                          prompt_tokens=len(prompt_text(request).split()),
                          completion_tokens=len(out.split()),
                          latency_s=time.perf_counter() - start, model=self.model, tag=request.tag)

    def _fallback(self, text: str) -> str:
        if self.default is None:
            raise KeyError(text[:80])
        return self.default

    async def agenerate(self, requests: list[ChatRequest]) -> list[Completion]:
        self.calls.extend(requests)
        return [self._answer(r) for r in requests]
