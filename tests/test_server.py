"""flows/server.py without Prefect: waiting for a server this command started, and what
the command imports meanwhile (the real servers are in tests/test_operate.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from core.processes import stop_group
from flows import server

# A stand-in for `prefect server start`: answers /api/health with 200 after DELAY seconds.
LATE_SERVER = textwrap.dedent("""
    import http.server, sys, time
    time.sleep(float(sys.argv[2]))

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def late_server(request):
    """A server process that answers after ``request.param`` seconds, as ``use_prefect_api``
    records one it spawned; stopped afterwards."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", LATE_SERVER, str(port), str(request.param)],
                            start_new_session=True)
    rec = server.Recorded(pid=proc.pid, url=f"http://127.0.0.1:{port}/api", record="")
    yield rec
    stop_group(proc.pid, grace_s=2, reap=proc)


def _forget(name: str) -> None:
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


@pytest.mark.parametrize("late_server", [1.5], indirect=True)
def test_the_command_imports_what_it_needs_while_its_server_boots(late_server, monkeypatch):
    _forget("xml.dom.minidom")
    monkeypatch.setattr(server, "_starting", late_server)
    server.ensure_api_ready(warm=("no_such_module_for_distill", "xml.dom.minidom"))
    assert "xml.dom.minidom" in sys.modules  # imported while it booted; the missing one skipped
    assert server.healthy(late_server.url)  # and it returned only once the server answered
    assert server._starting is None


@pytest.mark.parametrize("late_server", [0], indirect=True)
def test_a_server_that_already_answers_is_not_waited_on_with_imports(late_server, monkeypatch):
    import time

    deadline = time.monotonic() + 10
    while not server.healthy(late_server.url) and time.monotonic() < deadline:
        time.sleep(0.05)
    _forget("xml.dom.minidom")
    monkeypatch.setattr(server, "_starting", late_server)
    server.ensure_api_ready(warm=("xml.dom.minidom",))
    assert "xml.dom.minidom" not in sys.modules  # the flow imports what it needs, when it needs it


def test_nothing_started_means_nothing_to_wait_for(monkeypatch):
    monkeypatch.setattr(server, "_starting", None)
    _forget("xml.dom.minidom")
    server.ensure_api_ready(warm=("xml.dom.minidom",))
    assert "xml.dom.minidom" not in sys.modules
