"""How records go into the database: one Arrow batch per table, one statement each.

``Store.ingest``/``insert`` and the journal's replay all end here, inside a transaction
the ``Store`` opened; this module never opens the database. Inserts are Arrow scans with
``ON CONFLICT`` (never row-by-row ``executemany``, about 200x slower), so a key already
stored is a duplicate, counted and left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from storage.arrow import RECORD_TYPES, Batch, group_by_table
from storage.records import Record
from storage.sql import EXISTING_KEYS_SQL, INSERT_IGNORE_SQL, INSERT_NEW_SQL, TABLE_ROWS_SQL, UPSERT_SQL, scalar


@dataclass
class IngestResult:
    """What one ``Store.ingest`` call did, per table.

    ``new`` counts rows actually inserted; ``duplicate`` counts rows whose key was already
    stored (or repeated within the batch); ``updated`` counts upserted rows that changed
    (a failed request that became ok, a run that finished). When the database was locked
    the batch went to the journal instead: ``spooled`` is True, ``spooled_rows`` says how
    many rows, and the per-table counts are empty (they are known only at the merge).
    ``merged`` is the number of journal rows replayed before this batch was written.
    """

    new: dict[str, int] = field(default_factory=dict)
    duplicate: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    spooled: bool = False
    spooled_rows: int = 0
    merged: int = 0

    @property
    def total_new(self) -> int:
        return sum(self.new.values())

    @property
    def total_duplicate(self) -> int:
        return sum(self.duplicate.values())

    def __str__(self) -> str:
        if self.spooled:
            return f"database busy: {self.spooled_rows} rows spooled to the journal"
        merged = f" (+{self.merged} journal rows merged)" if self.merged else ""
        parts = [
            f"{table}: {self.new.get(table, 0)} new, {self.duplicate.get(table, 0)} duplicate"
            + (f", {self.updated[table]} updated" if self.updated.get(table) else "")
            for table in sorted(set(self.new) | set(self.duplicate))
        ]
        return ("; ".join(parts) or "nothing to ingest") + merged


def batches(records: Iterable[Record]) -> list[Batch]:
    """Records of any mix of types as one Arrow batch per table (repeats of a content key
    dropped, except in upserted tables, whose SQL picks the winner)."""
    return group_by_table(records, upserted=UPSERT_SQL)


def insert_batch(con: duckdb.DuckDBPyConnection, batch: Batch, result: IngestResult | None) -> None:
    """Insert one table's batch through ``con`` (in the caller's transaction), adding its
    counts to ``result`` (None: nobody reads them, as in a journal merge, which then skips
    the query that tells new from updated).

    The statement depends on the table (storage/sql.py): content-keyed tables insert what
    is new, by anti-join when the batch is large next to the table and by ``ON CONFLICT DO
    NOTHING`` otherwise; the ledger and runs upsert, their SQL picking each key's winner
    by the row order ``_seq``.
    """
    table, rows = batch.table, batch.rows
    cls = RECORD_TYPES[table]
    columns = ", ".join(cls.model_fields)
    key = ", ".join(cls.__key__)
    source = f"_batch_{table}"
    upsert = UPSERT_SQL.get(table)
    if upsert:
        rows = rows.append_column("_seq", pa.array(range(rows.num_rows), pa.int64()))
    con.register(source, rows)
    try:
        if upsert is None:
            anti_join = batch.unique and rows.num_rows * 8 >= scalar(con, TABLE_ROWS_SQL, [table])
            sql = INSERT_NEW_SQL if anti_join else INSERT_IGNORE_SQL
            new = scalar(con, sql.format(table=table, columns=columns, source=source, key=key))
            updated = 0
        else:
            assignments = ", ".join(f"{c} = excluded.{c}" for c in cls.model_fields if c not in cls.__key__)
            sql = upsert.format(columns=columns, source=source, assignments=assignments)
            if result is None:  # no counts wanted: skip telling new rows from updated ones
                con.execute(sql)
                return
            existing = scalar(con, EXISTING_KEYS_SQL.format(key=key, source=source, table=table))
            affected = scalar(con, sql)
            new = len(set(rows.column(key).to_pylist())) - existing
            updated = affected - new
    finally:
        con.unregister(source)
    if result is None:
        return
    result.new[table] = result.new.get(table, 0) + new
    result.updated[table] = result.updated.get(table, 0) + updated
    result.duplicate[table] = result.duplicate.get(table, 0) + batch.submitted - new

