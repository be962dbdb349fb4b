"""Small helpers shared by the generation methods (not a framework: read them once).

- ``run_sync``: the sync wrappers call the async methods through it, also from inside a
  running event loop (a notebook, an async Prefect task).
- ``make_request``: one prompt as a chat request or a plain completion request.
- ``params_of``: the sampling params a request was really sent with (teacher defaults
  filled in), stored on every record.
- ``instruction_prompt``: an instruction and its optional input as one prompt text.
- ``Counts``: a Counter with ``inc`` used for the per-step counts a flow reports.
- ``MethodResult``: the records one step of a method produced, and its counts; each
  method's result class subclasses it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from generators.teachers.base import ChatRequest, Teacher
from storage.records import FilterDecision, Instruction, Sample

T = TypeVar("T")

RequestFormat = Literal["chat", "completion"]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even when a loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop runs in this thread: asyncio.run would refuse, so use a short-lived thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="distill-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def make_request(fmt: RequestFormat, text: str, *, system: str | None = None, sample_index: int = 0,
                 tag: str | None = None, **params: Any) -> ChatRequest:
    """``text`` as a chat request (user message, optional system prompt) or a completion prompt."""
    params = {k: v for k, v in params.items() if v is not None}
    if "stop" in params:
        params["stop"] = tuple(params["stop"]) or None
    if fmt == "chat":
        return ChatRequest.chat(text, system=system, sample_index=sample_index, tag=tag, **params)
    prompt = f"{system}\n\n{text}" if system else text
    return ChatRequest.completion(prompt, sample_index=sample_index, tag=tag, **params)


def params_of(teacher: Teacher, request: ChatRequest) -> dict[str, Any]:
    """The request's sampling params with the teacher's defaults filled in, as stored."""
    params = request.params.merged_over(teacher.defaults).as_dict()
    if request.sample_index:
        params["sample_index"] = request.sample_index
    return params


def instruction_prompt(text: str, input: str = "") -> str:
    """An instruction and its (optional) input, as the teacher sees them."""
    text = text.strip()
    return f"{text}\n\n{input.strip()}" if input and input.strip() else text


class Counts(Counter):
    """Named counters (requested, failed, kept, dropped_<reason>, ...) for one step."""

    def inc(self, name: str, n: int = 1) -> None:
        self[name] += n

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.items())}


@dataclass
class MethodResult:
    """What one step of a method produced. ``records`` is what the flow stores.

    ``rejected`` holds dropped instructions (``metadata`` names the filter and reason), not
    part of ``records``: their decisions explain them.
    """

    instructions: list[Instruction] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    decisions: list[FilterDecision] = field(default_factory=list)
    rejected: list[Instruction] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> list[Instruction | Sample | FilterDecision]:
        return [*self.instructions, *self.samples, *self.decisions]

    def extend(self, other: "MethodResult") -> None:
        """Append ``other``'s records and add up its counts."""
        self.instructions.extend(other.instructions)
        self.samples.extend(other.samples)
        self.decisions.extend(other.decisions)
        self.rejected.extend(other.rejected)
        counts = Counts(self.counts)
        counts.update(other.counts)
        self.counts = counts.as_dict()
