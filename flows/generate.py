"""The generate flow: a teacher and a method produce samples until enough are KEPT.

    distill generate --method responses --target 200 --config configs/demo.yaml
    python -c "from flows.generate import generate_flow; generate_flow(run_name='x')"

Work goes to the teacher in batches of tens of requests, each batch one Prefect task that
calls the method (generators/), runs the inline filters on what came back, and stores the
batch's records before it ends (so a crash loses at most the batches in flight). The
target counts samples the filters kept; the run stops early, with a summary saying why,
when the request or token budget is spent or the method runs out of work.

Resume: re-run with the same ``run_name``. The method replays from the same state and RNG
(see flows/methods.py); the ledger answers every request already paid for without
sending it, content keys turn replayed records into duplicates that are not stored twice,
and the work that never finished is done now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows import artifacts
from flows._compat import TeacherConfig
from flows.config import GenerateConfig
from flows.filtering import FilterOutcome, SampleFilters, SampleItem
from flows.methods import (
    INSTRUCTIONS_BY_ID_SQL,
    SEED_INSTRUCTIONS_SQL,
    UNANSWERED_SQL,
    Batch,
    BatchResult,
    EvolRunner,
    RationalesRunner,
    ResponsesRunner,
    SelfInstructRunner,
    method_config,
    read_instructions_file,
)
from flows.progress import report
from flows.runs import finish_run, freeze_startup_heap, start_run
from generators.teachers.base import ChatRequest, Completion, Teacher
from generators.teachers.config import build_teacher
from generators.teachers.ledger import LedgeredTeacher
from core.errors import DatabaseError, DatabaseLockedError, InputError
from storage.records import Instruction
from storage.store import Store

log = logging.getLogger(__name__)

# What this run already spent (requests it sent, tokens) before this session: resume keeps budgets.
SPENT_SQL = """
SELECT count(*) AS requests, coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0) AS tokens
FROM requests WHERE run_id = ?"""
OTHER_RUNS_SAMPLES_SQL = """
SELECT id FROM samples WHERE id IN (SELECT unnest(?::VARCHAR[])) AND coalesce(run_id, '') <> ?"""
KEPT_SQL = """
SELECT count(*) AS n FROM samples s
WHERE s.run_id = '{run_id}'
  AND NOT EXISTS (SELECT 1 FROM filter_decisions d WHERE d.item_id = s.id AND NOT d.kept)"""
REQUESTS_SQL = "SELECT status, count(*) AS n FROM requests WHERE run_id = '{run_id}' GROUP BY 1 ORDER BY 1"
DROPS_SQL = """
SELECT filter, reason, count(*) AS n FROM filter_decisions
WHERE run_id = '{run_id}' AND NOT kept GROUP BY ALL ORDER BY n DESC"""
LENGTHS_SQL = """
SELECT len(string_split(trim(s.instruction), ' ')) AS instruction_words,
       len(string_split(trim(s.response), ' ')) AS response_words
