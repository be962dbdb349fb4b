"""Run the `distill` CLI with timestamps of its start-up steps (bench_e2e.py's timeline).

    python benchmarks/_e2e_probe.py EVENTS.json --db D generate ...   # = python -m flows.cli --db D generate ...

Observation only: nothing the command does changes. The probe records ``time.monotonic()``
(system-wide on Linux, so comparable with the timestamps of the bench and the fake
server) when

- the interpreter reaches this script (``interpreter ready``: Python start-up and site);
- ``flows.cli`` is imported (the CLI's imports and its typer app);
- the config file is opened (an audit hook on ``open``), and a few heavy imports start
  (flows.config, flows.generate, prefect.server.api.server, openai, matplotlib: an audit
  hook on ``import``);
- the generate command calls ``asyncio.run`` with the flow (every import the command
  needs, ``flows.generate`` and Prefect included, and the config validated);
- Prefect spawns its ephemeral server (an audit hook on ``subprocess.Popen``) and its
  ``SubprocessASGIServer.start`` returns (the server answered /api/health);
- the first Prefect API request is sent and answered, and ``create_flow_run`` returns;
- the flow's run context is entered (the flow body is about to run);
- ``asyncio.run`` returns (the flow finished, its final state reported);
- the ephemeral server is stopped at exit, and the last exit handler runs.

Prefect's modules are patched as they are imported (a ``sys.meta_path`` finder that wraps
the loader of four named modules), so the probe imports nothing the command would not.
It also counts the Prefect API requests the process sends and the seconds spent waiting
for them (async and sync clients; the events websocket is not among them).

``E2E_PREFECT_SERVER=thread`` or ``early`` runs the command against a prototype of another
way to reach Prefect (bench_e2e.py's ``thread`` and ``early`` modes): the ephemeral
server's app served by uvicorn in a thread of the CLI process, or the ephemeral server's
own uvicorn command spawned first thing, in parallel with the CLI's imports.
"""

from __future__ import annotations

import time

_T_READY = time.monotonic()

import atexit  # noqa: E402
import functools  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EVENTS: dict[str, float] = {"interpreter ready": _T_READY}
API = {"requests": 0, "wait_s": 0.0, "first_path": "", "paths": {}}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def mark(name: str) -> None:
    EVENTS.setdefault(name, time.monotonic())


def _after(name: str):
    """Wrap a function so that its first return is marked ``name``."""
    def wrap(fn):
        if getattr(fn, "_probe", False):
            return fn
        if _is_async(fn):
            @functools.wraps(fn)
            async def awrapper(*args, **kwargs):
                out = await fn(*args, **kwargs)
                mark(name)
                return out
            awrapper._probe = True
            return awrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            mark(name)
            return out
        wrapper._probe = True
        return wrapper
    return wrap


def _is_async(fn) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def _count(request) -> None:
    what = f"{request.method} {_UUID.sub('{id}', request.url.path)}"
    if not API["requests"]:
        mark("first Prefect API request sent")
        API["first_path"] = what
    API["requests"] += 1
    API["paths"][what] = API["paths"].get(what, 0) + 1


def _timed_send(fn, is_async: bool):
    """Count API requests (by method and path) and the time spent waiting for them."""
    if is_async:
        @functools.wraps(fn)
        async def asend(self, request, *args, **kwargs):
            t = time.monotonic()
            _count(request)
            try:
                return await fn(self, request, *args, **kwargs)
            finally:
                API["wait_s"] += time.monotonic() - t
                mark("first Prefect API response")
        return asend

    @functools.wraps(fn)
    def send(self, request, *args, **kwargs):
        t = time.monotonic()
        _count(request)
        try:
            return fn(self, request, *args, **kwargs)
        finally:
            API["wait_s"] += time.monotonic() - t
            mark("first Prefect API response")
    return send


def _patch(module_name: str, module) -> None:
    if module_name == "prefect.server.api.server":
        cls = module.SubprocessASGIServer
        start, stop = cls.start, cls.stop

        def timed_start(self, *args, **kwargs):
            mark("ephemeral server: start() called")
            out = start(self, *args, **kwargs)
            mark("ephemeral server healthy (start() returned)")
            return out

        def timed_stop(self, *args, **kwargs):
            mark("at exit: ephemeral server stop() called")
            out = stop(self, *args, **kwargs)
            mark("at exit: ephemeral server stopped")
            return out

        cls.start, cls.stop = timed_start, timed_stop
    elif module_name == "prefect.client.base":
        module.PrefectHttpxAsyncClient.send = _timed_send(module.PrefectHttpxAsyncClient.send, True)
        module.PrefectHttpxSyncClient.send = _timed_send(module.PrefectHttpxSyncClient.send, False)
    elif module_name == "prefect.client.orchestration._flow_runs.client":
        for cls in (module.FlowRunClient, module.FlowRunAsyncClient):
            cls.create_flow_run = _after("flow run created (create_flow_run returned)")(cls.create_flow_run)
    elif module_name == "prefect.context":
        enter = module.FlowRunContext.__enter__

        def timed_enter(self, *args, **kwargs):
            out = enter(self, *args, **kwargs)
            mark("flow run context entered (flow body next)")
            return out

        module.FlowRunContext.__enter__ = timed_enter


