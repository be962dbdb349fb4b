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
from storage.records import Instruction, Sample
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
    assert j["template_version"] == "judge_pairwise_scores_first@1"
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


def test_a_referee_that_did_not_answer_leaves_the_pair_to_judge_again(store):
    """The referee task (called as a plain function): a verdict the referee gave without two
    scores is stored failed; one whose requests failed is not stored (the next run judges it)."""
    from flows.lion import judge_batch
    from generators.lion import LionPair, LionParams
    from generators.teachers.base import Completion
    from generators.teachers.scripted import ScriptedTeacher, prompt_text

    pairs = []
    for question in ("q-ok", "q-unparseable", "q-down"):
        ins = Instruction(text=question, method="seed")
        pairs.append(LionPair(ins, Sample(instruction_id=ins.id, response=f"TEACHER {question}"),
                              Sample(instruction_id=ins.id, response=f"student {question}")))
        store.ingest([ins, pairs[-1].teacher, pairs[-1].student])

    def script(req):
        text = prompt_text(req)
        if "q-down" in text:
            return Completion(key="", ok=False, error="http 503")
        if "q-unparseable" in text:
            return "Both answers are nice."
        return "8 6\nFine." if text.split(JUDGE_MARK + "\n", 1)[1].startswith("TEACHER") else "6 8\nFine."

    out = judge_batch.fn(1, 1, pairs, ScriptedTeacher(script, model="ref"), LionParams(judge={"max_retries": 1}),
                         store, "run")
    assert out == {"judged": 1, "failed": 1, "hard": 1, "easy": 0, "unanswered": 1}
    rows = store.query("SELECT i.text, j.ok, j.label, j.error FROM lion_judgments j "
                       "JOIN instructions i ON i.id = j.instruction_id ORDER BY i.text")
    assert rows == [{"text": "q-ok", "ok": True, "label": "hard", "error": None},
                    {"text": "q-unparseable", "ok": False, "label": None,
                     "error": "unparseable verdict after 2 attempts"}]

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


# --------------------------------------------------------------------------- kill and resume


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _referee_prompt(store: Store, judgment: dict, teacher_first: bool) -> str:
    """The referee prompt of one order of a stored judgment, as the fake server saw it."""
    from core.text import format_prompt
    from generators.templates import load_template

    (ins,) = store.query("SELECT text, input FROM instructions WHERE id = ?", [judgment["instruction_id"]])
    ids = [judgment["teacher_sample"], judgment["student_sample"]]
    answers = {r["id"]: r["response"] for r in store.query("SELECT id, response FROM samples WHERE id IN (?, ?)", ids)}
    teacher, student = answers[judgment["teacher_sample"]], answers[judgment["student_sample"]]
    first, second = (teacher, student) if teacher_first else (student, teacher)
    return load_template("judge_pairwise_scores_first").render(
        question=format_prompt(ins["text"], ins["input"]), answer_1=first, answer_2=second)