FROM sample_view s
WHERE s.run_id = '{run_id}'
  AND NOT EXISTS (SELECT 1 FROM filter_decisions d WHERE d.item_id = s.sample_id AND NOT d.kept)"""

T = TypeVar("T")

CONSECUTIVE_FAILED_BATCHES = 3  # all-failed batches in a row before the run gives up on the teacher
# Batches commit every few hundred milliseconds: the database file stays open between
# commits (opening it costs ~25 ms of CPU each time) unless none comes for this long.
# Another process that waits for the file gets it at once (storage/store.py, the keeper).
KEEP_DB_OPEN_S = 2.0


class CountingTeacher(Teacher):
    """Passes requests through and counts what really reaches the teacher (not ledger hits)."""

    def __init__(self, inner: Teacher) -> None:
        super().__init__(inner.model, defaults=inner.defaults)
        self.inner = inner
        self.backend = inner.backend
        self.sent = 0
        self.tokens = 0
        self.failed = 0
        self.last_error: str | None = None

    def key(self, request: ChatRequest) -> str:
        return self.inner.key(request)

    def _count(self, done: Completion) -> None:
        self.tokens += (done.prompt_tokens or 0) + (done.completion_tokens or 0)
        if not done.ok:
            self.failed += 1
            self.last_error = done.error

    async def agenerate(self, requests: list[ChatRequest]) -> list[Completion]:
        self.sent += len(requests)
        out = await self.inner.agenerate(requests)
        for done in out:
            self._count(done)
        return out

    async def astream(self, requests: list[ChatRequest]):
        self.sent += len(requests)
        async for i, done in self.inner.astream(requests):
            self._count(done)
            yield i, done

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class _Context:
    """What every batch task of one flow run shares (live objects, not parameters)."""

    store: Store
    run_id: str
    runner: Any
    teacher: Teacher
    filters: SampleFilters
    committer: "_Committer" = field(init=False)
    # Set when a batch's teacher requests are done (it may still be storing): the loop
    # can send the next batch then, so storing never leaves the teacher idle.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.committer = _Committer(self)


@dataclass
class _Outcome:
    index: int
    counts: Counter
    kept: int
    failed_all: bool


class _Committer:
    """Judges and stores finished batches, one commit at a time, in the order they finish.

    Batches that finish while a commit is running wait and go together in the next one:
    one database open, one check against other runs and one insert per table for all of
    them, so a fast teacher never queues batches behind one commit each.
    """

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.queue: list[tuple[list[SampleItem], list, asyncio.Future]] = []
        self.lock = asyncio.Lock()
        self.commits = 0

    async def commit(self, items: list[SampleItem], records: list) -> tuple[set[str], FilterOutcome]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.queue.append((items, records, fut))
        async with self.lock:
            if not fut.done():  # nobody took it along: commit everything queued now
                pending, self.queue = self.queue, []
                try:
                    results = await asyncio.to_thread(
                        _judge_and_store, self.ctx, [(i, r) for i, r, _ in pending])
                except Exception as exc:  # every batch of this commit fails with it
                    for *_, f in pending:
                        f.set_exception(exc)
                except BaseException:  # cancelled: so are the batches waiting on this commit
                    for *_, f in pending:
                        f.cancel()
                    raise
                else:
                    self.commits += 1
                    for (*_, f), result in zip(pending, results):
                        f.set_result(result)
        return await fut


@task(name="generate-batch", task_run_name="{method}-batch-{index}", cache_policy=NO_CACHE)
async def generate_batch(method: str, index: int, batch: Batch, ctx: _Context) -> _Outcome:
    """One batch: the method's teacher calls, inline filters, then its records stored."""
    try:
        result: BatchResult = await ctx.runner.run(ctx.teacher, batch)
    finally:
        batch.requests_done = True
        ctx.wake.set()
    counts = Counter(result.counts)
    counts["samples"] += len(result.samples)

    items = [SampleItem(s.id, s.instruction_id, *_instruction_text(result, s), s.response,
                        (s.metadata or {}).get("judge_score")) for s in result.samples]
    # Batches are judged and stored one commit at a time (the filters' pools see every
    # kept sample), in a worker thread so the other batches' requests go on meanwhile.
    others, outcome = await ctx.committer.commit(items, result.records)
    counts["duplicate_of_other_runs"] += len(others)
    kept = outcome.kept
    for key, n in outcome.dropped.items():
        counts[f"dropped_{key}"] += n
    ctx.runner.absorb(result)
    requested = counts.get("requests", batch.requests)
    return _Outcome(index, counts, len(kept), failed_all=requested > 0 and counts.get("failed", 0) >= requested)


def _judge_and_store(ctx: _Context, batches: list[tuple[list[SampleItem], list]]
                     ) -> list[tuple[set[str], FilterOutcome]]:
    """Find the samples other runs stored, filter the rest, store it all: one commit.

    ``batches`` are judged in order, each as a unit (the filters' pools grow between
    them). A sample another run already stored is that run's (an exact duplicate of it):
    it is neither judged again here (its decisions are that run's) nor counted as kept.
    """
    store = ctx.store
    ids = [i.sample_id for items, _ in batches for i in items]

    def judge(others: set[str]) -> list[tuple[set[str], FilterOutcome]]:
        out = []
        for items, _ in batches:
            mine = {i.sample_id for i in items} & others
            out.append((mine, ctx.filters.apply([i for i in items if i.sample_id not in others])))
        return out

    def rows(results: list[tuple[set[str], FilterOutcome]]) -> list:
        return [r for (_, records), (_, outcome) in zip(batches, results) for r in (*records, *outcome.records)]

    def judge_and_store() -> list[tuple[set[str], FilterOutcome]]:
        others = {r["id"] for r in store.query(OTHER_RUNS_SAMPLES_SQL, [ids, ctx.run_id])} if ids else set()
        results = judge(others)
        store.ingest(rows(results))
        return results

    return _in_one_commit(store, judge_and_store)


