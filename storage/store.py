"""The DuckDB system of record: the ``Store`` that ingests records, runs write blocks,
keeps the journal, and answers read-only queries.

DuckDB lets one process write a database file and locks it against every other process
(readers included) while it is open for writing. So this module never keeps the file
open: each commit opens a connection, writes, and closes it; readers open ``read_only``
and retry while a writer holds the lock; and a writer that cannot get the lock appends
its batch to a journal beside the database (``<db>.journal/``) that the next successful
commit merges. Content keys plus ``ON CONFLICT`` make every replay of the journal
harmless. A reader kept waiting leaves a marker that makes ingest spool, so a busy
writer cannot starve it.

A process that commits every few hundred milliseconds (the generate flow) may ask to keep
the file open between its commits (``Store(keep_open_s=...)``): opening a DuckDB file
builds a whole database instance, tens of milliseconds of CPU each time. The kept file is
let go when that time passes with no commit, as soon as another process waits for it
(readers and writers leave markers while they retry), and on ``Store.release()``.

    store = Store("distillery.duckdb")
    result = store.ingest([instruction, sample])     # IngestResult(new=..., duplicate=...)
    rows = store.query("SELECT method, count(*) AS n FROM instructions GROUP BY 1")
    with store.write() as con:                       # a short-lived writing connection
        con.execute("UPDATE runs SET status = 'done' WHERE id = ?", [run_id])

The parts, one concern per module (this one only puts them together):

    storage/ingest.py      inserting one table's batch, and what an ingest did
    storage/sql.py         the SQL run at run time (insert, upsert, integrity checks)
    storage/schema.py      migrations: the numbered .sql files, applying them, versions
    storage/arrow.py       records -> one Arrow table per database table
    storage/journal.py     the segment files of the journal (the only code reading them)
    storage/locking.py     the in-process lock, opening against other processes, the
                           markers of waiting processes, the kept-open file
    storage/provenance.py  code_version(): which code made a run or a dataset
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from core.errors import DatabaseError, DatabaseLockedError
from storage.arrow import Batch, records_to_arrow
from storage.ingest import IngestResult, batches, insert_batch
from storage.journal import Journal
from storage.locking import connect, fresh_marker, keeper, process_lock
from storage.provenance import code_version
from storage.records import Record
from storage.schema import TABLES, apply_migrations, check_not_newer, db_version, latest_schema_version
from storage.sql import COUNT_ROWS_SQL, INTEGRITY_CHECKS, TABLE_NAMES_SQL, scalar

# Names other modules import from here, wherever they live now.
__all__ = [
    "DEFAULT_DB",
    "TABLES",
    "IngestResult",
    "Store",
    "code_version",
    "default_db_path",
    "latest_schema_version",
    "records_to_arrow",
    "scalar",
]

log = logging.getLogger(__name__)

DEFAULT_DB = "distillery.duckdb"
"""File name used when neither ``--db`` nor ``DISTILL_DB`` says otherwise."""


def default_db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The database to use: ``db`` if given (the CLI's ``--db``), else ``$DISTILL_DB``,
    else ``./distillery.duckdb``."""
    return Path(db or os.environ.get("DISTILL_DB") or DEFAULT_DB)


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction on ``con``: committed if the block ends normally, else rolled back."""
    con.begin()
    try:
        yield
        con.commit()
    except BaseException:
        con.rollback()
        raise


class Store:
    """The DuckDB database file and its journal. Cheap to create; holds no open file
    (unless ``keep_open_s`` asks it to keep one between commits).

    Args:
        path: the database file (see ``default_db_path()``); created on first write.
        lock_timeout: seconds ``ingest`` waits for the write lock before spooling.
        write_timeout: seconds ``write()``/``init()``/``merge_journal()`` wait for it
            (they cannot spool) before raising ``DatabaseLockedError``.
        read_timeout: seconds a read waits for a writer to let go before raising.
        keep_open_s: keep the file open this long after each commit, so the next one does
            not open it again (0: close it at once). Another process waiting for the file
            gets it within tens of milliseconds; ``release()`` closes it now.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = 1.0,
        write_timeout: float = 30.0,
        read_timeout: float = 30.0,
        keep_open_s: float = 0.0,
    ) -> None:
        self.path = default_db_path(path).resolve()
        self.journal_dir = self.path.with_name(self.path.name + ".journal")
        self.readers_dir = self.journal_dir / "readers"  # markers of readers waiting for the lock
        self.writers_dir = self.journal_dir / "writers"  # markers of writers waiting for it
        self.keep_open_s = keep_open_s
        self.lock_timeout = lock_timeout
        self.write_timeout = write_timeout
        self.read_timeout = read_timeout
        self._journal = Journal(self.journal_dir)
        self._schema_ok = False  # migrations checked/applied by this object already
        # The connection of a write() block, per thread: a read inside the block sees its
        # transaction; other threads must not share a DuckDB connection.
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connections (storage/locking.py) ----------------------------------------------

    def readers_waiting(self) -> bool:
        """Whether a reader in some process is waiting for the lock right now."""
        return fresh_marker(self.readers_dir)

    def others_waiting(self) -> bool:
        """Whether a reader or a writer in another process is waiting for the file."""
        return fresh_marker(self.readers_dir) or fresh_marker(self.writers_dir)

    def release(self) -> None:
        """Close the file if this process keeps it open (``keep_open_s``); a no-op otherwise."""
        keeper.release(self.path, self.write_timeout)

    @contextmanager
    def _reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        write_con = getattr(self._local, "write_con", None)
        if write_con is not None:  # a read inside write() sees that transaction
            yield write_con
            return
        if not self.path.exists():
            raise DatabaseError(
                f"database {self.path} does not exist (run `distill db init` or ingest something first)"
            )
        with process_lock(self.path, self.read_timeout):
            # A waiting reader's marker also makes ingest spool, so a busy writer cannot starve it.
            con = connect(self.path, read_only=True, timeout=self.read_timeout, waiting_dir=self.readers_dir)
            try:
                if not self._schema_ok:
                    check_not_newer(self.path, db_version(con))
                yield con
            finally:
                con.close()

    @contextmanager
    def _writing(self, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """A migrated read-write connection held for one commit, then closed (the file
        stays open ``keep_open_s`` longer if asked)."""
        with process_lock(self.path, timeout):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A waiting writer's marker only makes a kept-open file be let go.
            con = connect(self.path, read_only=False, timeout=timeout, waiting_dir=self.writers_dir)
            try:
                if not self._schema_ok:
                    apply_migrations(con, self.path)
                    self._schema_ok = True
                yield con
            finally:
                if self.keep_open_s > 0:
                    keeper.keep(self.path, con, self.keep_open_s, self.others_waiting)
                con.close()

    # -- schema (storage/schema.py) ----------------------------------------------------

    def init(self) -> int:
        """Create the database if needed and bring it to the latest schema; the version."""
        self._schema_ok = False  # always re-check: `distill db migrate` means it
        with self._writing(self.write_timeout) as con:
            self._merge_journal(con)
            return db_version(con)

    migrate = init

    def schema_version(self) -> int:
        """The database's schema version (0 if the file does not exist yet)."""
        if not self.path.exists():
            return 0
        with self._reading() as con:
            return db_version(con)

    # -- writing -----------------------------------------------------------------------

    def ingest(self, records: Iterable[Record]) -> IngestResult:
        """Write a batch of records (any mix of types) and merge the pending journal.

        Rows go in through one Arrow scan per table with ``ON CONFLICT DO NOTHING``
        (requests and runs upsert, see storage/sql.py), in one transaction. If another
        process holds the database for longer than ``lock_timeout``, the batch is
        spooled to the journal instead (also while a reader waits for the lock, so a busy
        writer cannot starve readers) and ``result.spooled`` is True: it is durable
        when this returns and lands in the database at the next successful commit.
        """
        con = getattr(self._local, "write_con", None)
        if con is not None:  # inside write() on this thread: part of its transaction
            return self.insert(con, records)
        grouped = batches(records)
        try:
            if self.readers_waiting():  # let the reader in; this batch is merged later
                raise DatabaseLockedError("a reader is waiting")
            with self._writing(self.lock_timeout) as con:
                with _transaction(con):  # the journal's rows and the batch: one commit
                    merged, segments = self._replay_journal(con)
                    result = IngestResult(merged=merged)
                    for batch in grouped:
                        insert_batch(con, batch, result)
                self._delete_segments(segments, merged)
                return result
        except DatabaseLockedError:  # only opening the file (or a waiting reader) raises it
            rows = self._journal.append(b.rows for b in grouped)
            log.info("database %s busy: spooled %d rows to %s", self.path, rows, self.journal_dir)
            return IngestResult(spooled=True, spooled_rows=rows)

    @contextmanager
    def write(self, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction, committed and closed on exit
        (rolled back on an exception). Keep the block short: every other process is
        locked out of the database while it runs. The journal is merged in the same commit.

        Inside the block, this thread's ``query``/``ingest``/``write`` calls on this Store go
        through the same connection and transaction (several steps, one database open)."""
        outer = getattr(self._local, "write_con", None)
        if outer is not None:  # nested in another write() of this thread: join its transaction
            yield outer
            return
        with self._writing(self.write_timeout if timeout is None else timeout) as con:
            with _transaction(con):  # the journal's rows and the block's work: one commit
                self._local.write_con = con
                try:
                    merged, segments = self._replay_journal(con)
                    yield con
                finally:
                    self._local.write_con = None
            self._delete_segments(segments, merged)

    def insert(self, con: duckdb.DuckDBPyConnection, records: Iterable[Record]) -> IngestResult:
        """Insert records through the connection of a ``write()`` block, in its transaction
        (``ingest`` for a caller that reads and writes in one commit; nothing is spooled)."""
        result = IngestResult()
        for batch in batches(records):
            insert_batch(con, batch, result)
        return result

    # -- the journal (storage/journal.py) ----------------------------------------------

    def spool(self, records: Iterable[Record]) -> int:
        """Append records to the journal without touching the database; returns the
        number of rows written. Durable on return (fsynced), even against kill -9."""
        return self._journal.append(b.rows for b in batches(records))

    def journal_segments(self) -> list[Path]:
        """Complete journal segments waiting to be merged, oldest first."""
        return self._journal.segments()

    def journal_rows(self) -> int:
        """How many rows the journal holds (read from the segments' metadata)."""
        return self._journal.rows()

    def merge_journal(self) -> int:
        """Merge pending journal segments into the database now; returns rows replayed.
        Inside ``write()`` it does nothing: the block merged the journal when it began."""
        if getattr(self._local, "write_con", None) is not None:
            return 0
        with self._writing(self.write_timeout) as con:
            return self._merge_journal(con)

    def _merge_journal(self, con: duckdb.DuckDBPyConnection) -> int:
        """Replay every complete segment in one transaction, then delete them."""
        with _transaction(con):
            rows, segments = self._replay_journal(con)
        self._delete_segments(segments, rows)
        return rows

    def _replay_journal(self, con: duckdb.DuckDBPyConnection) -> tuple[int, list[Path]]:
        """Insert the journal's rows through ``con``, inside the caller's transaction;
        returns the rows replayed and the segments to delete once that transaction commits."""
        return self._journal.replay(
            lambda table, rows: insert_batch(con, Batch(table, rows, rows.num_rows, unique=False), None)
        )

    def _delete_segments(self, segments: list[Path], rows: int) -> None:
        """Remove segments whose rows (``rows`` in all) are committed."""
        self._journal.delete(segments)
        if segments:
            log.info("merged %d journal rows from %d segments into %s", rows, len(segments), self.path)

    # Ledger rows spooled but not merged yet (after a crash, or while another process
    # holds the database) are paid for: a teacher must find them before sending again.
    # ``query()`` sees the merged rows; these two see the rest, without opening the
    # database (they work while it is locked, or before it exists).

    def pending_ok_requests(self, keys: Collection[str]) -> dict[str, dict[str, Any]]:
        """Journal rows of ``requests`` with status 'ok' for ``keys``, by key; each row a
        dict of every column (JSON columns as text, as ``query()`` returns them). Where a
        key has several, the newest wins."""
        wanted = set(keys)
        found: dict[str, dict[str, Any]] = {}
        if not wanted:
            return found
        for rows in self._journal.tables("requests", ("key", "status")):
            status = rows.column("status").to_pylist()
            for i, key in enumerate(rows.column("key").to_pylist()):
                if status[i] == "ok" and key in wanted:
                    found[key] = rows.slice(i, 1).to_pylist()[0]
        return found

    def pending_ok_keys(self, model: str | None = None) -> set[str]:
        """Keys of the journal's ``requests`` rows with status 'ok' (of ``model`` only, if given)."""
        found: set[str] = set()
        for rows in self._journal.tables("requests", ("key", "status", "model")):
            columns = zip(*(rows.column(c).to_pylist() for c in ("key", "status", "model")))
            found.update(k for k, st, m in columns if st == "ok" and (model is None or m == model))
        return found

    # -- reading -----------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query; rows as dicts. Retries while a writer holds the lock."""
        with self._reading() as con:
            cursor = con.execute(sql, params)
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def query_arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run a read-only query; the result as a ``pyarrow.Table``."""
        with self._reading() as con:
            return con.sql(sql, params=params).to_arrow_table()

    def table_counts(self) -> dict[str, int]:
        """Row count of every table of the data model (0 for a table that a database of an
        older schema, read without migrating, does not have yet: it holds no rows)."""
        with self._reading() as con:
            present = {row[0] for row in con.execute(TABLE_NAMES_SQL).fetchall()}
            return {t: scalar(con, COUNT_ROWS_SQL.format(table=t)) if t in present else 0 for t in TABLES}

    def check_integrity(self) -> dict[str, list[Any]]:
        """Referential and content checks; maps each failed check to (up to 20) offending ids."""
        problems: dict[str, list[Any]] = {}
        with self._reading() as con:
            for name, sql in INTEGRITY_CHECKS.items():
                bad = [row[0] for row in con.execute(sql + " LIMIT 20").fetchall()]
                if bad:
                    problems[name] = bad
        return problems
