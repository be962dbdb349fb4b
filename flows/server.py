"""A local Prefect server for distillery, and which Prefect API a command talks to.

    distill server start            # a real `prefect server start` in the background; the UI URL
    distill server status
    distill server stop             # ends it, and every worker `distill worker --detach` started

The server keeps its SQLite database under the project's state folder (``.distill/`` next
to where you run distill, or ``$DISTILL_HOME``), runs in its own process group with a log
file, and is recorded in ``.distill/server.json``. Every ``distill`` command then uses it:
``use_prefect_api()`` points the command at, in order, ``PREFECT_API_URL`` when set, the
server ``distill server start`` recorded when it answers, else Prefect's ephemeral mode,
a temporary API server that this command starts and that dies with it (also on
``kill -9``: ``core.processes``). Runs started against a server show up in its UI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import DistillError
from core.processes import die_with_parent_preexec, group_alive, stop_group

DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 180.0  # the first start migrates the server's database (~20 s on 2 cores)


def state_dir() -> Path:
    """The project's state folder: ``$DISTILL_HOME``, else ``./.distill``."""
    return Path(os.environ.get("DISTILL_HOME") or ".distill").resolve()


@dataclass
class Recorded:
    """A process distillery started in the background, as recorded in the state folder."""

    pid: int
    url: str = ""
    log: str = ""
    command: str = ""


def _record_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def _read(name: str) -> Recorded | None:
    try:
        return Recorded(**json.loads(_record_path(name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write(name: str, rec: Recorded) -> None:
    path = _record_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    tmp.replace(path)


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    """Whether a Prefect API answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def running_server() -> Recorded | None:
    """The server ``distill server start`` recorded, when it is alive and answers."""
    rec = _read("server")
    if rec is None or not group_alive(rec.pid) or not healthy(rec.url, timeout=0.5):
        return None
    return rec


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_server(port: int = DEFAULT_PORT, *, timeout_s: float = STARTUP_TIMEOUT_S,
                 on_wait=None) -> tuple[Recorded, bool]:
    """Start `prefect server start` in the background and wait until it answers.

    Returns (the server, whether this call started it): a server already running is
    reported, not started twice."""
    current = running_server()
    if current is not None:
        return current, False
    if not _port_free(port):
        raise DistillError(f"port {port} is taken by another program: choose one with --port")
    home = state_dir()
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_UI_API_URL=api, PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        # Its own session: the server outlives this command (it is a service, stopped by
        # `distill server stop`), and stopping its group reaches everything it forks.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    rec = Recorded(pid=proc.pid, url=api, log=str(log), command=" ".join(cmd))
    _write("server", rec)
    deadline = time.monotonic() + timeout_s
    while not healthy(api):
        if proc.poll() is not None:
            _record_path("server").unlink(missing_ok=True)
            raise DistillError(f"the Prefect server exited with code {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            stop_group(proc.pid, grace_s=5, reap=proc)
            _record_path("server").unlink(missing_ok=True)
            raise DistillError(f"the Prefect server did not answer {api}/health within {timeout_s:g}s; see {log}")
        if on_wait is not None:
            on_wait()
        time.sleep(0.25)
    return rec, True


def stop_server() -> list[str]:
    """Stop the recorded server and the workers started with ``--detach``; what was stopped."""
    stopped = []
    for name in ("worker", "server"):
        rec = _read(name)
        if rec is not None and group_alive(rec.pid):
            stop_group(rec.pid, grace_s=10)
            stopped.append(f"{name} (pid {rec.pid})")
        _record_path(name).unlink(missing_ok=True)
    return stopped


def start_worker_detached(pool: str, api_url: str, query_seconds: float | None = None) -> Recorded:
    """`prefect worker start --pool POOL --type process` in the background (its own group)."""
    rec = _read("worker")
    if rec is not None and group_alive(rec.pid):
        return rec
    log = state_dir() / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(worker_command(pool), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=worker_env(api_url, query_seconds),
                                start_new_session=True)
    rec = Recorded(pid=proc.pid, url=api_url, log=str(log), command=" ".join(worker_command(pool)))
    _write("worker", rec)
    return rec


def worker_command(pool: str) -> list[str]:
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]


def worker_env(api_url: str, query_seconds: float | None = None) -> dict[str, str]:
    env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    if query_seconds is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    return env


# -- which API a command uses -----------------------------------------------------------


def use_prefect_api() -> str:
    """Point this process at a Prefect API before Prefect is imported; returns which one.

    ``PREFECT_API_URL`` wins; else the recorded ``distill server start`` server when it
    answers; else ephemeral mode, with the temporary server tied to this process's life."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    rec = running_server()
    if rec is not None:
        os.environ["PREFECT_API_URL"] = rec.url
        return rec.url
    _ephemeral_server_dies_with_us()
    return "ephemeral"


def _ephemeral_server_dies_with_us() -> None:
    """Prefect's ephemeral mode starts its API server as a child process and stops it at
    exit, but a ``kill -9`` of this process skips that and the server ran on, re-parented
    to init. Ask Linux to end it with us instead (``PR_SET_PDEATHSIG``), by starting it
    with our preexec hook."""
    from prefect.server.api import server

    if getattr(server.SubprocessASGIServer, "_distill_patched", False):
        return
    original = server.SubprocessASGIServer._run_uvicorn_command

    def run_uvicorn_command(self):
        real_popen = subprocess.Popen

        def popen(*args, **kwargs):
            kwargs.setdefault("preexec_fn", die_with_parent_preexec())
            return real_popen(*args, **kwargs)

        server.subprocess.Popen = popen  # only for this call: the module's own reference
        try:
            return original(self)
        finally:
            server.subprocess.Popen = real_popen

    server.SubprocessASGIServer._run_uvicorn_command = run_uvicorn_command
    server.SubprocessASGIServer._distill_patched = True
