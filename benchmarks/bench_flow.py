"""Flow overhead: 2,000 samples through the generate flow vs the teacher layer alone.

    .venv/bin/python benchmarks/bench_flow.py                  # 2,000 requests, 100 ms, concurrency 64
    .venv/bin/python benchmarks/bench_flow.py --n 500 --batch-size 32

The fake OpenAI server (tests/fake_openai_server.py) runs in its own process with a fixed
100 ms latency. Both sides use the same kind of chat request (one instruction each,
fresh prompts so nothing is served from the ledger) and a fresh, migrated database:

- teacher layer: ``LedgeredTeacher(OpenAITeacher(concurrency=64), Store)`` answering all
  the instructions in one call (ledger lookup, journal, merge into DuckDB);
- generate flow: ``generate_flow`` (method responses, target = n) over the same number of
  instructions: Prefect tasks of ``--batch-size`` requests, several in flight, each
  batch's samples filtered (exact + quality) and ingested, a ``runs`` row, progress,
  table and report artifacts. The Prefect API (a local temporary server) is up before
  timing, as it is for a flow run on a server or after ephemeral start-up.

The two sides run alternately, ``--rounds`` times each, and the medians are compared (one
round of each swings by 10% on a shared 2-vCPU machine). ``--spin N`` keeps N other
processes spinning on the CPU through all rounds, to see both sides on a busier (or
slower) machine, where the client's CPU rather than the teacher's latency sets the pace.

Target: flow >= 0.9 x the teacher layer's samples/s. Prints markdown table rows:
| benchmark | measurement | value | notes | machine | command |.
"""

from __future__ import annotations

import argparse
import asyncio
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
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-flow-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from bench_teacher import HEADER, machine  # noqa: E402
from fake_openai_server import spawn_fake_server  # noqa: E402

import flows.artifacts  # noqa: E402,F401  (matplotlib and friends imported before timing, as in a worker)
from flows.config import GenerateConfig  # noqa: E402
from flows.generate import generate_flow  # noqa: E402
from generators.common import make_request  # noqa: E402
from core.text import format_prompt  # noqa: E402
from generators.teachers import build_teacher  # noqa: E402
from generators.teachers.config import OpenAIConfig  # noqa: E402
from storage.store import Store  # noqa: E402


def _instructions(path: Path, tag: str, n: int) -> Path:
    path.write_text("".join(json.dumps({"instruction": f"{tag}: describe item {i} in one sentence."}) + "\n"
                            for i in range(n)))
    return path


def teacher_layer(url: str, concurrency: int, instructions: Path, db: Path) -> float:
    from generators.templates import load_template
    from storage.seeds import parse_instructions_file

    template = load_template("responses")
    requests = [make_request("chat", template.render(prompt=format_prompt(i.text, i.input)), tag="responses")
                for i in parse_instructions_file(instructions)]
    store = Store(db)
    store.init()
    teacher = build_teacher(_config(url, concurrency), store=store, run_id="bench")
    start = time.perf_counter()
    done = teacher.generate(requests)
    elapsed = time.perf_counter() - start
    assert all(d.ok for d in done), [d.error for d in done if not d.ok][:3]
    return elapsed


def flow(url: str, concurrency: int, instructions: Path, db: Path, n: int, batch_size: int, inflight: int,
         run_name: str) -> tuple[float, dict]:
    Store(db).init()
    config = GenerateConfig(method="responses", target=n, batch_size=batch_size, max_concurrent_batches=inflight,
                            instructions_file=str(instructions))
    start = time.perf_counter()
    out = asyncio.run(generate_flow(run_name=run_name, teacher=_config(url, concurrency), generate=config,
                                    db=str(db)))
    elapsed = time.perf_counter() - start
    assert out["kept"] == n and out["sent"] == n, out
    return elapsed, out


