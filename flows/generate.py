"""The generate flow: a teacher and a method produce samples until enough are KEPT.

    distill generate --method responses --target 200 --config configs/demo.yaml
    python -c "import asyncio; from flows.generate import generate_flow; asyncio.run(generate_flow(run_name='x'))"

The method comes from the registry (generators/registry.py) as a runner; work goes to the
teacher in batches of tens of requests, each batch one Prefect task that runs the method,
then has the committer (flows/committer.py) run the inline filters on what came back and
store the batch's records before it ends (so a crash loses at most the batches in
flight). The target counts samples the filters kept; the run stops early, with a summary
saying why, when the request or token budget is spent or the method runs out of work.

Resume: re-run with the same ``run_name``. The runner replays from the same state and RNG;
the ledger answers every request already paid for without sending it, content keys turn
replayed records into duplicates that are not stored twice, and the work that never
finished is done now.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from core.embedded import model_folder
from core.errors import InputError, TeacherError
from flows import queries, reports
from flows.artifacts import Progress, artifact_key
from flows.committer import Committer
from flows.config import GenerateConfig
from flows.filtering import SampleFilters, SampleItem
from flows.runs import RecordedRun, flow_run_name, freeze_startup_heap, recorded_run, resolve_run_name
from generators.common import Batch, MethodResult, Runner
from generators.teachers import build_teacher
from generators.teachers.config import TeacherConfig, default_teacher
from generators.teachers.ledger import LedgeredTeacher
from generators.self_instruct import Pool
from storage.records import Instruction, Sample
from storage.seeds import DEFAULT_SEED_FILE, load_seed_tasks, parse_instructions_file, parse_seed_file
from storage.store import Store

CONSECUTIVE_FAILED_BATCHES = 3  # all-failed batches in a row before the run gives up on the teacher
# Batches commit every few hundred milliseconds: the database file stays open between
# commits (opening it costs ~25 ms of CPU each time) unless none comes for this long.
# Another process that waits for the file gets it at once (storage/locking.py, the keeper).
KEEP_DB_OPEN_S = 2.0


@dataclass
class _Context:
    """What every batch task of one flow run shares (live objects, not parameters)."""

    runner: Runner
    teacher: LedgeredTeacher
    committer: Committer
    # Set when a batch's teacher requests are done (it may still be storing): the loop
    # can send the next batch then, so storing never leaves the teacher idle.
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Outcome:
    index: int
    counts: Counter
    kept: int
    failed_all: bool


@task(name="generate-batch", task_run_name="{method}-batch-{index}", cache_policy=NO_CACHE)
async def generate_batch(method: str, index: int, batch: Batch, ctx: _Context) -> _Outcome:
    """One batch: the method's teacher calls, then the inline filters and its records stored."""
    try:
        result: MethodResult = await ctx.runner.run(ctx.teacher, batch)
    finally:
        batch.requests_done = True
        ctx.wake.set()
    counts = Counter(result.counts)
    counts["samples"] += len(result.samples)
    by_id = result.instructions_by_id()
    items = [SampleItem(s.id, s.instruction_id, by_id[s.instruction_id].text, by_id[s.instruction_id].input,
                        s.response, (s.metadata or {}).get("judge_score")) for s in result.samples]
    others, outcome = await ctx.committer.commit(items, result.records)
    counts["duplicate_of_other_runs"] += len(others)
    for key, n in outcome.dropped.items():
        counts[f"dropped_{key}"] += n
    ctx.runner.absorb(batch, result)
    requested = counts.get("requests", batch.requests)
    return _Outcome(index, counts, len(outcome.kept),
                    failed_all=requested > 0 and counts.get("failed", 0) >= requested)


def ingest_seed_file(store: Store, path: str | None = None) -> int:
    """Ingest a seed-task file (default: the shipped one); returns new instructions."""
    instructions, samples = parse_seed_file(path or DEFAULT_SEED_FILE)
    return store.ingest([*instructions, *samples]).new.get("instructions", 0)


