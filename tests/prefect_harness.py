"""Pytest plugin: a session-scoped Prefect test harness with its own PREFECT_HOME.

Registered from tests/conftest.py (``pytest_plugins = ["prefect_harness"]``). Flow tests
ask for it explicitly::

    pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]

The harness starts one temporary Prefect API server (SQLite in a temp dir) for the whole
session, so flows run against a real API (artifacts, events, task runs) without touching
the developer's ~/.prefect or a running server. Subprocesses that should report to the
same API get ``prefect_env`` (PREFECT_HOME and PREFECT_API_URL) in their environment.
"""

from __future__ import annotations

import os
import tempfile

import pytest

# Before anything imports prefect: its settings are read from the environment at import.
_HOME = tempfile.mkdtemp(prefix="distill-prefect-home-")
os.environ["PREFECT_HOME"] = _HOME
os.environ.pop("PREFECT_API_URL", None)  # never report test runs to a developer's server
os.environ.pop("PREFECT_PROFILE", None)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# OpenMP threads that spin-wait make torch 10-25x slower on shared cores (see flows/cli_flows.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for the session; yields its URL."""
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield prefect.settings.PREFECT_API_URL.value()


@pytest.fixture()
def prefect_env(prefect_harness) -> dict[str, str]:
    """os.environ plus what a subprocess needs to report to the harness's API."""
    env = dict(os.environ)
    env["PREFECT_HOME"] = _HOME
    env["PREFECT_API_URL"] = prefect_harness
    return env
