"""The LLM judge in the curate flow: verdicts stored as 'judge' decisions, low scores and
failed verdicts left out of the dataset, and nothing judged (or paid for) twice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.config import CurateConfig, load_config
from generators.teachers.config import ScriptedConfig
from generators.teachers.scripted import ScriptedTeacher
from generators.templates import load_template
from storage.datasets import load_rows
from core.errors import InputError
from storage.records import Instruction, Sample
from storage.store import Store

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]

ROOT = Path(__file__).resolve().parent.parent

TEXTS = {
    "a": ("Name a fruit.", "", "Apples are crisp fruit that grow on trees in cool climates.", "Accurate.\nScore: 9"),
    "b": ("Name a river.", "", "The Danube flows through ten countries before reaching the Black Sea.", "Good.\n8/10"),
    "c": ("Name a planet.", "", "Mars is the fourth planet from the sun and looks red in the night sky.",
          "Fine, just enough.\nScore: 7"),  # exactly at the threshold: kept
    "d": ("Name a metal.", "", "Copper conducts electricity well, which is why wires are made from it.",
          "Vague.\nScore: 3"),
    "e": ("Translate to French.", "good morning", "Good morning is a greeting used early in the day.",
          "Does not translate.\nScore: 2"),
    "f": ("Name a bird.", "", "Robins sing early in the morning and eat worms from the lawn.", None),  # unparseable
    "refusal": ("Name a secret.", "", "I'm sorry, but I cannot share that information with you.", None),
}
UNPARSEABLE = "I would rather not grade this one."


def _prompt(instruction: str, input_: str, response: str) -> str:
    from core.text import format_prompt

    return load_template("judge_single").render(question=format_prompt(instruction, input_), answer=response)


def _fill(store: Store, keys=TEXTS) -> dict[str, str]:
    records, ids = [], {}
    for key in keys:
        instruction, input_, response, _ = TEXTS[key]
        ins = Instruction(text=instruction, input=input_, method="seed")
        sample = Sample(instruction_id=ins.id, response=response, method="responses", teacher_model="t")
        records += [ins, sample]
        ids[key] = sample.id
    store.ingest(records)
    return ids


def _judge_teacher() -> ScriptedConfig:
    script = {_prompt(i, x, r): verdict for i, x, r, verdict in TEXTS.values() if verdict is not None}
    return ScriptedConfig(model="judge-script", script=script, default_response=UNPARSEABLE)


@pytest.fixture
def calls(monkeypatch):
    """Every request the scripted judge receives (below the ledger: what was paid for)."""
    seen: list = []
    original = ScriptedTeacher.agenerate

    async def counting(self, requests):
        seen.extend(requests)
        return await original(self, requests)

    monkeypatch.setattr(ScriptedTeacher, "agenerate", counting)
    return seen


def _config(tmp_path, **judge) -> CurateConfig:
    return CurateConfig.model_validate({
        "dataset": "judged", "eval_fraction": 0.0, "export_formats": [], "emit_event": False,
        "export_dir": str(tmp_path / "exports"), "filters": {"exact": True, "quality": {}},
        "judge": {"min_score": 7, "batch_size": 4, "params": {"max_retries": 2}, **judge},
    })


def test_judge_decisions_exclusions_and_no_rejudging(tmp_path, calls):
    from flows.curate import curate_flow

    db = tmp_path / "j.duckdb"
    store = Store(db)
    ids = _fill(store)
    config = _config(tmp_path, teacher=_judge_teacher().model_dump())
    out = curate_flow(run_name="j1", curate=config, db=str(db))

    # The refusal is dropped by the quality filter before the judge: never sent to it.
    assert out["dropped"] == {"quality:refusal": 1}
    judge = out["judge"]
    assert (judge["candidates"], judge["judged"], judge["kept"], judge["low_score"], judge["judge_failed"]) == (
        6, 6, 3, 2, 1)
    # Six first verdicts + two retries of the unparseable one (new sample_index each).
    assert judge["requests"] == 8 and judge["sent"] == 8 and len(calls) == 8
    assert sorted(r.sample_index for r in calls if "Robins" in r.messages[-1]["content"]) == [0, 1, 2]
    assert "the judge scored 6: kept 3, 2 below 7, 1 failed" in out["message"]

    rows = store.query("SELECT item_id, score, kept, reason, run_id FROM filter_decisions WHERE filter = 'judge'")
    got = {r["item_id"]: (r["score"], r["kept"], r["reason"]) for r in rows}
    assert got == {
        ids["a"]: (9.0, True, ""), ids["b"]: (8.0, True, ""), ids["c"]: (7.0, True, ""),
        ids["d"]: (3.0, False, "low_score"), ids["e"]: (2.0, False, "low_score"),
        ids["f"]: (None, False, "judge_failed"),
    }
    run_id = store.query("SELECT id FROM runs WHERE flow = 'curate' AND name = 'j1'")[0]["id"]
    assert {r["run_id"] for r in rows} == {run_id}
    # Every judge request is in the ledger, under this curate run.
    assert store.query("SELECT count(*) AS n FROM requests WHERE run_id = ?", [run_id])[0]["n"] == 8

    # The frozen version holds only what the judge kept (and the filters did not drop).
    version_rows = {r["sample_id"] for r in load_rows(store, "judged", out["version"])}
    assert version_rows == {ids["a"], ids["b"], ids["c"]}
    assert "filter = 'judge' AND j.kept" in out["sql"]
    assert {r["sample_id"] for r in store.query(out["sql"])} == version_rows  # stored SQL reproduces it

    # A second run: nothing left to judge, no request sent, same rows.
    again = curate_flow(run_name="j2", curate=config, db=str(db))
    assert again["judge"]["candidates"] == 0 and again["judge"]["judged"] == 0 and again["judge"]["sent"] == 0
    assert len(calls) == 8
    assert store.query("SELECT count(*) AS n FROM requests")[0]["n"] == 8
    assert {r["sample_id"] for r in load_rows(store, "judged", again["version"])} == version_rows
    assert store.query("SELECT count(*) AS n FROM filter_decisions WHERE filter = 'judge'")[0]["n"] == 6


def test_pipeline_teacher_judges_and_max_samples_waits(tmp_path, calls):
    """No judge.teacher: the flow's (pipeline's) teacher judges. With max_samples, the
    samples not judged yet stay out of the version until a later run judges them."""
    from flows.curate import curate_flow

    db = tmp_path / "j.duckdb"
    store = Store(db)
    ids = _fill(store, ["a", "b", "d"])
    config = _config(tmp_path, max_samples=2)
    first = curate_flow(run_name="m1", curate=config, db=str(db), teacher=_judge_teacher())
    assert first["judge"]["judged"] == 2 and first["judge"]["not_judged"] == 1 and len(calls) == 2
    judged = {r["item_id"] for r in store.query("SELECT item_id FROM filter_decisions WHERE filter = 'judge'")}
    kept_now = {r["sample_id"] for r in load_rows(store, "judged", first["version"])}
    assert kept_now == judged - {ids["d"]}  # the unjudged sample is not in yet

    second = curate_flow(run_name="m2", curate=config, db=str(db), teacher=_judge_teacher())
    assert second["judge"]["judged"] == 1 and len(calls) == 3
    assert {r["sample_id"] for r in load_rows(store, "judged", second["version"])} == {ids["a"], ids["b"]}


def _uncommented(section: str, path):
    """configs/curate-and-train.yaml with its commented-out ``section:`` example switched on."""
    lines, on = [], False
    for line in (ROOT / "configs" / "curate-and-train.yaml").read_text().splitlines():
        if line.strip() == f"# {section}:":
            on = True
        if on and line.startswith("  #"):
            line = "  " + line[len("  # "):]
        elif on:
            on = False
        lines.append(line)
    path.write_text("\n".join(lines))
    return path


def test_judge_config_in_yaml_and_cli_override(tmp_path):
    # The commented example in configs/curate-and-train.yaml is a valid judge section.
    path = _uncommented("judge", tmp_path / "judge.yaml")
    config = load_config(path)
    assert config.curate.judge is not None and config.curate.judge.min_score == 7
    assert config.curate.judge.teacher.backend == "openai"

    # `distill curate --judge-threshold 8` is this override; it turns the judge on.
    shipped = load_config(ROOT / "configs" / "curate-and-train.yaml", {"curate.judge.min_score": 8})
    assert shipped.curate.judge.enabled and shipped.curate.judge.min_score == 8
    assert shipped.curate.judge.teacher is None  # the pipeline's teacher judges

    with pytest.raises(InputError, match="outside the judge's score scale"):
        load_config(ROOT / "configs" / "curate-and-train.yaml", {"curate.judge.min_score": 11})


# --- curate.compare: the pairwise judge over two sources' answers -------------------------

QUESTIONS = {
    "i1": "Why is the sky blue?",
    "i2": "How do plants make food?",
    "i3": "What causes tides?",
    "i4": "Why do we have seasons?",
}
TEACHER_ANSWERS = {
    "i1": "Sunlight scatters off air molecules, and blue light scatters the most, so the sky looks blue.",
    "i2": "Plants turn sunlight, water and carbon dioxide into sugar and oxygen through photosynthesis.",
    "i3": "The moon's gravity pulls on the oceans, raising bulges of water that we see as tides.",
    "i4": "The tilt of the earth's axis changes how directly sunlight hits each hemisphere over the year.",
}
STUDENT_ANSWERS = {
    "i1": "The sky is blue because the ocean reflects its colour upwards into the air.",
    "i2": "Plants use photosynthesis: light energy splits water and fixes carbon dioxide into glucose.",
    "i3": "Tides come from the moon and the sun pulling on the sea as the earth turns.",
    "i4": "Seasons happen because the earth's tilted axis changes the angle of sunlight during its orbit.",
}
# What the judge answers, by (instruction, which answer is shown first). A position-biased
# judge: each order alone would mislead, the average does not.
VERDICTS = {
    ("i1", "a"): "The first is correct, the second is wrong.\nScores: 9 5",
    ("i1", "b"): "The second is correct.\nScores: 6 8",
    ("i2", "a"): "The second is more precise.\nScores: 6 7",
    ("i2", "b"): "The first is more precise.\nScores: 8 5",
    ("i3", "b"): "Both are fine.\nScores: 7 7",  # ("i3", "a") is one score, not a pair: never parses
    ("i4", "a"): "Both explain the tilt.\nScores: 8 8",
    ("i4", "b"): "Both explain the tilt.\nScores: 8 8",
}
ONE_SCORE = "Fair.\nScore: 8/10"


def _pairwise_script(template: str = "judge_pairwise", verdicts=VERDICTS) -> dict[str, str]:
    t = load_template(template)
    script = {}
    for (key, first), verdict in verdicts.items():
        a, b = TEACHER_ANSWERS[key], STUDENT_ANSWERS[key]
        shown = (a, b) if first == "a" else (b, a)
        script[t.render(question=QUESTIONS[key], answer_1=shown[0], answer_2=shown[1])] = verdict
    return script


def _fill_sources(store: Store, student_keys=("i1", "i2", "i3")) -> dict[str, dict[str, str]]:
    ids: dict[str, dict[str, str]] = {"teacher": {}, "student": {}}
    records = []
    for key, question in QUESTIONS.items():
        ins = Instruction(text=question, method="seed")
        teacher = Sample(instruction_id=ins.id, response=TEACHER_ANSWERS[key], teacher_model="teacher-x")
        records += [ins, teacher]
        ids["teacher"][key] = teacher.id
        if key in student_keys:
            student = Sample(instruction_id=ins.id, response=STUDENT_ANSWERS[key], teacher_model="student-y")
            records.append(student)
            ids["student"][key] = student.id
    # A later second answer of the teacher to i1: the earliest answer of each source is the pair.
    records.append(Sample(instruction_id=records[0].id, response="Rayleigh scattering makes the sky blue.",
                          teacher_model="teacher-x"))
    store.ingest(records)
    return ids


def _compare_config(tmp_path, **compare) -> CurateConfig:
    return CurateConfig.model_validate({
        "dataset": "compared", "eval_fraction": 0.0, "export_formats": [], "emit_event": False,
        "export_dir": str(tmp_path / "exports"), "filters": {"exact": True},
        "compare": {"a": "teacher-x", "b": "student-y", "batch_size": 2, "params": {"max_retries": 1},
                    "teacher": ScriptedConfig(model="judge-script", script=_pairwise_script(),
                                              default_response=ONE_SCORE).model_dump(), **compare},
    })


def test_compare_judges_both_orders_averages_and_never_twice(tmp_path, calls):
    from flows.curate import curate_flow

    db = tmp_path / "c.duckdb"
    store = Store(db)
    ids = _fill_sources(store)
    config = _compare_config(tmp_path)
    out = curate_flow(run_name="c1", curate=config, db=str(db))

    c = out["compare"]
    assert {k: c[k] for k in ("a", "b", "judge", "pairs", "candidates", "judged", "a_wins", "b_wins", "ties",
                              "failed", "not_judged")} == {
        "a": "teacher-x", "b": "student-y", "judge": "judge-script", "pairs": 3, "candidates": 3, "judged": 3,
        "a_wins": 1, "b_wins": 1, "ties": 0, "failed": 1, "not_judged": 0}
    # Two orders of three pairs, plus one retry of the order whose verdict named one score.
    assert c["requests"] == 7 and c["sent"] == 7 and len(calls) == 7
    assert c["standings"] == {"pairs": 2, "a_wins": 1, "b_wins": 1, "ties": 0, "failed": 1,
                              "mean_a": 7.0, "mean_b": 6.5}
    assert ("compared teacher-x (a) with student-y (b) on 3 new pairs: a won 1, b won 1, 0 ties, 1 failed "
            "(all 2 judged pairs: mean a 7, b 6.5)") in out["message"]

    run_id = store.query("SELECT id FROM runs WHERE flow = 'curate' AND name = 'c1'")[0]["id"]
    rows = {r["sample_a"]: r for r in store.query("SELECT * FROM pairwise_judgments")}
    t, s = ids["teacher"], ids["student"]
    assert set(rows) == {t["i1"], t["i2"], t["i3"]}  # the teacher's first answer to i1, not its second
    got = {k: (rows[t[k]]["sample_b"], rows[t[k]]["ok"], rows[t[k]]["score_a"], rows[t[k]]["score_b"],
               rows[t[k]]["winner"], rows[t[k]]["ab_score_a"], rows[t[k]]["ab_score_b"], rows[t[k]]["ba_score_a"],
               rows[t[k]]["ba_score_b"]) for k in ("i1", "i2", "i3")}
    assert got == {
        "i1": (s["i1"], True, 8.5, 5.5, "a", 9.0, 5.0, 8.0, 6.0),  # A: (9 + 8) / 2, B: (5 + 6) / 2
        "i2": (s["i2"], True, 5.5, 7.5, "b", 6.0, 7.0, 5.0, 8.0),
        "i3": (s["i3"], False, None, None, None, None, None, 7.0, 7.0),
    }
    i1, i3 = rows[t["i1"]], rows[t["i3"]]
    assert (i1["ab_text"], i1["ba_text"]) == (VERDICTS["i1", "a"], VERDICTS["i1", "b"])
    assert i3["ab_text"] == ONE_SCORE and i3["error"] == "unparseable verdict after 2 attempts"
    assert {r["model_a"] for r in rows.values()} == {"teacher-x"} and {r["model_b"] for r in rows.values()} == {
        "student-y"}
    assert {r["judge_model"] for r in rows.values()} == {"judge-script"}
    assert {r["template_version"] for r in rows.values()} == {"judge_pairwise@1"}
    assert {r["run_id"] for r in rows.values()} == {run_id}
    assert {r["instruction_id"] for r in rows.values()} == {
        Instruction.key_for(QUESTIONS[k]) for k in ("i1", "i2", "i3")}
    keys = [r[k] for r in rows.values() for k in ("ab_request_key", "ba_request_key")]
    assert store.query("SELECT count(*) AS n FROM requests WHERE key IN (SELECT unnest(?::VARCHAR[])) "
                       "AND status = 'ok' AND run_id = ?", [keys, run_id])[0]["n"] == 6
    # The A-first request shows the teacher's answer first; the swapped one the student's.
    i1_prompts = [r.messages[-1]["content"] for r in calls if QUESTIONS["i1"] in r.messages[-1]["content"]]
    assert [p.index(TEACHER_ANSWERS["i1"]) < p.index(STUDENT_ANSWERS["i1"]) for p in i1_prompts] == [True, False]
    assert store.query("SELECT model_a, model_b, judge_model, pairs, failed FROM pairwise_standings") == [
        {"model_a": "teacher-x", "model_b": "student-y", "judge_model": "judge-script", "pairs": 2, "failed": 1}]
    assert store.check_integrity() == {}

    # A re-run (a new run, and the same run resumed) judges nothing and pays for nothing.
    for name in ("c2", "c1"):
        again = curate_flow(run_name=name, curate=config, db=str(db))
        assert (again["compare"]["pairs"], again["compare"]["candidates"], again["compare"]["judged"],
                again["compare"]["sent"]) == (3, 0, 0, 0)
        assert again["compare"]["standings"] == c["standings"]
    assert len(calls) == 7
    assert store.query("SELECT count(*) AS n FROM requests")[0]["n"] == 7
    assert store.query("SELECT count(*) AS n FROM pairwise_judgments")[0]["n"] == 3

    # The student answers one more instruction: only that new pair is judged.
    student = Sample(instruction_id=Instruction.key_for(QUESTIONS["i4"]), response=STUDENT_ANSWERS["i4"],
                     teacher_model="student-y")
    store.ingest([student])
    third = curate_flow(run_name="c3", curate=config, db=str(db))
    assert (third["compare"]["candidates"], third["compare"]["judged"], third["compare"]["ties"],
            third["compare"]["sent"]) == (1, 1, 1, 2)
    assert len(calls) == 9
    assert store.query("SELECT sample_b, score_a, score_b, winner FROM pairwise_judgments WHERE sample_a = ?",
                       [t["i4"]]) == [{"sample_b": student.id, "score_a": 8.0, "score_b": 8.0, "winner": "tie"}]


def test_compare_scores_first_with_another_judge(tmp_path, calls):
    """verdict_order scores_first reaches the judge from curate; another judge model judges
    pairs the first one judged already (the key is the pair and the judge)."""
    from flows.curate import curate_flow

    db = tmp_path / "c.duckdb"
    store = Store(db)
    _fill_sources(store, student_keys=("i1",))
    curate_flow(run_name="c1", curate=_compare_config(tmp_path), db=str(db))
    assert len(calls) == 2
    first_line = {("i1", "a"): "9 4\nThe first is right.", ("i1", "b"): "4 8\nThe second is right."}
    scores_first = ScriptedConfig(model="judge-2", script=_pairwise_script("judge_pairwise_scores_first", first_line))
    out = curate_flow(run_name="c2", db=str(db), curate=_compare_config(
        tmp_path, teacher=scores_first.model_dump(), params={"verdict_order": "scores_first", "max_retries": 0}))
    assert (out["compare"]["judge"], out["compare"]["judged"], out["compare"]["a_wins"]) == ("judge-2", 1, 1)
    assert len(calls) == 4
    row = store.query("SELECT score_a, score_b, template_version, ab_text FROM pairwise_judgments "
                      "WHERE judge_model = 'judge-2'")
    assert row == [{"score_a": 8.5, "score_b": 4.0, "template_version": "judge_pairwise_scores_first@1",
                    "ab_text": "9 4\nThe first is right."}]
    assert store.query("SELECT count(*) AS n FROM pairwise_judgments")[0]["n"] == 2


def test_compare_config_in_yaml(tmp_path):
    # The commented example in configs/curate-and-train.yaml is a valid compare section.
    compare = load_config(_uncommented("compare", tmp_path / "compare.yaml")).curate.compare
    assert (compare.a, compare.b, compare.params.verdict_order, compare.teacher.model) == (
        "gpt-4o-mini", "student-v1", "scores_first", "gpt-4o")
    assert load_config(ROOT / "configs" / "curate-and-train.yaml").curate.compare is None


def test_compare_without_pairs_and_config_errors(tmp_path, calls):
    from flows.curate import curate_flow

    db = tmp_path / "c.duckdb"
    _fill_sources(Store(db), student_keys=())
    out = curate_flow(run_name="c1", curate=_compare_config(tmp_path), db=str(db))
    assert (out["compare"]["pairs"], out["compare"]["judged"], out["compare"]["judge"]) == (0, 0, None)
    assert calls == []

    for overrides, problem in [
        ({"curate.compare.a": "t", "curate.compare.b": "t"}, "curate.compare: compare.a and compare.b both name 't'"),
        ({"curate.compare.a": "t"}, "curate.compare.b: Field required"),
        ({"curate.compare.a": "t", "curate.compare.b": "s", "curate.compare.params.verdict_order": "last"},
         "curate.compare.params.verdict_order: Input should be 'explanation_first' or 'scores_first'"),
        ({"curate.compare.a": "t", "curate.compare.b": "s", "curate.compare.batch_size": 0},
         "curate.compare.batch_size: Input should be greater than or equal to 1"),
    ]:
        with pytest.raises(InputError, match="invalid config: " + re.escape(problem)) as err:
            load_config(None, overrides)
        assert "\n" not in str(err.value)