def _instructions(store: Store, config: GenerateConfig, teacher_model: str, run_id: str) -> list[Instruction]:
    """The stored instructions a method works on, in a stable order (the same on a resume).

    Answering methods take the instructions this teacher has not answered in another run
    (of the file or the SQL when given), so a scheduled run adds new samples; Evol-Instruct
    evolves the given instructions, else what no other run evolved further yet."""
    ids = None
    if config.instructions_file:
        items = parse_instructions_file(config.instructions_file)
        store.ingest(items)
        ids = [i.id for i in items]
    elif config.instructions_sql:
        ids = [r["id"] for r in store.query(config.instructions_sql)]
    if config.spec.works_on == "evolvable":
        rows = (store.query(queries.INSTRUCTIONS_BY_ID, [ids]) if ids is not None
                else store.query(queries.EVOLVABLE, [run_id, run_id]))
    else:
        rows = store.query(queries.UNANSWERED, [teacher_model, run_id, ids, ids])
    return [_instruction(r) for r in rows]


def _pool(store: Store, config: GenerateConfig, run_id: str, seeds: str | None) -> Pool:
    """Self-Instruct's starting pool: the seed tasks, and the tasks other runs kept."""
    tasks = [_instruction(r) for r in store.query(queries.POOL_TASKS, [config.method, run_id])]
    outputs = [Sample(**_decoded(r)) for r in store.query(queries.POOL_OUTPUTS, [[t.id for t in tasks]])] if tasks else []
    return Pool(load_seed_tasks(seeds or DEFAULT_SEED_FILE), tasks, outputs)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row with its JSON columns parsed back (as the records define them)."""
    row = dict(row)
    for name in ("sampling_params", "metadata"):
        if isinstance(row.get(name), str):
            row[name] = json.loads(row[name])
    row["metadata"] = row.get("metadata") or {}
    return row


def _instruction(row: dict[str, Any]) -> Instruction:
    return Instruction(**_decoded(row))


def build_runner(store: Store, config: GenerateConfig, *, run_name: str, run_id: str, teacher_model: str,
                 seeds: str | None) -> Runner:
    """The runner of ``config.method`` (generators/registry.py), at its initial (replayable) state."""
    spec = config.spec
    common = dict(run_name=run_name, run_id=run_id, batch_size=config.batch_size)
    if spec.works_on == "seed_tasks":
        return spec.runner(_pool(store, config, run_id, seeds), config.params, **common)
    if spec.works_on == "evolvable" and not (config.instructions_file or config.instructions_sql):
        if not store.query(queries.SEED_INSTRUCTIONS + " LIMIT 1"):
            ingest_seed_file(store, seeds)
    instructions = _instructions(store, config, teacher_model, run_id)
    if not instructions and spec.works_on == "instructions":
        raise InputError(f"nothing for method {config.method} to answer: every instruction already has a sample "
                         f"from {teacher_model} (give generate.instructions_file or instructions_sql)")
    return spec.runner(instructions, config.params, **common)


@flow(name="generate", flow_run_name=flow_run_name("generate"), log_prints=True)
async def generate_flow(
    run_name: str = "default",
    teacher: TeacherConfig | None = None,
    generate: GenerateConfig = GenerateConfig(),
    db: str | None = None,
    seeds: str | None = None,
) -> dict[str, Any]:
    """Generate until ``generate.target`` samples are kept (or the budget is spent).

    Args:
        run_name: name of this run; re-running it resumes (nothing paid or stored twice).
            ``{scheduled}`` in it is replaced by the flow run's scheduled start, so each
            scheduled run of a deployment is a new run that adds new data.
        teacher: the teacher model and how to reach it (default: DISTILL_TEACHER_* if set,
            else the embedded SmolLM2).
        generate: method, target, batch size, budgets, method params, inline filters.
        db: DuckDB file (default $DISTILL_DB, else ./distillery.duckdb).
        seeds: seed tasks JSONL for Self-Instruct/Evol-Instruct (default: the shipped ones).
    """
    logger = get_run_logger()
    freeze_startup_heap()
    run_name = resolve_run_name(run_name)
    teacher = teacher or default_teacher()
    store = Store(db, keep_open_s=KEEP_DB_OPEN_S)
    # teacher_weights: the lineage a white-box training run reads to distil this teacher's
    # logits (training/train.py logit_teacher), resolved to a folder ('embedded' converted).
    config = {"run_name": run_name, "teacher": teacher.model_dump(mode="json"),
              "teacher_weights": str(model_folder(teacher.weights)) if teacher.weights else None,
              "generate": generate.model_dump(mode="json"), "seeds": seeds}
    failure: str | None = None
    progress = Progress(artifact_key("generate", run_name, "progress"),
                        f"Kept samples toward the target of {generate.target}", stage="generate", publish=False)
    try:
        with recorded_run(store, "generate", run_name, config) as run:
            ledgered = build_teacher(teacher, store, run_id=run.id, merge=False, prefetch=True)
            try:
                # The progress artifact goes out while the database is set up.
                (ctx, spent), _ = await asyncio.gather(
                    asyncio.to_thread(_setup, store, generate, run, ledgered, seeds), progress.acreate())
                summary = await _loop(ctx, generate, spent, logger, progress)
            finally:
                await ledgered.aclose()
            summary.update(run_id=run.id, run_name=run_name, method=generate.method, teacher=ledgered.model)
            failure = teacher_failure(summary, generate, teacher, ledgered)
            if failure:
                summary["message"] = failure
            run.finish("failed" if failure else summary["status"], summary)
        await asyncio.gather(reports.apublish_generate(store, run_name, summary), progress.aclose())
    finally:
        await asyncio.to_thread(store.release)
    if failure:  # the flow run ends Failed (and the CLI exits non-zero), its report published
        raise TeacherError(failure)
    logger.info("generate %s: %s", run_name, summary["message"])
    return summary


def _setup(store: Store, generate: GenerateConfig, run: RecordedRun, teacher: LedgeredTeacher,
           seeds: str | None) -> tuple[_Context, dict[str, int]]:
    """The method's runner at its initial state, the filters' pools, what the run already
    spent and the ledger's keys for this teacher, through one write connection."""
    with store.write():
        runner = build_runner(store, generate, run_name=run.record.name, run_id=run.id,
                              teacher_model=teacher.model, seeds=seeds)
        filters = SampleFilters(generate.filters, run_id=run.id)
        # Pools from what other runs kept (this run's own samples are replayed, not preloaded).
        filters.load(store, exclude_run=run.id)
        spent = store.query(queries.RUN_SPENT, [run.id])[0]
        teacher.prefetch_keys()
    return _Context(runner, teacher, Committer(store, filters, run.id)), spent