class _CpuMeter:
    """CPU seconds (user + system) this process and its children (the fake server, the
    Prefect server) spend between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        import psutil

        me = psutil.Process()
        self.procs = {"client": me}
        for child in me.children(recursive=True):
            cmd = " ".join(child.cmdline())
            if "fake_openai_server" in cmd:
                self.procs["fake server"] = child
            elif "uvicorn" in cmd or "prefect" in cmd:
                self.procs["Prefect server"] = child
        self.spent: dict[str, list[float]] = {name: [] for name in self.procs}

    def _now(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.procs.items()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        for name, t in self._now().items():
            self.spent[name].append(t - self._start[name])

    def medians(self) -> str:
        return ", ".join(f"{name} {statistics.median(v):.1f}" for name, v in self.spent.items())


def _config(url: str, concurrency: int) -> OpenAIConfig:
    return OpenAIConfig(model="fake", base_url=url, concurrency=concurrency, defaults={"max_tokens": 32})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=100, help="requests per Prefect task")
    parser.add_argument("--inflight", type=int, default=3, help="batches in flight")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating teacher/flow rounds; the medians are reported")
    parser.add_argument("--spin", type=int, default=0,
                        help="other processes kept busy on the CPU during the rounds (a loaded machine)")
    parser.add_argument("--no-header", dest="header", action="store_false", help="rows only")
    args = parser.parse_args()
    command = "python benchmarks/bench_flow.py " + " ".join(sys.argv[1:])
    from prefect.testing.utilities import prefect_test_harness

    teacher_s: list[float] = []
    flow_s: list[float] = []
    loop_s: list[float] = []
    with spawn_fake_server(args.latency) as url, tempfile.TemporaryDirectory() as tmp, \
            prefect_test_harness(server_startup_timeout=180):
        tmp = Path(tmp)
        # Warm both paths (imports, the API's first flow run, connections, first Arrow batch).
        teacher_layer(url, args.concurrency, _instructions(tmp / "wt.jsonl", "warm-t", 64), tmp / "wt.duckdb")
        flow(url, args.concurrency, _instructions(tmp / "wf.jsonl", "warm-f", 64), tmp / "wf.duckdb", 64,
             args.batch_size, args.inflight, "warm")
        t_cpu, f_cpu = _CpuMeter(), _CpuMeter()
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.spin)]
        try:
            # Side by side, alternating: a slow spell of the machine hits both sides alike.
            for r in range(args.rounds):
                t_cpu.start()
                instructions = _instructions(tmp / f"t{r}.jsonl", f"teacher{r}", args.n)
                teacher_s.append(teacher_layer(url, args.concurrency, instructions, tmp / f"t{r}.duckdb"))
                t_cpu.stop()
                f_cpu.start()
                f_s, out = flow(url, args.concurrency, _instructions(tmp / f"f{r}.jsonl", f"flow{r}", args.n),
                                tmp / f"f{r}.duckdb", args.n, args.batch_size, args.inflight, f"bench{r}")
                f_cpu.stop()
                flow_s.append(f_s)
                loop_s.append(out["elapsed_s"])
        finally:
            for proc in spinners:
                proc.kill()
                proc.wait()
    t_s, f_s = statistics.median(teacher_s), statistics.median(flow_s)
    t_rate, f_rate = args.n / t_s, args.n / f_s
    ratios = ", ".join(f"{t / f:.2f}" for t, f in zip(teacher_s, flow_s))
    limit = args.concurrency / args.latency
    where = machine()
    if args.header:
        print(HEADER)
    label = f"generate flow, fake server {args.latency * 1000:.0f} ms, c={args.concurrency}"
    if args.spin:
        label += f", {args.spin} spinning process{'es' if args.spin > 1 else ''}"
    rows = [
        ("teacher layer alone (ledger + DuckDB)", f"{t_rate:.0f} samples/s",
         f"{args.n} requests in {t_s:.2f}s (median of {args.rounds}); CPU s: {t_cpu.medians()}"),
        (f"generate flow (tasks of {args.batch_size}, {args.inflight} in flight)", f"{f_rate:.0f} samples/s",
         f"**{f_rate / t_rate:.2f}x the teacher layer** (target >= 0.9; rounds: {ratios}); {args.n} kept in "
         f"{f_s:.2f}s (median), batch loop {statistics.median(loop_s):.2f}s, rest = flow start, runs row, "
         f"artifacts, report; CPU s: {f_cpu.medians()}"),
        ("physical limit", f"{limit:.0f} samples/s", f"concurrency {args.concurrency} / latency {args.latency}s"),
    ]
    for name, value, notes in rows:
        print(f"| {label} | {name} | {value} | {notes} | {where} | `{command.strip()}` |")


if __name__ == "__main__":
    main()
