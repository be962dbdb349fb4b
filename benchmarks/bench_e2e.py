"""From command to samples: the whole `distill generate` command, as a user runs it.

    .venv/bin/python benchmarks/bench_e2e.py                         # N = 1, 2,000, 20,000; 3 rounds (~20 min)
    .venv/bin/python benchmarks/bench_e2e.py --sizes 1,2000 --rounds 3
    .venv/bin/python benchmarks/bench_e2e.py --sizes 1 --modes used,server --no-timeline

Each run is a separate process, as a user would start it, from the repository root:

    python -m flows.cli --db <tmp>/run.duckdb generate --config <tmp>/e2e.yaml --method responses
        --target N --instructions-file <tmp>/<fresh N instructions>.jsonl --run-name <fresh>

where e2e.yaml sets ``teacher: {backend: openai, model: fake, base_url: <fake server>,
concurrency: 64, defaults: {max_tokens: 32}}`` and ``generate: {batch_size: 100,
max_concurrent_batches: 3}``. The teacher is the fake OpenAI-compatible server
(tests/fake_openai_server.py, 100 ms per answer) in its own process. Every run gets a
fresh database and fresh instructions, so every request is sent. The ways to meet Prefect:

- ``first``: the first command of a new project (an empty ``DISTILL_HOME``, no server
  running): what `distill` does by default, it starts the project's Prefect server in the
  background (its database copied from the template ``make install`` migrated, see
  flows/server.py) and goes on while the server boots. The server keeps running after the
  command; its CPU up to the command's exit counts in the command's CPU, its memory in the
  peak, and it is stopped (untimed) after each run;
- ``server``: the project's server already running (started by an earlier command or by
  ``distill server start``: here a ``prefect server start`` with its own PREFECT_HOME,
  healthy before timing; PREFECT_API_URL set for the command). Its start-up is not in the
  command's numbers, its CPU during the command is;
- ``fresh``: ``DISTILL_SERVER=ephemeral`` (Prefect's ephemeral mode: a temporary API server
  per command) on an empty PREFECT_HOME (the server creates its SQLite database and runs
  every migration);
- ``used``: ``DISTILL_SERVER=ephemeral`` on a PREFECT_HOME that one untimed run used before.

Two prototypes of what the CLI could do instead, on the used home, not run by default
(``--modes thread,early``; the command runs under benchmarks/_e2e_probe.py, which sets
them up): ``thread``, the ephemeral server's app served by uvicorn in a thread of the CLI
process; ``early``, the ephemeral server's own uvicorn command spawned first thing, so it
starts while the CLI imports, and the flow waits for its /api/health.

PREFECT_SERVER_ANALYTICS_ENABLED=false and DO_NOT_TRACK=1 for everything. Measured per run:

- wall: from spawning the command to reaping it;
- first request: when the fake server saw the first teacher request, from spawn
  (``time.monotonic()`` is one clock for every process on Linux);
- CPU: user + system seconds of the command's whole process tree, from ``os.wait4`` on
  the command: the kernel adds every descendant its parent reaped (Prefect's ephemeral
  server is terminated and reaped at exit) to the command's own. A sampler polls the tree
  every 50 ms with psutil and keeps each process's last reading, which splits the total
  into the ephemeral server's share (its last reading, up to 50 ms short) and the rest. In
  ``server`` mode the running server's CPU (psutil, before and after the command) is added;
- peak RSS: the largest sum of the tree's resident memory over those samples (the running
  server's RSS is in the notes, not in the sum).

Every number is the median of ``--rounds`` runs; the modes alternate within a round, so a
busy spell of the machine hits them alike. Per-request CPU: (tree CPU at N minus at N=1) /
(N - 1), for N = 2,000 and 20,000. The whole script takes 17 minutes on 2 cores at a load
average of 1-2 (20 at 4-5), 11 of them in the 20,000-request runs.

The timeline (``--no-timeline`` skips it): ``--rounds`` extra 1-request runs per mode
under benchmarks/_e2e_probe.py, which runs the same CLI and records when it reaches each
step (audit hooks and wrappers around four Prefect functions; see that file). The fake
server gives the first request and the last answer; ``os.wait4`` the exit. Medians, in
seconds from spawn.

Prints markdown: a table of | mode | requests | wall | first request | CPU | peak RSS |
notes | machine | command |, the per-request CPU, the timeline and the Prefect API
requests of one 1-request run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402

from benchmarks._common import machine  # noqa: E402
from fake_openai_server import spawn_fake_server  # noqa: E402

PROBE = ROOT / "benchmarks" / "_e2e_probe.py"
MODES = {
    "first": "first command of a new project (starts the project's server)",
    "server": "the project's server running",
    "fresh": "DISTILL_SERVER=ephemeral, fresh PREFECT_HOME",
    "used": "DISTILL_SERVER=ephemeral, used PREFECT_HOME",
    # Prototypes (benchmarks/_e2e_probe.py), not what `distill` does today; not run by default:
    "thread": "prototype: API served in a thread of the CLI (used home)",
    "early": "prototype: ephemeral server spawned at process start (used home)",
}
DEFAULT_MODES = "first,server,fresh,used"
# The timeline's rows, in the order a run reaches them (benchmarks/_e2e_probe.py names them).
STEPS = [
    "spawn", "prototype server: process spawned", "interpreter ready",
    "prototype server: prefect.server.api.server imported", "prototype server healthy (in-process thread)",
    "flows.cli imported", "import flows.config starts (config loading)", "config file opened",
    "import flows.generate starts (config validated)", "asyncio.run(flow) called (imports and config done)",
    "prototype server healthy (the flow waited for it)",
    "import prefect.server.api.server starts (in the CLI process)", "ephemeral server: start() called",
    "ephemeral server: process spawned",
    "ephemeral server healthy (start() returned)", "first Prefect API request sent", "first Prefect API response",
    "flow run created (create_flow_run returned)", "flow run context entered (flow body next)",
    "import openai starts (teacher built in the flow body)", "first teacher request (fake server)",
    "last teacher answer (fake server)", "import matplotlib starts (report charts)",
    "flow returned (asyncio.run done)", "CLI main() returned", "after the CLI: prototype server stop",
    "after the CLI: prototype server stopped", "at exit: ephemeral server stop() called",
    "at exit: ephemeral server stopped", "last exit handler", "process exit (reaped)",
]
BASE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
SAMPLE_S = 0.05


@dataclass
class Result:
    wall: float
    first_request: float | None
    last_answer: float | None
    cpu: float
    cpu_server: float
    peak_rss: int
    server_rss: int = 0
    events: dict[str, float] = field(default_factory=dict)
    api: dict = field(default_factory=dict)


class TreeSampler(threading.Thread):
    """Polls a process tree: each process's last CPU reading and the peak summed RSS."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.last: dict[tuple[int, float], tuple[str, float]] = {}
        self.peak_rss = 0
        self._kinds: dict[tuple[int, float], str] = {}
        self._done = threading.Event()

    def _kind(self, proc: psutil.Process, key: tuple[int, float]) -> str:
        if key not in self._kinds:
            cmd = " ".join(proc.cmdline())
            server = "uvicorn" in cmd or "prefect server start" in cmd  # a prototype's, or the command's own
            self._kinds[key] = "server" if server else "cli" if proc.pid == self.pid else "other"
        return self._kinds[key]

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    t = proc.cpu_times()
                    rss += proc.memory_info().rss
                    self.last[key] = (self._kind(proc, key), t.user + t.system)
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(SAMPLE_S)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def cpu_of(self, kind: str) -> float:
        return sum(cpu for k, cpu in self.last.values() if k == kind)