def _in_one_commit(store: Store, steps: Callable[[], T]) -> T:
    """``steps()`` inside one ``store.write()`` block, so its queries and ingests share one
    database open and one commit (with the journal merged in it). If the database is busy
    (another process past ``lock_timeout``, or a reader waiting), ``steps()`` runs on its
    own instead: its reads wait for the lock and its ingests spool to the journal."""
    if not store.readers_waiting():
        opened = False
        try:
            with store.write(timeout=store.lock_timeout):
                opened = True
                return steps()
        except DatabaseLockedError:
            if opened:  # raised by the steps themselves, not by opening the file
                raise
    return steps()


def _instruction_text(result: BatchResult, sample) -> tuple[str, str]:
    ins = result.instructions.get(sample.instruction_id)
    return (ins.text, ins.input) if ins else ("", "")


def _teacher_name(config: TeacherConfig) -> str:
    return config.model or ("embedded" if config.backend == "transformers" else config.backend)


def ingest_shipped_seeds(store: Store, path: str | None = None) -> int:
    """Ingest a seed-task file (default: the shipped one); returns new instructions."""
    from storage.seeds import parse_seed_file

    from generators.self_instruct import DEFAULT_SEED_PATH

    instructions, samples = parse_seed_file(path or DEFAULT_SEED_PATH)
    return store.ingest([*instructions, *samples]).new.get("instructions", 0)


def _instructions(store: Store, config: GenerateConfig, teacher_model: str, run_id: str) -> list[Instruction]:
    """The instructions a responses/rationales/evol run works on, in a stable order."""
    if config.instructions_file:
        items = read_instructions_file(config.instructions_file)
        store.ingest(items)
        return sorted(items, key=lambda i: i.id)
    if config.instructions_sql:
        ids = [r["id"] for r in store.query(config.instructions_sql)]
        rows = store.query(INSTRUCTIONS_BY_ID_SQL, [ids])
    elif config.method == "evol_instruct":
        rows = [r for r in store.query(SEED_INSTRUCTIONS_SQL) if r["operator"] is None]
    else:
        rows = store.query(UNANSWERED_SQL, [teacher_model, run_id])
    return [_instruction(r) for r in rows]


def _instruction(row: dict[str, Any]) -> Instruction:
    import json

    row = dict(row)
    for name in ("sampling_params", "metadata"):
        if isinstance(row.get(name), str):
            row[name] = json.loads(row[name])
    row["metadata"] = row.get("metadata") or {}
    return Instruction(**row)


def build_runner(store: Store, config: GenerateConfig, *, run_name: str, run_id: str, teacher_model: str,
                 seeds: str | None) -> Any:
    """The method adapter for ``config.method``, at its initial (replayable) state."""
    params = method_config(config.method, config.params, n=config.samples_per_instruction,
                           system_prompt=config.system_prompt)
    m = config.method
    if m in ("self_instruct", "alpaca"):
        from generators.self_instruct import DEFAULT_SEED_PATH, load_seed_tasks

        return SelfInstructRunner(load_seed_tasks(seeds or DEFAULT_SEED_PATH), params, run_name=run_name,
                                  batch_size=config.batch_size, run_id=run_id)
    if m == "evol_instruct" and not config.instructions_file and not config.instructions_sql:
        if not store.query(SEED_INSTRUCTIONS_SQL + " LIMIT 1"):
            ingest_shipped_seeds(store, seeds)
    instructions = _instructions(store, config, teacher_model, run_id)
    if m == "evol_instruct":
        return EvolRunner(instructions, params, run_name=run_name, batch_size=config.batch_size, run_id=run_id)
    if not instructions:
        raise InputError(f"nothing for method {m} to answer: every instruction already has a sample from "
                         f"{teacher_model} (give generate.instructions_file or instructions_sql)")
    if m == "responses":
        return ResponsesRunner(instructions, params, batch_size=config.batch_size, run_id=run_id)
    return RationalesRunner(instructions, params, batch_size=config.batch_size, run_id=run_id)


