"""Kill the generate flow mid-run (SIGKILL), re-run the same run name: the job finishes with
no duplicate rows and no request paid twice (counted at the fake OpenAI server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage.store import Store

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]

ROOT = Path(__file__).resolve().parent.parent
TARGET = 120

CHILD = textwrap.dedent("""
    import asyncio, sys
    from flows.config import GenerateConfig
    from flows.generate import generate_flow
    from generators.teachers.config import OpenAIConfig

    url, db, instructions = sys.argv[1:4]
    teacher = OpenAIConfig(model="fake-model", base_url=url, concurrency=8, max_retries=2,
                            timeout_s=30)
    generate = GenerateConfig(method="responses", target={target}, batch_size=10, max_concurrent_batches=2,
                              instructions_file=instructions)
    out = asyncio.run(generate_flow(run_name="killed", teacher=teacher, generate=generate, db=db))
    print("SUMMARY", out["status"], out["kept"], out["sent"], out["cached"], flush=True)
""").format(target=TARGET)


def _child(url: str, db: Path, instructions: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, url, str(db), str(instructions)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ok_prompts(store: Store) -> set[str]:
    """Prompts (last user message) of ledger rows that are ok: paid for, never to be sent again."""
    rows = store.query("SELECT messages FROM requests WHERE status = 'ok'")
    return {json.loads(r["messages"])[-1]["content"] for r in rows}


def test_kill_and_resume_pays_nothing_twice(tmp_path, fake_openai, prefect_env):
    fake_openai.latency = 0.05
    instructions = tmp_path / "instructions.jsonl"
    instructions.write_text("".join(json.dumps({"instruction": f"Describe item number {i} briefly."}) + "\n"
                                    for i in range(200)))
    db = tmp_path / "resume.duckdb"

    first = _child(fake_openai.url, db, instructions, prefect_env)
    deadline = time.monotonic() + 240
    while fake_openai.total < 40:  # well into the run, batches in flight
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "the first run never got going"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    seen_before = dict(fake_openai.counts)

    store = Store(db)
    store.merge_journal()  # what the killed process had acknowledged (journal included)
    paid = _ok_prompts(store)
    assert 0 < len(paid) < TARGET

    second = _child(fake_openai.url, db, instructions, prefect_env)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    status, kept, sent, cached = out.split("SUMMARY", 1)[1].split()[:4]
    assert status == "completed" and int(kept) == TARGET

    # No request whose answer was recorded before the kill reached the server again.
    repaid = {p: n for p, n in fake_openai.counts.items() if p in paid and n > 1}
    assert repaid == {}, f"{len(repaid)} paid requests were sent again"
    # Only requests that were on the wire at the kill may have been sent twice.
    resent = {p for p, n in fake_openai.counts.items() if n > 1}
    assert resent <= set(seen_before) - paid
    assert int(cached) >= len(paid)

    # Zero duplicate rows: one sample per instruction (n=1), one ledger row per request,
    # exactly TARGET kept samples for the run, and referential integrity holds.
    assert store.query("SELECT instruction_id FROM samples WHERE method = 'responses' "
                       "GROUP BY 1 HAVING count(*) > 1") == []
    assert store.query("SELECT request_key FROM samples GROUP BY 1 HAVING count(*) > 1 "
                       "AND request_key IS NOT NULL") == []
    assert store.query("SELECT count(*) AS n FROM samples WHERE method = 'responses'")[0]["n"] == TARGET
    assert store.query("SELECT count(*) AS n FROM requests WHERE status = 'ok'")[0]["n"] == len(
        {p for p, n in fake_openai.counts.items()})
    assert store.check_integrity() == {}
    (run,) = store.query("SELECT status, counts FROM runs WHERE flow = 'generate'")
    assert run["status"] == "completed" and json.loads(run["counts"])["kept"] == TARGET
