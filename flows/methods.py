"""Adapters from each generation method (generators/) to the generate flow's batch loop.

A method module is a plain function over records and a teacher; the flow needs three
more things from it, which these small runners add:

- ``next_batch(max_requests)``: the next unit of work (tens of teacher requests), or None
  when the method has nothing left to do (no more instructions, rounds done);
- ``run(teacher, batch)``: call the method on that batch and return its records;
- ``absorb(result)``: fold a finished batch into the method's state (its pool).

Resume is **deterministic replay**: a runner starts from the same initial state with an
RNG seeded by the run name, so a re-run issues the same requests in the same order; the
ledger serves the ones already paid for, content keys make their records duplicates, and
only the unfinished work reaches the teacher. ``parallel`` runners (independent requests)
may have several batches in flight; the others (a pool that each batch changes) run
batches one after another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from generators.teachers.base import Teacher
from core.errors import InputError
from storage.records import Instruction, Record, Sample, content_key

SEED_INSTRUCTIONS_SQL = "SELECT * FROM instructions WHERE method = 'seed' ORDER BY id"
INSTRUCTIONS_BY_ID_SQL = "SELECT * FROM instructions WHERE id IN (SELECT unnest(?::VARCHAR[])) ORDER BY id"
# Default work of the responses/rationales methods: instructions without a sample from
# this teacher made by another run (this run's own samples are replayed through the ledger).
UNANSWERED_SQL = """
SELECT i.* FROM instructions i
WHERE NOT EXISTS (
    SELECT 1 FROM samples s
    WHERE s.instruction_id = i.id AND s.teacher_model = ? AND coalesce(s.run_id, '') <> ?
)
AND NOT EXISTS (
    SELECT 1 FROM filter_decisions d WHERE d.item_id = i.id AND NOT d.kept
)
ORDER BY i.id"""


@dataclass
class Batch:
    index: int
    items: list[Any]
    requests: int  # teacher requests this batch makes (at least; follow-up steps may add more)
    max_samples: int  # most samples it can produce (scheduling toward the target)
    requests_done: bool = False  # its teacher requests are finished (it may still be storing)


@dataclass
class BatchResult:
    records: list[Record] = field(default_factory=list)  # everything to store
    samples: list[Sample] = field(default_factory=list)
    instructions: dict[str, Instruction] = field(default_factory=dict)  # by id, for the filters
    counts: dict[str, int] = field(default_factory=dict)


def _rng(run_name: str, method: str) -> random.Random:
    return random.Random(int(content_key("rng", run_name, method)[:16], 16))


def method_config(method: str, params: dict[str, Any], *, n: int = 1,
                  system_prompt: str | None = None) -> BaseModel:
    """The method's own config model built from ``params`` (InputError naming bad keys).

    ``n`` (generate.samples_per_instruction) and ``system_prompt`` are defaults that
    ``params`` may override, for the methods that take them."""
    try:
        if method in ("self_instruct", "alpaca"):
            from generators.self_instruct import SelfInstructConfig

            return SelfInstructConfig(**{"variant": method, **params})
        if method == "evol_instruct":
            from generators.evol_instruct import EvolInstructConfig

            return EvolInstructConfig(**params)
        if method == "rationales":
            from generators.rationales import RationalesConfig

            return RationalesConfig(**{"num_samples": n, "system_prompt": system_prompt, **params})
        if method == "responses":
            from generators.responses import ResponsesConfig

            base: dict[str, Any] = {"n": n, "system_prompt": system_prompt}
            if n > 1 and "temperature" not in params:
                base["temperature"] = 0.7  # n different answers need sampling
            return ResponsesConfig(**{**base, **params})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise InputError(f"generate.params for {method}: {problems}") from None
    raise InputError(f"unknown generation method {method!r}")


def read_instructions_file(path: str | Path, *, run_id: str | None = None) -> list[Instruction]:
    """Instructions from JSONL: ``{instruction, input?}`` or ``{question, answer?}`` per line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"instructions file not found: {path}")
    out: list[Instruction] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = row.get("instruction") or row.get("question")
            if not text:
                raise ValueError("no 'instruction' or 'question' field")
        except (ValueError, AttributeError) as exc:
            raise InputError(f"{path}, line {n}: {exc}") from None
        meta = {"source": path.name}
        if row.get("answer") is not None:
            meta["label"] = str(row["answer"])
        out.append(Instruction(text=text, input=row.get("input") or "", method="seed", run_id=run_id,
                               metadata=meta))
    if not out:
        raise InputError(f"{path}: no instructions")
    return out


# -- responses ---------------------------------------------------------------------------


