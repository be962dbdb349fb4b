"""The pipeline flow: seeds -> generate -> curate -> train -> evaluate, from one YAML file.

    distill run --config configs/demo.yaml          # what `make demo` runs
    python -c "from flows.pipeline import pipeline_flow; from flows.config import load_config; \
               pipeline_flow(load_config('configs/demo.yaml'))"

Each step is a subflow (its own run in the Prefect UI, with its own artifacts) and can be
skipped in the config's ``skip`` section; a skipped step's output comes from the store
(curate without generate curates what is stored; train without curate trains on the
dataset's latest version). The flow's one parameter is the validated ``PipelineConfig``,
so the Prefect UI renders the whole config as a form.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.config import PipelineConfig
from flows.curate import curate_flow
from flows.generate import generate_flow, ingest_seed_file
from flows.runs import flow_run_name, recorded_run, resolve_run_name, run_sync
from flows.train import train_flow
from storage.store import Store


@flow(name="pipeline", flow_run_name=flow_run_name("pipeline"), log_prints=True)
def pipeline_flow(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:
    """Run every step the config does not skip; returns each step's summary."""
    logger = get_run_logger()
    config = config.model_copy(update={"run_name": resolve_run_name(config.run_name)})
    store = Store(config.db)
    store.init()
    out: dict[str, Any] = {"run_name": config.run_name, "db": str(store.path)}
    with recorded_run(store, "pipeline", config.run_name, config.safe_dump()) as run:
        try:
            if not config.skip.seeds:
                out["seeds"] = {"new_instructions": ingest_seed_file(store, config.seeds)}
                logger.info("seeds: %d new instructions", out["seeds"]["new_instructions"])
            if not config.skip.generate:
                out["generate"] = run_sync(generate_flow(run_name=config.run_name, teacher=config.teacher,
                                                         generate=config.generate, db=config.db, seeds=config.seeds))
            if not config.skip.curate:
                out["curate"] = curate_flow(run_name=config.run_name, curate=config.curate, db=config.db,
                                            generate_run=config.run_name if config.curate.only_this_run else None,
                                            teacher=config.teacher)
            if not config.skip.train or not config.skip.evaluate:
                version = out.get("curate", {}).get("version")
                out["train"] = train_flow(dataset=config.curate.dataset, dataset_version=version,
                                          train=config.train, evaluate=config.evaluate,
                                          skip_evaluate=config.skip.evaluate, run_name=config.run_name, db=config.db)
        finally:  # what the steps that ran produced, also when a later one failed
            run.finish("completed", _brief(out))
    return out


def _brief(out: dict[str, Any]) -> dict[str, Any]:
    """Step summaries without the bulky parts, for runs.counts."""
    brief: dict[str, Any] = {}
    for step, s in out.items():
        if isinstance(s, dict):
            brief[step] = {k: v for k, v in s.items() if k not in ("evaluations", "method_counts", "sql")}
    return brief
