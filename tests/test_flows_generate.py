"""The generate flow under a real (temporary) Prefect API, with a scripted teacher."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from flows.config import GenerateConfig
from generators.teachers.config import ScriptedConfig
from storage.store import Store

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]

REFUSAL = "I'm sorry, but I cannot help with that request."
ANSWER = "Here is a careful answer that explains the idea in plain words."


def _instructions(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Explain topic number {i} to a child."}) + "\n"
                            for i in range(n)))
    return path


def _teacher(refuse: range = range(0)) -> ScriptedConfig:
    script = {f"Explain topic number {i} to a child.": REFUSAL for i in refuse}
    return ScriptedConfig(model="scripted-teacher", script=script, default_response=ANSWER)


def _run(**kwargs):
    from flows.generate import generate_flow

    return asyncio.run(generate_flow(**kwargs))


KEPT_SQL = """SELECT count(*) AS n FROM samples s WHERE s.run_id = ?
AND NOT EXISTS (SELECT 1 FROM filter_decisions d WHERE d.item_id = s.id AND NOT d.kept)"""


def test_target_counts_kept_samples_and_every_drop_is_recorded(tmp_path):
    db = str(tmp_path / "g.duckdb")
    cfg = GenerateConfig(method="responses", target=20, batch_size=6, max_concurrent_batches=2,
                         instructions_file=str(_instructions(tmp_path, 40)))
    out = _run(run_name="t1", teacher=_teacher(refuse=range(0, 40, 3)), generate=cfg, db=db)

    assert out["status"] == "completed" and out["kept"] == 20
    assert out["dropped"] and set(out["dropped"]) == {"quality:refusal"}
    store = Store(db)
    assert store.query(KEPT_SQL, [out["run_id"]])[0]["n"] == 20
    drops = store.query("SELECT filter, reason, count(*) AS n FROM filter_decisions WHERE NOT kept GROUP BY ALL")
    assert drops == [{"filter": "quality", "reason": "refusal", "n": out["dropped"]["quality:refusal"]}]
    # Every request the flow made is in the ledger, under this run.
    assert store.query("SELECT count(*) AS n FROM requests WHERE run_id = ?", [out["run_id"]])[0]["n"] == out["sent"]
    (run,) = store.query("SELECT * FROM runs WHERE flow = 'generate'")
    assert run["name"] == "t1" and run["status"] == "completed" and run["ended_at"] is not None
    counts = json.loads(run["counts"])
    assert counts["kept"] == 20 and json.loads(run["config"])["generate"]["target"] == 20
    assert store.check_integrity() == {}


def test_rerunning_a_finished_run_sends_nothing_and_stores_nothing_twice(tmp_path):
    db = str(tmp_path / "g.duckdb")
    cfg = GenerateConfig(method="responses", target=12, batch_size=5,
                         instructions_file=str(_instructions(tmp_path, 30)))
    first = _run(run_name="again", teacher=_teacher(refuse=range(2)), generate=cfg, db=db)
    before = Store(db).table_counts()
    second = _run(run_name="again", teacher=_teacher(refuse=range(2)), generate=cfg, db=db)
    assert first["sent"] > 0 and second["sent"] == 0 and second["cached"] == second["requested"]
    assert second["kept"] == 12 and second["status"] == "completed"
    after = Store(db).table_counts()
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}


def test_budget_stops_the_run_with_a_summary(tmp_path):
    db = str(tmp_path / "g.duckdb")
    cfg = GenerateConfig(method="responses", target=30, batch_size=4, max_attempts=10,
                         instructions_file=str(_instructions(tmp_path, 40)))
    out = _run(run_name="poor", teacher=_teacher(refuse=range(0, 40, 2)), generate=cfg, db=db)
    assert out["status"] == "budget_exhausted"
    assert out["requests_used"] == 10 and out["kept"] + sum(out["dropped"].values()) == 10 and out["kept"] < 30
    assert "request budget is spent (10/10 requests)" in out["message"]
    assert "raise generate.max_attempts" in out["message"]


def test_token_budget(tmp_path):
    db = str(tmp_path / "g.duckdb")
    cfg = GenerateConfig(method="responses", target=30, batch_size=4, token_budget=40,
                         instructions_file=str(_instructions(tmp_path, 40)))
    out = _run(run_name="tokens", teacher=_teacher(), generate=cfg, db=db)
    assert out["status"] == "token_budget_exhausted" and out["kept"] < 30
    assert out["tokens_used"] >= 40


def test_a_teacher_that_always_fails_fails_the_run(tmp_path):
    from core.errors import TeacherError

    db = str(tmp_path / "g.duckdb")
    teacher = ScriptedConfig(script={})  # no answers: every request fails
    cfg = GenerateConfig(method="responses", target=10, batch_size=3,
                         instructions_file=str(_instructions(tmp_path, 40)))
    with pytest.raises(TeacherError, match=r"the teacher failed: (\d+) of \1 requests to the in-process scripted "
                                           r"model .*: no scripted answer: .*0/10 samples kept"):
        _run(run_name="dead", teacher=teacher, generate=cfg, db=db)
    store = Store(db)
    assert store.query("SELECT count(*) AS n FROM samples WHERE method = 'responses'")[0]["n"] == 0
    (run,) = store.query("SELECT status, counts FROM runs WHERE flow = 'generate'")
    counts = json.loads(run["counts"])
    assert run["status"] == "failed" and counts["status"] == "teacher_failing" and counts["kept"] == 0


@pytest.mark.parametrize("fault", ["500", "hang:5"])
def test_a_server_that_refuses_or_hangs_fails_the_run_and_a_rerun_resumes(tmp_path, fake_openai, fault):
    """The flow run ends Failed naming the endpoint and the reasons; once the teacher is
    back, re-running the same run name finishes the job."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from core.errors import TeacherError
    from generators.teachers.config import OpenAIConfig

    path = tmp_path / "down.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"[[faults={fault}]] Explain item {i}."}) + "\n" for i in range(6)))
    teacher = OpenAIConfig(model="fake", base_url=fake_openai.url, max_retries=0, timeout_s=1)
    cfg = GenerateConfig(method="responses", target=6, batch_size=3, instructions_file=str(path))
    db = str(tmp_path / "d.duckdb")
    reason = "http 500" if fault == "500" else "timeout"
    with pytest.raises(TeacherError, match=rf"requests to {fake_openai.url} \(model fake\) failed: {reason}.*\(6\)"):
        _run(run_name=f"down-{fault[:3]}", teacher=teacher, generate=cfg, db=db)

    async def state():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"generate-down-{fault[:3]}"])))
            return runs[0].state.type.value
    assert asyncio.run(state()) == "FAILED"
    out = _run(run_name=f"down-{fault[:3]}", teacher=teacher, generate=cfg, db=db)  # the faults are spent: back up
    assert out["status"] == "completed" and out["kept"] == 6


