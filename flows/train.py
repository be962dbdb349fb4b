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

from flows import artifacts
from flows.config import EvaluateConfig
from flows.progress import report
from flows.runs import finish_run, start_run
from storage.datasets import get_dataset
from storage.store import Store
from training.config import TrainConfig

EVALUATIONS_SQL = """
SELECT model_label, metric, round(value, 4) AS value, n FROM evaluations
WHERE run_id = '{run_id}' ORDER BY id"""
TRAINING_RUN_SQL = "SELECT id, method, final_loss, checkpoint_path, status FROM training_runs WHERE id = '{id}'"


@task(name="train-student", cache_policy=NO_CACHE)
def train_student(config: TrainConfig, store: Store, dataset: str, version: int, run_name: str) -> dict:
    """training.train.train with a Prefect progress artifact (and the terminal's bar)."""
    from training.train import train

    progress = artifacts.Progress(artifacts.artifact_key("train", run_name, "progress"), "Training steps",
                                  min_interval_s=2.0)

    def on_progress(info: dict[str, Any]) -> None:
        total = info.get("total") or 0
        progress.update(info.get("step", 0), total or 1,
                        description=f"step {info.get('step')}/{total}, loss {info.get('loss')}")
        report("train", info.get("step", 0), total, loss=info.get("loss"))

    result = train(config, store=store, dataset=dataset, version=version, on_progress=on_progress,
                   show_progress=False, flow_run_id=_flow_run_id())
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
    return {label: "predict: " for label in models if label != "teacher"}


def _flow_run_id() -> str | None:
    from flows.runs import _prefect_flow_run_id

    return _prefect_flow_run_id()


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
    run = start_run(store, "train", name, {"dataset": info.name, "dataset_version": info.version,
                                           "train": train.model_dump(mode="json"),
                                           "evaluate": evaluate.model_dump(mode="json")})
    logger.info("training %s on %s (%d train rows)", train.method, info.ref, info.n_train)
    try:
        result = train_student(train, store, info.name, info.version, name)
        summary: dict[str, Any] = {
            "dataset": info.name, "version": info.version, "method": train.method,
            "training_run_id": result["run_id"], "checkpoint": result["checkpoint"],
            "final_loss": result["final_loss"], "metrics": result["metrics"], "evaluations": [],
            "student_init": result["student_init"],
        }
        if not skip_evaluate:
            summary["evaluations"] = _evaluate(store, info.name, info.version, train, evaluate, result, run.id)
    except BaseException:
        finish_run(store, run, "failed", {})
        raise
    summary["message"] = (f"trained {train.method} on {info.ref}: final loss {result['final_loss']:.4f}, "
                          f"checkpoint {result['checkpoint']}")
    finish_run(store, run, "completed", {k: v for k, v in summary.items() if k != "evaluations"})
    _publish(store, run.id, name, summary, result["loss_history"])
    logger.info(summary["message"])
    return summary


def _evaluate(store, dataset: str, version: int, train: TrainConfig, evaluate: EvaluateConfig,
              result: dict[str, Any], run_id: str) -> list[dict]:
    from training.train import resolve_teacher

    teacher = resolve_teacher(train.teacher)
    models: dict[str, str] = {}
    if evaluate.teacher and teacher is not None:
        models["teacher"] = str(teacher)
    if evaluate.before:
        models["student (before)"] = result["student_init"]
    after = f"{train.method} (after)"
    models[after] = evaluate.model_path or result["checkpoint"]
    return evaluate_students(models, store, dataset, version, train, str(teacher) if teacher else None, run_id,
                             {after: result["run_id"]})


def evaluation_rows(evaluations: list[dict]) -> list[dict[str, Any]]:
    """One row per model with its metrics, for tables (CLI, report)."""
    from training.evaluate import METRIC_TITLES

    rows = []
    for e in evaluations:
        row: dict[str, Any] = {"model": e["label"]}
        for metric, title in METRIC_TITLES.items():
            if metric in e["metrics"]:
                row[title] = round(e["metrics"][metric], 4 if metric == "kl_teacher_student" else 2)
        row["n"] = max(e["counts"].values(), default=0)
        rows.append(row)
    return rows


def _publish(store, run_id: str, name: str, s: dict[str, Any], loss_history: list[dict]) -> None:
    m = s["metrics"]
    counts = {"dataset": f"{s['dataset']}@{s['version']}", "method": s["method"], "steps": m.get("steps"),
              "train rows": m.get("train_rows"), "final loss": s["final_loss"],
              "tokens/s": round(m["tokens_per_s"], 1) if m.get("tokens_per_s") else None}
    artifacts.publish_counts(artifacts.artifact_key("train", name, "counts"), counts, f"Training run {name}")
    r = artifacts.Report(f"Training report: {name}")
    r.text(f"**{s['message']}**")
    tr_sql = TRAINING_RUN_SQL.format(id=s["training_run_id"])
    r.number("final loss", s["final_loss"], tr_sql).number("steps", m.get("steps"), tr_sql)
    if loss_history:
        r.heading("Loss").image("Training loss", artifacts.loss_curve(
            [p["step"] for p in loss_history], [p["loss"] for p in loss_history], title=f"{s['method']} loss"))
        r.text(f"Per-step losses: `SELECT loss_history FROM training_runs WHERE id = '{s['training_run_id']}'`")
    if s["evaluations"]:
        ev_sql = EVALUATIONS_SQL.format(run_id=run_id).strip()
        r.heading("Evaluation on the held-out split").table(evaluation_rows(s["evaluations"]), sql=ev_sql)
        artifacts.publish_table(artifacts.artifact_key("train", name, "evaluation"), evaluation_rows(s["evaluations"]),
                                f"Before/after evaluation, {s['dataset']}@{s['version']}")
    r.publish(artifacts.artifact_key("train", name, "report"))