async def _loop(ctx: _Context, config: GenerateConfig, spent: dict[str, int], logger, progress: Progress) -> dict:
    """Send batches until the target is kept, the budget is spent or the method is done."""
    target, cap = config.target, config.attempts_cap
    prior_requests, prior_tokens = int(spent["requests"]), int(spent["tokens"])
    parallel = ctx.runner.parallel
    max_inflight = config.max_concurrent_batches if parallel else 1
    totals: Counter = Counter()
    kept = 0
    inflight: dict[asyncio.Task, Batch] = {}
    failed_streak = 0
    stop: str | None = None
    started = time.monotonic()

    def requests_used() -> int:
        return prior_requests + ctx.teacher.sent

    def tokens_left() -> bool:
        return config.token_budget is None or prior_tokens + ctx.teacher.tokens < config.token_budget

    def on_wire() -> int:
        """Batches whose teacher requests are not done yet (storing ones do not count)."""
        if not parallel:
            return len(inflight)  # the next batch needs this one absorbed first
        return sum(not b.requests_done for b in inflight.values())

    while True:
        while stop is None and on_wire() < max_inflight:
            need = target - kept - sum(b.max_samples for b in inflight.values())
            room = cap - requests_used() - sum(b.requests for b in inflight.values())
            if kept >= target:
                stop = "completed"
            elif not inflight and room <= 0:
                stop = "budget_exhausted"
            elif not inflight and not tokens_left():
                stop = "token_budget_exhausted"
            if stop or need <= 0 or room <= 0 or not tokens_left():
                break
            batch = ctx.runner.next_batch(min(room, need) if parallel else room)
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
        await progress.aupdate(min(kept, target), target, kept=kept, requests=requests_used())

    await progress.aupdate(1, 1, kept=kept, requests=requests_used())
    requested = int(totals.get("requests", 0))
    summary: dict[str, Any] = {
        "status": stop,
        "target": target,
        "kept": kept,
        "requested": requested,
        "sent": ctx.teacher.sent,
        "cached": max(0, requested - ctx.teacher.sent),
        "failed": sum(ctx.teacher.failures.values()),
        "samples": int(totals.get("samples", 0)),
        "duplicates_of_other_runs": int(totals.get("duplicate_of_other_runs", 0)),
        "dropped": {k.removeprefix("dropped_"): int(v) for k, v in sorted(totals.items()) if k.startswith("dropped_")},
        # Answers the run asked for and did not get, after the method's own retries, by why.
        "lost": {reason: int(totals[key]) for reason, key in (("failed", "failed"), ("empty", "empty"),
                                                              ("truncated", "dropped_truncated")) if totals[key]},
        "retried": int(totals.get("retries", 0)),
        "requests_used": requests_used(),
        "request_budget": cap,
        "tokens_used": prior_tokens + ctx.teacher.tokens,
        "token_budget": config.token_budget,
        "elapsed_s": round(time.monotonic() - started, 2),
        "method_counts": {k: int(v) for k, v in sorted(totals.items()) if not k.startswith("dropped_")},
    }
    summary["message"] = _message(summary, ctx.teacher.failures)
    return summary