def test_running_out_of_instructions(tmp_path):
    db = str(tmp_path / "g.duckdb")
    cfg = GenerateConfig(method="responses", target=50, batch_size=4,
                         instructions_file=str(_instructions(tmp_path, 6)))
    out = _run(run_name="few", teacher=_teacher(), generate=cfg, db=db)
    assert out["status"] == "exhausted" and out["kept"] == 6
    assert "no more work" in out["message"]


def test_self_instruct_through_the_flow(tmp_path, monkeypatch):
    """Self-Instruct steps run one after another; tasks, instances and decisions are stored."""
    db = str(tmp_path / "g.duckdb")
    counter = iter(range(10_000))

    def script(request):
        from generators.teachers.scripted import prompt_text

        text = prompt_text(request)
        if "Is it classification" in text:
            return "No"
        if "Input:" in text or "Output:" in text:
            return "Example 1\nInput: a short example input\nOutput: a short example output"
        # New tasks with words no other task shares, so the ROUGE-L novelty filter keeps them.
        return "\n".join(f"{9 + k}. Write about " + " ".join(f"topic{next(counter)}" for _ in range(6))
                         for k in range(3))

    _patched_teacher(monkeypatch, script, model="scripted-si")
    cfg = GenerateConfig(method="self_instruct", target=4, batch_size=2, params={"request_format": "chat"})
    out = _run(run_name="si", teacher=ScriptedConfig(), generate=cfg, db=db)
    assert out["kept"] >= 4, out
    store = Store(db)
    tasks = store.query("SELECT count(*) AS n FROM instructions WHERE method = 'self_instruct' AND parent_id IS NULL")
    assert tasks[0]["n"] >= 2
    assert store.query("SELECT count(*) AS n FROM filter_decisions WHERE item_kind = 'instruction'")[0]["n"] > 0


