"""A local Prefect server for distillery, and which Prefect API a command talks to.

    distill server start            # a real `prefect server start` in the background; the UI URL
    distill server status
    distill server stop             # ends it, and every worker `distill worker --detach` started

The server keeps its SQLite database under the project's state folder (``.distill/`` next
to where you run distill, or ``$DISTILL_HOME``), runs in its own process group with a log
file, and is recorded in ``.distill/server.json``. Every ``distill`` command uses, in order
(``use_prefect_api``): ``PREFECT_API_URL`` when set; the recorded server when it answers;
else, by default, it starts that server itself, in the background, and says so (later
commands reuse it; ``distill server stop`` ends it). Runs then show up in the UI, and a
command starts in a few seconds instead of booting a temporary API server every time
(BENCHMARKS.md, end to end).

``DISTILL_SERVER=ephemeral`` instead gives each command a temporary API server of its own
(``prefect server start --no-services --no-ui`` on the client's PREFECT_HOME, what Prefect's
ephemeral mode runs), spawned first thing so it boots while the command imports, stopped
at exit, and ended by Linux if the command is killed, also by ``kill -9``
(``core.processes``): nothing is left behind.

A new server's database is copied from a template migrated once per machine and Prefect
version (``distill server prepare``, run by ``make install``): migrating a fresh database
cost a command 5.7 s more before its first request on 2 cores (BENCHMARKS.md run 7: 15.45 s
on a fresh Prefect home, 9.74 s on a used one), and a new project should not wait for it.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
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
    record: str = "server"  # its file in the state folder ('' for a command's temporary server)


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


def _free_port_from(port: int) -> int:
    """``port`` when it is free, else the next free one above it."""
    for candidate in range(port, port + 100):
        if _port_free(candidate):
            return candidate
    raise DistillError(f"no free port in {port}..{port + 99} for the Prefect server")


def template_db() -> Path:
    """The migrated, empty server database this machine copies into a new state folder
    (named by Prefect's version, read without importing Prefect: its settings are read at
    import, before this module has chosen the API)."""
    from importlib.metadata import version

    from core.embedded import cache_root

    return cache_root() / "prefect" / f"prefect-{version('prefect')}.db"


def prepare_template() -> Path:
    """Migrate an empty server database once (``prefect server database upgrade``) and keep
    it as the template (idempotent)."""
    import shutil
    import tempfile

    target = template_db()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as home:
        env = dict(os.environ, PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
        env.pop("PREFECT_API_URL", None)
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        done = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise DistillError(f"could not migrate a Prefect database: {done.stderr.strip()[-500:]}")
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(Path(home) / "prefect.db", tmp)
        tmp.replace(target)
    return target


def spawn_server(port: int = DEFAULT_PORT) -> Recorded:
    """Start `prefect server start` in the background and return at once (``wait_healthy``
    waits for it); a free port at or above ``port``."""
    home = state_dir()
    cmd, env, api = _server_launch(home / "prefect", port)
    log = home / "server.log"
    with open(log, "ab") as out:
        # Its own session: the server outlives this command (it is a service, stopped by
        # `distill server stop`), and stopping its group reaches everything it forks.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    rec = Recorded(pid=proc.pid, url=api, log=str(log), command=" ".join(cmd))
    _write("server", rec)
    return rec


def wait_healthy(rec: Recorded, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Wait until the server answers; stop it and say why when it dies or takes too long."""
    deadline = time.monotonic() + timeout_s
    see = f"; see {rec.log}" if rec.log else ""
    while not healthy(rec.url, timeout=2.0):
        if not group_alive(rec.pid):
            if rec.record:
                _record_path(rec.record).unlink(missing_ok=True)
            raise DistillError(f"the Prefect server exited before it answered{see}")
        if time.monotonic() > deadline:
            stop_group(rec.pid, grace_s=5)
            if rec.record:
                _record_path(rec.record).unlink(missing_ok=True)
            raise DistillError(f"the Prefect server did not answer {rec.url}/health within {timeout_s:g}s{see}")
        time.sleep(0.1)


