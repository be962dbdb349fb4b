"""The DuckDB system of record: migrations, ingest, the journal, and read-only queries.

DuckDB lets one process write a database file and locks it against every other process
(readers included) while it is open for writing. So this module never keeps the file
open: each commit opens a connection, writes, and closes it; readers open ``read_only``
and retry while a writer holds the lock; and a writer that cannot get the lock appends
its batch to a journal beside the database (``<db>.journal/``, one Arrow IPC file per
table per batch, fsynced and renamed into place) that the next successful commit merges.
Content keys plus ``ON CONFLICT`` make every replay of the journal harmless. A reader
kept waiting leaves a marker that makes ingest spool, so a busy writer cannot starve it.

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
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import logging
import operator
import os
import re
import subprocess
import threading
import time
import types
import typing
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.ipc

from core.errors import DatabaseError, DatabaseLockedError
from storage.records import ALL_RECORD_TYPES, Record, canonical_json, utcnow

log = logging.getLogger(__name__)

DEFAULT_DB = "distillery.duckdb"
"""File name used when neither ``--db`` nor ``DISTILL_DB`` says otherwise."""

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_FILE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql$")

# Tables every database has; what `distill db stats` counts, in lineage order.
TABLES: tuple[str, ...] = (
    "runs",
    "requests",
    "instructions",
    "samples",
    "filter_decisions",
    "minhash_signatures",
    "datasets",
    "dataset_items",
    "training_runs",
    "evaluations",
)

# --- SQL used at run time -------------------------------------------------------------

SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""
SCHEMA_VERSION_EXISTS_SQL = (
    "SELECT count(*) FROM information_schema.tables "
    "WHERE table_schema = 'main' AND table_name = 'schema_version'"
)
CURRENT_VERSION_SQL = "SELECT coalesce(max(version), 0) FROM schema_version"
RECORD_MIGRATION_SQL = "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"
COUNT_ROWS_SQL = "SELECT count(*) FROM {table}"

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
    "dataset item without dataset": (
        "SELECT DISTINCT d.dataset_name || '@' || d.version FROM dataset_items d "
        "ANTI JOIN datasets s ON s.name = d.dataset_name AND s.version = d.version"
    ),
}

# How each record table is written. Tables not listed use INSERT_IGNORE_SQL.
_UPSERT_SQL = {"requests": UPSERT_REQUESTS_SQL, "runs": UPSERT_RUNS_SQL}
_RECORD_TYPES: dict[str, type[Record]] = {cls.__table__: cls for cls in ALL_RECORD_TYPES}

_TABLE_META = b"distillery.table"  # Arrow schema metadata naming a journal segment's table
_STALE_TMP_S = 600  # a half-written journal file older than this belonged to a dead writer
_READER_MARKER_TTL_S = 2.0  # a waiting reader refreshes its marker far more often than this
_KEEPER_POLL_S = 0.02  # how often a kept-open file checks for processes waiting for it


# --- small public helpers -------------------------------------------------------------


def default_db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The database to use: ``db`` if given (the CLI's ``--db``), else ``$DISTILL_DB``,
    else ``./distillery.duckdb``."""
    return Path(db or os.environ.get("DISTILL_DB") or DEFAULT_DB)


@functools.cache
def code_version() -> str:
    """What code produced a run or dataset: ``git describe`` of the checkout when there is
    one (``-dirty`` if it has local changes), else the installed package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "distillery-" + importlib.metadata.version("distillery")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def migrations() -> list[tuple[int, str, Path]]:
    """The migration files shipped with this code, as (version, name, path), in order."""
    found = []
    for path in MIGRATIONS_DIR.iterdir():
        m = _MIGRATION_FILE.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    return sorted(found)


def latest_schema_version() -> int:
    """The schema version this code writes (the highest migration number)."""
    return migrations()[-1][0]


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


# --- records <-> Arrow ----------------------------------------------------------------


def _json_texts(values: list[Any]) -> list[str | None]:
    """``canonical_json`` of each value, computed once per distinct flat dict.

    Serializing dominates ingest time otherwise: a batch's samples mostly share one
    sampling-params dict and an empty metadata dict. Pydantic copies each record's dict
    but keeps its key and value objects, so a dict is looked up by the identities of its
    keys and values: two dicts made of the same objects have the same JSON, while equal
    values of different types (``1``, ``1.0``, ``True``), which an equality key would
    confuse, never share an entry. The objects stay alive (``values`` holds them) for the
    whole call, so an identity is never reused within it.
    """
    cache: dict[tuple[int, ...], str] = {}
    out: list[str | None] = []
    append = out.append
    for value in values:
        if value is None:
            append(None)
        elif type(value) is dict:
            if not value:
                append("{}")
                continue
            key = (*map(id, value), *map(id, value.values()))
            text = cache.get(key)
            if text is None:
                text = cache[key] = canonical_json(value)
            append(text)
        else:
            append(canonical_json(value))
    return out


_SCALAR_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us"),
}


def _arrow_type(annotation: Any) -> pa.DataType | None:
    """The Arrow type of a record field's annotation (None: let pyarrow infer it)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # X | None
        inner = [a for a in args if a is not type(None)]
        return _arrow_type(inner[0]) if len(inner) == 1 else None
    if origin is typing.Literal:
        return pa.string()
    if origin is list and args and args[0] in _SCALAR_TYPES:
        return pa.list_(_SCALAR_TYPES[args[0]])
    return _SCALAR_TYPES.get(annotation)


