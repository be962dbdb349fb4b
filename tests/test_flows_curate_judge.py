"""The LLM judge in the curate flow: verdicts stored as 'judge' decisions, low scores and
failed verdicts left out of the dataset, and nothing judged (or paid for) twice."""

from __future__ import annotations

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


def test_judge_config_in_yaml_and_cli_override(tmp_path):
    # The commented example in configs/curate-and-train.yaml is a valid judge section.
    text = (ROOT / "configs" / "curate-and-train.yaml").read_text()
    lines, on = [], False
    for line in text.splitlines():
        if line.strip() == "# judge:":
            on = True
        if on and line.startswith("  #"):
            line = "  " + line[len("  # "):]
        elif on:
            on = False
        lines.append(line)
    path = tmp_path / "judge.yaml"
    path.write_text("\n".join(lines))
    config = load_config(path)
    assert config.curate.judge is not None and config.curate.judge.min_score == 7
    assert config.curate.judge.teacher.backend == "openai"

    # `distill curate --judge-threshold 8` is this override; it turns the judge on.
    shipped = load_config(ROOT / "configs" / "curate-and-train.yaml", {"curate.judge.min_score": 8})
    assert shipped.curate.judge.enabled and shipped.curate.judge.min_score == 8
    assert shipped.curate.judge.teacher is None  # the pipeline's teacher judges

    with pytest.raises(InputError, match="outside the judge's score scale"):
        load_config(ROOT / "configs" / "curate-and-train.yaml", {"curate.judge.min_score": 11})
