"""The journal: batches that could not be written to the database yet, kept on disk.

A writer that cannot get the database's lock (or that should not take it, because a
reader is waiting) appends its batch here instead; the next successful commit replays
the journal inside its own transaction and deletes what it replayed. Content keys plus
``ON CONFLICT`` make a replay harmless however often it happens.

On disk: ``<db>.journal/`` beside the database, one Arrow IPC file ("segment") per table
per batch, named ``<time_ns>-<pid>-<random>.arrow`` so that names sort oldest first; the
table's name is in the schema metadata (``storage.arrow.TABLE_META``). A segment is
written as ``.tmp``, fsynced, and renamed, so it is either complete or absent. One that
cannot be read is renamed ``.bad`` and left for a human. This module is the only code
that reads or writes segments; others ask the ``Store`` (``journal_rows``,
``pending_ok_requests``, ...).

    journal = Journal(Path("distillery.duckdb.journal"))
    journal.append([arrow_table])                     # durable on return
    rows, done = journal.replay(insert)               # insert(table_name, arrow_table) per table
    journal.delete(done)                              # once the replay's transaction committed
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

from storage.arrow import RECORD_TYPES, TABLE_META

log = logging.getLogger(__name__)

_STALE_TMP_S = 600  # a half-written segment older than this belonged to a dead writer


class Journal:
    """The segment files in ``directory`` (created on the first append)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def append(self, tables: Iterable[pa.Table]) -> int:
        """Write each table as a segment; the number of rows written. Durable on return
        (fsynced, the renames too), even against kill -9."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rows = 0
        for table in tables:
            # Write to a temporary name, fsync, then rename: a segment is either complete
            # or absent, so a merge never reads half a batch.
            name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp = self.directory / f"{name}.tmp"
            with open(tmp, "wb") as f:
                with pa.ipc.new_file(f, table.schema) as writer:
                    writer.write_table(table)
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(self.directory / f"{name}.arrow")
            rows += table.num_rows
        _fsync_dir(self.directory)  # make the renames themselves durable
        return rows

    def segments(self) -> list[Path]:
        """Complete segments waiting to be merged, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.arrow"))

    def rows(self) -> int:
        """How many rows the segments hold (read from their metadata, not their data)."""
        total = 0
        for path in self.segments():
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                total += sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        return total

    def replay(self, insert: Callable[[str, pa.Table], None]) -> tuple[int, list[Path]]:
        """Pass every complete segment to ``insert(table_name, rows)``, oldest first;
        returns the rows replayed and the segments to ``delete`` once the caller's
        transaction commits.

        Deleting only after the commit means a crash in between replays the segments
        next time, which content keys make harmless. Segments written while we replay
        are not in our listing and wait for the next commit.
        """
        segments = self.segments()
        self.remove_stale_tmp()
        if not segments:
            return 0, []
        good: list[Path] = []
        by_table: dict[str, list[pa.Table]] = defaultdict(list)
        for path in segments:
            try:
                with pa.memory_map(str(path)) as source:
                    table = pa.ipc.open_file(source).read_all()
                name = _table_name(table)
                if name not in RECORD_TYPES:
                    raise ValueError(f"unknown table {name!r}")
            except (pa.ArrowInvalid, OSError, ValueError) as err:
                # Keep the bytes for a human to look at, but stop replaying them.
                log.warning("journal segment %s unreadable (%s); renamed to .bad", path, err)
                path.rename(path.with_suffix(".bad"))
                continue
            by_table[name].append(table)
            good.append(path)
        rows = 0
        # One statement per table, not per segment: a ledger batch leaves a segment
        # every 50 ms, and each statement costs milliseconds whatever its size.
        # Segments stay in order, so "the last row of a key wins" still holds.
        for name, tables in by_table.items():
            for table in _concat_segments(tables):
                insert(name, table)
                rows += table.num_rows
        return rows, good

    def delete(self, segments: list[Path]) -> None:
        """Remove segments whose rows are committed."""
        for path in segments:
            path.unlink(missing_ok=True)

    def remove_stale_tmp(self) -> None:
        now = time.time()
        for tmp in self.directory.glob("*.tmp") if self.directory.is_dir() else ():
            try:
                if now - tmp.stat().st_mtime > _STALE_TMP_S:
                    tmp.unlink()  # never acknowledged: its append() call did not return
            except FileNotFoundError:
                pass

    def tables(self, table: str, columns: Collection[str]) -> Iterator[pa.Table]:
        """The rows of ``table`` still in the journal, one Arrow table per segment, oldest
        first, for a reader that must see what is not merged yet (the ledger after a crash).

        Only segments that have every one of ``columns`` are yielded. Read-only: a
        segment that cannot be read now (a merge just deleted it, or it is damaged) is
        skipped and left to the merge, which renames damaged ones.
        """
        for path in self.segments():
            try:
                with pa.memory_map(str(path)) as source:
                    rows = pa.ipc.open_file(source).read_all()
            except (OSError, pa.ArrowInvalid):
                continue
            if _table_name(rows) == table and set(columns) <= set(rows.column_names):
                yield rows


def _table_name(table: pa.Table) -> str:
    return (table.schema.metadata or {}).get(TABLE_META, b"").decode()


def _concat_segments(tables: list[pa.Table]) -> list[pa.Table]:
    """Journal segments of one table as few tables as possible, in order: one, unless
    segments written by another schema version cannot be combined (then one each)."""
    if len(tables) == 1:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="default")]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return tables


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