@functools.cache
def arrow_schema(cls: type[Record]) -> pa.Schema:
    """The Arrow schema of ``cls.row()``: JSON fields as strings, the rest by annotation.

    Explicit types spare pyarrow inferring them from Python objects, which costs more
    than the conversion itself on long strings.
    """
    json_columns = set(cls.json_columns())
    fields = []
    for name, info in cls.model_fields.items():
        kind = pa.string() if name in json_columns else _arrow_type(info.annotation)
        fields.append(pa.field(name, kind if kind is not None else pa.null()))
    return pa.schema(fields, metadata={_TABLE_META: cls.__table__.encode()})


def records_to_arrow(records: Sequence[Record]) -> pa.Table:
    """Records of one type as an Arrow table with the columns of ``Record.row()``.

    Built column by column from attributes rather than through ``row()`` per record:
    the result is the same and it is several times faster on large batches.
    """
    cls = type(records[0])
    schema = arrow_schema(cls)
    json_columns = set(cls.json_columns())
    # Pydantic keeps field values in the instance __dict__; reading it directly is the
    # fastest way to transpose records into columns.
    dicts = [r.__dict__ for r in records]
    arrays = []
    for field_ in schema:
        values = list(map(operator.itemgetter(field_.name), dicts))
        if field_.name in json_columns:
            values = _json_texts(values)
        arrays.append(pa.array(values, type=None if pa.types.is_null(field_.type) else field_.type))
    return pa.Table.from_arrays(arrays, names=schema.names).replace_schema_metadata(schema.metadata)


def _concat_segments(tables: list[pa.Table]) -> list[pa.Table]:
    """Journal segments of one table as few tables as possible, in order: one, unless
    segments written by another schema version cannot be combined (then one each)."""
    if len(tables) == 1:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="default")]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return tables


@dataclass
class _Batch:
    """One table's share of an ingest call."""

    table: str
    rows: pa.Table
    submitted: int  # records given, before dropping repeats within the batch
    unique: bool  # no key occurs twice in ``rows``


def _group_by_table(records: Iterable[Record]) -> list[_Batch]:
    by_type: dict[type[Record], list[Record]] = defaultdict(list)
    for record in records:
        by_type[type(record)].append(record)
    batches = []
    for cls, group in by_type.items():
        if cls.__table__ not in _RECORD_TYPES:
            raise TypeError(f"{cls.__name__} is not a stored record type")
        submitted = len(group)
        unique = cls.__table__ not in _UPSERT_SQL
        if unique:
            # Content-keyed rows repeated within a batch are the same content: keep the
            # first. (Upserted tables keep every row; their SQL picks the winner.)
            key = operator.attrgetter(*cls.__key__)
            if len(set(map(key, group))) < submitted:  # the usual batch has no repeats
                first: dict[Any, Record] = {}
                for record in group:
                    first.setdefault(key(record), record)
                group = list(first.values())
        batches.append(_Batch(cls.__table__, records_to_arrow(group), submitted, unique))
    return batches


# --- the store ------------------------------------------------------------------------

# One connection at a time per database file within this process. Threads of one flow
# would otherwise collide inside DuckDB: a read-write open fails while this process holds
# a read-only one ("different configuration"), and concurrent inserts of one key fail
# with a transaction conflict instead of de-duplicating. Reentrant, so a read inside
# write() on the same thread does not deadlock.
_process_locks: dict[Path, threading.RLock] = defaultdict(threading.RLock)


@contextmanager
def _process_lock(path: Path, timeout: float) -> Iterator[None]:
    lock = _process_locks[path]
    if not lock.acquire(timeout=timeout):
        raise DatabaseLockedError(f"database {path} is busy in this process (waited {timeout:g}s)")
    try:
        yield
    finally:
        lock.release()


