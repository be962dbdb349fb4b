"""Where Prefect's fixed cost goes: the probes behind bench_e2e.py (not run by `make bench`).

    .venv/bin/python benchmarks/probe_prefect_startup.py phases            # the ephemeral server's start-up
    .venv/bin/python benchmarks/probe_prefect_startup.py trivial           # a trivial async @flow, end to end
    .venv/bin/python benchmarks/probe_prefect_startup.py trivial --sync --variants used,server

``phases`` (fresh and used PREFECT_HOME, alternating, ``--rounds`` each):

- what the ephemeral server's process does, step by step, replayed in one process with
  the same environment (PREFECT__SERVER_EPHEMERAL=1, PREFECT__SERVER_FINAL=1, UI off):
  import uvicorn, import prefect, import prefect.server.api.server, ``create_app()``, the
  app's lifespan (migrations and block registration timed by wrappers), then the first
  /api/health through an in-process ASGI transport;
- from a client that has imported Prefect: the time to import
  prefect.server.api.server (which ``get_client()`` does to reach SubprocessASGIServer)
  and ``SubprocessASGIServer().start()`` from spawn to a healthy /api/health, with the
  server's CPU; also with PREFECT_API_BLOCKS_REGISTER_ON_START=false and
  PREFECT_API_DATABASE_MIGRATE_ON_START=false on the used home.

``trivial``: a process that imports Prefect and runs one ``@flow`` that returns 1, in
each variant: ``fresh``/``used`` (ephemeral), ``fresh-noblocks`` (block registration
off), ``used-lean`` (block registration, migrations, the ephemeral services and the
event/log streams off), ``server`` (a running ``prefect server start``), ``thread`` (the
same app that the ephemeral server runs, served by uvicorn in a thread of the flow's own
process, PREFECT_API_URL pointing at it), ``early`` (the ephemeral server's own uvicorn
command spawned first thing, before Prefect is imported, PREFECT_API_URL pointing at it).
Wall (spawn to reaped), CPU of the tree (``os.wait4``), the share of a child server
(psutil samples), peak RSS, and when the process reached each step. Medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
NO_BLOCKS = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "false"}
LEAN = {
    **NO_BLOCKS,
    "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "false",
    "PREFECT_SERVER_EVENTS_STREAM_OUT_ENABLED": "false",
    "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "false",
}


# -- children: each runs in its own fresh interpreter ------------------------------------------

def child_phases(out: str) -> None:
    """The ephemeral server process's start-up, step by step."""
    t0 = time.monotonic()
    os.environ.update(SERVER_ENV)
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = time.monotonic() - t0

    import asyncio

    import uvicorn  # noqa: F401

    mark("import uvicorn")
    import prefect  # noqa: F401

    mark("import prefect")
    import prefect.server.api.server as server
    import prefect.server.database.interface as interface
    import prefect.server.models.block_registration as blocks

    mark("import prefect.server.api.server")
    create_db, register = interface.PrefectDBInterface.create_db, blocks.run_block_auto_registration

    async def timed_create_db(self):
        t = time.monotonic()
        await create_db(self)
        marks["(within the lifespan) migrations"] = time.monotonic() - t

    async def timed_register(*args, **kwargs):
        t = time.monotonic()
        await register(*args, **kwargs)
        marks["(within the lifespan) block registration"] = time.monotonic() - t

    interface.PrefectDBInterface.create_db = timed_create_db
    blocks.run_block_auto_registration = timed_register
    app = server.create_app()
    mark("create_app()")

    async def serve() -> None:
        import httpx

        async with app.router.lifespan_context(app):
            mark("lifespan started (migrations, blocks, docket, services)")
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x/api") as client:
                assert (await client.get("/health")).status_code == 200
            mark("first /api/health answered")
            import resource

            r = resource.getrusage(resource.RUSAGE_SELF)
            marks["CPU s"] = r.ru_utime + r.ru_stime
            Path(out).write_text(json.dumps(marks))
            await asyncio.sleep(1)  # let the services start before they are stopped

    with contextlib.suppress(Exception):
        asyncio.run(serve())