def teacher_failure(s: dict[str, Any], config: GenerateConfig, teacher: TeacherConfig,
                    ledgered: LedgeredTeacher) -> str | None:
    """Why a run that made too little because its teacher failed must fail, or None.

    A run fails when it stopped short of its target and its teacher failed: every batch
    in a row (``teacher_failing``), nothing kept while requests failed, or more than
    ``max_failure_rate`` of the requests sent failed. The message names the endpoint, the
    failure reasons with counts, and what to check."""
    failed = sum(ledgered.failures.values())
    if s["status"] == "completed" or not failed:
        return None
    rate = failed / max(1, ledgered.sent)
    if not (s["status"] == "teacher_failing" or s["kept"] == 0 or rate > config.max_failure_rate):
        return None
    where = getattr(teacher, "base_url", None) or (
        "the vLLM server it starts" if teacher.backend == "vllm" else f"the in-process {teacher.backend} model")
    reasons = ", ".join(f"{reason} ({n})" for reason, n in ledgered.failures.most_common(5))
    return (f"the teacher failed: {failed} of {ledgered.sent} requests to {where} (model {ledgered.model}) failed: "
            f"{reasons}; {s['kept']}/{s['target']} samples kept. Check that the endpoint is up and answers, the "
            "model name and the API key (a timeout: raise teacher.timeout_s); re-run the same run_name to resume "
            "once the teacher is back")


def _message(s: dict[str, Any], failures: Counter) -> str:
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
        errors = ", ".join(f"{reason} ({n})" for reason, n in failures.most_common(3)) or "unknown"
        return (f"stopped: {CONSECUTIVE_FAILED_BATCHES} batches in a row failed entirely ({kept}); "
                f"the teacher's errors: {errors}; failed requests are retried when the run is resumed")
    return f"stopped: the method has no more work ({kept}); give it more instructions or seeds"