class _Keeper:
    """Keeps database files open between the commits of ``Store(keep_open_s=...)``.

    ``duckdb.connect`` builds a database instance (its catalog of built-in functions:
    about 25 ms of CPU) unless this process already has the file open, and closing the
    last connection checkpoints. While a file is kept here, a commit's connect and close
    cost nothing. One daemon thread lets a file go when its time is up or another process
    waits for it; it closes the file (and checkpoints) holding the process lock, so no
    Store call of this process is using the file meanwhile.
    """

    def __init__(self) -> None:
        self._held: dict[Path, tuple[duckdb.DuckDBPyConnection, float, "Store"]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def keep(self, store: "Store", con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        """Keep ``con``'s database open ``seconds`` more. The caller holds the process lock."""
        with self._lock:
            held = self._held.get(store.path)
            # A connection of its own (a cursor would close with ``con``); opened while ``con``
            # is, it joins the same database instance at no cost.
            handle = held[0] if held is not None else duckdb.connect(str(store.path))
            self._held[store.path] = (handle, time.monotonic() + seconds, store)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="distillery-db-keeper", daemon=True)
                self._thread.start()

    def release(self, path: Path, timeout: float) -> None:
        """Close the kept file now (waiting for this process's current use of it)."""
        if path in self._held:
            with _process_lock(path, timeout):
                self._close(path)

    def release_all(self) -> None:
        for path in list(self._held):
            try:
                self.release(path, 5.0)
            except DatabaseLockedError:
                pass  # a commit is still running at exit; its file closes with the process

    def _close(self, path: Path) -> None:
        with self._lock:
            held = self._held.pop(path, None)
        if held is not None:
            held[0].close()

    def _run(self) -> None:
        while True:
            time.sleep(_KEEPER_POLL_S)
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
                held = list(self._held.items())
            for path, (_, _, store) in held:
                if not self._due(path) and not store.others_waiting():
                    continue
                lock = _process_locks[path]
                if lock.acquire(blocking=False):  # busy: in use now, let go at the next poll
                    try:
                        if self._due(path) or store.others_waiting():  # no commit came meanwhile
                            self._close(path)
                    finally:
                        lock.release()

    def _due(self, path: Path) -> bool:
        held = self._held.get(path)
        return held is not None and time.monotonic() >= held[1]


_keeper = _Keeper()
atexit.register(_keeper.release_all)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The single value a query returns. Fetches the whole (one-row) result: DuckDB
    refuses new work on a connection whose previous result was not read to the end."""
    return con.execute(sql, params).fetchall()[0][0]


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


def _is_lock_error(err: Exception) -> bool:
    return "lock" in str(err).lower() and isinstance(err, (duckdb.IOException, duckdb.ConnectionException))


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
        self._schema_ok = False  # migrations checked/applied by this object already
        # The connection of a write() block, per thread: a read inside the block sees its
        # transaction; other threads must not share a DuckDB connection.
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connections -------------------------------------------------------------------

    def _connect(self, *, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying with backoff while another process holds the lock.

        A blocked reader leaves a "waiting" marker while it retries: a process that
        ingests batch after batch would otherwise re-take the lock within microseconds of
        each commit and starve it. Ingest sees the marker and spools instead.
        """
        deadline = time.monotonic() + timeout
        delay = 0.005
        marker: Path | None = None
        try:
            while True:
                try:
                    return duckdb.connect(str(self.path), read_only=read_only)
                except duckdb.Error as err:
                    if not _is_lock_error(err):
                        if read_only and "different configuration" in str(err):
                            # This process already has the file open for writing (another
                            # Store inside write()); DuckDB shares that instance in-process.
                            return duckdb.connect(str(self.path))
                        raise self._open_error(err) from err
                    if time.monotonic() >= deadline:
                        raise DatabaseLockedError(
                            f"database {self.path} is locked by another process "
                            f"(waited {timeout:g}s): {str(err).splitlines()[0]}"
                        ) from err
                    # Readers' markers also make ingest spool; writers' only free a kept file.
                    marker = self._mark_waiting(self.readers_dir if read_only else self.writers_dir, marker)
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)

    @staticmethod
    def _mark_waiting(directory: Path, marker: Path | None) -> Path:
        if marker is None:
            directory.mkdir(parents=True, exist_ok=True)
            marker = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            marker.touch()
        else:
            os.utime(marker)  # still waiting: keep the marker fresh
        return marker

    @staticmethod
    def _fresh_marker(directory: Path) -> bool:
        if not directory.is_dir():
            return False
        fresh_after = time.time() - _READER_MARKER_TTL_S
        for marker in directory.iterdir():
            try:
                if marker.stat().st_mtime > fresh_after:
                    return True
            except FileNotFoundError:
                pass  # that one just got in
        return False

    def readers_waiting(self) -> bool:
        """Whether a reader in some process is waiting for the lock right now."""
        return self._fresh_marker(self.readers_dir)

    def others_waiting(self) -> bool:
        """Whether a reader or a writer in another process is waiting for the file."""
        return self._fresh_marker(self.readers_dir) or self._fresh_marker(self.writers_dir)

    def release(self) -> None:
        """Close the file if this process keeps it open (``keep_open_s``); a no-op otherwise."""
        _keeper.release(self.path, self.write_timeout)

    def _open_error(self, err: Exception) -> DatabaseError:
        msg = str(err).splitlines()[0]
        if "not a valid DuckDB database" in msg or "not a DuckDB" in msg:
            return DatabaseError(f"{self.path} is not a DuckDB database file")
        return DatabaseError(f"cannot open database {self.path}: {msg}")

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
        with _process_lock(self.path, self.read_timeout):
            con = self._connect(read_only=True, timeout=self.read_timeout)
            try:
                if not self._schema_ok:
                    self._check_not_newer(self._db_version(con))
                yield con
            finally:
                con.close()

    @contextmanager
    def _writing(self, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """A migrated read-write connection held for one commit, then closed (the file
        stays open ``keep_open_s`` longer if asked)."""
        with _process_lock(self.path, timeout):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = self._connect(read_only=False, timeout=timeout)
            try:
                if not self._schema_ok:
                    self._migrate(con)
                yield con
            finally:
                if self.keep_open_s > 0:
                    _keeper.keep(self, con, self.keep_open_s)
                con.close()

    # -- schema ------------------------------------------------------------------------

    @staticmethod
    def _db_version(con: duckdb.DuckDBPyConnection) -> int:
        if not scalar(con, SCHEMA_VERSION_EXISTS_SQL):
            return 0
        return int(scalar(con, CURRENT_VERSION_SQL))

    def _check_not_newer(self, version: int) -> None:
        latest = latest_schema_version()
        if version > latest:
            raise DatabaseError(
                f"database {self.path} has schema version {version}, newer than this "
                f"distillery understands ({latest}); upgrade distillery to use it"
            )

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> int:
        """Apply every migration newer than the database, each in its own transaction."""
        con.execute(SCHEMA_VERSION_DDL)
        current = self._db_version(con)
        self._check_not_newer(current)
        for version, name, path in migrations():
            if version <= current:
                continue
            con.begin()
            try:
                con.execute(path.read_text(encoding="utf-8"))
                con.execute(RECORD_MIGRATION_SQL, [version, name, utcnow()])
                con.commit()
            except duckdb.Error as err:
                con.rollback()
                raise DatabaseError(f"migration {path.name} failed on {self.path}: {err}") from err
            log.info("applied migration %s to %s", path.name, self.path)
            current = version
        self._schema_ok = True
        return current

    def init(self) -> int:
        """Create the database if needed and bring it to the latest schema; the version."""
        self._schema_ok = False  # always re-check: `distill db migrate` means it
        with self._writing(self.write_timeout) as con:
            self._merge_journal(con)
            return self._db_version(con)

    migrate = init

    def schema_version(self) -> int:
        """The database's schema version (0 if the file does not exist yet)."""
        if not self.path.exists():
            return 0
        with self._reading() as con:
            return self._db_version(con)

    # -- writing -----------------------------------------------------------------------

    def ingest(self, records: Iterable[Record]) -> IngestResult:
        """Write a batch of records (any mix of types) and merge the pending journal.

        Rows go in through one Arrow scan per table with ``ON CONFLICT DO NOTHING``
        (requests and runs upsert, see the SQL above), in one transaction. If another
        process holds the database for longer than ``lock_timeout``, the batch is
        spooled to the journal instead (also while a reader waits for the lock, so a busy
        writer cannot starve readers) and ``result.spooled`` is True: it is durable
        when this returns and lands in the database at the next successful commit.
        """
        con = getattr(self._local, "write_con", None)
        if con is not None:  # inside write() on this thread: part of its transaction
            return self.insert(con, records)
        batches = _group_by_table(records)
        try:
            if self.readers_waiting():  # let the reader in; this batch is merged later
                raise DatabaseLockedError("a reader is waiting")
            with self._writing(self.lock_timeout) as con:
                with _transaction(con):  # the journal's rows and the batch: one commit
                    merged, segments = self._replay_journal(con)
                    result = IngestResult(merged=merged)
                    for batch in batches:
                        self._insert(con, batch, result)
                self._delete_segments(segments, merged)
                return result
        except DatabaseLockedError:  # only opening the file (or a waiting reader) raises it
            rows = self._spool_tables(b.rows for b in batches)
            log.info("database %s busy: spooled %d rows to %s", self.path, rows, self.journal_dir)
            return IngestResult(spooled=True, spooled_rows=rows)

    def _insert(self, con: duckdb.DuckDBPyConnection, batch: _Batch, result: IngestResult | None) -> None:
        """Insert one table's batch, adding its counts to ``result`` (None: nobody reads
        them, as in a journal merge, which then skips the query that tells new from updated)."""
        table, rows = batch.table, batch.rows
        cls = _RECORD_TYPES[table]
        columns = ", ".join(cls.model_fields)
        key = ", ".join(cls.__key__)
        source = f"_batch_{table}"
        upsert = _UPSERT_SQL.get(table)
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
        for batch in _group_by_table(records):
            self._insert(con, batch, result)
        return result

    # -- the journal -------------------------------------------------------------------

    def spool(self, records: Iterable[Record]) -> int:
        """Append records to the journal without touching the database; returns the
        number of rows written. Durable on return (fsynced), even against kill -9."""
        return self._spool_tables(b.rows for b in _group_by_table(records))

    def _spool_tables(self, tables: Iterable[pa.Table]) -> int:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        rows = 0
        for table in tables:
            # Write to a temporary name, fsync, then rename: a segment is either complete
            # or absent, so a merge never reads half a batch.
            name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp = self.journal_dir / f"{name}.tmp"
            with open(tmp, "wb") as f:
                with pa.ipc.new_file(f, table.schema) as writer:
                    writer.write_table(table)
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(self.journal_dir / f"{name}.arrow")
            rows += table.num_rows
        _fsync_dir(self.journal_dir)  # make the renames themselves durable
        return rows

    def journal_segments(self) -> list[Path]:
        """Complete journal segments waiting to be merged, oldest first."""
        if not self.journal_dir.is_dir():
            return []
        return sorted(self.journal_dir.glob("*.arrow"))

    def journal_rows(self) -> int:
        """How many rows the journal holds (read from the segments' metadata)."""
        total = 0
        for path in self.journal_segments():
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                total += sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        return total

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
        """Insert every complete segment through ``con``, inside the caller's transaction;
        returns the rows replayed and the segments to delete once that transaction commits.

        Deleting only after the commit means a crash in between replays the segments
        next time, which content keys make harmless. Segments written while we merge are
        not in our listing and wait for the next commit.
        """
        segments = self.journal_segments()
        self._remove_stale_tmp()
        if not segments:
            return 0, []
        good: list[Path] = []
        by_table: dict[str, list[pa.Table]] = defaultdict(list)
        for path in segments:
            try:
                with pa.memory_map(str(path)) as source:
                    table = pa.ipc.open_file(source).read_all()
                name = (table.schema.metadata or {}).get(_TABLE_META, b"").decode()
                if name not in _RECORD_TYPES:
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
                self._insert(con, _Batch(name, table, table.num_rows, unique=False), None)
                rows += table.num_rows
        return rows, good

    def _delete_segments(self, segments: list[Path], rows: int) -> None:
        """Remove segments whose rows (``rows`` in all) are committed."""
        for path in segments:
            path.unlink(missing_ok=True)
        if segments:
            log.info("merged %d journal rows from %d segments into %s", rows, len(segments), self.path)

    def _remove_stale_tmp(self) -> None:
        now = time.time()
        for tmp in self.journal_dir.glob("*.tmp") if self.journal_dir.is_dir() else ():
            try:
                if now - tmp.stat().st_mtime > _STALE_TMP_S:
                    tmp.unlink()  # never acknowledged: its spool() call did not return
            except FileNotFoundError:
                pass

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
        """Row count of every table of the data model."""
        with self._reading() as con:
            return {t: scalar(con, COUNT_ROWS_SQL.format(table=t)) for t in TABLES}

    def check_integrity(self) -> dict[str, list[Any]]:
        """Referential and content checks; maps each failed check to (up to 20) offending ids."""
        problems: dict[str, list[Any]] = {}
        with self._reading() as con:
            for name, sql in INTEGRITY_CHECKS.items():
                bad = [row[0] for row in con.execute(sql + " LIMIT 20").fetchall()]
                if bad:
                    problems[name] = bad
        return problems


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
