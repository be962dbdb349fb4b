"""The pipeline flow end to end on a scripted teacher and a tiny random student:
seeds -> generate -> curate -> train -> evaluate, everything visible by SQL afterwards."""

from __future__ import annotations

import json

import pytest

from flows.config import PipelineConfig
from storage.store import Store

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    from training.testing import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny") / "student", num_layers=2, hidden_size=32)


def test_pipeline_end_to_end(tmp_path, tiny_student):
    from flows.pipeline import pipeline_flow

    instructions = tmp_path / "instructions.jsonl"
    instructions.write_text("".join(json.dumps({"instruction": f"Say something about number {i}."}) + "\n"
                                    for i in range(30)))
    config = PipelineConfig.model_validate({
        "run_name": "e2e",
        "db": str(tmp_path / "p.duckdb"),
        "teacher": {"backend": "scripted", "default_response": "Numbers are useful for counting things."},
        "generate": {"method": "responses", "target": 12, "batch_size": 5,
                     "instructions_file": str(instructions)},
        "curate": {"dataset": "e2e", "only_this_run": True, "eval_fraction": 0.25, "export_formats": [],
                   "filters": {"exact": True, "quality": {}, "minhash": None}},
        "train": {"method": "sft", "student": str(tiny_student), "teacher": None, "max_steps": 2,
                  "batch_size": 2, "max_length": 64, "output_dir": str(tmp_path / "ckpt"),
                  "eval": {"max_prompts": 3, "max_new_tokens": 4, "agreement": False}},
        "evaluate": {"before": True},
    })
    out = pipeline_flow(config)

    assert out["seeds"]["new_instructions"] > 0
    assert out["generate"]["kept"] == 12
    assert out["curate"]["rows"] == 12 and out["curate"]["version"] == 1
    train = out["train"]
    assert train["dataset"] == "e2e" and train["version"] == 1
    labels = [e["label"] for e in train["evaluations"]]
    assert labels == ["student (before)", "sft (after)"]
    assert all("rougeL_teacher" in e["metrics"] for e in train["evaluations"])

    store = Store(config.db)
    runs = {r["flow"]: r for r in store.query("SELECT flow, name, status, config FROM runs")}
    assert set(runs) == {"pipeline", "generate", "curate", "train"}
    assert all(r["status"] == "completed" for r in runs.values())
    assert json.loads(runs["pipeline"]["config"])["generate"]["target"] == 12
    assert store.query("SELECT count(*) AS n FROM training_runs WHERE status = 'completed'")[0]["n"] == 1
    metrics = store.query("SELECT DISTINCT model_label FROM evaluations ORDER BY 1")
    assert [m["model_label"] for m in metrics] == ["sft (after)", "student (before)"]


def test_skipping_generate_curates_what_is_stored(tmp_path):
    from flows.pipeline import pipeline_flow

    config = PipelineConfig.model_validate({
        "run_name": "skipgen", "db": str(tmp_path / "s.duckdb"),
        "skip": {"generate": True, "train": True, "evaluate": True},
        "curate": {"dataset": "seeds-only", "export_formats": [], "eval_fraction": 0.0},
    })
    out = pipeline_flow(config)
    assert "generate" not in out and "train" not in out
    assert out["curate"]["rows"] > 0  # the seed tasks' human samples
