"""The SQL the store runs at run time, in named constants (the schema itself lives in
``storage/migrations/*.sql``, see ``storage/schema.py``).

Table and column names are formatted in from the record classes (``{table}``,
``{columns}``); values are always bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

COUNT_ROWS_SQL = "SELECT count(*) FROM {table}"
TABLE_NAMES_SQL = "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"

# Content-keyed tables: a row whose key exists is a duplicate and is left alone.
# For a batch that is large next to the table, an anti-join on the key finds the new rows
# far faster than ON CONFLICT checks row by row (a fifth of the time on a re-ingest);
# it is exact because the batch has no repeated keys and this process holds the only
# write lock. For a small batch on a big table the index lookups of ON CONFLICT win.
INSERT_NEW_SQL = """
INSERT INTO {table} ({columns})
SELECT {columns} FROM {source} ANTI JOIN {table} USING ({key})"""
TABLE_ROWS_SQL = "SELECT estimated_size FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?"
INSERT_IGNORE_SQL = """
INSERT INTO {table} ({columns})
SELECT {columns} FROM {source}
ON CONFLICT DO NOTHING"""

# The teacher ledger: a failed request may be retried and become ok (or fail again with
# a newer error); an ok row never changes. Within one batch the ok row (else the last)
# of each key wins, since DuckDB cannot update one row twice in a statement.
UPSERT_REQUESTS_SQL = """
INSERT INTO requests ({columns})
SELECT {columns} FROM {source}
QUALIFY row_number() OVER (PARTITION BY key ORDER BY (status = 'ok') DESC, _seq DESC) = 1
ON CONFLICT (key) DO UPDATE SET {assignments}
WHERE requests.status <> 'ok'"""

# Flow runs are written when they start and again when they end: the latest state wins,
# except that a finished run is never put back to an unfinished state by a late replay.
UPSERT_RUNS_SQL = """
INSERT INTO runs ({columns})
SELECT {columns} FROM {source}
QUALIFY row_number() OVER (PARTITION BY id ORDER BY _seq DESC) = 1
ON CONFLICT (id) DO UPDATE SET {assignments}
WHERE runs.ended_at IS NULL OR excluded.ended_at IS NOT NULL"""

# How each record table is written. Tables not listed use INSERT_IGNORE_SQL (or
# INSERT_NEW_SQL); the ones listed keep every row of a batch (their SQL picks the winner).
UPSERT_SQL = {"requests": UPSERT_REQUESTS_SQL, "runs": UPSERT_RUNS_SQL}

EXISTING_KEYS_SQL = "SELECT count(DISTINCT b.{key}) FROM {source} b JOIN {table} t ON t.{key} = b.{key}"

# Referential checks (no FOREIGN KEYs in the schema, see 001_init.sql): each query
# returns offending ids; `check_integrity()` reports the non-empty ones.
INTEGRITY_CHECKS: dict[str, str] = {
    "sample without instruction": (
        "SELECT s.id FROM samples s ANTI JOIN instructions i ON i.id = s.instruction_id"
    ),
    "instruction with unknown parent": (
        "SELECT c.id FROM instructions c ANTI JOIN instructions p ON p.id = c.parent_id "
        "WHERE c.parent_id IS NOT NULL"
    ),
    "sample with empty response": "SELECT id FROM samples WHERE trim(response) = ''",
    "ok request without response": (
        "SELECT key FROM requests WHERE status = 'ok' AND response_text IS NULL"
    ),
    "pairwise judgment of unknown sample": (
        "SELECT p.sample_a FROM pairwise_judgments p ANTI JOIN samples s ON s.id = p.sample_a "
        "UNION SELECT p.sample_b FROM pairwise_judgments p ANTI JOIN samples s ON s.id = p.sample_b"
    ),
    "lion pool entry of unknown instruction": (
        "SELECT p.instruction_id FROM lion_pool p ANTI JOIN instructions i ON i.id = p.instruction_id"
    ),
    "lion judgment of unknown sample": (
        "SELECT j.teacher_sample FROM lion_judgments j ANTI JOIN samples s ON s.id = j.teacher_sample "
        "UNION SELECT j.student_sample FROM lion_judgments j ANTI JOIN samples s ON s.id = j.student_sample"
    ),
    "dataset item without dataset": (
        "SELECT DISTINCT d.dataset_name || '@' || d.version FROM dataset_items d "
        "ANTI JOIN datasets s ON s.name = d.dataset_name AND s.version = d.version"
    ),
}


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The single value a query returns. Fetches the whole (one-row) result: DuckDB
    refuses new work on a connection whose previous result was not read to the end."""
    return con.execute(sql, params).fetchall()[0][0]