class _FixedListRunner:
    """Walks a fixed list of items in order, ``per_item`` requests (samples) for each."""

    parallel = True

    def __init__(self, items: Sequence[Instruction], config: Any, *, batch_size: int = 32,
                 run_id: str | None = None) -> None:
        self.items = list(items)
        self.config = config
        self.pos = 0
        self.batch_size = batch_size
        self.run_id = run_id
        self.batches = 0

    @property
    def per_item(self) -> int:
        raise NotImplementedError

    def absorb(self, result: BatchResult) -> None:
        return None  # a fixed list has no pool to grow

    @staticmethod
    def _batch_result(step: Any, batch: Batch) -> BatchResult:
        out = BatchResult(counts=dict(step.counts), samples=list(step.samples))
        out.instructions = {i.id: i for i in batch.items}
        out.records = list(step.records)
        return out

    def next_batch(self, max_requests: int) -> Batch | None:
        n = self.per_item
        size = min(max(1, self.batch_size // n), max_requests // n, len(self.items) - self.pos)
        if size <= 0:
            return None
        items = self.items[self.pos: self.pos + size]
        self.pos += size
        self.batches += 1
        return Batch(self.batches, items, requests=size * n, max_samples=size * n)


class ResponsesRunner(_FixedListRunner):
    """The teacher answers instructions, ``config.n`` samples each (generators/responses.py)."""

    method = "responses"

    @property
    def per_item(self) -> int:
        return self.config.n

    async def run(self, teacher: Teacher, batch: Batch) -> BatchResult:
        from generators.responses import agenerate_responses

        step = await agenerate_responses(teacher, batch.items, self.config, run_id=self.run_id)
        return self._batch_result(step, batch)


# -- self-instruct / alpaca --------------------------------------------------------------


class SelfInstructRunner:
    """Self-Instruct (or Alpaca) steps over a pool that every step grows."""

    parallel = False

    def __init__(self, seeds: Sequence[Any], config: Any, *, run_name: str, batch_size: int,
                 run_id: str | None = None) -> None:
        from generators.self_instruct import SelfInstructState

        self.config = config
        self.method = config.variant
        self.state = SelfInstructState.create(seeds, config)
        self.rng = _rng(run_name, self.method)
        self.batch_size = batch_size
        self.run_id = run_id
        self.batches = 0

    def next_batch(self, max_requests: int) -> Batch | None:
        size = min(self.batch_size, max_requests)
        if size <= 0:
            return None
        self.batches += 1
        per_prompt = 20 if self.method == "alpaca" else 16
        return Batch(self.batches, [size], requests=size, max_samples=size * per_prompt)

    async def run(self, teacher: Teacher, batch: Batch) -> BatchResult:
        from generators.self_instruct import aself_instruct_step

        step = await aself_instruct_step(teacher, self.state, self.config, rng=self.rng,
                                         batch_size=batch.items[0], run_id=self.run_id)
        out = BatchResult(counts=dict(step.counts))
        out.samples = list(step.samples)
        out.instructions = {i.id: i for i in step.instructions}
        # Rejected instructions are stored too (their decisions explain them); they never
        # have samples, so no dataset can select them.
        out.records = [*step.instructions, *step.rejected, *step.decisions, *step.samples]
        return out

    def absorb(self, result: BatchResult) -> None:
        return None  # aself_instruct_step already added accepted tasks to the pool


# -- evol-instruct -----------------------------------------------------------------------


class EvolRunner:
    """Evol-Instruct rounds over a pool, one slice of the pool per batch."""

    parallel = False
    method = "evol_instruct"

    def __init__(self, instructions: Sequence[Instruction], config: Any, *, run_name: str, batch_size: int,
                 run_id: str | None = None) -> None:
        if not instructions:
            raise InputError("Evol-Instruct needs instructions to evolve: ingest seeds or give instructions_file")
        self.config = config
        self.pool = list(instructions)
        self.next_pool: list[Instruction] = []
        self.round = 1
        self.pos = 0
        self.rng = _rng(run_name, self.method)
        self.batch_size = batch_size
        self.run_id = run_id
        self.batches = 0

    def next_batch(self, max_requests: int) -> Batch | None:
        if self.pos >= len(self.pool):
            if self.round >= self.config.rounds:
                return None
            self.round += 1
            self.pool, self.next_pool, self.pos = self.next_pool, [], 0
        size = min(self.batch_size, max_requests // 3 or 0, len(self.pool) - self.pos)
        if size <= 0:
            return None
        items = self.pool[self.pos: self.pos + size]
        self.pos += size
        self.batches += 1
        return Batch(self.batches, [self.round, items], requests=3 * size, max_samples=size)

    async def run(self, teacher: Teacher, batch: Batch) -> BatchResult:
        from generators.evol_instruct import aevol_round

        round_, items = batch.items
        step = await aevol_round(teacher, items, self.config, rng=self.rng, round=round_, run_id=self.run_id)
        out = BatchResult(counts=dict(step.counts))
        out.samples = list(step.samples)
        out.instructions = {i.id: i for i in step.instructions}
        out.records = [*step.instructions, *step.rejected, *step.decisions, *step.samples]
        out.counts["round"] = round_
        self._pool_part = step.pool
        return out

    def absorb(self, result: BatchResult) -> None:
        self.next_pool.extend(self._pool_part)


# -- rationales --------------------------------------------------------------------------


class RationalesRunner(_FixedListRunner):
    """Chain-of-thought rationales for questions, D samples each (generators/rationales.py)."""

    method = "rationales"

    def __init__(self, questions: Sequence[Instruction], config: Any, *, batch_size: int,
                 run_id: str | None = None) -> None:
        from generators.rationales import load_cot_examples

        super().__init__(questions, config, batch_size=batch_size, run_id=run_id)
        self.examples = load_cot_examples()

    @property
    def per_item(self) -> int:
        return self.config.num_samples

    async def run(self, teacher: Teacher, batch: Batch) -> BatchResult:
        from generators.rationales import agenerate_rationales

        step = await agenerate_rationales(teacher, batch.items, self.examples, self.config, run_id=self.run_id)
        return self._batch_result(step, batch)