def start_server(port: int = DEFAULT_PORT, *, timeout_s: float = STARTUP_TIMEOUT_S) -> tuple[Recorded, bool]:
    """Start the server in the background and wait until it answers; (the server, whether
    this call started it): a server already running is reported, not started twice."""
    current = running_server()
    if current is not None:
        return current, False
    if not _port_free(port):
        raise DistillError(f"port {port} is taken by another program: choose one with --port")
    rec = spawn_server(port)
    wait_healthy(rec, timeout_s)
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
    rec = Recorded(pid=proc.pid, url=api_url, log=str(log), command=" ".join(worker_command(pool)), record="worker")
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


_starting: Recorded | None = None  # a server this process started and has not seen answer yet


def use_prefect_api(announce=print) -> str:
    """Point this process at a Prefect API before Prefect is imported; returns which one.

    ``PREFECT_API_URL`` wins; else the recorded server when it answers; else the project's
    server is started in the background (``announce`` says so) and this process goes on
    with its imports and setup while it boots: ``ensure_api_ready()`` waits for it just
    before the first flow. ``DISTILL_SERVER=ephemeral``: a temporary server of this
    command's own (``_spawn_temporary_server``), tied to this process's life."""
    global _starting
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if os.environ.get("DISTILL_SERVER", "auto") == "ephemeral":  # asked for: even when a server runs
        rec = _starting = _spawn_temporary_server()
        os.environ["PREFECT_API_URL"] = rec.url
        return "ephemeral"
    rec = running_server()
    if rec is None:
        rec = _starting = spawn_server()
        announce(f"started a Prefect server for this project in the background: UI {rec.url.removesuffix('/api')} "
                 f"(later commands reuse it; `distill server stop` ends it; DISTILL_SERVER=ephemeral: one per command)")
    os.environ["PREFECT_API_URL"] = rec.url
    return rec.url


def ensure_api_ready(warm: Iterable[str] = ()) -> None:
    """Wait for the server ``use_prefect_api`` started, if it has not answered yet. While it
    boots (on the other core), import ``warm``: modules the command will need next (the
    teacher's backend, the report's charts), one at a time until the server answers."""
    global _starting
    if _starting is None:
        return
    rec, _starting = _starting, None
    for name in warm:
        if healthy(rec.url, timeout=0.5):
            break
        try:
            importlib.import_module(name)
        except ImportError:  # not installed: the step that needs it says so
            pass
    wait_healthy(rec)


def _spawn_temporary_server() -> Recorded:
    """This command's own API server: the client's PREFECT_HOME database (copied from the
    template when there is none yet), no services, no UI; it ends with this process."""
    import atexit
    # Prefect's default home, named here: importing Prefect now would read its settings
    # before this module has set PREFECT_API_URL.
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    cmd, env, api = _server_launch(home, DEFAULT_PORT + 1000)
    cmd += ["--no-services", "--no-ui", "--log-level", "ERROR"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True, preexec_fn=die_with_parent_preexec())
    atexit.register(stop_group, proc.pid, grace_s=5, reap=proc)
    return Recorded(pid=proc.pid, url=api, log="", command=" ".join(cmd), record="")


def _server_launch(prefect_home: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    """What starting a server on ``prefect_home`` takes: its database from the template when
    it has none (the server then starts without migrating), a free port at or above
    ``port``; returns the command, its environment and the API URL."""
    import shutil

    prefect_home.mkdir(parents=True, exist_ok=True)
    template = template_db()
    if not (prefect_home / "prefect.db").exists() and template.exists():
        shutil.copyfile(template, prefect_home / "prefect.db")
    port = _free_port_from(port)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    api = f"http://127.0.0.1:{port}/api"
    env.update(PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_UI_API_URL=api, PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return cmd, env, api