def tree_cpu(proc: psutil.Process) -> float:
    """User + system seconds of a live process and its live descendants."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def fake_stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats", timeout=10) as r:
        return json.loads(r.read())


def fake_reset(url: str) -> None:
    req = urllib.request.Request(url.removesuffix("/v1") + "/_reset", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, psutil.Process, float]]:
    """`prefect server start` on a free port with its own PREFECT_HOME, healthy; yields
    (api url, its process, seconds it took to answer /api/health)."""
    port = free_port()
    env = {**os.environ, **BASE_ENV, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--no-ui"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        while True:
            if proc.poll() is not None:
                log_tail = (home / "server.log").read_text()[-2000:]
                raise RuntimeError(f"prefect server exited ({proc.returncode}): {log_tail}")
            if time.monotonic() - started > 300:
                raise RuntimeError("prefect server did not answer /api/health in 300 s")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            time.sleep(0.2)
        yield url, psutil.Process(proc.pid), time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


class Runner:
    """Runs the CLI once per call, in one of the modes."""

    def __init__(self, tmp: Path, fake_url: str, server: tuple[str, psutil.Process] | None, timeout: float) -> None:
        self.tmp = tmp
        self.fake_url = fake_url
        self.server = server
        self.timeout = timeout
        self.config = tmp / "e2e.yaml"
        self.config.write_text(
            "teacher:\n"
            "  backend: openai\n"
            "  model: fake\n"
            f"  base_url: {fake_url}\n"
            "  concurrency: 64\n"
            "  defaults: {max_tokens: 32}\n"
            "generate:\n"
            "  batch_size: 100\n"
            "  max_concurrent_batches: 3\n")
        self.used_home = tmp / "home-used"
        self.count = 0

    def argv(self, n: int, name: str) -> list[str]:
        instructions = self.tmp / f"{name}.jsonl"
        instructions.write_text("".join(
            json.dumps({"instruction": f"{name}: describe item {i} in one sentence."}) + "\n" for i in range(n)))
        return ["--db", str(self.tmp / f"{name}.duckdb"), "generate", "--config", str(self.config),
                "--method", "responses", "--target", str(n), "--instructions-file", str(instructions),
                "--run-name", name]

    def env(self, mode: str) -> dict[str, str]:
        env = {**os.environ, **BASE_ENV}
        for key in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_LOGGING_LEVEL"):
            env.pop(key, None)
        env.pop("DISTILL_SERVER", None)
        if mode == "first":
            env["DISTILL_HOME"] = str(self.tmp / f"project-{self.count}")
            env["PREFECT_HOME"] = str(self.tmp / "home-client")
        elif mode == "fresh":
            home = self.tmp / f"home-fresh-{self.count}"
            home.mkdir()
            env["PREFECT_HOME"] = str(home)
            env["DISTILL_SERVER"] = "ephemeral"
        elif mode in ("used", "thread", "early"):
            env["PREFECT_HOME"] = str(self.used_home)
            env["DISTILL_SERVER"] = "ephemeral"
            if mode != "used":
                env["E2E_PREFECT_SERVER"] = mode
        else:
            assert self.server is not None
            env["PREFECT_HOME"] = str(self.tmp / "home-client")
            env["PREFECT_API_URL"] = self.server[0]
        return env

    def warm_used_home(self) -> None:
        """The untimed first run that makes the `used` home used."""
        self.used_home.mkdir(exist_ok=True)
        self.run("used", 1)

    def run(self, mode: str, n: int, probe: bool = False) -> Result:
        self.count += 1
        name = f"e2e-{mode}-{n}-{self.count}-{os.getpid()}"
        argv = self.argv(n, name)
        events_file = self.tmp / f"{name}.events.json"
        cmd = ([sys.executable, str(PROBE), str(events_file), *argv] if probe or mode in ("thread", "early")
               else [sys.executable, "-m", "flows.cli", *argv])
        fake_reset(self.fake_url)
        server_cpu0 = tree_cpu(self.server[1]) if mode == "server" and self.server else 0.0
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(mode), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        output: list[bytes] = []
        reader = threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True)
        reader.start()
        killer = threading.Timer(self.timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        t_exit = time.monotonic()
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
        reader.join()
        server_rss = 0
        if mode == "server" and self.server:
            server_cpu = tree_cpu(self.server[1]) - server_cpu0
            server_rss = tree_rss(self.server[1])
        elif mode == "first":
            server_cpu, server_rss = self._stop_started_server()
        else:
            server_cpu = sampler.cpu_of("server")
        text = b"".join(output).decode(errors="replace")
        if proc.returncode != 0 or f"{n}/{n} samples kept" not in " ".join(text.split()):
            raise RuntimeError(f"{mode} N={n}: exit {proc.returncode}:\n{text[-3000:]}")
        stats = fake_stats(self.fake_url)
        if stats["total"] != n:
            raise RuntimeError(f"{mode} N={n}: the fake server saw {stats['total']} requests")
        cpu = usage.ru_utime + usage.ru_stime + (server_cpu if mode in ("server", "first") else 0.0)
        result = Result(wall=t_exit - t0,
                        first_request=stats["first_t"] - t0 if stats["first_t"] else None,
                        last_answer=stats["last_done_t"] - t0 if stats["last_done_t"] else None,
                        cpu=cpu, cpu_server=server_cpu, peak_rss=sampler.peak_rss, server_rss=server_rss)
        if probe:
            data = json.loads(events_file.read_text())
            result.events = {k: v - t0 for k, v in data["events"].items()}
            result.api = data["api"]
            result.events["first teacher request (fake server)"] = result.first_request
            result.events["last teacher answer (fake server)"] = result.last_answer
            result.events["process exit (reaped)"] = result.wall
            result.events["spawn"] = 0.0
        for path in self.tmp.glob(f"{name}*"):
            path.unlink(missing_ok=True) if path.is_file() else shutil.rmtree(path, ignore_errors=True)
        if mode == "fresh":
            shutil.rmtree(self.tmp / f"home-fresh-{self.count}", ignore_errors=True)
        if mode == "first":  # the server was the command's child while it ran: in the sampled peak already
            shutil.rmtree(self.tmp / f"project-{self.count}", ignore_errors=True)
        return result

    def _stop_started_server(self) -> tuple[float, int]:
        """The CPU seconds and memory of the server a ``first`` command started (read as the
        command exits: it runs on, in its own session), then stop it (untimed)."""
        from core.processes import stop_group

        record = json.loads((self.tmp / f"project-{self.count}" / "server.json").read_text())
        leader = psutil.Process(record["pid"])
        cpu, rss = tree_cpu(leader), tree_rss(leader)
        stop_group(record["pid"], grace_s=10)
        return cpu, rss


_layer_warm: list = []


def teacher_layer(url: str, n: int, db: Path) -> float:
    """Seconds the teacher layer alone takes for ``n`` fresh requests (bench_teacher.py's side)."""
    from bench_teacher import teacher

    if not _layer_warm:  # untimed, once: imports and pandas behind the first Arrow batch, as bench_teacher does
        _layer_warm.append(teacher(url, [f"warm-up {i}" for i in range(64)], 64, db.with_name("warm.duckdb"),
                                   ledger=True))
    elapsed, _ = teacher(url, [f"layer {db.stem}: describe item {i} in one sentence." for i in range(n)], 64, db,
                         ledger=True)
    return elapsed


def med(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_s(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,2000,20000", help="comma-separated numbers of requests (samples)")
    parser.add_argument("--modes", default=DEFAULT_MODES,
                        help="comma-separated: fresh, used, server; prototypes: thread, early")
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode and size; medians are reported")
    parser.add_argument("--large-rounds", type=int, default=None,
                        help="runs for sizes above 5,000 (default: --rounds)")
    parser.add_argument("--latency", type=float, default=0.1, help="the fake server's seconds per answer")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one command may take")
    parser.add_argument("--no-timeline", dest="timeline", action="store_false")
    parser.add_argument("--no-header", dest="header", action="store_false", help="rows only")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"error: unknown mode(s) {', '.join(sorted(unknown))} (known: {', '.join(MODES)})")
    command = "python benchmarks/bench_e2e.py " + " ".join(sys.argv[1:])
    where = machine()
    load_start = os.getloadavg()[0]

    results: dict[tuple[str, int], list[Result]] = {}
    layer: dict[int, list[float]] = {}
    timeline: dict[str, list[Result]] = {}
    server_start_s = None
    started = time.monotonic()
    with spawn_fake_server(args.latency) as fake_url, tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        tmp = Path(tmp)
        (tmp / "home-server").mkdir()
        (tmp / "home-client").mkdir()
        if "first" in modes:  # what `make install` did: the server database template (flows/server.py)
            subprocess.run([sys.executable, "-m", "flows.cli", "server", "prepare"], cwd=ROOT, check=True,
                           capture_output=True)
        with (prefect_server(tmp / "home-server") if "server" in modes else contextlib.nullcontext()) as srv:
            if srv is not None:
                server_start_s = srv[2]
            runner = Runner(tmp, fake_url, (srv[0], srv[1]) if srv else None, args.timeout)
            if {"used", "thread", "early"} & set(modes):
                runner.warm_used_home()
            if "server" in modes:
                runner.run("server", 1)  # untimed: the server's first flow run (flow row, caches)
            for n in sizes:
                rounds = args.large_rounds if (args.large_rounds and n > 5000) else args.rounds
                for r in range(rounds):
                    for mode in modes:
                        print(f"[{time.monotonic() - started:6.0f}s] {mode} N={n} round {r + 1}/{rounds}",
                              file=sys.stderr, flush=True)
                        results.setdefault((mode, n), []).append(runner.run(mode, n))
                    if n > 1:  # the baseline, in the same round: the teacher layer alone on these requests
                        layer.setdefault(n, []).append(teacher_layer(fake_url, n, tmp / f"layer-{n}-{r}.duckdb"))
            if args.timeline:
                for r in range(args.rounds):
                    for mode in modes:
                        print(f"[{time.monotonic() - started:6.0f}s] timeline {mode} round {r + 1}",
                              file=sys.stderr, flush=True)
                        timeline.setdefault(mode, []).append(runner.run(mode, 1, probe=True))

    load_end = os.getloadavg()[0]
    cli = ("python -m flows.cli --db <tmp>/run.duckdb generate --config <tmp>/e2e.yaml --method responses "
           "--target N --instructions-file <tmp>/<N fresh instructions>.jsonl --run-name <fresh>")
    if args.header:
        print(f"Each row: `{cli}` from the repository root (e2e.yaml: teacher openai at the fake server, "
              f"{args.latency * 1000:.0f} ms per answer, concurrency 64, max_tokens 32; generate batch_size 100, "
              "max_concurrent_batches 3). Medians of the runs named in the notes; load average "
              f"{load_start:.1f} at start, {load_end:.1f} at the end.")
        if server_start_s is not None:
            print(f"\nThe running server (`prefect server start`, fresh PREFECT_HOME) answered /api/health "
                  f"{server_start_s:.1f} s after its spawn; that is not in the `server` rows.")
    if args.header and sizes:
        print()
        print("| mode | requests | wall s | first request s | CPU s (tree) | of which Prefect server | "
              "peak RSS MiB | notes | machine | command |")
        print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    for n in sizes:
        for mode in modes:
            rs = results[(mode, n)]
            wall, first, last = med([r.wall for r in rs]), med([r.first_request for r in rs]), med(
                [r.last_answer for r in rs])
            cpu, cpu_server = med([r.cpu for r in rs]), med([r.cpu_server for r in rs])
            rss = med([r.peak_rss for r in rs]) / 2**20
            notes = [f"median of {len(rs)}; walls " + ", ".join(f"{r.wall:.1f}" for r in rs)]
            if n > 1 and first is not None and last is not None and last > first:
                notes.append(f"{n / (last - first):.0f} requests/s between the first request and the last answer")
            if mode == "server":
                notes.append(f"server RSS {med([r.server_rss for r in rs]) / 2**20:.0f} MiB (not in the sum)")
            server_cell = "in the CLI process" if mode == "thread" else f"{cpu_server:.2f}"
            print(f"| {MODES[mode]} | {n:,} | {wall:.2f} | {fmt_s(first)} | {cpu:.2f} | {server_cell} | "
                  f"{rss:.0f} | {'; '.join(notes)} | {where} | `{command.strip()}` |")
    big = [n for n in sizes if n > 1]
    if layer:
        print()
        print("Throughput against the teacher layer alone (benchmarks/bench_teacher.py's ledger side: "
              "OpenAITeacher + LedgeredTeacher on a DuckDB file, in this script's process, same fake server, "
              "same round): the whole command's N / wall, and its rate between the first request and the last "
              "answer:")
        print()
        for n in big:
            base = n / med(layer[n])
            parts = []
            for mode in modes:
                rs = results[(mode, n)]
                whole = n / med([r.wall for r in rs])
                inner = n / med([r.last_answer - r.first_request for r in rs if r.first_request and r.last_answer])
                parts.append(f"{MODES[mode]}: {whole:.0f}/s whole command ({whole / base:.2f}x), "
                             f"{inner:.0f}/s first request to last answer ({inner / base:.2f}x)")
            print(f"- N={n:,}: teacher layer alone {base:.0f}/s (median of {len(layer[n])}); " + "; ".join(parts))
    if 1 in sizes and big:
        print()
        print("Per-request CPU, (CPU at N - CPU at N=1) / (N - 1), medians; the whole tree, then the Prefect "
              "server's share:")
        print()
        for mode in modes:
            c1, s1 = med([r.cpu for r in results[(mode, 1)]]), med([r.cpu_server for r in results[(mode, 1)]])
            parts = []
            for n in big:
                cn, sn = med([r.cpu for r in results[(mode, n)]]), med([r.cpu_server for r in results[(mode, n)]])
                per, per_server = (cn - c1) / (n - 1) * 1000, (sn - s1) / (n - 1) * 1000
                parts.append(f"N={n:,}: {per:.2f} ms ({per_server:.2f} ms server)")
            print(f"- {MODES[mode]}: " + "; ".join(parts))
    if timeline:
        print()
        print(f"Timeline of a 1-request run (seconds from spawn, median of {args.rounds} runs under "
              "benchmarks/_e2e_probe.py; fake server: first request and last answer; os.wait4: exit):")
        print()
        names = {k for rs in timeline.values() for r in rs for k, v in r.events.items() if v is not None}

        known = [k for k in STEPS if k in names]
        order = known + sorted(names - set(known), key=lambda k: med([r.events.get(k) for rs in timeline.values()
                                                                     for r in rs]))
        print("| step | " + " | ".join(MODES[m] for m in timeline) + " |")
        print("|---|" + "---:|" * len(timeline))
        for k in order:
            cells = [fmt_s(med([r.events.get(k) for r in rs])) for rs in timeline.values()]
            print(f"| {k} | " + " | ".join(cells) + " |")
        cells = [f"{med([r.api.get('requests', 0) for r in rs]):.0f} requests, "
                 f"{med([r.api.get('wait_s', 0.0) for r in rs]):.2f} s waiting" for rs in timeline.values()]
        print("| Prefect API calls of the CLI process (async + sync clients) | " + " | ".join(cells) + " |")
        cells = [f"{med([r.wall for r in rs]):.2f}" for rs in timeline.values()]
        print("| wall of the probed runs (compare with the N=1 rows) | " + " | ".join(cells) + " |")
        paths = next(iter(timeline.values()))[-1].api.get("paths", {})
        if paths:
            print()
            print("The Prefect API requests of one such run (" + next(iter(MODES[m] for m in timeline)) + "): "
                  + ", ".join(f"`{p}` x{n}" for p, n in sorted(paths.items(), key=lambda kv: -kv[1])) + ".")


if __name__ == "__main__":
    main()
