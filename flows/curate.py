"""The curate flow: filter samples not yet judged, freeze a dataset version, export it.

    distill curate --dataset demo --config configs/demo.yaml
    distill curate --config configs/curate-and-train.yaml --judge-threshold 8

1. Every stored sample that a configured filter has not judged yet (and no filter has
   dropped) goes through the filters (exact, quality, MinHash against every stored
   signature, ROUGE-L novelty of its instruction), in chunks, each chunk's
   ``FilterDecision`` rows stored as it finishes.
2. With ``curate.judge`` set, the LLM judge (``generators.judge.judge_single``) scores
   every selected sample that the filters kept and that has no 'judge' decision yet, in
   batches of ``judge.batch_size`` (a Prefect task each, decisions stored as each batch
   finishes). It asks ``judge.teacher`` or else the pipeline's teacher, through the request
   ledger (a re-run pays for no verdict twice; a judged sample is never judged again).
   Each verdict becomes ``FilterDecision(filter='judge', score=..., kept=score >= judge.min_score)``
   with reason 'low_score' when dropped. A verdict that still does not parse (or whose
   requests failed) after the judge's ``max_retries`` is recorded kept=false, score NULL,
   reason 'judge_failed': the sample is left out of the dataset, counted as
   ``judge.judge_failed`` in the summary, and not judged again by later runs (the ledger
   would replay the same answers). To retry those, delete their rows
   (``DELETE FROM filter_decisions WHERE filter = 'judge' AND reason = 'judge_failed'``)
   and raise ``judge.params.max_retries`` (new retries are new requests). The judge runs
   after the filters, so a quality filter's ``min_judge_score`` only sees scores stored by
   earlier runs; ``judge.min_score`` is the threshold of this step.
3. With ``curate.compare`` set, the pairwise judge (``generators.judge.ajudge_pairwise``)
   compares two sources' answers to the same instructions: ``compare.a`` and ``compare.b``
   name ``samples.teacher_model`` values (two teachers, or a teacher and a student
   checkpoint whose answers a generate run stored with ``teacher: {backend: transformers,
   model_path: <checkpoint>, model: <name>}``). Every instruction both answered is one pair
   (the earliest stored answer of each, whichever generate run stored it; ``generate_run``
   does not restrict it). Each pair this judge model has not judged yet is judged in both
   orders, in batches of ``compare.batch_size`` through the request ledger, and stored as a
   ``pairwise_judgments`` row: both raw verdicts, each order's scores, the averages and the
   winner; a verdict that never parsed is stored with ok=false and its error, and not judged
   again (delete the row, and raise ``compare.params.max_retries``, to retry it). The
   ``pairwise_standings`` view sums them up per (a, b, judge). The dataset is not affected;
   mind that the default dataset selection takes every kept sample, a student's answers
   stored in the same database included: restrict it with ``curate.sql`` or ``generate_run``.
4. The samples no filter dropped are frozen into a new immutable version of the dataset
   (``storage.datasets.create_dataset`` with the SQL that selected them, stored with it).
5. The version is exported (JSONL, Parquet, HF datasets) and, when it holds enough rows
   the previous version did not, the ``distill.dataset.ready`` event is emitted with the
   version in its payload: the retraining deployment (prefect.yaml) listens for it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.utilities.annotations import quote

from core.errors import InputError
from core.text import format_prompt
from flows import queries, reports
from flows.artifacts import Progress, artifact_key
from flows.config import CurateCompareConfig, CurateConfig, CurateJudgeConfig, _without_secrets
from flows.filtering import SampleFilters, SampleItem
from flows.runs import flow_run_name, recorded_run, resolve_run_name, run_id_for, run_sync
from generators.judge import PairwiseItem, SingleItem, ajudge_pairwise, ajudge_single
from generators.teachers.config import TeacherConfig, default_teacher
from storage.datasets import create_dataset, export_dataset
from storage.store import Store

T = TypeVar("T")
EVENT = "distill.dataset.ready"
CHUNK = 2000  # samples per filter task
JUDGE = "judge"  # filter_decisions.filter of the LLM judge's verdicts

# The dataset rows: kept samples (of one generate run, or all). This text is stored with
# the version (the SQL that selected it) and re-runs as is, so the run id is a literal.
DATASET_SQL = """SELECT s.instruction, s.input, s.response, s.rationale, s.label, s.system_prompt, s.sample_id
FROM kept_samples s
WHERE {where}{judged}
ORDER BY s.sample_id"""
# With the judge on (and judge.require_verdict): only samples it kept.
JUDGED_SQL = """
  AND EXISTS (SELECT 1 FROM filter_decisions j WHERE j.item_id = s.sample_id AND j.filter = 'judge' AND j.kept)"""

_EXPORT_NAMES = {"parquet": "data.parquet", "jsonl-chat": "chat.jsonl", "jsonl-prompt": "prompt.jsonl",
                 "jsonl-step-by-step": "step-by-step.jsonl", "hf": "hf"}


def selected_run(generate_run: str | None) -> str | None:
    """The runs.id of the generate run a curation is restricted to (None: all samples)."""
    return run_id_for("generate", generate_run) if generate_run else None


@task(name="filter-chunk", task_run_name="filter-chunk-{index}", cache_policy=NO_CACHE)
def filter_chunk(index: int, rows: list[dict[str, Any]], filters: SampleFilters, store: Store) -> dict:
    """Run the filters each sample still lacks; store every decision."""
    items = [SampleItem(r["sample_id"], r["instruction_id"], r["instruction"], r["input"], r["response"],
                        r["judge_score"]) for r in rows]
    skip = {r["sample_id"]: set(r["judged"] or ()) for r in rows}
    outcome = filters.apply(items, skip=skip)
    store.ingest(outcome.records)
    return {"judged": len(items), "kept": len(outcome.kept), "dropped": dict(outcome.dropped)}


@task(name="judge-batch", task_run_name="judge-batch-{index}", cache_policy=NO_CACHE)
def judge_batch(index: int, rows: list[dict[str, Any]], teacher: Any, config: CurateJudgeConfig, store: Store,
                run_id: str) -> dict[str, Any]:
    """Score one batch with the judge; store one 'judge' decision per sample.

    A failed verdict (unparseable or failed requests after the judge's retries) is stored
    as kept=false, reason 'judge_failed' (``SingleVerdict.to_decision``), never as a score."""
    items = [SingleItem(id=r["sample_id"], question=format_prompt(r["instruction"], r["input"]),
                        answer=r["response"]) for r in rows]

    verdicts = _run_judge(teacher, ajudge_single(teacher, items, config.params))
    decisions = [v.to_decision(v.id, config.min_score, filter=JUDGE, run_id=run_id) for v in verdicts]
    store.ingest(decisions)
    return {"judged": len(decisions), "kept": sum(d.kept for d in decisions),
           "low_score": sum(d.reason == "low_score" for d in decisions),
           "judge_failed": sum(d.reason == "judge_failed" for d in decisions),
           "requests": sum(v.call.attempts for v in verdicts)}


def _run_judge(teacher: Any, verdicts: Coroutine[Any, Any, T]) -> T:
    """Await a judge call from a sync task (in an event loop of its own), then release the
    teacher's loop-bound HTTP clients: the next batch runs in a new loop."""
    async def run() -> T:
        try:
            return await verdicts
        finally:
            await teacher.adetach()

    return run_sync(run())


def judge_teacher_config(config: CurateJudgeConfig | CurateCompareConfig,
                         teacher: TeacherConfig | None) -> TeacherConfig:
    """The judge's teacher: the section's ``teacher``, else the pipeline's, else the default teacher."""
    return config.teacher or teacher or default_teacher()


def _judge(store: Store, run_id: str, run_name: str, only_run: str | None, config: CurateJudgeConfig,
           teacher: TeacherConfig | None, logger) -> dict[str, Any]:
    rows = store.query(queries.JUDGE_CANDIDATES, [only_run, only_run])
    waiting = len(rows)
    if config.max_samples is not None:
        rows = rows[: config.max_samples]
    totals: dict[str, Any] = {"candidates": waiting, "judged": 0, "kept": 0, "low_score": 0, "judge_failed": 0,
                              "requests": 0, "sent": 0, "not_judged": waiting, "min_score": config.min_score}
    if not rows:
        return totals
    from generators.teachers import build_teacher

    tcfg = judge_teacher_config(config, teacher)
    judge = build_teacher(tcfg, store=store, run_id=run_id)
    logger.info("judge: %d samples (of %d not judged yet) with %s/%s, keep score >= %s", len(rows), waiting,
                tcfg.backend, judge.model, config.min_score)
    progress = Progress(artifact_key("curate", run_name, "judge-progress"), "Samples judged", stage="judge")
    try:
        for i in range(0, len(rows), config.batch_size):
            out = judge_batch(i // config.batch_size + 1, quote(rows[i: i + config.batch_size]), quote(judge),
                              config, quote(store), run_id)
            for k in ("judged", "kept", "low_score", "judge_failed", "requests"):
                totals[k] += out[k]
            progress.update(totals["judged"], len(rows))
    finally:
        judge.close()
        progress.finish()
    totals["not_judged"] = waiting - totals["judged"]
    # Requests this run paid for (the rest of totals["requests"] were answered by the ledger).
    totals["sent"] = store.query(queries.RUN_REQUESTS_SENT, [run_id])[0]["n"]
    return totals


@task(name="compare-batch", task_run_name="compare-batch-{index}", cache_policy=NO_CACHE)
def compare_batch(index: int, rows: list[dict[str, Any]], teacher: Any, config: CurateCompareConfig, store: Store,
                  run_id: str) -> dict[str, Any]:
    """Judge one batch of pairs in both orders; store one ``pairwise_judgments`` row per pair
    (a failed verdict too: ok false, with its error, never a made-up score)."""
    items = [PairwiseItem(id=str(k), question=format_prompt(r["instruction"], r["input"]), answer_a=r["response_a"],
                          answer_b=r["response_b"]) for k, r in enumerate(rows)]

    verdicts = _run_judge(teacher, ajudge_pairwise(teacher, items, config.params))
    records = [v.to_judgment(instruction_id=r["instruction_id"], sample_a=r["sample_a"], sample_b=r["sample_b"],
                             model_a=config.a, model_b=config.b, judge_model=teacher.model, run_id=run_id)
               for r, v in zip(rows, verdicts)]
    store.ingest(records)
    return {"judged": len(records), "a_wins": sum(v.winner == "a" for v in verdicts),
            "b_wins": sum(v.winner == "b" for v in verdicts), "ties": sum(v.winner == "tie" for v in verdicts),
            "failed": sum(not v.ok for v in verdicts), "requests": sum(c.attempts for v in verdicts for c in v.calls)}


def _compare(store: Store, run_id: str, run_name: str, config: CurateCompareConfig, teacher: TeacherConfig | None,
             logger) -> dict[str, Any]:
    sources = [config.a, config.b, config.a, config.b]
    pairs = store.query(queries.COMPARE_PAIR_COUNT, sources)[0]["n"]
    totals: dict[str, Any] = {"a": config.a, "b": config.b, "judge": None, "pairs": pairs, "candidates": 0,
                              "judged": 0, "a_wins": 0, "b_wins": 0, "ties": 0, "failed": 0, "requests": 0,
                              "sent": 0, "not_judged": 0, "standings": None}
    if not pairs:
        logger.warning("compare: no instruction has answers from both %r and %r (samples.teacher_model)",
                       config.a, config.b)
        return totals
    from generators.teachers import build_teacher

    tcfg = judge_teacher_config(config, teacher)
    judge = build_teacher(tcfg, store=store, run_id=run_id)
    try:
        totals["judge"] = judge.model
        rows = store.query(queries.COMPARE_CANDIDATES, [*sources, judge.model])
        totals["candidates"] = waiting = len(rows)
        sent_before = store.query(queries.RUN_REQUESTS_SENT, [run_id])[0]["n"]
        if config.max_pairs is not None:
            rows = rows[: config.max_pairs]
        if rows:
            logger.info("compare: %d pairs %s vs %s (of %d not judged yet) with %s/%s", len(rows), config.a,
                        config.b, waiting, tcfg.backend, judge.model)
            progress = Progress(artifact_key("curate", run_name, "compare-progress"), "Pairs judged",
                                stage="compare")
            try:
                for i in range(0, len(rows), config.batch_size):
                    out = compare_batch(i // config.batch_size + 1, quote(rows[i: i + config.batch_size]),
                                        quote(judge), config, quote(store), run_id)
                    for k in ("judged", "a_wins", "b_wins", "ties", "failed", "requests"):
                        totals[k] += out[k]
                    progress.update(totals["judged"], len(rows))
            finally:
                progress.finish()
    finally:
        judge.close()
    # Requests this step paid for (the rest of totals["requests"] were answered by the ledger).
    totals["sent"] = store.query(queries.RUN_REQUESTS_SENT, [run_id])[0]["n"] - sent_before
    totals["not_judged"] = totals["candidates"] - totals["judged"]
    # Standings over every verdict this judge stored for a vs b (this run's and earlier ones).
    standings = store.query(queries.PAIRWISE_STANDINGS, [config.a, config.b, judge.model])
    totals["standings"] = standings[0] if standings else None
    return totals


@flow(name="curate", flow_run_name=flow_run_name("curate"), log_prints=True)
def curate_flow(
    run_name: str = "default",
    curate: CurateConfig = CurateConfig(),
    db: str | None = None,
    generate_run: str | None = None,
    teacher: TeacherConfig | None = None,
) -> dict[str, Any]:
    """Filter what is not judged yet, then freeze and export a new dataset version.

    Args:
        run_name: name of this curation run (recorded in ``runs``); ``{scheduled}`` in it is
            replaced by the flow run's scheduled start (see flows/runs.py).
        curate: filters, dataset name, split, export formats, event settings.
        db: DuckDB file (default $DISTILL_DB, else ./distillery.duckdb).
        generate_run: only consider samples of this generate run (by run name); with
            ``curate.only_this_run`` and no generate_run, the generate run named ``run_name``.
        teacher: the pipeline's teacher, which judges when ``curate.judge`` is on and names
            no teacher of its own (default: the embedded default teacher).
    """
    logger = get_run_logger()
    run_name = resolve_run_name(run_name)
    store = Store(db)
    store.init()
    params = {"curate": curate.model_dump(mode="json"), "generate_run": generate_run}
    if curate.judge is not None and curate.judge.enabled:
        params["judge_teacher"] = _without_secrets(judge_teacher_config(curate.judge, teacher).model_dump(mode="json"))
    if curate.compare is not None and curate.compare.enabled:
        params["compare_teacher"] = _without_secrets(
            judge_teacher_config(curate.compare, teacher).model_dump(mode="json"))
    with recorded_run(store, "curate", run_name, params) as run:
        summary = _curate(store, run.id, run_name, curate, generate_run, logger, teacher)
        run.finish("completed", summary)
    reports.publish_curate(store, run.id, run_name, summary)
    logger.info("curate %s: %s", run_name, summary["message"])
    return summary


def _curate(store: Store, run_id: str, run_name: str, config: CurateConfig, generate_run: str | None,
            logger, teacher: TeacherConfig | None = None) -> dict[str, Any]:
    only_run = selected_run(generate_run or (run_name if config.only_this_run else None))
    filters = SampleFilters(config.filters, run_id=run_id)
    names = set(filters.names)
    rows = [r for r in store.query(queries.CURATE_CANDIDATES, [only_run, only_run])
            if not r["dropped"] and names - set(r["judged"] or ())]
    filters.load(store)
    totals: dict[str, Any] = {"candidates": len(rows), "judged": 0, "kept": 0, "dropped": {}}
    progress = Progress(artifact_key("curate", run_name, "progress"), "Samples judged", stage="curate")
    for i in range(0, len(rows), CHUNK):
        out = filter_chunk(i // CHUNK + 1, quote(rows[i: i + CHUNK]), quote(filters), quote(store))
        totals["judged"] += out["judged"]
        totals["kept"] += out["kept"]
        for k, n in out["dropped"].items():
            totals["dropped"][k] = totals["dropped"].get(k, 0) + n
        progress.update(totals["judged"], len(rows))
    progress.finish()

    judge_on = config.judge is not None and config.judge.enabled
    if judge_on:
        totals["judge"] = _judge(store, run_id, run_name, only_run, config.judge, teacher, logger)
    compare_on = config.compare is not None and config.compare.enabled
    if compare_on:
        totals["compare"] = _compare(store, run_id, run_name, config.compare, teacher, logger)
    judged_sql = JUDGED_SQL if judge_on and config.judge.require_verdict else ""
    where = "TRUE" if only_run is None else f"s.run_id = {queries.sql_literal(only_run)}"
    sql = config.sql or DATASET_SQL.format(where=where, judged=judged_sql)
    count = store.query(queries.COUNT_ROWS.format(sql=sql))[0]["n"]
    if count < config.min_rows:
        raise InputError(f"curate: only {count} kept rows match the selection, fewer than curate.min_rows="
                         f"{config.min_rows}; generate more or lower min_rows")
    latest = store.query(queries.LATEST_VERSION, [config.dataset])[0]["version"]
    # The same rows as the latest version: no new version (nor exports, nor event).
    info = create_dataset(store, config.dataset, sql, eval_fraction=config.eval_fraction, seed=config.split_seed,
                          run_id=run_id, reuse_unchanged=True)
    frozen = latest is None or info.version > latest
    previous = info.version - 1
    n_new = 0 if not frozen else (info.n_rows if previous < 1 else
                                  store.query(queries.NEW_DATASET_ROWS, [info.name, info.version, previous])[0]["n"])
    exports = {}
    for fmt in config.export_formats if frozen else ():
        path = Path(config.export_dir) / info.name / f"v{info.version}" / _EXPORT_NAMES[fmt]
        exports[fmt] = str(export_dataset(store, info.name, info.version, fmt, path))
    emitted = False
    if frozen and config.emit_event and n_new >= config.min_new_rows_for_event:
        emit_event(
            event=EVENT,
            resource={"prefect.resource.id": f"distill.dataset.{info.name}", "prefect.resource.name": info.name},
            payload={"name": info.name, "version": info.version, "n_rows": info.n_rows, "n_train": info.n_train,
                     "n_eval": info.n_eval, "n_new": n_new, "content_hash": info.content_hash,
                     "db": str(store.path)},
        )
        emitted = True
    totals.update(dataset=info.name, version=info.version, new_version=frozen, rows=info.n_rows, train=info.n_train,
                  eval=info.n_eval, new_rows=n_new, exports=exports, event=EVENT if emitted else None, sql=sql)
    what = "froze" if frozen else "no change since"
    totals["message"] = (f"{what} {info.name}@{info.version}: {info.n_rows} rows ({info.n_train} train, "
                         f"{info.n_eval} eval, {n_new} new); judged {totals['judged']} samples, kept "
                         f"{totals['kept']}" + (_judge_message(totals["judge"]) if judge_on else "")
                         + (_compare_message(totals["compare"]) if compare_on else "")
                         + (f"; emitted {EVENT}" if emitted else ""))
    return totals


def _judge_message(j: dict[str, Any]) -> str:
    return (f"; the judge scored {j['judged']}: kept {j['kept']}, {j['low_score']} below {j['min_score']:g}, "
            f"{j['judge_failed']} failed")


def _compare_message(c: dict[str, Any]) -> str:
    text = (f"; compared {c['a']} (a) with {c['b']} (b) on {c['judged']} new pairs: a won {c['a_wins']}, "
            f"b won {c['b_wins']}, {c['ties']} ties, {c['failed']} failed")
    st = c.get("standings")
    if st and st["pairs"]:
        text += f" (all {st['pairs']} judged pairs: mean a {st['mean_a']:g}, b {st['mean_b']:g})"
    return text