def test_artifacts_are_published(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    db = str(tmp_path / "g.duckdb")
    cfg = GenerateConfig(method="responses", target=5, batch_size=5,
                         instructions_file=str(_instructions(tmp_path, 10)))
    _run(run_name="Arts_1", teacher=_teacher(refuse=range(1)), generate=cfg, db=db)

    async def read(key):
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return found[-1] if found else None

    progress = asyncio.run(read("generate-arts-1-progress"))
    table = asyncio.run(read("generate-arts-1-counts"))
    report = asyncio.run(read("generate-arts-1-report"))
    assert progress is not None and progress.type == "progress" and float(progress.data) == 100.0
    assert table is not None and table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {"count": "kept", "value": 5} in rows and {"count": "dropped by quality:refusal", "value": 1} in rows
    assert report is not None and report.type == "markdown"
    assert "data:image/png;base64," in report.data and "```sql" in report.data


def _patched_teacher(monkeypatch, script, model="scripted-m"):
    """The flow's teacher answers with ``script`` (a function), through the real ledger."""
    from flows import generate as g
    from generators.teachers.ledger import LedgeredTeacher
    from generators.teachers.scripted import ScriptedTeacher

    monkeypatch.setattr(g, "build_teacher", lambda config, store=None, run_id=None, **ledger: LedgeredTeacher(
        ScriptedTeacher(script, model=model), store, run_id=run_id, **ledger))


def test_rationales_keep_only_answers_matching_the_gold_label(tmp_path, monkeypatch):
    from generators.teachers.scripted import prompt_text

    def script(request):  # right for the apples question, wrong for the eggs one
        q = prompt_text(request).rsplit("Q:", 1)[-1]
        if "apples" in q:
            return "She had 5 and picked 7 more, 5 plus 7 is 12. So the answer is 12."
        return "Each box holds 6, so 4 boxes hold 20. So the answer is 20."

    _patched_teacher(monkeypatch, script)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "Ava has 5 apples and picks 7 more. How many?", "answer": "12"})
                         + "\n" + json.dumps({"question": "How many eggs are in 4 boxes of 6?", "answer": "24"}) + "\n")
    db = str(tmp_path / "r.duckdb")
    cfg = GenerateConfig(method="rationales", target=10, batch_size=4, params={"num_samples": 2},
                         instructions_file=str(questions))
    out = _run(run_name="cot", teacher=ScriptedConfig(), generate=cfg, db=db)
    assert out["status"] == "exhausted"  # two questions cannot give ten kept samples
    rows = Store(db).query("SELECT rationale, response, label FROM samples WHERE method = 'rationales'")
    assert rows and all(r["label"] == "12" for r in rows)
    assert all("5 plus 7" in r["rationale"] for r in rows)


def test_evol_instruct_rounds_through_the_flow(tmp_path, monkeypatch):
    from generators.teachers.scripted import prompt_text

    counter = iter(range(100_000))

    def script(request):
        text = prompt_text(request)
        if text.startswith("Compare the two instructions"):
            return "Not Equal"
        words = " ".join(f"thing{next(counter)}" for _ in range(10))  # distinct: no filter merges them
        if "make a prompt harder" in text or "prompt" in text.lower()[:200]:
            return f"Explain {words} in detail."
        return f"An answer about {words}."

    _patched_teacher(monkeypatch, script)
    instructions = _instructions(tmp_path, 4)
    db = str(tmp_path / "e.duckdb")
    cfg = GenerateConfig(method="evol_instruct", target=8, batch_size=4, params={"rounds": 3},
                         instructions_file=str(instructions), max_attempts=200)
    out = _run(run_name="evol", teacher=ScriptedConfig(), generate=cfg, db=db)
    assert out["status"] == "completed" and out["kept"] >= 8, out
    store = Store(db)
    rounds = store.query("SELECT round, count(*) AS n FROM instructions WHERE method = 'evol_instruct' "
                         "GROUP BY 1 ORDER BY 1")
    assert [r["round"] for r in rounds] == [1, 2]  # round 2 evolves round 1's survivors
    chain = store.query("""
        WITH RECURSIVE chain AS (
            SELECT id, parent_id, round FROM instructions WHERE round = 2 AND method = 'evol_instruct'
            UNION ALL SELECT i.id, i.parent_id, i.round FROM instructions i JOIN chain c ON i.id = c.parent_id)
        SELECT min(round) AS first FROM chain""")
    assert chain[0]["first"] == 0  # every chain goes back to a seed instruction


