"""Who has the database file, and when: the in-process lock, opening the file against
another process's lock, the markers of processes waiting for it, and the kept-open file.

DuckDB lets one process write a file and locks it against every other process (readers
included) while that process has it open. So:

- ``process_lock(path)``: one connection at a time per file within this process;
- ``connect(path, ...)``: open the file, retrying with backoff while another process
  holds it, and leave a marker in a "waiting" folder meanwhile;
- ``fresh_marker(folder)``: whether some process is waiting right now (ingest then
  spools rather than take the lock again; a kept-open file is let go);
- ``keeper``: keeps a file open between the commits of ``Store(keep_open_s=...)``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from core.errors import DatabaseError, DatabaseLockedError

_READER_MARKER_TTL_S = 2.0  # a waiting process refreshes its marker far more often than this
_KEEPER_POLL_S = 0.02  # how often a kept-open file checks for processes waiting for it

# --- within this process --------------------------------------------------------------

# One connection at a time per database file within this process. Threads of one flow
# would otherwise collide inside DuckDB: a read-write open fails while this process holds
# a read-only one ("different configuration"), and concurrent inserts of one key fail
# with a transaction conflict instead of de-duplicating. Reentrant, so a read inside
# write() on the same thread does not deadlock.
_process_locks: dict[Path, threading.RLock] = defaultdict(threading.RLock)


@contextmanager
def process_lock(path: Path, timeout: float) -> Iterator[None]:
    lock = _process_locks[path]
    if not lock.acquire(timeout=timeout):
        raise DatabaseLockedError(f"database {path} is busy in this process (waited {timeout:g}s)")
    try:
        yield
    finally:
        lock.release()


# --- against other processes ----------------------------------------------------------


def connect(path: Path, *, read_only: bool, timeout: float, waiting_dir: Path) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying with backoff while another process holds the lock.

    A blocked caller leaves a "waiting" marker in ``waiting_dir`` while it retries: a
    process that ingests batch after batch would otherwise re-take the lock within
    microseconds of each commit and starve it. Ingest sees a reader's marker and spools
    instead; a writer's marker makes a kept-open file be let go.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    marker: Path | None = None
    try:
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only)
            except duckdb.Error as err:
                if not _is_lock_error(err):
                    if read_only and "different configuration" in str(err):
                        # This process already has the file open for writing (another
                        # Store inside write()); DuckDB shares that instance in-process.
                        return duckdb.connect(str(path))
                    raise _open_error(path, err) from err
                if time.monotonic() >= deadline:
                    raise DatabaseLockedError(
                        f"database {path} is locked by another process "
                        f"(waited {timeout:g}s): {str(err).splitlines()[0]}"
                    ) from err
                marker = _mark_waiting(waiting_dir, marker)
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


def _is_lock_error(err: Exception) -> bool:
    return "lock" in str(err).lower() and isinstance(err, (duckdb.IOException, duckdb.ConnectionException))


def _open_error(path: Path, err: Exception) -> DatabaseError:
    msg = str(err).splitlines()[0]
    if "not a valid DuckDB database" in msg or "not a DuckDB" in msg:
        return DatabaseError(f"{path} is not a DuckDB database file")
    return DatabaseError(f"cannot open database {path}: {msg}")


def _mark_waiting(directory: Path, marker: Path | None) -> Path:
    if marker is None:
        directory.mkdir(parents=True, exist_ok=True)
        marker = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        marker.touch()
    else:
        os.utime(marker)  # still waiting: keep the marker fresh
    return marker


def fresh_marker(directory: Path) -> bool:
    """Whether a process is waiting now: a marker in ``directory`` touched lately (a
    marker left behind by a killed process goes stale and stops counting)."""
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


# --- the kept-open file ---------------------------------------------------------------


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
        # path -> (the kept connection, when to let it go, "does another process wait?")
        self._held: dict[Path, tuple[duckdb.DuckDBPyConnection, float, Callable[[], bool]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def keep(self, path: Path, con: duckdb.DuckDBPyConnection, seconds: float,
             others_waiting: Callable[[], bool]) -> None:
        """Keep ``con``'s database open ``seconds`` more, or until ``others_waiting()``.
        The caller holds the process lock."""
        with self._lock:
            held = self._held.get(path)
            # A connection of its own (a cursor would close with ``con``); opened while ``con``
            # is, it joins the same database instance at no cost.
            handle = held[0] if held is not None else duckdb.connect(str(path))
            self._held[path] = (handle, time.monotonic() + seconds, others_waiting)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="distillery-db-keeper", daemon=True)
                self._thread.start()

    def release(self, path: Path, timeout: float) -> None:
        """Close the kept file now (waiting for this process's current use of it)."""
        if path in self._held:
            with process_lock(path, timeout):
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
            for path, (_, _, others_waiting) in held:
                if not self._due(path) and not others_waiting():
                    continue
                lock = _process_locks[path]
                if lock.acquire(blocking=False):  # busy: in use now, let go at the next poll
                    try:
                        if self._due(path) or others_waiting():  # no commit came meanwhile
                            self._close(path)
                    finally:
                        lock.release()

    def _due(self, path: Path) -> bool:
        held = self._held.get(path)
        return held is not None and time.monotonic() >= held[1]


keeper = _Keeper()
atexit.register(keeper.release_all)