def test_killed_mid_discrimination_resumes_without_rejudging(tmp_path, fake_openai, tiny_models, prefect_env):
    """`distill lion` killed (SIGKILL) while the referee works, then run again: no pair judged
    before the kill reaches the referee again, and the run finishes with every pair judged once."""
    from typer.testing import CliRunner

    from flows.cli import app

    fake_openai.responder = responder
    fake_openai.latency = 0.15
    student, _ = tiny_models
    db = tmp_path / "killed.duckdb"
    topics = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    data = lion_config(tmp_path, fake_openai.url, student, db, run_name="killed")
    pool = tmp_path / "pool12.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"Explain the {'tricky' if k % 3 == 0 else 'plain'} topic "
                                                       f"{t}."}) + "\n" for k, t in enumerate(topics)))
    data["pools"] = {"train": str(pool)}
    data["student"]["num_threads"] = 1
    config = tmp_path / "lion.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**prefect_env, "OMP_NUM_THREADS": "1", "DISTILL_CACHE": os.environ.get("DISTILL_CACHE", "")}
    env = {k: v for k, v in env.items() if v != ""}

    first = _cli(["lion", "--config", str(config), "--iterations", "1"], env)
    deadline = time.monotonic() + 300
    while sum(_referee_prompts(fake_openai).values()) < 6:  # batch 1 (4 requests) stored, batch 2 on the wire
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "the referee never got going"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    seen_before = dict(_referee_prompts(fake_openai))

    store = Store(db)
    store.merge_journal()
    judged = store.query("SELECT * FROM lion_judgments")
    assert 0 < len(judged) < 12, "the kill must land mid-discrimination"
    judged_prompts = {_referee_prompt(store, j, teacher_first) for j in judged for teacher_first in (True, False)}
    assert judged_prompts <= set(seen_before)
    assert store.query("SELECT count(*) AS n FROM lion_iterations") == [{"n": 0}]

    second = _cli(["lion", "--config", str(config), "--iterations", "1"], env)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    assert "lion killed" in out and 'distill sql "select * from lion_iterations"' in out

    counts = _referee_prompts(fake_openai)
    # No verdict stored before the kill was asked for again...
    assert {p: counts[p] for p in judged_prompts} == {p: 1 for p in judged_prompts}
    # ...only requests on the wire at the kill may have been sent twice.
    assert {p for p, n in counts.items() if n > 1} <= set(seen_before) - judged_prompts
    rows = store.query("SELECT instruction_id, count(*) AS n FROM lion_judgments GROUP BY 1")
    assert len(rows) == 12 and {r["n"] for r in rows} == {1}
    assert store.query("SELECT count(*) AS n FROM training_runs") == [{"n": 1}]  # not trained again
    assert store.check_integrity() == {}

    # `distill sql` shows the iteration's row.
    shown = CliRunner().invoke(app, ["--db", str(db), "sql", "select iteration, hard, easy, judged from lion_iterations",
                                     "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == [{"iteration": 1, "hard": 4, "easy": 8, "judged": 12}]


# --------------------------------------------------------------------------- the embedded models


@pytest.mark.slow
def test_one_small_iteration_with_the_embedded_smollm2(tmp_path):
    """configs/lion.yaml, made small: SmolLM2-135M teaches, referees and generates; its
    pruned copy is the student. Every verdict either parsed (scores, a label) or failed
    (its raw text and error, no scores): a small referee is never given made-up scores."""
    import asyncio

    from filters.rouge import RougeNovelty
    from flows.lion import lion_flow
    from generators.lion import LionParams, LionSeed, agenerate_instructions
    from generators.teachers.transformers_backend import TransformersTeacher

    pool, heldout = tmp_path / "pool.jsonl", tmp_path / "heldout.jsonl"
    pool.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in [
        "Give three tips for staying warm in winter.", "Explain why the moon changes shape.",
        "Write a two-line poem about a river.", "What is 12 times 4?"]))
    heldout.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in HELDOUT))
    db = tmp_path / "embedded.duckdb"
    config = load_lion_config(ROOT / "configs" / "lion.yaml", {
        "run_name": "small", "db": str(db), "pools.train": str(pool), "heldout.file": str(heldout),
        "heldout.max_new_tokens": 12, "loop.answer_max_tokens": 32, "loop.judge.max_tokens": 12,
        "loop.judge.max_retries": 0, "train.max_steps": 2, "train.batch_size": 4,
        "train.output_dir": str(tmp_path / "checkpoints")})
    out = lion_flow(config)
    store = Store(db)
    (row,) = out["iterations"]
    assert (row["train_pool"], row["cache_pool"], row["judged"] + row["failed"]) == (4, 4, 4)
    assert row["hard"] + row["easy"] == row["judged"] and row["kl_teacher_student"] is not None
    judgments = store.query("SELECT * FROM lion_judgments")
    assert len(judgments) == 4
    for j in judgments:
        if j["ok"]:
            assert j["gap"] == j["teacher_score"] - j["student_score"] and j["label"] in ("hard", "easy")
        else:
            assert j["teacher_score"] is None and j["label"] is None and j["error"] and j["ab_text"] is not None
    assert {j["referee_model"] for j in judgments} == {"SmolLM2-135M-Instruct"}
    assert store.query("SELECT count(*) AS n FROM lion_pool WHERE iteration = 0") == [{"n": 8}]
    (train,) = store.query("SELECT name, status FROM training_runs")
    assert train == {"name": "lion-small-it1", "status": "completed"}
    assert store.check_integrity() == {}

    # The generation step with the real model (the loop above may have had no verdict to
    # build on): each reply becomes an instruction, or its drop names a filter's reason.
    seeds = [LionSeed(Instruction(text="Explain why the moon changes shape.", method="seed"), "hard"),
             LionSeed(Instruction(text="Write a two-line poem about a river.", method="seed"), "easy")]
    new = asyncio.run(agenerate_instructions(TransformersTeacher(), seeds, LionParams(), novelty=RougeNovelty(0.7),
                                             iteration=1))
    assert len(new.instructions) + len(new.rejected) + new.counts.get("empty", 0) == 2
    assert {d.reason for d in new.decisions if not d.kept} <= {
        "mentions_instruction", "cut_by_length", "too_short", "starts_with_punctuation", "starts_non_ascii",
        "too_similar"}
    assert all(i.parent_id in {s.instruction.id for s in seeds} for i in [*new.instructions, *new.rejected])