def child_spawn(out: str) -> None:
    """A client that imported Prefect starts the ephemeral server as get_client() does."""
    import psutil

    t0 = time.monotonic()
    import prefect  # noqa: F401

    t1 = time.monotonic()
    from prefect.server.api.server import SubprocessASGIServer

    t2 = time.monotonic()
    server = SubprocessASGIServer()
    server.start()
    t3 = time.monotonic()
    cpu = sum(psutil.Process(server.server_process.pid).cpu_times()[:2])
    server.stop()
    Path(out).write_text(json.dumps({"import prefect": t1 - t0, "import prefect.server.api.server": t2 - t1,
                                     "spawn -> healthy": t3 - t2, "server CPU s to healthy": cpu}))


def child_trivial(how: str, kind: str, out: str) -> None:
    """One trivial flow, reaching Prefect the way ``how`` says."""
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks.setdefault(name, time.monotonic() - t0)

    if how == "early":
        import atexit
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
                                 "--lifespan", "on"], env={**os.environ, **SERVER_ENV})
        os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        mark("server spawned")

        def stop() -> None:  # registered first, so it runs after Prefect's own exit handlers
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        atexit.register(stop)
    from prefect import flow

    mark("prefect imported")
    if how == "thread":
        import socket
        import threading

        import uvicorn

        os.environ["PREFECT_UI_ENABLED"] = "0"
        from prefect.server.api.server import create_app
        from prefect.settings import PREFECT_API_URL, temporary_settings

        mark("prefect.server.api.server imported")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(ephemeral=True, final=True), log_level="error",
                                               lifespan="on"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.01)
        mark("server healthy")
        settings = temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{sock.getsockname()[1]}/api"})
        settings.__enter__()
    if how == "early":
        import httpx

        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(os.environ["PREFECT_API_URL"] + "/health").status_code == 200:
                    break
            time.sleep(0.05)
        mark("server healthy")

    if kind == "sync":
        @flow
        def trivial() -> int:
            mark("flow body")
            return 1

        assert trivial() == 1
    else:
        import asyncio

        @flow
        async def trivial_async() -> int:
            mark("flow body")
            return 1

        assert asyncio.run(trivial_async()) == 1
    mark("flow returned")
    if how == "thread":
        settings.__exit__(None, None, None)
        server.should_exit = True
    Path(out).write_text(json.dumps(marks))


# -- the driver -------------------------------------------------------------------------------

def _child(args: list[str], env: dict[str, str], sample: bool = False) -> tuple[dict, float, float, float, float]:
    """Run a child; its marks, wall, tree CPU (os.wait4), sampled server CPU, peak RSS MiB."""
    from benchmarks.bench_e2e import TreeSampler

    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, *args, out], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid)
    if sample:
        sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if sample:
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    text = Path(out).read_text()
    os.unlink(out)
    if proc.returncode or not text:
        raise RuntimeError(f"{args}: exit {proc.returncode}\n{err[-3000:]}")
    return json.loads(text), wall, usage.ru_utime + usage.ru_stime, sampler.cpu_of("server"), sampler.peak_rss / 2**20


def _env(home: Path, extra: dict[str, str] | None = None, api: str | None = None) -> dict[str, str]:
    env = {**os.environ, **BASE_ENV, "PREFECT_HOME": str(home), **(extra or {})}
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return env


