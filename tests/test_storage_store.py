"""Store: migrations, ingest/dedup, ledger upserts, integrity, and bad database files."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from storage import schema
from core.errors import DatabaseError
from storage.records import (
    FilterDecision,
    Instruction,
    LionIteration,
    LionJudgment,
    LionPoolEntry,
    MinHashSignature,
    PairwiseJudgment,
    RequestRecord,
    Run,
    Sample,
    utcnow,
)
from storage.store import TABLES, Store, latest_schema_version, records_to_arrow


def _seed_records(n: int = 5) -> tuple[list[Instruction], list[Sample]]:
    instructions = [Instruction(text=f"Task number {i}", method="seed") for i in range(n)]
    samples = [Sample(instruction_id=i.id, response=f"Answer to {i.text}", method="seed") for i in instructions]
    return instructions, samples


def test_init_creates_every_table_and_records_version(store):
    assert store.schema_version() == latest_schema_version() >= 1
    assert set(store.table_counts()) == set(TABLES)
    assert store.query("SELECT count(*) AS n FROM schema_version")[0]["n"] == len(schema.migrations())
    assert store.query("SELECT * FROM sample_view") == []


def test_older_database_is_upgraded_on_open(tmp_path, monkeypatch):
    db = tmp_path / "old.duckdb"
    Store(db).init()  # a database at the latest version
    # This "newer code" ships a second migration.
    migrations = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, migrations)
    (migrations / "999_extra.sql").write_text("CREATE TABLE extra (a INTEGER);")
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", migrations)

    s = Store(db)
    s.ingest([Instruction(text="hello", method="seed")])  # first write upgrades
    assert s.schema_version() == 999
    assert s.query("SELECT count(*) AS n FROM extra") == [{"n": 0}]


def test_newer_database_is_refused(tmp_path):
    db = tmp_path / "new.duckdb"
    Store(db).init()
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_version VALUES (9999, 'from_the_future', now())")
    con.close()
    for action in (lambda s: s.query("SELECT 1"), lambda s: s.ingest([]), lambda s: s.init()):
        with pytest.raises(DatabaseError, match="newer than this distillery"):
            action(Store(db))


def test_not_a_duckdb_file(tmp_path):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("this is a text file, not a database\n" * 200)
    with pytest.raises(DatabaseError, match="notes.duckdb is not a DuckDB database"):
        Store(bad).query("SELECT 1")
    with pytest.raises(DatabaseError, match="not a DuckDB database"):
        Store(bad).ingest([Instruction(text="x", method="seed")])


def test_reading_a_missing_database_says_so(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        Store(tmp_path / "nope.duckdb").query("SELECT 1")


def test_reingest_is_all_duplicates(store):
    instructions, samples = _seed_records()
    first = store.ingest(instructions + samples)
    assert first.new == {"instructions": 5, "samples": 5}
    assert first.duplicate == {"instructions": 0, "samples": 0}

    # The same content again, re-created (new timestamps) and with whitespace/case noise.
    again = [Instruction(text=f"  task NUMBER {i} ", method="seed") for i in range(5)]
    second = store.ingest(again + samples + samples)
    assert second.new == {"instructions": 0, "samples": 0}
    assert second.duplicate == {"instructions": 5, "samples": 10}
    assert store.table_counts()["instructions"] == 5


def test_small_batch_into_a_big_table(store):
    # A batch much smaller than the table goes through ON CONFLICT (index lookups)
    # rather than the anti-join: the counts must be the same either way.
    store.ingest([Instruction(text=f"bulk {i}", method="seed") for i in range(200)])
    batch = [Instruction(text=f"bulk {i}", method="seed") for i in (1, 2, 2)] + [
        Instruction(text=f"fresh {i}", method="seed") for i in (1, 1, 2)
    ]
    result = store.ingest(batch)
    assert (result.new, result.duplicate) == ({"instructions": 2}, {"instructions": 4})
    assert store.table_counts()["instructions"] == 202


def test_mixed_batch_and_all_record_types(store):
    ins, samples = _seed_records(2)
    run = Run(flow="test", config={"a": 1})
    result = store.ingest(
        [
            run,
            *ins,
            *samples,
            FilterDecision(item_id=samples[0].id, filter="quality.refusal", kept=False, score=0.9, reason="refusal"),
            MinHashSignature(item_id=samples[0].id, config="p4-n3-s0", signature=[0, 1, 2**32 - 1, 7]),
            RequestRecord(key="k", model="m", backend="scripted", status="ok", response_text="hi", messages=[{"role": "user", "content": "x"}]),
        ]
    )
    assert result.total_new == 8 and result.total_duplicate == 0
    row = store.query("SELECT config FROM runs")[0]
    assert row["config"] == '{"a":1}'
    assert store.query("SELECT signature FROM minhash_signatures")[0]["signature"] == [0, 1, 2**32 - 1, 7]
    assert store.query("SELECT reason FROM filter_decisions WHERE NOT kept") == [{"reason": "refusal"}]
    view = store.query("SELECT instruction, response, instruction_method FROM sample_view ORDER BY 1")
    assert view[0] == {"instruction": "Task number 0", "response": "Answer to Task number 0", "instruction_method": "seed"}


def test_arrow_conversion_matches_record_row():
    _, samples = _seed_records(3)
    samples[1] = samples[1].model_copy(update={"sampling_params": {"temperature": 0.7, "n": [1, 2]}})
    table = records_to_arrow(samples)
    assert table.to_pylist() == [s.row() for s in samples]



def test_arrow_json_keeps_equal_values_of_different_types_apart():
    # 1, 1.0 and True are equal (and hash alike) in Python but not in JSON: records that
    # share a batch must each keep their own text.
    _, samples = _seed_records(5)
    params = [{"temperature": 1}, {"temperature": 1.0}, {"temperature": True}, {}, {"temperature": 1}]
    samples = [s.model_copy(update={"sampling_params": p}) for s, p in zip(samples, params)]
    table = records_to_arrow(samples)
    assert table.column("sampling_params").to_pylist() == [
        '{"temperature":1}', '{"temperature":1.0}', '{"temperature":true}', "{}", '{"temperature":1}'
    ]
    assert table.to_pylist() == [s.row() for s in samples]


def test_in_batch_repeats_keep_the_first(store):
    instructions, samples = _seed_records(3)
    later = samples[0].model_copy(update={"label": "later copy"})
    result = store.ingest([*instructions, samples[0], samples[1], later, samples[2]])
    assert result.new["samples"] == 3 and result.duplicate["samples"] == 1
    assert store.query("SELECT count(*) AS n FROM samples WHERE label IS NOT NULL") == [{"n": 0}]

def test_request_ledger_upsert(store):
    def req(key, status, **kw):
        return RequestRecord(key=key, model="m", backend="scripted", status=status, **kw)

    r = store.ingest([req("a", "failed", error="timeout"), req("b", "ok", response_text="B")])
    assert r.new == {"requests": 2}
    # a: failed -> ok is an update; b: ok never changes, even to a "newer" failure.
    r = store.ingest([req("a", "ok", response_text="A", attempts=2), req("b", "failed", error="http 503")])
    assert (r.new, r.updated, r.duplicate) == ({"requests": 0}, {"requests": 1}, {"requests": 2})
    rows = {row["key"]: row for row in store.query("SELECT * FROM requests")}
    assert (rows["a"]["status"], rows["a"]["response_text"], rows["a"]["attempts"]) == ("ok", "A", 2)
    assert (rows["b"]["status"], rows["b"]["error"]) == ("ok", None)
    # Within one batch, the ok row of a key wins whatever the order.
    store.ingest([req("c", "ok", response_text="C"), req("c", "failed", error="late")])
    assert store.query("SELECT status FROM requests WHERE key = 'c'") == [{"status": "ok"}]


def test_run_upsert_keeps_finished_state(store):
    run = Run(flow="generate")
    store.ingest([run])
    done = run.model_copy(update={"status": "completed", "ended_at": utcnow(), "counts": {"ok": 3}})
    assert store.ingest([done]).updated == {"runs": 1}
    store.ingest([run])  # a late replay of the "running" state does not undo completion
    assert store.query("SELECT status, counts FROM runs") == [{"status": "completed", "counts": '{"ok":3}'}]


def test_write_context_commits_and_rolls_back(store):
    store.ingest([Run(id="r1", flow="x")])
    with store.write() as con:
        con.execute("UPDATE runs SET status = 'done' WHERE id = 'r1'")
        assert store.query("SELECT status FROM runs") == [{"status": "done"}]  # sees own write
    with pytest.raises(RuntimeError):
        with store.write() as con:
            con.execute("UPDATE runs SET status = 'broken'")
            raise RuntimeError("boom")
    assert store.query("SELECT status FROM runs") == [{"status": "done"}]


def test_journal_rows_commit_with_the_write_block(store):
    """write() replays the journal inside the block's own transaction: the segments go
    only when the block commits; a block that fails leaves them for the next commit."""
    store.init()
    store.spool([Run(id="spooled", flow="x")])
    with pytest.raises(RuntimeError):
        with store.write():
            assert [r["id"] for r in store.query("SELECT id FROM runs")] == ["spooled"]  # replayed in the block
            raise RuntimeError("boom")
    assert store.query("SELECT id FROM runs") == [] and len(store.journal_segments()) == 1
    with store.write():
        store.ingest([Run(id="direct", flow="x")])
    assert store.query("SELECT id FROM runs ORDER BY id") == [{"id": "direct"}, {"id": "spooled"}]
    assert store.journal_segments() == []


def test_steps_inside_write_share_its_transaction(store):
    """ingest / query / a nested write() inside write() on the same thread join its
    transaction: one database open, all committed or all rolled back together."""
    with store.write():
        store.ingest([Run(id="a", flow="x")])
        with store.write() as con:  # nested: the same connection, no commit of its own
            con.execute("UPDATE runs SET status = 'inner' WHERE id = 'a'")
        assert store.query("SELECT status FROM runs") == [{"status": "inner"}]
        assert store.merge_journal() == 0  # the block merged the journal when it began
    assert store.query("SELECT id, status FROM runs") == [{"id": "a", "status": "inner"}]
    with pytest.raises(RuntimeError):
        with store.write():
            store.ingest([Run(id="b", flow="x")])
            raise RuntimeError("boom")
    assert [r["id"] for r in store.query("SELECT id FROM runs")] == ["a"]


def test_training_runs_and_evaluations_defaults(store):
    with store.write() as con:
        con.execute(
            "INSERT INTO training_runs (id, method, dataset_name, dataset_version, params) VALUES ('t1', 'sft', 'd', 1, '{}')"
        )
        con.execute("INSERT INTO evaluations (training_run_id, model_label, metric, value, n) VALUES ('t1', 'sft', 'rougeL', 41.5, 10)")
        con.execute("INSERT INTO evaluations (model_label, metric, value) VALUES ('teacher', 'rougeL', 50)")
    rows = store.query("SELECT id, model_label, created_at IS NOT NULL AS stamped FROM evaluations ORDER BY id")
    assert [(r["id"], r["model_label"], r["stamped"]) for r in rows] == [(1, "sft", True), (2, "teacher", True)]
    assert store.query("SELECT status FROM training_runs") == [{"status": "running"}]


def test_integrity_checks(store):
    ins, samples = _seed_records(2)
    store.ingest(ins + samples)
    assert store.check_integrity() == {}
    orphan = Sample(instruction_id="0" * 32, response="lost")
    child = Instruction(text="child", method="evol_instruct", parent_id="f" * 32, operator="deepen")
    store.ingest([orphan, child])
    problems = store.check_integrity()
    assert problems["sample without instruction"] == [orphan.id]
    assert problems["instruction with unknown parent"] == [child.id]


def test_query_arrow_and_params(store):
    ins, _ = _seed_records(3)
    store.ingest(ins)
    table = store.query_arrow("SELECT text FROM instructions WHERE text LIKE ? ORDER BY text", ["%1"])
    assert table.column("text").to_pylist() == ["Task number 1"]


# --- the journal's pending ledger rows --------------------------------------------------


def _request(key: str, status: str, model: str = "m", **kw) -> RequestRecord:
    text = kw.pop("response_text", f"answer {key}" if status == "ok" else None)
    return RequestRecord(key=key, model=model, backend="scripted", status=status, response_text=text, **kw)


def test_pending_ok_requests_and_keys_read_the_unmerged_journal(tmp_path):
    store = Store(tmp_path / "pending.duckdb")  # no database file yet: the journal alone answers
    assert store.pending_ok_requests({"a"}) == {} and store.pending_ok_keys() == set()
    store.spool([_request("a", "failed", error="timeout"), _request("b", "ok"), _request("c", "ok", model="other")])
    store.spool([_request("a", "ok", response_text="A at last", attempts=2), Run(id="r", flow="x")])
    store.spool([_request("b", "ok", response_text="B again")])  # newer segment: it wins

    found = store.pending_ok_requests(["a", "b", "c", "missing"])
    assert {k: (r["status"], r["response_text"], r["attempts"], r["model"]) for k, r in found.items()} == {
        "a": ("ok", "A at last", 2, "m"), "b": ("ok", "B again", 1, "m"), "c": ("ok", "answer c", 1, "other")}
    assert set(found["a"]) == set(RequestRecord.model_fields)  # every column, as query() gives them
    assert found["a"]["params"] == "{}"  # JSON columns as text
    assert store.pending_ok_requests(["c"]).keys() == {"c"}
    assert store.pending_ok_requests([]) == {}
    assert store.pending_ok_keys() == {"a", "b", "c"}
    assert store.pending_ok_keys("m") == {"a", "b"} and store.pending_ok_keys("other") == {"c"}

    # A damaged segment is skipped by these reads and left for the merge to set aside.
    bad = store.journal_dir / "00000000000000000000-1-deadbeef.arrow"
    bad.write_bytes(b"not arrow")
    assert store.pending_ok_keys() == {"a", "b", "c"} and bad.exists()

    assert store.merge_journal() == 6
    assert store.pending_ok_requests(["a", "b", "c"]) == {} and store.pending_ok_keys() == set()
    assert bad.with_suffix(".bad").exists()
    assert store.query("SELECT key, status FROM requests ORDER BY key") == [
        {"key": "a", "status": "ok"}, {"key": "b", "status": "ok"}, {"key": "c", "status": "ok"}]


# --- 002_views: the named views ---------------------------------------------------------

KEPT_PREDICATE_SQL = """
SELECT s.* FROM sample_view s
WHERE NOT EXISTS (SELECT 1 FROM filter_decisions d WHERE d.item_id = s.sample_id AND NOT d.kept)
ORDER BY s.sample_id"""


def _filtered_store(store: Store) -> dict[str, str]:
    """Five samples with every kind of filter history; their ids by name."""
    ins, samples = _seed_records(5)
    ids = dict(zip(["unjudged", "kept", "dropped", "dropped twice", "instruction dropped"], [s.id for s in samples]))

    def decide(item_id, filter_, kept, reason="", run_id="r1", kind="sample"):
        return FilterDecision(item_id=item_id, item_kind=kind, filter=filter_, kept=kept, reason=reason, run_id=run_id)

    store.ingest([*ins, *samples,
                  decide(ids["kept"], "quality", True), decide(ids["kept"], "minhash", True),
                  decide(ids["dropped"], "quality", True), decide(ids["dropped"], "minhash", False, "near_duplicate"),
                  decide(ids["dropped twice"], "quality", False, "refusal", run_id="r2"),
                  decide(ids["dropped twice"], "judge", False, "low_score", run_id="r2"),
                  decide(ins[4].id, "rouge_novelty", False, "too_similar", kind="instruction"),
                  decide(ins[3].id, "rouge_novelty", False, "too_similar", run_id=None, kind="instruction")])
    ids["instruction 3"], ids["instruction 4"] = ins[3].id, ins[4].id
    return ids


def test_kept_samples_is_the_kept_predicate(store):
    ids = _filtered_store(store)
    kept = store.query("SELECT * FROM kept_samples ORDER BY sample_id")
    assert kept == store.query(KEPT_PREDICATE_SQL)
    # Decisions about an instruction do not drop its samples (they carry the instruction's id).
    assert {r["sample_id"] for r in kept} == {ids["unjudged"], ids["kept"], ids["instruction dropped"]}
    columns = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position"
    assert store.query(columns, ["kept_samples"]) == store.query(columns, ["sample_view"])


def test_dropped_items_and_run_drops(store):
    ids = _filtered_store(store)
    assert store.query("SELECT item_id FROM dropped_items ORDER BY item_id") == [
        {"item_id": i} for i in sorted([ids["dropped"], ids["dropped twice"], ids["instruction 3"], ids["instruction 4"]])]
    drops = store.query("SELECT run_id, filter, reason, n FROM run_drops ORDER BY ALL")
    assert drops == store.query("SELECT run_id, filter, reason, count(*) AS n FROM filter_decisions "
                                "WHERE NOT kept GROUP BY ALL ORDER BY ALL")
    assert drops == [
        {"run_id": "r1", "filter": "minhash", "reason": "near_duplicate", "n": 1},
        {"run_id": "r1", "filter": "rouge_novelty", "reason": "too_similar", "n": 1},
        {"run_id": "r2", "filter": "judge", "reason": "low_score", "n": 1},
        {"run_id": "r2", "filter": "quality", "reason": "refusal", "n": 1},
        {"run_id": None, "filter": "rouge_novelty", "reason": "too_similar", "n": 1},
    ]
    # The kept samples are exactly those not among the dropped items.
    assert store.query("SELECT sample_id FROM kept_samples ORDER BY 1") == store.query(
        "SELECT sample_id FROM sample_view ANTI JOIN dropped_items ON item_id = sample_id ORDER BY 1")


def test_schema_1_database_gets_the_views_at_its_first_write(tmp_path, monkeypatch):
    db = tmp_path / "v1.duckdb"
    only_001 = tmp_path / "migrations_v1"
    only_001.mkdir()
    shutil.copy(schema.MIGRATIONS_DIR / "001_init.sql", only_001)
    ins, samples = _seed_records(2)
    with monkeypatch.context() as m:  # the code of schema version 1, and its data
        m.setattr(schema, "MIGRATIONS_DIR", only_001)
        assert Store(db).init() == 1
        Store(db).ingest(ins + samples)
    old = Store(db)
    assert old.schema_version() == 1  # reading does not migrate (it opens the file read-only)
    old.ingest([FilterDecision(item_id=samples[0].id, filter="quality", kept=False, reason="refusal")])
    assert old.schema_version() == latest_schema_version() >= 2
    assert [(r["version"], r["name"]) for r in old.query("SELECT version, name FROM schema_version ORDER BY 1")][:2] == [
        (1, "init"), (2, "views")]
    assert old.query("SELECT sample_id FROM kept_samples") == [{"sample_id": samples[1].id}]
    assert old.query("SELECT filter, reason, n FROM run_drops") == [{"filter": "quality", "reason": "refusal", "n": 1}]


# --- 003_pairwise: pairwise judge verdicts ----------------------------------------------


def _judgment(a: Sample, b: Sample, judge: str = "j", **kw) -> PairwiseJudgment:
    a_score, b_score = kw.pop("scores", (8.0, 6.0))
    if a_score is None:
        fields = dict(ok=False, error="unparseable verdict after 3 attempts")
    else:
        fields = dict(ok=True, score_a=a_score, score_b=b_score,
                      winner="a" if a_score > b_score else "b" if b_score > a_score else "tie")
    return PairwiseJudgment(instruction_id=a.instruction_id, sample_a=a.id, sample_b=b.id, model_a="t",
                            model_b="s", judge_model=judge, template_version="judge_pairwise@1",
                            **{**fields, **kw})


def test_pairwise_judgments_keys_and_standings(store):
    ins, teacher = _seed_records(3)
    student = [Sample(instruction_id=i.id, response=f"Student answer to {i.text}", teacher_model="s") for i in ins]
    store.ingest([*ins, *teacher, *student])
    rows = [_judgment(teacher[0], student[0], scores=(9.0, 5.0)), _judgment(teacher[1], student[1], scores=(6.0, 6.5)),
            _judgment(teacher[2], student[2], scores=(7.0, 7.0)), _judgment(teacher[0], student[0], judge="other"),
            _judgment(teacher[1], student[1], judge="other", scores=(None, None))]
    assert store.ingest(rows).new == {"pairwise_judgments": 5}
    # The key is the pair and the judge: the same pair judged again by the same judge is a duplicate.
    again = store.ingest([_judgment(teacher[0], student[0], scores=(1.0, 10.0))])
    assert again.new == {"pairwise_judgments": 0} and again.duplicate == {"pairwise_judgments": 1}
    standings = store.query("SELECT * FROM pairwise_standings ORDER BY judge_model")
    assert standings == [
        {"model_a": "t", "model_b": "s", "judge_model": "j", "pairs": 3, "a_wins": 1, "b_wins": 1, "ties": 1,
         "failed": 0, "mean_a": pytest.approx(22 / 3), "mean_b": pytest.approx(18.5 / 3)},
        {"model_a": "t", "model_b": "s", "judge_model": "other", "pairs": 1, "a_wins": 1, "b_wins": 0, "ties": 0,
         "failed": 1, "mean_a": 8.0, "mean_b": 6.0},
    ]
    assert store.table_counts()["pairwise_judgments"] == 5
    assert store.check_integrity() == {}
    store.ingest([_judgment(teacher[0], Sample(instruction_id=ins[0].id, response="never stored"))])
    assert list(store.check_integrity()) == ["pairwise judgment of unknown sample"]


def test_schema_2_database_reads_and_gets_pairwise_judgments_at_its_first_write(tmp_path, monkeypatch):
    db = tmp_path / "v2.duckdb"
    up_to_002 = tmp_path / "migrations_v2"
    up_to_002.mkdir()
    for name in ("001_init.sql", "002_views.sql"):
        shutil.copy(schema.MIGRATIONS_DIR / name, up_to_002)
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS_DIR", up_to_002)
        assert Store(db).init() == 2
    old = Store(db)
    assert old.table_counts()["pairwise_judgments"] == 0  # read-only: not there yet, and no rows
    ins, samples = _seed_records(1)
    other = Sample(instruction_id=ins[0].id, response="another answer", teacher_model="s")
    old.ingest([*ins, *samples, other, _judgment(samples[0], other)])
    assert old.schema_version() == latest_schema_version() >= 3
    assert old.query("SELECT pairs, a_wins FROM pairwise_standings") == [{"pairs": 1, "a_wins": 1}]


# --- 004_lion: Lion's pools, referee verdicts and iterations ----------------------------


def test_lion_tables_keys_and_integrity(store):
    ins, teacher = _seed_records(2)
    student = [Sample(instruction_id=i.id, response=f"Student answer to {i.text}", teacher_model="s",
                      method="lion-student") for i in ins]
    store.ingest([*ins, *teacher, *student])
    pool = [LionPoolEntry(run_id="r", pool=p, instruction_id=i.id, iteration=0, origin="seed")
            for i in ins for p in ("train", "cache")]
    judgment = LionJudgment(run_id="r", iteration=1, instruction_id=ins[0].id, teacher_sample=teacher[0].id,
                            student_sample=student[0].id, referee_model="j", ok=True, teacher_score=8.0,
                            student_score=6.5, gap=1.5, threshold=1.0, label="hard",
                            template_version="judge_pairwise_scores_first@1")
    iteration = LionIteration(run_id="r", iteration=1, train_pool=2, cache_pool=2, judged=1, failed=0, hard=1,
                              easy=0, generated=0, generated_hard=0, generated_easy=0, dropped=0,
                              eval={"lion it1": {"rougeL_teacher": 12.5}}, tokens_by_model={"t": 10})
    assert store.ingest([*pool, judgment, iteration]).new == {"lion_pool": 4, "lion_judgments": 1,
                                                              "lion_iterations": 1}
    # Re-ingesting (a resumed run) stores nothing twice: the keys are (run, pool, instruction),
    # (run, iteration, instruction) and (run, iteration).
    again = store.ingest([*pool, judgment.model_copy(update={"gap": 0.0, "label": "easy"}), iteration])
    assert again.total_new == 0 and again.total_duplicate == 6
    assert store.query("SELECT label, gap FROM lion_judgments") == [{"label": "hard", "gap": 1.5}]
    assert store.query("SELECT eval->>'$.\"lion it1\".rougeL_teacher' AS r FROM lion_iterations") == [{"r": "12.5"}]
    counts = store.table_counts()
    assert (counts["lion_pool"], counts["lion_judgments"], counts["lion_iterations"]) == (4, 1, 1)
    assert store.check_integrity() == {}
    store.ingest([LionPoolEntry(run_id="r", pool="train", instruction_id="nope", iteration=1, origin="hard",
                                seed_id=ins[0].id)])
    assert list(store.check_integrity()) == ["lion pool entry of unknown instruction"]
