"""`distill db|sql|datasets|seeds`: the happy paths, every user error as one line + exit 2,
and `distill sql` reading while another process ingests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.cli import ExportFormat, main
from storage.datasets import EXPORT_FORMATS
from storage.store import latest_schema_version

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `distill ARGS...` in-process against a fresh database; (exit code, stdout, stderr)."""
    monkeypatch.setenv("DISTILL_DB", str(tmp_path / "cli.duckdb"))
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _assert_one_line_error(result, *fragments: str) -> None:
    code, _, err = result
    assert code == 2, result
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_db_init_seeds_sql_and_stats(cli, tmp_path):
    code, out, _ = cli("db", "init")
    assert code == 0 and f"ready (schema version {latest_schema_version()})" in out
    code, out, _ = cli("seeds", "ingest")
    assert code == 0 and "instructions:" in out and "new" in out
    code, out, _ = cli("sql", "SELECT method, count(*) AS n FROM instructions GROUP BY 1", "--format", "json")
    assert code == 0 and json.loads(out)[0]["method"] == "seed" and json.loads(out)[0]["n"] >= 40
    code, out, _ = cli("sql", "SELECT 1 AS a, 'x' AS b", "--format", "csv")
    assert out.splitlines() == ["a,b", "1,x"]
    code, out, _ = cli("sql", "SELECT text FROM instructions LIMIT 2")
    assert code == 0 and "text" in out and "2 rows" in out
    code, out, _ = cli("sql", "SELECT * FROM samples", "--format", "parquet", "--output", "s.parquet")
    assert code == 0 and pq.read_table(tmp_path / "s.parquet").num_rows >= 40
    code, out, _ = cli("db", "stats")
    assert code == 0 and "instructions" in out and "samples" in out
    code, out, _ = cli("db", "migrate")
    assert code == 0 and f"already at schema version {latest_schema_version()}" in out


def test_db_option_overrides_environment(cli, tmp_path):
    other = tmp_path / "other.duckdb"
    assert cli("--db", str(other), "db", "init")[0] == 0
    assert other.exists() and not (tmp_path / "cli.duckdb").exists()


def test_datasets_commands(cli, tmp_path):
    cli("seeds", "ingest")
    sql = "SELECT sample_id, instruction, input, response, label FROM sample_view"
    code, out, _ = cli("datasets", "create", "seeds", "--sql", sql, "--eval-fraction", "0.2", "--seed", "3")
    assert code == 0 and "created seeds@1" in out
    cli("datasets", "create", "seeds", "--sql", sql + " WHERE label IS NOT NULL")
    code, out, _ = cli("datasets", "list")
    assert "seeds@1" in out and "seeds@2" in out
    code, out, _ = cli("datasets", "show", "seeds@1")
    assert code == 0 and "eval fraction 0.2, seed 3" in out and sql in out
    targets = {"parquet": "x.parquet", "jsonl-chat": "chat", "jsonl-prompt": "p.jsonl",
               "jsonl-step-by-step": "sbs.jsonl", "hf": "hf"}
    assert set(targets) == set(EXPORT_FORMATS) == {f.value for f in ExportFormat}  # the CLI offers every format
    for fmt, target in targets.items():
        code, out, _ = cli("datasets", "export", "seeds@1", "--format", fmt, "--to", target)
        assert code == 0 and (tmp_path / target).exists(), out
    assert (tmp_path / "chat" / "train.jsonl").read_text().startswith('{"messages": [')
    first = json.loads((tmp_path / "sbs.jsonl").read_text().splitlines()[0])
    assert list(first) == ["task", "input", "output", "split"]
    assert first["task"] == "predict" and first["input"].startswith("predict: ")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["sql", "SELECT * FROM no_such_table"], ["Catalog Error", "no_such_table"]),
        (["sql", "SELECT no_such_column FROM samples"], ["Binder Error", "no_such_column"]),
        (["sql", "SELEC 1"], ["Parser Error"]),
        (["sql", "DELETE FROM samples"], ["read-only", "DELETE"]),
        (["sql", "INSERT INTO runs (id) VALUES ('x')"], ["read-only", "INSERT"]),
        (["sql", "COPY samples TO 'out.csv'"], ["read-only", "COPY"]),
        (["sql", "SELECT 1; DROP TABLE samples"], ["one statement"]),
        (["sql", "SELECT 1", "--format", "parquet"], ["needs --output"]),
        (["seeds", "ingest", "missing.jsonl"], ["seed file not found", "missing.jsonl"]),
        (["datasets", "show", "nope"], ["dataset 'nope' does not exist"]),
        (["datasets", "export", "nope@2", "--format", "hf", "--to", "x"], ["dataset 'nope' does not exist"]),
        (["datasets", "show", "nope@latest"], ["bad dataset reference"]),
        (["datasets", "create", "d", "--sql", "SELECT 1 AS instruction"], ["must return columns", "response"]),
        (["sql", "SELECT 1", "--format", "xml"], ["Invalid value for '--format'", "distill sql --help"]),
        (["no-such-command"], ["No such command", "no-such-command"]),
    ],
)
def test_user_errors_are_one_line(cli, args, fragments):
    cli("db", "init")
    _assert_one_line_error(cli(*args), *fragments)


def test_malformed_jsonl_names_the_line(cli, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "ok", "instances": []}\n\n{"instruction": \n')
    _assert_one_line_error(cli("seeds", "ingest", "bad.jsonl"), "bad.jsonl:3: invalid JSON")


def test_database_file_problems(cli, tmp_path):
    _assert_one_line_error(cli("--db", "absent.duckdb", "sql", "SELECT 1"), "absent.duckdb does not exist")
    (tmp_path / "text.duckdb").write_text("definitely not a database\n" * 100)
    _assert_one_line_error(cli("--db", "text.duckdb", "db", "stats"), "text.duckdb is not a DuckDB database file")
    _assert_one_line_error(cli("--db", "text.duckdb", "seeds", "ingest"), "not a DuckDB database file")


# Ingests small batches through the public ingest path until the stop file appears.
INGESTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from storage.records import Instruction
    from storage.store import Store
    store = Store(sys.argv[1], lock_timeout=0.05)
    stop, end = Path(sys.argv[2]), time.monotonic() + 120
    print("started", flush=True)
    b = 0
    while not stop.exists() and time.monotonic() < end:
        store.ingest([Instruction(text=f"live {b} {j}", method="self_instruct") for j in range(50)])
        b += 1
    print(b, flush=True)
    """
)


def test_sql_works_while_another_process_ingests(tmp_path):
    from storage.store import Store

    db = tmp_path / "busy.duckdb"
    env = {"DISTILL_DB": str(db), "PATH": "/usr/bin:/bin"}
    Store(db).init()
    stop = tmp_path / "stop"
    ingester = subprocess.Popen([sys.executable, "-c", INGESTER, str(db), str(stop)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert ingester.stdout.readline().strip() == "started"
        time.sleep(0.5)
        counts = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-m", "flows.cli", "sql",
                 "select method, count(*) AS n from instructions group by 1", "--format", "json"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )
            assert done.returncode == 0, done.stderr
            counts.append(sum(row["n"] for row in json.loads(done.stdout)))
        assert ingester.poll() is None, "the ingester finished before the reads: the test proved nothing"
    finally:
        stop.touch()
        batches = int(ingester.communicate(timeout=60)[0])
    assert counts == sorted(counts) and counts[-1] > 0  # it saw the data grow
    # Every batch landed, directly or through the journal (merged on a later commit or here).
    Store(db).merge_journal()
    assert Store(db).query("SELECT count(*) AS n FROM instructions")[0]["n"] == batches * 50
