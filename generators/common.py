"""What every generation method shares (not a framework: read it once).

A method is a plain async function over records and a teacher (``agenerate_responses``,
``aself_instruct_step``, ...) that returns a ``MethodResult``. To run in the generate
flow's batch loop it also has a **runner**, a small object with three methods:

- ``next_batch(max_requests)``: the next unit of work (tens of teacher requests) as a
  ``Batch`` with a typed payload, or None when the method has nothing left to do;
- ``run(teacher, batch)``: call the method on that batch; returns its result type;
- ``absorb(batch, result)``: fold a finished batch into the runner's state (a pool).

Resume is **deterministic replay**: a runner starts from the same state with an RNG
seeded by the run name (``rng_for``), so a re-run issues the same requests in the same
order; the ledger serves the ones already paid for, content keys make their records
duplicates, and only unfinished work reaches the teacher. ``parallel`` runners (whose
batches are independent) may have several batches in flight; the others (a pool that
each batch changes) run one batch after another.

Also here: ``make_request`` (a prompt as a chat or completion request), ``params_of``
(the sampling params a request was really sent with, stored on every record) and
``Counts`` (the per-step counters a flow reports).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from generators.teachers.base import ChatRequest, Teacher
from storage.records import FilterDecision, Instruction, Record, Sample, content_key

RequestFormat = Literal["chat", "completion"]
P = TypeVar("P")  # what one batch of a runner carries
R = TypeVar("R", bound="MethodResult")


def make_request(fmt: RequestFormat, text: str, *, system: str | None = None, sample_index: int = 0,
                 tag: str | None = None, **params: Any) -> ChatRequest:
    """``text`` as a chat request (user message, optional system prompt) or a completion
    prompt. Params left None are not sent: the teacher's ``defaults`` fill them in."""
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


class Counts(Counter):
    """Named counters (requested, failed, kept, dropped_<reason>, ...) for one step."""

    def inc(self, name: str, n: int = 1) -> None:
        self[name] += n

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.items())}


@dataclass
class MethodResult:
    """What one step of a method produced; ``records`` is everything the flow stores.

    ``instructions`` are new (generated or evolved) instructions; ``rejected`` are new
    ones a filter of the method dropped (stored too, so SQL can show them; their
    ``decisions`` explain them, and having no samples they never reach a dataset);
    ``given`` are the stored instructions the step answered (responses, rationales),
    which are not stored again.
    """

    instructions: list[Instruction] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    decisions: list[FilterDecision] = field(default_factory=list)
    rejected: list[Instruction] = field(default_factory=list)
    given: list[Instruction] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> list[Record]:
        return [*self.instructions, *self.rejected, *self.samples, *self.decisions]

    def instructions_by_id(self) -> dict[str, Instruction]:
        """The instructions this step's samples answer (new or given), by id."""
        return {i.id: i for i in (*self.given, *self.instructions)}

    def extend(self, other: "MethodResult") -> None:
        """Append ``other``'s records and add up its counts."""
        self.instructions.extend(other.instructions)
        self.samples.extend(other.samples)
        self.decisions.extend(other.decisions)
        self.rejected.extend(other.rejected)
        self.given.extend(other.given)
        counts = Counts(self.counts)
        counts.update(other.counts)
        self.counts = counts.as_dict()


# -- runners -------------------------------------------------------------------------------


@dataclass
class Batch(Generic[P]):
    """One unit of a runner's work: its ``payload`` and what it may cost and produce."""

    index: int
    payload: P
    requests: int  # teacher requests this batch makes (at least; follow-up steps may add more)
    max_samples: int  # most samples it can produce (scheduling toward the target)
    requests_done: bool = False  # its teacher requests are finished (it may still be storing)


class Runner(Protocol[P, R]):
    """How the generate flow drives a method; one runner per flow run."""

    method: str
    parallel: bool

    def next_batch(self, max_requests: int) -> Batch[P] | None: ...

    async def run(self, teacher: Teacher, batch: Batch[P]) -> R: ...

    def absorb(self, batch: Batch[P], result: R) -> None: ...


def rng_for(run_name: str, method: str) -> random.Random:
    """The RNG of a run: seeded by its name, so a resumed run makes the same choices."""
    return random.Random(int(content_key("rng", run_name, method)[:16], 16))


class ListRunner(Generic[R]):
    """Walks a fixed list of instructions in order, ``per_item`` requests for each (batches
    are independent: ``parallel``). Subclasses set ``per_item`` and implement ``run``."""

    method = "list"
    parallel = True

    def __init__(self, items: Sequence[Instruction], config: Any, *, batch_size: int = 32,
                 run_id: str | None = None, run_name: str = "") -> None:
        self.items = list(items)
        self.config = config
        self.pos = 0
        self.batch_size = batch_size
        self.run_id = run_id
        self.batches = 0

    @property
    def per_item(self) -> int:
        raise NotImplementedError

    def next_batch(self, max_requests: int) -> Batch[list[Instruction]] | None:
        n = self.per_item
        size = min(max(1, self.batch_size // n), max_requests // n, len(self.items) - self.pos)
        if size <= 0:
            return None
        items = self.items[self.pos: self.pos + size]
        self.pos += size
        self.batches += 1
        return Batch(self.batches, items, requests=size * n, max_samples=size * n)

    def absorb(self, batch: Batch[list[Instruction]], result: R) -> None:
        return None  # a fixed list has no pool to grow