def test_batches_finishing_during_a_commit_go_together_in_the_next_one(monkeypatch):
    """The committer: one commit at a time; batches queued meanwhile share the next commit,
    each gets its own result back, and a failed commit fails every batch in it."""
    import threading

    from flows.committer import Committer

    commits: list[list[str]] = []
    release = {"a": threading.Event(), "x": threading.Event()}

    def store_double(self, batches):  # stands in for the database commit (timing and faults)
        names = [items[0] for items, _records in batches]
        commits.append(names)
        if names[0] in release:
            release[names[0]].wait(5)  # a slow commit: the next batches queue behind it
        if "bad" in names:
            raise RuntimeError("disk full")
        return [({name}, f"outcome of {name}") for name in names]

    monkeypatch.setattr(Committer, "_judge_and_store", store_double)

    async def behind(committer, slow: str, names: tuple[str, ...]):
        first = asyncio.ensure_future(committer.commit([slow], []))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(committer.commit([name], [])) for name in names]
        await asyncio.sleep(0.05)
        release[slow].set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    async def main():
        committer = Committer(store=None, filters=None, run_id="r")
        results = await behind(committer, "a", ("b", "c"))
        errors = await behind(committer, "x", ("bad", "d"))
        return results, errors, committer.commits

    results, errors, n = asyncio.run(main())
    assert commits == [["a"], ["b", "c"], ["x"], ["bad", "d"]] and n == 3
    assert results == [({"a"}, "outcome of a"), ({"b"}, "outcome of b"), ({"c"}, "outcome of c")]
    assert errors[0] == ({"x"}, "outcome of x")
    assert all(isinstance(e, RuntimeError) and "disk full" in str(e) for e in errors[1:])


def test_empty_and_cut_off_answers_are_asked_again_within_the_run(tmp_path, fake_openai):
    """Against a server that returns empty and cut-off answers, the run still reaches its
    target: each is asked again (a new request, a new ledger key) and the summary says so."""
    from generators.teachers.config import OpenAIConfig

    n = 30
    path = tmp_path / "faulty.jsonl"
    lines = []
    for i in range(n):
        fault = "[[faults=empty]] " if i % 5 == 0 else "[[faults=length]] " if i % 7 == 0 else ""
        lines.append(json.dumps({"instruction": f"{fault}Explain topic number {i} to a child."}))
    path.write_text("\n".join(lines) + "\n")
    teacher = OpenAIConfig(model="fake", base_url=fake_openai.url, max_retries=0, defaults={"temperature": 0.7})
    cfg = GenerateConfig(method="responses", target=n, batch_size=10, instructions_file=str(path))
    out = _run(run_name="faulty", teacher=teacher, generate=cfg, db=str(tmp_path / "f.duckdb"))
    faulty = sum(1 for i in range(n) if i % 5 == 0 or i % 7 == 0)
    assert out["status"] == "completed" and out["kept"] == n, out
    assert out["retried"] == faulty and out["lost"] == {} and out["sent"] == n + faulty
    keys = Store(str(tmp_path / "f.duckdb")).query("SELECT count(DISTINCT key) AS n FROM requests")[0]["n"]
    assert keys == n + faulty  # every retry its own ledger row


def test_greedy_answers_are_not_asked_again_and_the_loss_is_reported(tmp_path, fake_openai):
    from generators.teachers.config import OpenAIConfig

    path = tmp_path / "cut.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"[[faults=length]] Explain item {i}."}) + "\n" for i in range(4)))
    teacher = OpenAIConfig(model="fake", base_url=fake_openai.url, max_retries=0, defaults={"temperature": 0})
    cfg = GenerateConfig(method="responses", target=4, batch_size=4, instructions_file=str(path))
    out = _run(run_name="greedy", teacher=teacher, generate=cfg, db=str(tmp_path / "g.duckdb"))
    assert out["kept"] == 0 and out["retried"] == 0 and out["lost"] == {"truncated": 4} and out["sent"] == 4


def test_rationales_without_gold_sample_four_answers_and_keep_the_majority(tmp_path, monkeypatch):
    """No label: the flow samples D = 4 reasoning paths per question by default (at 0.7) and
    keeps the ones agreeing with the majority answer."""
    seen = []

    def script(request):
        seen.append((request.sample_index, request.params.temperature))
        answer = "13" if request.sample_index == 3 else "12"
        return f"Five plus seven makes twelve. So the answer is {answer}."

    _patched_teacher(monkeypatch, script)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "Ava has 5 apples and picks 7 more. How many?"}) + "\n")
    cfg = GenerateConfig(method="rationales", target=10, batch_size=4, instructions_file=str(questions))
    out = _run(run_name="vote", teacher=ScriptedConfig(), generate=cfg, db=str(tmp_path / "v.duckdb"))
    assert sorted(seen) == [(0, 0.7), (1, 0.7), (2, 0.7), (3, 0.7)]
    rows = Store(str(tmp_path / "v.duckdb")).query(
        "SELECT response, label, json_extract_string(metadata, '$.label_source') AS source FROM samples "
        "WHERE method = 'rationales'")
    assert rows == [{"response": "12", "label": "12", "source": "majority"}]  # three answers, one sample
    assert out["dropped"] == {"not_majority": 1}