@flow(name="generate", flow_run_name="generate-{run_name}", log_prints=True)
async def generate_flow(
    run_name: str = "default",
    teacher: TeacherConfig = TeacherConfig(),
    generate: GenerateConfig = GenerateConfig(),
    db: str | None = None,
    seeds: str | None = None,
) -> dict[str, Any]:
    """Generate until ``generate.target`` samples are kept (or the budget is spent).

    Args:
        run_name: name of this run; re-running it resumes (nothing paid or stored twice).
        teacher: the teacher model and how to reach it.
        generate: method, target, batch size, budgets, method params, inline filters.
        db: DuckDB file (default $DISTILL_DB, else ./distillery.duckdb).
        seeds: seed tasks JSONL for Self-Instruct/Evol-Instruct (default: the shipped ones).
    """
    logger = get_run_logger()
    freeze_startup_heap()
    store = Store(db, keep_open_s=KEEP_DB_OPEN_S)
    config = {"run_name": run_name, "teacher": teacher.model_dump(mode="json"),
              "generate": generate.model_dump(mode="json"), "seeds": seeds}
    teacher_model = _teacher_name(teacher)
    inner = build_teacher(teacher)
    counting = CountingTeacher(inner)
    progress = artifacts.Progress(artifacts.artifact_key("generate", run_name, "progress"),
                                  f"Kept samples toward the target of {generate.target}", publish=False)
    ledgered: LedgeredTeacher | None = None
    run = None
    try:
        # The artifact goes out while the database is set up; the setup is one database open.
        (run, ledgered, ctx, spent), _ = await asyncio.gather(
            asyncio.to_thread(_setup, store, generate, run_name, config, counting, seeds), progress.acreate())
        summary = await _loop(ctx, generate, spent, logger, run_name, progress)
    except BaseException:
        if run is not None:
            await asyncio.to_thread(finish_run, store, run, "failed", {})
        await asyncio.gather(asyncio.to_thread(store.release), progress.aclose())
        raise
    finally:
        if ledgered is not None:
            await ledgered.aclose()
        else:
            await counting.aclose()

    summary.update(run_id=run.id, run_name=run_name, method=generate.method, teacher=teacher_model)
    # One thread records the outcome and reads the report's numbers (one commit, which also
    # merges the last ledger rows); the lengths, read first in that commit, are drawn in a
    # second thread while the commit goes on; a third draws the funnel, which needs only
    # the summary; the counts table goes out meanwhile, on the loop's API client.
    lengths_read: Future = Future()
    try:
        data, lengths, funnel, _ = await asyncio.gather(
            asyncio.to_thread(_finish, store, run, summary, lengths_read),
            asyncio.to_thread(_draw_lengths, lengths_read),
            asyncio.to_thread(artifacts.funnel_chart, _funnel_stages(summary)),
            _publish_counts(run_name, summary))
        # The database is done with: it closes (and checkpoints) while the report goes out.
        await asyncio.gather(_report(data, funnel, lengths, run.id, run_name, summary).apublish(
            artifacts.artifact_key("generate", run_name, "report")), asyncio.to_thread(store.release),
            progress.aclose())
    finally:
        await asyncio.to_thread(store.release)  # a no-op unless the finish failed
    logger.info("generate %s: %s", run_name, summary["message"])
    return summary


def _setup(store: Store, generate: GenerateConfig, run_name: str, config: dict[str, Any], counting: Teacher,
           seeds: str | None) -> tuple[Any, LedgeredTeacher, _Context, dict[str, int]]:
    """The run's row, its method at the initial state, the filters' pools, what it already
    spent and the ledger's keys for this teacher: all through one write connection."""
    error: Exception | None = None
    with store.write():
        run = start_run(store, "generate", run_name, config)
        # merge=False: each batch's commit merges the ledger's journal in the same commit,
        # instead of one extra database write per batch.
        # prefetch: the ledger's keys for this teacher are read once, not looked up per batch.
        ledgered = LedgeredTeacher(counting, store, run_id=run.id, merge=False, prefetch=True)
        try:
            runner = build_runner(store, generate, run_name=run_name, run_id=run.id,
                                  teacher_model=ledgered.model, seeds=seeds)
            filters = SampleFilters(generate.filters, run_id=run.id)
            _load_filters(filters, store, run.id)
            spent = store.query(SPENT_SQL, [run.id])[0]
            ledgered.prefetch_keys()
        except Exception as exc:  # the run is recorded failed (this commit), then the error goes on
            finish_run(store, run, "failed", {})
            error = exc
    if error is not None:
        raise error
    return run, ledgered, _Context(store, run.id, runner, ledgered, filters), spent


