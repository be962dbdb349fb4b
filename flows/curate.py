"""The curate flow: filter samples not yet judged, freeze a dataset version, export it.

    distill curate --dataset demo --config configs/demo.yaml

1. Every stored sample that a configured filter has not judged yet (and no filter has
   dropped) goes through the filters (exact, quality, MinHash against every stored
   signature, ROUGE-L novelty of its instruction), in chunks, each chunk's
   ``FilterDecision`` rows stored as it finishes.
2. The samples no filter dropped are frozen into a new immutable version of the dataset
   (``storage.datasets.create_dataset`` with the SQL that selected them, stored with it).
3. The version is exported (JSONL, Parquet, HF datasets) and, when it holds enough rows
   the previous version did not, the ``distill.dataset.ready`` event is emitted with the
   version in its payload: the retraining deployment (prefect.yaml) listens for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.utilities.annotations import quote

from flows import artifacts
from flows.config import CurateConfig
from flows.filtering import SampleFilters, SampleItem
from flows.progress import report
from flows.runs import finish_run, run_id_for, start_run
from storage.datasets import create_dataset, export_dataset
from storage.errors import InputError
from storage.store import Store

EVENT = "distill.dataset.ready"
CHUNK = 2000  # samples per filter task

# Samples with the filters that already judged them; the flow runs the missing ones.
CANDIDATES_SQL = """
SELECT s.sample_id, s.instruction_id, s.instruction, s.input, s.response, s.run_id, s.created_at,
       list(d.filter) FILTER (WHERE d.filter IS NOT NULL) AS judged,
       coalesce(bool_or(NOT d.kept), false) AS dropped,
       max(d.score) FILTER (WHERE d.filter = 'judge') AS judge_score
FROM sample_view s LEFT JOIN filter_decisions d ON d.item_id = s.sample_id
WHERE {where}
GROUP BY ALL
ORDER BY s.created_at, s.sample_id"""

# The dataset rows: samples no filter dropped. The literal SQL is stored with the version.
DATASET_SQL = """SELECT s.instruction, s.input, s.response, s.rationale, s.label, s.system_prompt, s.sample_id
FROM sample_view s
WHERE {where}
  AND NOT EXISTS (SELECT 1 FROM filter_decisions d WHERE d.item_id = s.sample_id AND NOT d.kept)
ORDER BY s.sample_id"""

NEW_ROWS_SQL = """
SELECT count(*) AS n FROM dataset_items a
WHERE a.dataset_name = ? AND a.version = ?
  AND NOT EXISTS (SELECT 1 FROM dataset_items b
                  WHERE b.dataset_name = a.dataset_name AND b.version = ? AND b.row_key = a.row_key)"""
DECISIONS_SQL = """
SELECT filter, reason, count(*) AS n FROM filter_decisions
WHERE run_id = '{run_id}' AND NOT kept GROUP BY ALL ORDER BY n DESC"""
LENGTHS_SQL = """
SELECT len(string_split(trim(instruction), ' ')) AS instruction_words,
       len(string_split(trim(response), ' ')) AS response_words
