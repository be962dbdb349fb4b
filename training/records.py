"""Training runs and evaluations in the store: the SQL this package writes, in one place.

A run row is inserted as 'running' before training starts (so a crash leaves a trace) and
completed or failed at the end. Evaluation numbers are appended, one row per metric.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

INSERT_RUN = """
INSERT INTO training_runs (id, name, dataset_name, dataset_version, method, params, student, teacher,
                           code_version, config, status, started_at, run_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)
"""

FINISH_RUN = """
UPDATE training_runs
SET status = ?, ended_at = ?, final_loss = ?, loss_history = ?, metrics = ?, checkpoint_path = ?
WHERE id = ?
"""

# Who generated a dataset version's samples, with the local weights each generate run
# recorded in its config (teacher_weights); human seed samples are not a teacher's.
DATASET_TEACHERS = """
SELECT s.teacher_model, any_value(json_extract_string(r.config, '$.teacher_weights')) AS weights
FROM dataset_items d
JOIN samples s ON s.id = d.sample_id
LEFT JOIN runs r ON r.id = s.run_id
WHERE d.dataset_name = ? AND d.version = ? AND coalesce(s.teacher_model, 'human') <> 'human'
GROUP BY s.teacher_model
ORDER BY s.teacher_model"""

INSERT_EVALUATION = """
INSERT INTO evaluations (training_run_id, model_label, model_path, dataset_name, dataset_version, split,
                         metric, value, n, generation, created_at, run_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def code_version() -> str | None:
    from storage.store import code_version as _code_version

    return _code_version()


def start_run(store, *, run_id: str, name: str, dataset_name: str | None, dataset_version: int | None,
              method: str, params: dict, student: str, teacher: str | None, config: dict,
              started_at: datetime, flow_run_id: str | None = None) -> None:
    with store.write() as con:
        con.execute(
            INSERT_RUN,
            [run_id, name, dataset_name, dataset_version, method, _json(params), student, teacher,
             code_version(), _json(config), started_at, flow_run_id],
        )


def finish_run(store, *, run_id: str, status: str, final_loss: float | None, loss_history: list,
               metrics: dict, checkpoint_path: str | None) -> None:
    with store.write() as con:
        con.execute(
            FINISH_RUN,
            [status, utcnow(), final_loss, _json(loss_history), _json(metrics), checkpoint_path, run_id],
        )


def insert_evaluations(store, rows: list[dict[str, Any]]) -> int:
    """rows: dicts with the evaluations columns (model_label, metric, value, n, ...)."""
    if not rows:
        return 0
    now = utcnow()
    with store.write() as con:
        con.executemany(
            INSERT_EVALUATION,
            [
                [r.get("training_run_id"), r["model_label"], r.get("model_path"), r.get("dataset_name"),
                 r.get("dataset_version"), r.get("split"), r["metric"], r.get("value"), r.get("n"),
                 _json(r.get("generation")), now, r.get("run_id")]
                for r in rows
            ],
        )
    return len(rows)