# Imports whose start is marked (the audit event comes before the module is found and run).
IMPORTS = {
    "flows.config": "import flows.config starts (config loading)",
    "flows.generate": "import flows.generate starts (config validated)",
    "prefect.server.api.server": "import prefect.server.api.server starts (in the CLI process)",
    "openai": "import openai starts (teacher built in the flow body)",
    "matplotlib": "import matplotlib starts (report charts)",
}
WATCHED = {"prefect.server.api.server", "prefect.client.base", "prefect.client.orchestration._flow_runs.client",
           "prefect.context"}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of a watched module so that it is patched right after it runs."""

    def find_spec(self, name, path=None, target=None):
        if name not in WATCHED:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(name, module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _audit(config_path: str | None):
    def hook(event: str, args: tuple) -> None:
        if event == "open" and config_path and args and isinstance(args[0], str) and args[0] == config_path:
            mark("config file opened")
        elif event == "import" and args and args[0] in IMPORTS:
            mark(IMPORTS[args[0]])
        elif event == "subprocess.Popen" and "uvicorn" in " ".join(map(str, args[1] or ())):
            mark("ephemeral server: process spawned")
    return hook


def _write(path: Path) -> None:
    mark("last exit handler")
    path.write_text(json.dumps({"events": EVENTS, "api": API}))


# -- prototypes: other ways to reach a Prefect API (E2E_PREFECT_SERVER=thread|early) -------------
# Not what `distill` does today: what it could do, measured on the same command.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_early_server() -> None:
    """Spawn the ephemeral server's own uvicorn command first thing, before any import,
    and point PREFECT_API_URL at it; the flow waits for /api/health before it starts."""
    import os
    import subprocess

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                            env={**os.environ, **SERVER_ENV})
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    mark("prototype server: process spawned")

    def stop() -> None:  # registered before Prefect's exit handlers, so it runs after them
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    atexit.register(stop)


def _wait_early_server() -> None:
    import os
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(os.environ["PREFECT_API_URL"] + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.05)
    mark("prototype server healthy (the flow waited for it)")


def _start_thread_server() -> None:
    """Serve the ephemeral server's app with uvicorn in a thread of this process."""
    import os
    import socket
    import threading

    IMPORTS.pop("prefect.server.api.server")  # imported here on purpose, marked below
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    import uvicorn
    from prefect.server.api.server import create_app

    mark("prototype server: prefect.server.api.server imported")
    server = uvicorn.Server(uvicorn.Config(create_app(ephemeral=True, final=True), log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="prefect-api", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    mark("prototype server healthy (in-process thread)")

    def stop() -> None:
        # Before the interpreter's shutdown begins: from then on the server's event loop
        # cannot use worker threads (concurrent.futures refuses them) and never stops.
        # Prefect's event and log workers drain first, while the API still answers.
        mark("after the CLI: prototype server stop")
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all(timeout=5)
        APILogWorker.drain_all(timeout=5)
        # force_exit: do not wait for open connections (the events client's websocket).
        server.should_exit = server.force_exit = True
        thread.join(timeout=5)
        mark("after the CLI: prototype server stopped")

    STOP_AFTER_CLI.append(stop)


STOP_AFTER_CLI: list = []


def main() -> None:
    import os

    out = Path(sys.argv[1])
    argv = sys.argv[2:]
    config = argv[argv.index("--config") + 1] if "--config" in argv else None
    atexit.register(_write, out)  # first registered, so it runs last
    prototype = os.environ.pop("E2E_PREFECT_SERVER", "")
    if prototype == "early":
        _start_early_server()
    sys.meta_path.insert(0, _PatchOnImport())
    sys.addaudithook(_audit(str(Path(config).resolve()) if config else None))
    sys.path.insert(0, str(ROOT))
    sys.argv = ["distill", *argv]
    if prototype == "thread":
        _start_thread_server()

    import flows.cli

    mark("flows.cli imported")
    import asyncio

    run = asyncio.run

    def timed_run(main, **kwargs):
        mark("asyncio.run(flow) called (imports and config done)")
        if prototype == "early":
            _wait_early_server()
        try:
            return run(main, **kwargs)
        finally:
            mark("flow returned (asyncio.run done)")

    asyncio.run = timed_run
    try:
        flows.cli.main()
    finally:
        mark("CLI main() returned")
        for stop in STOP_AFTER_CLI:
            stop()


if __name__ == "__main__":
    main()
