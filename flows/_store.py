"""A Store that serializes its own connections within this process.

A flow runs several batches at once, each reading (ledger lookups) and writing (ingest,
journal merges) from worker threads. DuckDB refuses to open a file read-write in a
process that holds a read-only connection to it ("different configuration than existing
connections"), and ``Store`` retries only on other processes' locks. Holding one lock
per file around every connection-opening call keeps this process's reads and writes from
overlapping; other processes are still handled by the store's own retries and journal.
(Adapter until storage.Store serializes in-process connections itself.)
"""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.store import Store

_locks: dict[Path, threading.RLock] = defaultdict(threading.RLock)


class LockedStore:
    """Delegates to ``Store``; connection-opening calls take this process's lock on the file."""

    def __init__(self, path: Any = None, **kwargs: Any) -> None:
        self._store = path if isinstance(path, Store) else Store(path, **kwargs)
        self._lock = _locks[self._store.path]

    def __getattr__(self, name: str) -> Any:  # path, spool, journal_segments, ...
        return getattr(self._store, name)

    def __repr__(self) -> str:
        return f"LockedStore({str(self._store.path)!r})"

    def _locked(name: str):  # noqa: N805 - a small decorator factory
        def call(self, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return getattr(self._store, name)(*args, **kwargs)

        call.__name__ = name
        return call

    init = _locked("init")
    schema_version = _locked("schema_version")
    ingest = _locked("ingest")
    merge_journal = _locked("merge_journal")
    query = _locked("query")
    query_arrow = _locked("query_arrow")
    table_counts = _locked("table_counts")
    check_integrity = _locked("check_integrity")

    @contextmanager
    def write(self, timeout: float | None = None):
        with self._lock, self._store.write(timeout) as con:
            yield con

    @property
    def store(self) -> Store:
        """The plain Store (for functions that type-check for it)."""
        return self._store