FROM dataset_items WHERE dataset_name = '{name}' AND version = {version}"""

_EXPORT_NAMES = {"parquet": "data.parquet", "jsonl-chat": "chat.jsonl", "jsonl-prompt": "prompt.jsonl", "hf": "hf"}


def selection(generate_run: str | None) -> str:
    """WHERE clause over sample_view: which samples this curation considers."""
    if generate_run:
        return f"s.run_id = '{run_id_for('generate', generate_run)}'"
    return "TRUE"


@task(name="filter-chunk", task_run_name="filter-chunk-{index}", cache_policy=NO_CACHE)
def filter_chunk(index: int, rows: list[dict[str, Any]], filters: SampleFilters, store: Store) -> dict:
    """Run the filters each sample still lacks; store every decision."""
    items = [SampleItem(r["sample_id"], r["instruction_id"], r["instruction"], r["input"], r["response"],
                        r["judge_score"]) for r in rows]
    skip = {r["sample_id"]: set(r["judged"] or ()) for r in rows}
    outcome = filters.apply(items, skip=skip)
    store.ingest(outcome.records)
    return {"judged": len(items), "kept": len(outcome.kept), "dropped": dict(outcome.dropped)}


@flow(name="curate", flow_run_name="curate-{run_name}", log_prints=True)
def curate_flow(
    run_name: str = "default",
    curate: CurateConfig = CurateConfig(),
    db: str | None = None,
    generate_run: str | None = None,
) -> dict[str, Any]:
    """Filter what is not judged yet, then freeze and export a new dataset version.

    Args:
        run_name: name of this curation run (recorded in ``runs``).
        curate: filters, dataset name, split, export formats, event settings.
        db: DuckDB file (default $DISTILL_DB, else ./distillery.duckdb).
        generate_run: only consider samples of this generate run (by run name); with
            ``curate.only_this_run`` and no generate_run, the generate run named ``run_name``.
    """
    logger = get_run_logger()
    store = Store(db)
    store.init()
    run = start_run(store, "curate", run_name, {"curate": curate.model_dump(mode="json"), "generate_run": generate_run})
    try:
        summary = _curate(store, run.id, run_name, curate, generate_run, logger)
    except BaseException:
        finish_run(store, run, "failed", {})
        raise
    finish_run(store, run, "completed", summary)
    _publish(store, run.id, run_name, summary)
    logger.info("curate %s: %s", run_name, summary["message"])
    return summary


def _curate(store: Store, run_id: str, run_name: str, config: CurateConfig, generate_run: str | None,
            logger) -> dict[str, Any]:
    where = selection(generate_run or (run_name if config.only_this_run else None))
    filters = SampleFilters(config.filters, run_id=run_id)
    names = set(filters.names)
    rows = [r for r in store.query(CANDIDATES_SQL.format(where=where))
            if not r["dropped"] and names - set(r["judged"] or ())]
    filters.load(store)
    totals: dict[str, Any] = {"candidates": len(rows), "judged": 0, "kept": 0, "dropped": {}}
    progress = artifacts.Progress(artifacts.artifact_key("curate", run_name, "progress"), "Samples judged")
    for i in range(0, len(rows), CHUNK):
        out = filter_chunk(i // CHUNK + 1, quote(rows[i: i + CHUNK]), quote(filters), quote(store))
        totals["judged"] += out["judged"]
        totals["kept"] += out["kept"]
        for k, n in out["dropped"].items():
            totals["dropped"][k] = totals["dropped"].get(k, 0) + n
        progress.update(totals["judged"], len(rows))
        report("curate", totals["judged"], len(rows))
    progress.finish()

    sql = config.sql or DATASET_SQL.format(where=where)
    count = store.query(f"SELECT count(*) AS n FROM ({sql})")[0]["n"]
    if count < config.min_rows:
        raise InputError(f"curate: only {count} kept rows match the selection, fewer than curate.min_rows="
                         f"{config.min_rows}; generate more or lower min_rows")
    info = create_dataset(store, config.dataset, sql, eval_fraction=config.eval_fraction, seed=config.split_seed,
                          run_id=run_id)
    previous = info.version - 1
    n_new = info.n_rows if previous < 1 else store.query(NEW_ROWS_SQL, [info.name, info.version, previous])[0]["n"]
    exports = {}
    for fmt in config.export_formats:
        path = Path(config.export_dir) / info.name / f"v{info.version}" / _EXPORT_NAMES[fmt]
        exports[fmt] = str(export_dataset(store, info.name, info.version, fmt, path))
    emitted = False
    if config.emit_event and n_new >= config.min_new_rows_for_event:
        emit_event(
            event=EVENT,
            resource={"prefect.resource.id": f"distill.dataset.{info.name}", "prefect.resource.name": info.name},
            payload={"name": info.name, "version": info.version, "n_rows": info.n_rows, "n_train": info.n_train,
                     "n_eval": info.n_eval, "n_new": n_new, "content_hash": info.content_hash,
                     "db": str(store.path)},
        )
        emitted = True
    totals.update(dataset=info.name, version=info.version, rows=info.n_rows, train=info.n_train, eval=info.n_eval,
                  new_rows=n_new, exports=exports, event=EVENT if emitted else None, sql=sql)
    totals["message"] = (f"froze {info.name}@{info.version}: {info.n_rows} rows ({info.n_train} train, "
                         f"{info.n_eval} eval, {n_new} new); judged {totals['judged']} samples, kept "
                         f"{totals['kept']}" + (f"; emitted {EVENT}" if emitted else ""))
    return totals


def _publish(store: Store, run_id: str, run_name: str, s: dict[str, Any]) -> None:
    counts = {"candidates": s["candidates"], "judged": s["judged"], "kept": s["kept"]}
    counts.update({f"dropped by {k}": v for k, v in s["dropped"].items()})
    counts.update({"dataset rows": s["rows"], "train": s["train"], "eval": s["eval"], "new rows": s["new_rows"]})
    artifacts.publish_counts(artifacts.artifact_key("curate", run_name, "counts"), counts,
                             f"Curation counts for run {run_name}")
    r = artifacts.Report(f"Curation report: {run_name}")
    r.text(f"**{s['message']}**")
    ref_sql = f"SELECT * FROM datasets WHERE name = '{s['dataset']}' AND version = {s['version']}"
    r.number("dataset rows", s["rows"], ref_sql).number("train", s["train"], ref_sql).number("eval", s["eval"], ref_sql)
    r.number("new rows vs previous version", s["new_rows"],
             NEW_ROWS_SQL.replace("?", f"'{s['dataset']}'", 1).replace("?", str(s["version"]), 1)
             .replace("?", str(s["version"] - 1), 1).strip())
    drops_sql = DECISIONS_SQL.format(run_id=run_id).strip()
    r.heading("Dropped in this run, by filter and reason").table(store.query(drops_sql), sql=drops_sql)
    stages = [("candidates", s["candidates"])]
    left = s["candidates"]
    for key, n in s["dropped"].items():
        left -= n
        stages.append((f"after {key}", left))
    lengths_sql = LENGTHS_SQL.format(name=s["dataset"], version=s["version"]).strip()
    rows = store.query(lengths_sql)
    r.heading("Plots").image("Filter funnel", artifacts.funnel_chart(stages))
    r.image("Dataset lengths (words)", artifacts.length_histogram(
        {"instruction": [x["instruction_words"] for x in rows], "response": [x["response_words"] for x in rows]},
        title=f"{s['dataset']}@{s['version']}: length in words"))
    r.heading("The SQL that selected this version").text(f"```sql\n{s['sql']}\n```")
    if s["exports"]:
        r.heading("Exports").text("\n".join(f"- {fmt}: `{path}`" for fmt, path in s["exports"].items()))
    r.publish(artifacts.artifact_key("curate", run_name, "report"))