def _load_filters(filters: SampleFilters, store: Store, run_id: str) -> None:
    """Pools from what other runs kept (this run's own samples are replayed, not preloaded)."""
    filters.load(store, exclude_run=run_id)


async def _loop(ctx: _Context, config: GenerateConfig, spent: dict[str, int], logger, run_name: str,
                progress: artifacts.Progress) -> dict:
    target, cap = config.target, config.attempts_cap
    prior_requests, prior_tokens = int(spent["requests"]), int(spent["tokens"])
    max_inflight = config.max_concurrent_batches if ctx.runner.parallel else 1
    totals: Counter = Counter()
    kept = 0
    inflight: dict[asyncio.Task, Batch] = {}
    failed_streak = 0
    stop: str | None = None
    started = time.monotonic()

    def requests_used() -> int:
        return prior_requests + ctx.teacher.inner.sent  # type: ignore[attr-defined]

    def tokens_used() -> int:
        return prior_tokens + ctx.teacher.inner.tokens  # type: ignore[attr-defined]

    def on_wire() -> int:
        """Batches whose teacher requests are not done yet (storing ones do not count)."""
        if not ctx.runner.parallel:
            return len(inflight)  # the next batch needs this one absorbed first
        return sum(not b.requests_done for b in inflight.values())

    while True:
        while stop is None and on_wire() < max_inflight:
            reserved = sum(b.requests for b in inflight.values())
            need = target - kept - sum(b.max_samples for b in inflight.values())
            room = cap - requests_used() - reserved
            if kept >= target:
                stop = "completed"
            elif room <= 0 and not inflight:
                stop = "budget_exhausted"
            elif config.token_budget is not None and tokens_used() >= config.token_budget and not inflight:
                stop = "token_budget_exhausted"
            if stop or need <= 0 or room <= 0 or (config.token_budget is not None
                                                   and tokens_used() >= config.token_budget):
                break
            batch = ctx.runner.next_batch(min(room, need if ctx.runner.parallel else room))
            if batch is None:
                if not inflight:
                    stop = "exhausted"
                break
            # quote(): live objects, not data; Prefect must not walk or copy them.
            t = asyncio.ensure_future(generate_batch(ctx.runner.method, batch.index, quote(batch), quote(ctx)))
            inflight[t] = batch
        if not inflight:
            stop = stop or ("completed" if kept >= target else "exhausted")
            break
        ctx.wake.clear()
        waker = asyncio.ensure_future(ctx.wake.wait())
        done, _ = await asyncio.wait([*inflight, waker], return_when=asyncio.FIRST_COMPLETED)
        waker.cancel()
        for t in done:
            if t is waker:
                continue
            inflight.pop(t)
            outcome: _Outcome = t.result()  # a failing batch fails the flow (after the others finish)
            totals.update(outcome.counts)
            kept += outcome.kept
            failed_streak = failed_streak + 1 if outcome.failed_all else 0
            logger.info("batch %d: %d requests, %d samples, %d kept (%d/%d kept, %d requests sent)",
                        outcome.index, outcome.counts.get("requests", 0), outcome.counts.get("samples", 0),
                        outcome.kept, kept, target, requests_used())
        if failed_streak >= CONSECUTIVE_FAILED_BATCHES and stop is None:
            stop = "teacher_failing"
        await progress.aupdate(kept, target)  # goes out in the background
        report("generate", min(kept, target), target, kept=kept, requests=requests_used())

    await progress.aupdate(1, 1)
    elapsed = time.monotonic() - started
    counting = ctx.teacher.inner  # type: ignore[attr-defined]
    summary: dict[str, Any] = {
        "status": stop,
        "target": target,
        "kept": kept,
        "requested": int(totals.get("requests", 0)),
        "sent": counting.sent,
        "cached": max(0, int(totals.get("requests", 0)) - counting.sent),
        "failed": counting.failed,
        "samples": int(totals.get("samples", 0)),
        "duplicates_of_other_runs": int(totals.get("duplicate_of_other_runs", 0)),
        "dropped": {k.removeprefix("dropped_"): int(v) for k, v in sorted(totals.items()) if k.startswith("dropped_")},
        "requests_used": requests_used(),
        "request_budget": cap,
        "tokens_used": tokens_used(),
        "token_budget": config.token_budget,
        "elapsed_s": round(elapsed, 2),
        "method_counts": {k: int(v) for k, v in sorted(totals.items()) if not k.startswith("dropped_")},
    }
    summary["message"] = _message(summary, counting.last_error)
    return summary


