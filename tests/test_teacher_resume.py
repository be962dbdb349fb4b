"""Crash resume: a generating process killed with SIGKILL mid-batch; the re-run pays only
for what was not recorded and never for a key already ok.

What a kill can lose: the requests on the wire (at most ``concurrency``) plus the answers
waiting for the next group commit (the ledger appends at most every 50 ms) and those in
the append being fsynced. Each request here takes at least 50 ms, so each of those holds
at most ``concurrency`` answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from generators.teachers.base import ChatRequest
from generators.teachers.ledger import LedgeredTeacher
from generators.teachers.openai_backend import OpenAITeacher
from storage.store import Store

REPO = Path(__file__).resolve().parents[1]
N, CONCURRENCY = 60, 4

GENERATE = textwrap.dedent("""
    import sys
    from generators.teachers.base import ChatRequest
    from generators.teachers.ledger import LedgeredTeacher
    from generators.teachers.openai_backend import OpenAITeacher
    from storage.store import Store

    url, db, n, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    teacher = LedgeredTeacher(OpenAITeacher("fake-model", base_url=url, concurrency=concurrency), Store(db))
    print("started", flush=True)
    done = teacher.generate([ChatRequest.chat(f"item {i}") for i in range(n)])
    print("finished", sum(d.ok for d in done), flush=True)
""")


def requests() -> list[ChatRequest]:
    return [ChatRequest.chat(f"item {i}") for i in range(N)]


def test_killed_run_resumes_without_paying_twice(fake_openai, tmp_path):
    fake_openai.latency = 0.05  # 60 requests / 4 at a time: about 0.75 s in all
    db = tmp_path / "resume.duckdb"
    script = tmp_path / "generate.py"
    script.write_text(GENERATE)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script), fake_openai.url, str(db), str(N), str(CONCURRENCY)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while fake_openai.total < N // 3:  # let about a third get answered, then kill -9
        assert proc.poll() is None, "generator exited early"
        assert time.monotonic() < deadline, "generator made no progress"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_counts = dict(fake_openai.counts)
    assert 0 < len(first_counts) < N

    store = Store(db)
    teacher = LedgeredTeacher(OpenAITeacher("fake-model", base_url=fake_openai.url), store)
    recorded = teacher.lookup([teacher.key(r) for r in requests()])  # database + unmerged journal
    lost_at_most = 3 * CONCURRENCY
    assert len(recorded) >= len(first_counts) - lost_at_most

    done = teacher.generate(requests())
    assert all(d.ok for d in done)
    assert teacher.last_stats.cached == len(recorded)
    key_to_prompt = {teacher.key(r): r.messages[-1]["content"] for r in requests()}
    for key in recorded:  # already ok: never sent again
        assert fake_openai.counts[key_to_prompt[key]] == 1
    resent = [p for p, n in fake_openai.counts.items() if n > 1]
    assert len(resent) <= lost_at_most, resent
    assert fake_openai.total == N + len(resent)
    assert store.query("SELECT count(*) AS n, count(DISTINCT key) AS k FROM requests WHERE status = 'ok'") == [
        {"n": N, "k": N}]
    assert store.journal_segments() == []
