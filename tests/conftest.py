"""Shared pytest fixtures. Each concern adds its own, with a line saying what it is for."""

import os

# No model hub is reachable here: fail fast instead of waiting on network timeouts.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
# A `distill` command started by a test must not leave a project server running behind it
# (the default starts one in the background): tests that want a server start their own.
os.environ.setdefault("DISTILL_SERVER", "ephemeral")

# Teachers: a fake OpenAI-compatible server with injectable faults (``fake_openai``).
from fake_openai_server import _fake_openai_session, fake_openai  # noqa: F401

# Flows: a session-scoped Prefect test harness with its own PREFECT_HOME (``prefect_harness``).
from prefect_harness import prefect_env, prefect_harness  # noqa: E402,F401

# Training: one torch thread per module and a tiny student and teacher (``one_torch_thread``, ``tiny_models``).
from tiny_models import one_torch_thread, tiny_models  # noqa: E402,F401

# Storage: a fresh, migrated DuckDB file per test (``store``).
import pytest  # noqa: E402


@pytest.fixture
def store(tmp_path):
    from storage.store import Store

    s = Store(tmp_path / "test.duckdb", lock_timeout=0.2, read_timeout=5)
    s.init()
    return s
