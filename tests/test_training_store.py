"""Runs and evaluations land in the store; a checkpoint reloads and generates; the
evaluation metrics mean what they say."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from core.text import extract_answer
from storage.datasets import create_dataset
from storage.records import Instruction, Run, Sample
from storage.store import Store
from training.config import EvalConfig, TrainConfig
from training.evaluate import (
    comparison_markdown,
    comparison_table,
    eval_items,
    evaluate_dataset,
    exact_match,
    generate,
    mean_token_kl,
    results_from_store,
    rouge_l,
)
from training.testing import toy_rows
from training.train import load_model, load_tokenizer, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def store(tmp_path, tiny_models):
    """Dataset 'toy': samples of the tiny teacher, whose generate run recorded its weights."""
    _, teacher = tiny_models
    store = Store(tmp_path / "t.duckdb")
    run = Run(flow="generate", name="toy", status="completed", config={"teacher_weights": str(teacher)})
    records = [run]
    for row in toy_rows(12):
        ins = Instruction(text=row["instruction"], input=row["input"], method="seed")
        records += [ins, Sample(instruction_id=ins.id, response=row["response"], teacher_model="tiny", run_id=run.id)]
    store.ingest(records)
    create_dataset(store, "toy", "SELECT sample_id, instruction, input, response FROM sample_view",
                   eval_fraction=0.3, seed=1)
    return store


def test_run_and_evaluations_are_recorded(tiny_models, store, tmp_path):
    """KD with no train.teacher distils the model that generated the data (its lineage)."""
    student, teacher = tiny_models
    config = TrainConfig(method="kd", student=str(student), max_steps=2, batch_size=4,
                         max_length=64, learning_rate=1e-2, output_dir=str(tmp_path / "ckpt"))
    result = train(config, store=store, dataset="toy", show_progress=False)

    [run] = store.query("SELECT * FROM training_runs")
    assert run["id"] == result.run_id and run["status"] == "completed"
    assert (run["dataset_name"], run["dataset_version"], run["method"]) == ("toy", 1, "kd")
    assert json.loads(run["params"])["beta"] == 0.0 and json.loads(run["params"])["lmbda"] == 0.0
    assert run["student"] == str(student) and run["teacher"] == str(teacher)
    assert run["code_version"] and run["ended_at"] >= run["started_at"]
    assert run["final_loss"] == pytest.approx(result.final_loss)
    assert len(json.loads(run["loss_history"])) == 2
    assert run["checkpoint_path"] == result.checkpoint
    assert json.loads(run["config"])["method"] == "kd"
    n_train = store.query("SELECT n_train FROM datasets")[0]["n_train"]
    assert json.loads(run["metrics"])["train_rows"] == n_train

    # the checkpoint reloads and generates
    model, tok = load_model(result.checkpoint, "cpu"), load_tokenizer(result.checkpoint)
    [out] = generate(model, tok, [{"instruction": "Say hi.", "input": ""}], max_new_tokens=5)
    assert isinstance(out, str)

    results = evaluate_dataset(store, "toy", None, {"student (before)": str(student), "kd": result.checkpoint},
                               teacher=str(teacher), config=EvalConfig(max_new_tokens=8),
                               run_ids={"kd": result.run_id})
    rows = store.query("SELECT * FROM evaluations ORDER BY id")
    assert {(r["model_label"], r["metric"]) for r in rows} == {
        (label, metric) for label in ("student (before)", "kd") for metric in ("rougeL_teacher", "kl_teacher_student")
    }
    n_eval = store.query("SELECT n_eval FROM datasets")[0]["n_eval"]
    assert all(r["n"] == n_eval and r["dataset_version"] == 1 and r["split"] == "eval" for r in rows)
    assert {r["training_run_id"] for r in rows if r["model_label"] == "kd"} == {result.run_id}
    assert json.loads(rows[0]["generation"])["do_sample"] is False
    assert [r.label for r in results_from_store(store, dataset_name="toy")] == ["student (before)", "kd"]

    text = _render(comparison_table(results))
    assert "student (before)" in text and "ROUGE-L vs teacher" in text and "KL(teacher‖student)" in text
    assert comparison_markdown(results).count("\n") == 3


def test_a_logit_teacher_other_than_the_datas_is_refused_unless_wanted(tiny_models, store, tmp_path):
    from core.errors import TeacherError

    student, _ = tiny_models
    config = TrainConfig(method="kd", student=str(student), teacher=str(student), max_steps=1, batch_size=4,
                         max_length=64, output_dir=str(tmp_path / "o"))
    with pytest.raises(TeacherError, match=r"is not the model that generated the data \(tiny \(.*teacher\)\)"):
        train(config, store=store, dataset="toy", show_progress=False)
    assert store.query("SELECT count(*) AS n FROM training_runs")[0]["n"] == 0  # refused before anything ran
    wanted = config.model_copy(update={"allow_other_teacher": True})
    result = train(wanted, store=store, dataset="toy", show_progress=False)
    assert result.teacher == str(student)


def test_failed_run_is_recorded(tiny_models, store, tmp_path):
    student, _ = tiny_models
    config = TrainConfig(method="distill", student=str(student), teacher=None, max_steps=1,
                         output_dir=str(tmp_path / "x"))
    with pytest.raises(Exception, match="rationale"):
        train(config, store=store, dataset="toy", show_progress=False)
    [run] = store.query("SELECT status, metrics FROM training_runs")
    assert run["status"] == "failed" and "rationale" in json.loads(run["metrics"])["error"]


def _render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_metrics():
    # stemming: cats~cat, running~runs~run, so the LCS is "the cat run": P 3/4, R 3/3
    assert rouge_l("The cats are running", ["the cat runs"]) == pytest.approx(100 * 2 * 0.75 / 1.75)
    assert rouge_l("a b c", ["x y", "a b c"]) == pytest.approx(100.0)  # max over references
    assert extract_answer("First 2, then 3. So the answer is 5.") == "5"
    assert exact_match("Adding gives it. So the answer is 5.", "5")
    assert exact_match("The answer: Paris", "the answer: paris")
    assert not exact_match("So the answer is 6", "5")


def test_kl_is_zero_against_itself_and_positive_otherwise(tiny_models):
    student, teacher = tiny_models
    tok = load_tokenizer(student)
    s, t = load_model(student, "cpu", for_inference=True), load_model(teacher, "cpu", for_inference=True)
    items = eval_items(toy_rows(0, eval_rows=3))
    responses = [it["teacher_response"] for it in items]
    assert mean_token_kl(t, t, tok, items, responses) == pytest.approx(0.0, abs=1e-5)
    assert mean_token_kl(s, t, tok, items, responses) > 0.0
