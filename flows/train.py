"""The train flow: a student learns from a dataset version, then is evaluated before/after.

    distill train --dataset demo --config configs/demo.yaml
    prefect deployment run 'train/retrain-on-new-data' -p dataset=demo -p dataset_version=3

Training itself is ``training.train.train`` (TRL underneath); this flow picks the dataset
version (the latest unless given), shows progress as a Prefect progress artifact, then
evaluates the untrained and the trained student (and optionally the teacher) on the
version's held-out split, records every number in ``evaluations``, and publishes a
report with the loss curve. The retraining deployment runs this flow when the curate
flow emits ``distill.dataset.ready`` (the version comes from the event's payload).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import reports
from flows.artifacts import Progress, artifact_key
from flows.config import EvaluateConfig
from flows.runs import prefect_flow_run_id, recorded_run
from storage.datasets import STEP_BY_STEP_PREFIXES, get_dataset
from storage.store import Store
from training.config import TrainConfig


@task(name="train-student", cache_policy=NO_CACHE)
def train_student(config: TrainConfig, store: Store, dataset: str, version: int, run_name: str) -> dict:
    """training.train.train with a Prefect progress artifact (and the terminal's bar)."""
    from training.train import train

    progress = Progress(artifact_key("train", run_name, "progress"), "Training steps", stage="train",
                        min_interval_s=2.0)

    def on_progress(info: dict[str, Any]) -> None:
        total = info.get("total") or 0
        progress.update(info.get("step", 0), total or 1,
                        description=f"step {info.get('step')}/{total}, loss {info.get('loss')}", loss=info.get("loss"))

    result = train(config, store=store, dataset=dataset, version=version, on_progress=on_progress,
                   show_progress=False, flow_run_id=prefect_flow_run_id())
    progress.finish()
    return result.model_dump()


@task(name="evaluate-students", cache_policy=NO_CACHE)
def evaluate_students(models: dict[str, str], store: Store, dataset: str, version: int, config: TrainConfig,
                      teacher_path: str | None, run_id: str, run_ids: dict[str, str]) -> list[dict]:
    """Every model answers the version's held-out prompts; numbers land in ``evaluations``."""
    from training.evaluate import evaluate_dataset

    results = evaluate_dataset(store, dataset, version, models, teacher=teacher_path, config=config.eval,
                               run_ids=run_ids, run_id=run_id,
                               prefixes=_prefixes(models, config))
    return [r.model_dump(exclude={"predictions"}) for r in results]


def _prefixes(models: dict[str, str], config: TrainConfig) -> dict[str, str] | None:
    """Step-by-step students are asked with the 'predict: ' task prefix they trained on."""
    if config.method != "distill":
        return None
    return {label: STEP_BY_STEP_PREFIXES["predict"] for label in models if label != "teacher"}


@flow(name="train", flow_run_name="train-{dataset}", log_prints=True)
def train_flow(
    dataset: str = "distilled",
    dataset_version: int | None = None,
    train: TrainConfig = TrainConfig(),
    evaluate: EvaluateConfig = EvaluateConfig(),
    skip_evaluate: bool = False,
    run_name: str | None = None,
    db: str | None = None,
) -> dict[str, Any]:
    """Train a student on a dataset version, then evaluate it against its untrained self.

    Args:
        dataset: dataset name.
        dataset_version: version to train on (default: the latest).
        train: method, student, optimizer settings, evaluation settings (train.eval).
        evaluate: which models the evaluation compares (before, teacher).
        skip_evaluate: train only.
        run_name: name recorded in ``runs`` (default: <dataset>-v<version>-<method>).
        db: DuckDB file (default $DISTILL_DB, else ./distillery.duckdb).
    """
    logger = get_run_logger()
    store = Store(db)
    store.init()
    info = get_dataset(store, dataset, dataset_version)
    name = run_name or f"{info.name}-v{info.version}-{train.method}"
    config = {"dataset": info.name, "dataset_version": info.version, "train": train.model_dump(mode="json"),
              "evaluate": evaluate.model_dump(mode="json")}
    logger.info("training %s on %s (%d train rows)", train.method, info.ref, info.n_train)
    with recorded_run(store, "train", name, config) as run:
        result = train_student(train, store, info.name, info.version, name)
        summary: dict[str, Any] = {
            "dataset": info.name, "version": info.version, "method": train.method,
            "training_run_id": result["run_id"], "checkpoint": result["checkpoint"],
            "final_loss": result["final_loss"], "metrics": result["metrics"], "evaluations": [],
            "student_init": result["student_init"],
        }
        if not skip_evaluate:
            summary["evaluations"] = _evaluate(store, info.name, info.version, train, evaluate, result, run.id)
        summary["message"] = (f"trained {train.method} on {info.ref}: final loss {result['final_loss']:.4f}, "
                              f"checkpoint {result['checkpoint']}")
        run.finish("completed", {k: v for k, v in summary.items() if k != "evaluations"})
    reports.publish_train(run.id, name, summary, result["loss_history"])
    logger.info(summary["message"])
    return summary


def _evaluate(store, dataset: str, version: int, train: TrainConfig, evaluate: EvaluateConfig,
              result: dict[str, Any], run_id: str) -> list[dict]:
    from training.train import resolve_teacher

    teacher = resolve_teacher(result["teacher"])  # the one the run used (train.teacher, else the data's)
    models: dict[str, str] = {}
    if evaluate.teacher and teacher is not None:
        models["teacher"] = str(teacher)
    if evaluate.before:
        models["student (before)"] = result["student_init"]
    after = f"{train.method} (after)"
    models[after] = evaluate.model_path or result["checkpoint"]
    return evaluate_students(models, store, dataset, version, train, str(teacher) if teacher else None, run_id,
                             {after: result["run_id"]})
