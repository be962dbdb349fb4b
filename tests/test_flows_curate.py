"""The curate flow: every decision recorded, versions frozen and exported, the event emitted."""

from __future__ import annotations

import json

import pytest

from flows.config import CurateConfig
from storage.datasets import load_rows
from storage.records import Instruction, Sample
from storage.store import Store

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]


def _fill(store: Store) -> dict[str, str]:
    """Eight samples: five distinct, one refusal, one exact and one near duplicate."""
    records, ids = [], {}
    texts = {
        "a": ("Name a fruit.", "Apples are crisp fruit that grow on trees in cool climates."),
        "b": ("Name a river.", "The Danube flows through ten countries before reaching the Black Sea."),
        "c": ("Name a planet.", "Mars is the fourth planet from the sun and looks red in the night sky."),
        "d": ("Name a metal.", "Copper conducts electricity well, which is why wires are made from it."),
        "e": ("Name a bird.", "Robins sing early in the morning and eat worms from the lawn."),
        "refusal": ("Name a secret.", "I'm sorry, but I cannot share that information with you."),
        "near": ("Name a river!", "The Danube flows through ten countries before reaching the Black Sea!"),
    }
    for key, (instruction, response) in texts.items():
        ins = Instruction(text=instruction, method="seed")
        sample = Sample(instruction_id=ins.id, response=response, method="responses", teacher_model="t")
        records += [ins, sample]
        ids[key] = sample.id
    store.ingest(records)
    return ids


def test_curate_judges_freezes_exports_and_emits(tmp_path, monkeypatch):
    from flows import curate as curate_module

    events = []
    monkeypatch.setattr(curate_module, "emit_event", lambda **kw: events.append(kw))
    db = tmp_path / "c.duckdb"
    store = Store(db)
    ids = _fill(store)
    config = CurateConfig.model_validate({
        "dataset": "cur", "eval_fraction": 0.0, "export_dir": str(tmp_path / "exports"),
        "export_formats": ["jsonl-chat", "parquet"],
        "filters": {"exact": True, "quality": {}, "minhash": {"threshold": 0.5}},
    })
    out = curate_module.curate_flow(run_name="c1", curate=config, db=str(db))

    assert out["candidates"] == 7 and out["judged"] == 7
    assert out["dropped"] == {"quality:refusal": 1, "minhash:near_duplicate": 1}
    assert (out["dataset"], out["version"], out["rows"], out["new_rows"]) == ("cur", 1, 5, 5)
    decisions = store.query("SELECT item_id, filter, kept, reason FROM filter_decisions ORDER BY filter")
    by_item: dict[str, list] = {}
    for d in decisions:
        by_item.setdefault(d["item_id"], []).append((d["filter"], d["kept"], d["reason"]))
    assert sorted(by_item[ids["refusal"]]) == [("exact", True, ""), ("quality", False, "refusal")]
    assert sorted(by_item[ids["a"]]) == [("exact", True, ""), ("minhash", True, ""), ("quality", True, "")]
    assert ("minhash", False, "near_duplicate") in by_item[ids["near"]] or (
        "minhash", False, "near_duplicate") in by_item[ids["b"]]
    rows = load_rows(store, "cur", 1)
    assert len(rows) == 5 and ids["refusal"] not in {r["sample_id"] for r in rows}
    chat = (tmp_path / "exports" / "cur" / "v1" / "chat.jsonl").read_text().splitlines()
    assert len(chat) == 5 and json.loads(chat[0])["messages"][-1]["role"] == "assistant"
    assert (tmp_path / "exports" / "cur" / "v1" / "data.parquet").exists()
    (event,) = events
    assert event["event"] == "distill.dataset.ready"
    assert event["payload"]["version"] == 1 and event["payload"]["name"] == "cur"
    assert event["resource"]["prefect.resource.id"] == "distill.dataset.cur"
    stored_sql = store.query("SELECT sql FROM datasets WHERE name = 'cur'")[0]["sql"]
    assert len(store.query(stored_sql)) == 5  # the stored SQL reproduces the version

    # Nothing new: everything is judged already; version 1 holds these rows: no version, no event.
    again = curate_module.curate_flow(run_name="c2", curate=config, db=str(db))
    assert again["candidates"] == 0 and again["version"] == 1 and not again["new_version"]
    assert again["new_rows"] == 0 and again["exports"] == {} and "no change since cur@1" in again["message"]
    assert len(events) == 1 and store.query("SELECT count(*) AS n FROM datasets")[0]["n"] == 1

    # A new sample: only it is judged; it is new in version 2, and the event fires again.
    ins = Instruction(text="Name a tree.", method="seed")
    store.ingest([ins, Sample(instruction_id=ins.id, response="Oaks live for centuries and drop acorns in autumn.",
                              method="responses", teacher_model="t")])
    third = curate_module.curate_flow(run_name="c3", curate=config, db=str(db))
    assert third["candidates"] == 1 and third["version"] == 2 and third["new_rows"] == 1
    assert len(events) == 2 and events[-1]["payload"]["n_new"] == 1


def test_too_few_rows_is_refused(tmp_path):
    from flows.curate import curate_flow
    from core.errors import InputError

    db = tmp_path / "c.duckdb"
    _fill(Store(db))
    with pytest.raises(InputError, match="fewer than curate.min_rows=100"):
        curate_flow(run_name="few", curate=CurateConfig(dataset="x", min_rows=100, emit_event=False,
                                                        export_formats=[]), db=str(db))
