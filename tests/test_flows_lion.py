"""The Lion flow end to end: a fake OpenAI server plays teacher, referee and generator (its
responder scripts each role), a tiny random LLaMA is the student. One iteration writes the
three tables with their lineage; a re-run resumes without paying or judging twice; a
process killed mid-discrimination resumes without re-judging a judged pair; the CLI runs
it; and (slow) one small iteration with the embedded SmolLM2 in every role."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.config import LionConfig, load_lion_config
from storage.datasets import load_rows
from storage.records import Instruction
from storage.store import Store

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness", "one_torch_thread")]

ROOT = Path(__file__).resolve().parent.parent

# Instructions with "tricky" in them are where the student falls short (gap 5, hard); the
# others it answers as well as the teacher (gap 0, easy).
POOL = ["Explain the tricky topic alpha.", "Explain the tricky topic beta.", "Explain the tricky topic gamma.",
        "Describe the plain topic delta.", "Describe the plain topic epsilon.", "Describe the plain topic zeta."]
HELDOUT = ["Say something kind about rivers.", "Name a warm colour."]
JUDGE_MARK = "[Assistant 1's answer]"
GENERATE_MARK = "Below is a task that a person once gave"


def responder(prompt: str) -> str:
    """The fake server's answer to each role's prompt."""
    if JUDGE_MARK in prompt:  # the referee: scores first, by which answer is shown first
        question = prompt.split("[Question]\n", 1)[1].split("\n", 1)[0]
        first = prompt.split(JUDGE_MARK + "\n", 1)[1]
        teacher, student = (9, 4) if "tricky" in question else (7, 7)
        a, b = (teacher, student) if first.startswith("TEACHER") else (student, teacher)
        return f"{a} {b}\nThe answer with more detail is better."
    if GENERATE_MARK in prompt:  # the generator: a new task per seed topic
        seed = prompt.split(GENERATE_MARK, 1)[1].split("\n\n", 2)[1]
        topic = seed.rstrip(".?").split()[-1]
        return NEW_TASKS.get(topic, f"Tell a short story in which {topic} plays an unexpected part.")
    return f"TEACHER: a careful, detailed answer to: {prompt}"


NEW_TASKS = {  # from hard seeds (tricky), then from easy ones
    "alpha": "Compose a playful riddle for children whose answer is a lighthouse.",
    "beta": "Outline how migrating geese share the work of leading their flock.",
    "gamma": "Write an instruction about gamma for a quiz night.",  # mentions 'instruction': dropped
    "delta": "Which rare mosses grow only on volcanic rock in Iceland?",
    "epsilon": "Describe the traditions of lamp makers in old Damascus markets.",
    "zeta": "Why do some desert frogs sleep underground for years?",
}


def write_files(tmp_path: Path) -> tuple[Path, Path]:
    pool, heldout = tmp_path / "pool.jsonl", tmp_path / "heldout.jsonl"
    pool.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in POOL))
    heldout.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in HELDOUT))
    return pool, heldout


def lion_config(tmp_path: Path, url: str, student: Path, db: Path, **extra) -> dict:
    pool, heldout = write_files(tmp_path)
    teacher = {"backend": "openai", "model": "fake-teacher", "base_url": url, "max_retries": 1, "timeout_s": 30}
    data = {
        "run_name": "t1", "db": str(db), "iterations": 1,
        "teacher": teacher,
        "referee": {**teacher, "model": "fake-referee"},
        "generator": {**teacher, "model": "fake-generator"},
        "student": {"backend": "transformers", "device": "cpu", "batch_size": 8},
        "train": {"method": "sft", "student": str(student), "max_steps": 2, "batch_size": 4, "max_length": 96,
                  "output_dir": str(tmp_path / "checkpoints"), "learning_rate": 1e-3},
        "pools": {"train": str(pool)},
        "heldout": {"file": str(heldout), "max_new_tokens": 8},
        "loop": {"answer_max_tokens": 12, "hard_per_iteration": 3, "easy_per_iteration": 3,
                 "judge": {"max_retries": 1}},
        "answer_batch_size": 4, "judge_batch_size": 2,
    }
    for key, value in extra.items():
        data[key] = value
    return data


def _referee_prompts(server) -> dict[str, int]:
    return {p: n for p, n in server.counts.items() if JUDGE_MARK in p}


def test_one_iteration_writes_the_three_tables_and_a_rerun_resumes(tmp_path, fake_openai, tiny_models):
    from flows.lion import lion_flow

    fake_openai.responder = responder
    student, _ = tiny_models
    db = tmp_path / "lion.duckdb"
    config = LionConfig.model_validate(lion_config(tmp_path, fake_openai.url, student, db))
    out = lion_flow(config)
    store = Store(db)
    run_id = out["run_id"]
    (run,) = store.query("SELECT id, flow, name, status, prefect_flow_run_id FROM runs WHERE flow = 'lion'")
    assert (run["id"], run["name"], run["status"]) == (run_id, "t1", "completed")
    flow_run = run["prefect_flow_run_id"]
    assert flow_run

    # lion_pool: the six pool instructions in both pools, plus what generation added.
    pool = store.query("SELECT pool, origin, iteration, count(*) AS n FROM lion_pool GROUP BY ALL ORDER BY ALL")
    assert pool == [{"pool": "cache", "origin": "easy", "iteration": 1, "n": 3},
                    {"pool": "cache", "origin": "hard", "iteration": 1, "n": 2},
                    {"pool": "cache", "origin": "seed", "iteration": 0, "n": 6},
                    {"pool": "train", "origin": "easy", "iteration": 1, "n": 3},
                    {"pool": "train", "origin": "hard", "iteration": 1, "n": 2},
                    {"pool": "train", "origin": "seed", "iteration": 0, "n": 6}]
    assert {r["flow_run_id"] for r in store.query("SELECT flow_run_id FROM lion_pool")} == {flow_run}

    # lion_judgments: every Cache Pool instruction, both orders, averaged, labelled.
    judgments = store.query("SELECT i.text, j.* FROM lion_judgments j JOIN instructions i ON i.id = j.instruction_id "
                            "ORDER BY i.text")
    assert [(j["text"], j["teacher_score"], j["student_score"], j["gap"], j["label"]) for j in judgments] == [
        (t, 7.0, 7.0, 0.0, "easy") for t in POOL[3:]] + [(t, 9.0, 4.0, 5.0, "hard") for t in POOL[:3]]
    j = judgments[0]
    assert (j["ab_teacher_score"], j["ab_student_score"], j["ba_teacher_score"], j["ba_student_score"]) == (
        7.0, 7.0, 7.0, 7.0)
    assert j["ab_text"].startswith("7 7") and j["referee_model"] == "fake-referee"
    assert (j["teacher_model"], j["student_model"]) == ("fake-teacher", "lion-t1-student-it1")
    assert {r["flow_run_id"] for r in judgments} == {flow_run} and {r["iteration"] for r in judgments} == {1}
    samples = {r["id"]: r for r in store.query("SELECT id, method, teacher_model FROM samples")}
    assert {samples[r["teacher_sample"]]["method"] for r in judgments} == {"lion"}
    assert {samples[r["student_sample"]]["method"] for r in judgments} == {"lion-student"}

    # Generation: each new instruction links to the hard/easy instruction it came from.
    new = store.query("SELECT i.text, i.method, i.operator, i.round, p.text AS parent, lp.seed_id, i.parent_id "
                      "FROM instructions i JOIN instructions p ON p.id = i.parent_id "
                      "LEFT JOIN lion_pool lp ON lp.instruction_id = i.id AND lp.pool = 'train' "
                      "WHERE i.method = 'lion' ORDER BY i.text")
    kept = [r for r in new if r["seed_id"] is not None]
    assert all(r["seed_id"] == r["parent_id"] and r["round"] == 1 for r in kept)
    assert {(r["operator"], "tricky" in r["parent"]) for r in kept} == {("hard", True), ("easy", False)}
    dropped = [r for r in new if r["seed_id"] is None]
    assert [r["text"] for r in dropped] == ["Write an instruction about gamma for a quiz night."]
    assert store.query("SELECT filter, reason FROM filter_decisions WHERE NOT kept AND item_kind = 'instruction'") == [
        {"filter": "lion.instruction_word", "reason": "mentions_instruction"}]

    # lion_iterations: the row, with the dataset, the training run and the held-out numbers.
    (row,) = store.query("SELECT * FROM lion_iterations")
    assert (row["iteration"], row["train_pool"], row["cache_pool"], row["judged"], row["failed"], row["hard"],
            row["easy"]) == (1, 6, 6, 6, 0, 3, 3)
    assert (row["mean_teacher_score"], row["mean_student_score"], row["mean_gap"]) == (8.0, 5.5, 2.5)
    assert (row["generated"], row["generated_hard"], row["generated_easy"], row["dropped"]) == (5, 2, 3, 1)
    assert (row["dataset_name"], row["dataset_version"], row["flow_run_id"]) == ("lion-t1", 1, flow_run)
    assert row["tokens"] > 0 and set(json.loads(row["tokens_by_model"])) >= {"fake-teacher", "fake-referee",
                                                                              "lion-t1-student-it1"}
    assert Path(row["checkpoint"], "config.json").exists()
    evals = json.loads(row["eval"])
    assert set(evals) == {"lion it1", "student (before)"} and row["rougeL_teacher"] == evals["lion it1"][
        "rougeL_teacher"]
    (train,) = store.query("SELECT * FROM training_runs")
    assert (train["id"], train["name"], train["dataset_name"], train["dataset_version"], train["run_id"]) == (
        row["training_run_id"], "lion-t1-it1", "lion-t1", 1, flow_run)
    assert train["status"] == "completed" and train["student"] == str(student)
    assert store.query("SELECT DISTINCT run_id, dataset_name, dataset_version, split FROM evaluations") == [
        {"run_id": run_id, "dataset_name": "lion-t1", "dataset_version": 1, "split": "heldout"}]

    # The student trained on the teacher's answers only; its own answers are in no dataset.
    rows = load_rows(store, "lion-t1", 1)
    assert len(rows) == 6 and all(r["response"].startswith("TEACHER") for r in rows)
    assert store.query("SELECT count(*) AS n FROM kept_samples WHERE sample_method = 'lion-student'") == [{"n": 0}]
    assert store.query("SELECT count(*) AS n FROM filter_decisions WHERE filter = 'lion.student'")[0]["n"] == 6
    assert store.check_integrity() == {}
    # The iteration's report and counts are Prefect artifacts.
    assert _artifact_keys() >= {"lion-t1-it1-report", "lion-t1-it1-counts"}

    # A re-run of the finished run does nothing: no request, no training, no verdict.
    paid = dict(fake_openai.counts)
    again = lion_flow(config)
    assert fake_openai.counts == paid and again["iterations"] == out["iterations"]
    assert store.query("SELECT count(*) AS n FROM training_runs")[0]["n"] == 1

    # Two iterations: the second trains from the first's checkpoint on the grown pools.
    two = lion_flow(config, iterations=2)
    assert [r["iteration"] for r in two["iterations"]] == [1, 2]
    second = two["iterations"][1]
    assert (second["train_pool"], second["cache_pool"]) == (11, 11)
    (train2,) = store.query("SELECT student, dataset_version FROM training_runs WHERE name = 'lion-t1-it2'")
    assert train2 == {"student": row["checkpoint"], "dataset_version": 2}
    assert len(load_rows(store, "lion-t1", 2)) == 11
    # Iteration 1's verdicts were not asked again; iteration 2 judged all eleven with its own student.
    assert store.query("SELECT iteration, count(*) AS n FROM lion_judgments GROUP BY 1 ORDER BY 1") == [
        {"iteration": 1, "n": 6}, {"iteration": 2, "n": 11}]
    assert all(n == 1 for n in _referee_prompts(fake_openai).values())
    assert store.check_integrity() == {}


def _artifact_keys() -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts() if a.key}


def test_config_errors_are_one_line(tmp_path):
    from core.errors import InputError

    for overrides, problem in [
        ({"student.model_path": "/x"}, "student.model_path is set by the loop"),
        ({"loop.threshold": 20}, "loop: threshold 20.0 is larger than any gap on the referee's scale 1..10"),
        ({"train.method": "distill"}, "train.method 'distill' trains on rationales"),
        ({"student.backend": "openai"}, "student: the student answers through backend transformers or vllm"),
        ({"loop.hard_per_iteration": -1}, "loop.hard_per_iteration: Input should be greater than or equal to 0"),
        ({"iterations": 0}, "iterations: Input should be greater than or equal to 1"),
        ({"teacher.backend": "openai", "teacher.model": "m"}, "train.student 'prune' cuts the student"),
    ]:
        with pytest.raises(InputError) as err:
            load_lion_config(None, overrides)
        assert problem in str(err.value) and "\n" not in str(err.value)


def test_the_shipped_config_is_the_embedded_loop():
    config = load_lion_config(ROOT / "configs" / "lion.yaml")
    assert config.teacher.backend == "transformers" and config.teacher.model_path is None  # embedded SmolLM2
    assert config.referee is None and config.generator is None  # the teacher referees and generates
    assert (config.train.method, config.train.student) == ("sft", "prune")
    assert config.loop.judge.verdict_order == "scores_first" and config.loop.judge.swap_positions
    assert config.loop.threshold == 1.0 and config.loop.hard_per_iteration == config.loop.easy_per_iteration
    assert LionConfig.model_validate(config.model_dump(mode="json")) == config