def _message(s: dict[str, Any], last_error: str | None) -> str:
    kept = f"{s['kept']}/{s['target']} samples kept"
    status = s["status"]
    if status == "completed":
        return f"done: {kept} ({s['sent']} requests sent, {s['cached']} served from the ledger)"
    if status == "budget_exhausted":
        return (f"stopped: the request budget is spent ({s['requests_used']}/{s['request_budget']} requests) "
                f"with {kept}; raise generate.max_attempts and re-run the same run_name to continue")
    if status == "token_budget_exhausted":
        return (f"stopped: the token budget is spent ({s['tokens_used']}/{s['token_budget']} tokens) with {kept}; "
                "raise generate.token_budget and re-run the same run_name to continue")
    if status == "teacher_failing":
        return (f"stopped: {CONSECUTIVE_FAILED_BATCHES} batches in a row failed entirely ({kept}); "
                f"last error: {last_error}; failed requests are retried when the run is resumed")
    return f"stopped: the method has no more work ({kept}); give it more instructions or seeds"


def _finish(store: Store, run: Any, summary: dict[str, Any], lengths: Future) -> dict[str, Any]:
    """Record the run's outcome and read the report's numbers, in one commit (which also
    merges the ledger rows of the last requests). The kept samples' lengths are read
    first and handed to ``lengths`` at once, so they can be drawn while the rest runs."""
    run_id = run.id
    sql = {"kept": KEPT_SQL.format(run_id=run_id).strip(), "requests": REQUESTS_SQL.format(run_id=run_id),
           "drops": DROPS_SQL.format(run_id=run_id).strip(), "lengths": LENGTHS_SQL.format(run_id=run_id).strip()}

    def finish() -> dict[str, Any]:
        rows = store.query(sql["lengths"])
        lengths.set_result(rows)
        finish_run(store, run, summary["status"], summary)
        return {"sql": sql, "lengths": rows, **{name: store.query(sql[name]) for name in ("kept", "requests", "drops")}}

    try:
        return _in_one_commit(store, finish)
    except BaseException as exc:
        if not lengths.done():  # the drawing thread waits on it
            lengths.set_exception(exc)
        raise


def _draw_lengths(lengths: Future) -> bytes:
    rows = lengths.result()
    return artifacts.length_histogram(
        {"instruction": [x["instruction_words"] for x in rows], "response": [x["response_words"] for x in rows]},
        title="Kept samples: length in words")


async def _publish_counts(run_name: str, s: dict[str, Any]) -> None:
    counts = {"target": s["target"], "requested": s["requested"], "sent to teacher": s["sent"],
              "served from ledger": s["cached"], "failed": s["failed"], "samples": s["samples"],
              "duplicates of other runs": s["duplicates_of_other_runs"], "kept": s["kept"]}
    counts.update({f"dropped by {k}": v for k, v in s["dropped"].items()})
    await artifacts.apublish_counts(artifacts.artifact_key("generate", run_name, "counts"), counts,
                                    f"Generation counts for run {run_name}")


def _funnel_stages(s: dict[str, Any]) -> list[tuple[str, int]]:
    stages = [("samples", s["samples"]), ("new (not in other runs)", s["samples"] - s["duplicates_of_other_runs"])]
    left = stages[-1][1]
    for key, n in s["dropped"].items():
        left -= n
        stages.append((f"after {key}", left))
    return stages


def _report(data: dict[str, Any], funnel: bytes, lengths: bytes, run_id: str, run_name: str,
            s: dict[str, Any]) -> artifacts.Report:
    sql = data["sql"]
    r = artifacts.Report(f"Generation report: {run_name}")
    r.text(f"**{s['message']}**\n\nMethod `{s['method']}`, teacher `{s['teacher']}`, run id `{run_id}`.")
    r.number("kept samples (all sessions of this run)", data["kept"][0]["n"], sql["kept"])
    for row in data["requests"]:
        r.number(f"requests {row['status']}", row["n"], sql["requests"])
    r.number("tokens used", s["tokens_used"], SPENT_SQL.replace("?", f"'{run_id}'").strip())
    r.heading("Dropped, by filter and reason").table(data["drops"], sql=sql["drops"])
    r.heading("Plots").image("Filter funnel", funnel)
    r.image("Lengths of kept samples (words)", lengths)
    r.text(f"Lengths come from:\n\n```sql\n{sql['lengths']}\n```")
    return r
