"""Two processes, one database file: the journal under a held lock, kill -9, reader retry.

Each test starts real subprocesses, since DuckDB's lock is per process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.errors import DatabaseLockedError
from storage.records import Instruction, Sample
from storage.store import Store

ROOT = Path(__file__).resolve().parents[1]

# Holds the database open for writing until a line arrives on stdin (or for N seconds).
HOLD_LOCK = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    if len(sys.argv) > 2:
        time.sleep(float(sys.argv[2]))
    else:
        sys.stdin.readline()
    con.close()
    """
)

# Writes batch after batch (ingest on even batches, spool on odd ones) and prints
# "ack N" only after the call for batch N returned: what was acknowledged must survive.
WRITER = textwrap.dedent(
    """
    import sys
    from storage.records import Instruction
    from storage.store import Store
    store = Store(sys.argv[1], lock_timeout=0.05)
    for b in range(10_000):
        batch = [Instruction(text=f"batch {b} item {j}", method="seed") for j in range(200)]
        (store.ingest if b % 2 == 0 else store.spool)(batch)
        print(f"ack {b}", flush=True)
    """
)


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True, **kw)


@pytest.fixture
def lock_holder(store):
    """Another process holding the store's database for writing until the test releases it."""
    proc = _python(HOLD_LOCK, str(store.path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "locked"

    def release() -> None:
        if proc.poll() is None:
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(timeout=10)

    yield release
    release()


def _batch(tag: str, n: int = 50) -> list[Instruction | Sample]:
    ins = [Instruction(text=f"{tag} {i}", method="seed") for i in range(n)]
    return ins + [Sample(instruction_id=i.id, response=f"answer {i.text}") for i in ins]


def test_journal_spill_and_merge_under_held_lock(store, lock_holder):
    first = _batch("spilled")
    result = store.ingest(first)
    assert result.spooled and result.spooled_rows == 100 and result.new == {}
    assert store.journal_rows() == 100 and len(store.journal_segments()) == 2
    store.read_timeout = 0.3
    with pytest.raises(DatabaseLockedError, match="locked by another process"):
        store.query("SELECT 1")

    lock_holder()
    second = store.ingest(_batch("direct"))
    assert second.merged == 100 and not second.spooled
    assert second.new == {"instructions": 50, "samples": 50}
    assert store.journal_segments() == []
    assert store.table_counts()["instructions"] == 100
    assert store.table_counts()["samples"] == 100
    # Replaying the same rows (as after a crash between commit and delete) adds nothing.
    store.spool(first)
    assert store.merge_journal() == 100
    assert store.table_counts()["instructions"] == 100


def test_reader_waits_for_a_short_write_lock(store):
    store.ingest(_batch("x", 3))
    holder = _python(HOLD_LOCK, str(store.path), "0.7", stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    assert store.query("SELECT count(*) AS n FROM instructions") == [{"n": 3}]
    assert time.monotonic() - started > 0.3  # it did wait, then succeeded
    holder.wait(timeout=10)


def test_kill_minus_nine_loses_nothing_acknowledged(tmp_path):
    db = tmp_path / "killed.duckdb"
    writer = _python(WRITER, str(db), stdout=subprocess.PIPE)
    acked = []
    try:
        for line in writer.stdout:
            acked.append(int(line.split()[1]))
            if len(acked) >= 12:
                break
    finally:
        os.kill(writer.pid, signal.SIGKILL)  # mid-batch: it is already writing the next one
        writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL

    store = Store(db)
    store.merge_journal()
    counts = {
        row["batch"]: row["n"]
        for row in store.query(
            "SELECT split_part(text, ' ', 2)::INT AS batch, count(*) AS n FROM instructions GROUP BY 1"
        )
    }
    for b in acked:
        assert counts.get(b) == 200, f"acknowledged batch {b} incomplete: {counts.get(b)}"
    # Exactly once: nothing beyond the acknowledged batches and the one in flight.
    assert set(counts) - set(acked) <= {max(acked) + 1}
    assert all(n == 200 for n in counts.values())
    assert store.journal_segments() == []


def test_threads_of_one_process_share_a_store(store):
    # Reads and writes from worker threads, as a flow's concurrent batches do.
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int):
        if i % 2:
            batch = [Instruction(text=f"thread {i} item {j}", method="seed") for j in range(20)]
            return store.ingest([*batch, Instruction(text="in every batch", method="seed")])
        return store.query("SELECT count(*) AS n FROM instructions")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(24)))
    store.merge_journal()
    assert store.table_counts()["instructions"] == 12 * 20 + 1


# Reads the store from another process (a Store, so it leaves a "waiting" marker) and
# prints what it found and how long it waited for the file.
READ_COUNT = textwrap.dedent(
    """
    import sys, time
    from storage.store import Store
    started = time.monotonic()
    n = Store(sys.argv[1], read_timeout=20).query("SELECT count(*) AS n FROM instructions")[0]["n"]
    print(n, round(time.monotonic() - started, 3), flush=True)
    """
)
# Opens the file with plain DuckDB (no marker), retrying: how long until it is free.
PLAIN_OPEN = textwrap.dedent(
    """
    import sys, time, duckdb
    started = time.monotonic()
    while True:
        try:
            duckdb.connect(sys.argv[1], read_only=True).close()
            break
        except duckdb.Error:
            time.sleep(0.02)
    print(round(time.monotonic() - started, 3), flush=True)
    """
)


def _is_open_here(path: Path) -> bool:
    """Whether this process holds the file (another process cannot open it then)."""
    probe = _python("import sys, duckdb\ntry:\n    duckdb.connect(sys.argv[1], read_only=True).close()\n"
                    "    print('free')\nexcept duckdb.Error:\n    print('held')", str(path), stdout=subprocess.PIPE)
    out, _ = probe.communicate(timeout=60)
    return out.strip() == "held"


def test_kept_open_file_is_reused_and_let_go_when_another_process_waits(tmp_path):
    store = Store(tmp_path / "kept.duckdb", keep_open_s=30)
    store.ingest(_batch("kept", 5))
    assert _is_open_here(store.path)  # kept open after the commit
    # Later commits reuse the open file: the same kept handle, no new database instance.
    from storage import locking

    handle = locking.keeper._held[store.path][0]
    for i in range(3):
        store.ingest(_batch(f"more {i}", 5))
    assert locking.keeper._held[store.path][0] is handle
    assert store.query("SELECT count(*) AS n FROM instructions") == [{"n": 20}]

    # A reader in another process leaves a marker; the file is let go for it at once,
    # not after keep_open_s.
    reader = _python(READ_COUNT, str(store.path), stdout=subprocess.PIPE)
    out, _ = reader.communicate(timeout=60)
    count, waited = out.split()
    assert int(count) == 20 and float(waited) < 5
    assert not _is_open_here(store.path)
    # The next commit keeps it again; release() closes it now.
    store.ingest(_batch("after", 5))
    assert _is_open_here(store.path)
    store.release()
    assert not _is_open_here(store.path)
    assert Store(store.path).table_counts()["instructions"] == 25


def test_kept_open_file_is_let_go_after_keep_open_s(tmp_path):
    store = Store(tmp_path / "linger.duckdb", keep_open_s=0.5)
    store.ingest(_batch("x", 3))
    # Plain DuckDB leaves no marker: it gets the file when the time is up.
    opener = _python(PLAIN_OPEN, str(store.path), stdout=subprocess.PIPE)
    out, _ = opener.communicate(timeout=60)
    assert float(out) < 10
    assert not _is_open_here(store.path)