def _median_table(rows: dict[str, list[dict[str, float]]]) -> None:
    keys: list[str] = []
    for runs in rows.values():
        for run in runs:
            keys += [k for k in run if k not in keys]
    print("| | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for key in keys:
        cells = []
        for runs in rows.values():
            values = [r[key] for r in runs if key in r]
            cells.append(f"{statistics.median(values):.2f}" if values else "-")
        print(f"| {key} | " + " | ".join(cells) + " |")


def phases(rounds: int) -> None:
    rows: dict[str, list[dict[str, float]]] = {"fresh home": [], "used home": []}
    spawn: dict[str, list[dict[str, float]]] = {"fresh home": [], "used home": [], "used home, lean": []}
    with tempfile.TemporaryDirectory(prefix="probe-prefect-") as tmp:
        used = Path(tmp) / "used"
        used.mkdir()
        _child(["_phases"], _env(used))  # the home is used from now on
        for _ in range(rounds):
            fresh = Path(tempfile.mkdtemp(dir=tmp))
            rows["fresh home"].append(_child(["_phases"], _env(fresh))[0])
            rows["used home"].append(_child(["_phases"], _env(used))[0])
            fresh = Path(tempfile.mkdtemp(dir=tmp))
            spawn["fresh home"].append(_child(["_spawn"], _env(fresh))[0])
            spawn["used home"].append(_child(["_spawn"], _env(used))[0])
            spawn["used home, lean"].append(_child(["_spawn"], _env(used, LEAN))[0])
    print(f"The ephemeral server's start-up replayed in one process (seconds from its start; median of {rounds}):\n")
    _median_table(rows)
    print(f"\nFrom a client that imported Prefect: SubprocessASGIServer().start() (median of {rounds}; "
          "lean = block registration and migrations on start off, the ephemeral services off):\n")
    _median_table(spawn)


VARIANTS = ["fresh", "fresh-noblocks", "used", "used-lean", "server", "thread", "early"]


def trivial(rounds: int, variants: list[str], kind: str) -> None:
    from benchmarks.bench_e2e import prefect_server, tree_cpu

    rows: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="probe-prefect-") as tmp:
        tmp = Path(tmp)
        used, client = tmp / "used", tmp / "client"
        used.mkdir()
        client.mkdir()
        _child(["_trivial", "default", kind], _env(used))
        with (prefect_server(tmp) if "server" in variants else contextlib.nullcontext()) as srv:
            if srv:
                _child(["_trivial", "default", kind], _env(client, api=srv[0]))
            for _ in range(rounds):
                for variant in variants:
                    home = Path(tempfile.mkdtemp(dir=tmp)) if variant.startswith("fresh") else used
                    extra = LEAN if variant.endswith("lean") else NO_BLOCKS if variant.endswith("noblocks") else None
                    how = variant if variant in ("thread", "early") else "default"
                    env = _env(client, api=srv[0]) if variant == "server" else _env(home, extra)
                    running = srv[1] if variant == "server" else None
                    server_cpu0 = tree_cpu(running) if running else 0.0
                    marks, wall, cpu, child_server, rss = _child(["_trivial", how, kind], env, sample=True)
                    # A child server's CPU is in the tree's (os.wait4); a running server's is added.
                    server_cpu = tree_cpu(running) - server_cpu0 if running else child_server
                    rows[variant].append({**marks, "process exit (wall)": wall,
                                          "CPU s, tree (+ running server)": cpu + (server_cpu if running else 0.0),
                                          "CPU s, of which the server": server_cpu, "peak RSS MiB (tree)": rss})
    print(f"A trivial {kind} @flow, end to end (seconds from spawn unless named; median of {rounds}; "
          f"load average {os.getloadavg()[0]:.1f} at the end):\n")
    _median_table(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        {"_phases": lambda: child_phases(sys.argv[2]), "_spawn": lambda: child_spawn(sys.argv[2]),
         "_trivial": lambda: child_trivial(sys.argv[2], sys.argv[3], sys.argv[4])}[sys.argv[1]]()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["phases", "trivial"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sync", action="store_true", help="a sync flow (default: async, like generate)")
    args = parser.parse_args()
    print(f"_load average {os.getloadavg()[0]:.1f} at start; command: "
          f"`python benchmarks/probe_prefect_startup.py {' '.join(sys.argv[1:])}`_\n")
    if args.what == "phases":
        phases(args.rounds)
    else:
        trivial(args.rounds, args.variants.split(","), "sync" if args.sync else "async")


if __name__ == "__main__":
    main()
