"""Run the benchmarks/bench_*.py scripts and collect their markdown in one file.

    .venv/bin/python benchmarks/run_all.py --output benchmarks/latest.md          # `make bench`: the speed ones
    .venv/bin/python benchmarks/run_all.py --quality --output benchmarks/latest-quality.md   # `make bench-quality`
    .venv/bin/python benchmarks/run_all.py --only ingest    # just bench_ingest.py, to stdout

The speed benchmarks (ingest, teacher, embedded, rouge, minhash, flow, e2e) take about half
an hour on 2 cores; the quality ones (distill, demo, lion: students trained and evaluated)
take hours, so they run only when asked. BENCHMARKS.md is the curated record: its first
table sums up every measure, and each run's sections are copied in from these files with
the run's date, machine and command.

Each benchmark is a script that prints markdown (a table row per measurement, each a
ratio measured side by side in the same run). They run one after another, each in its
own process, so one's memory and threads do not skew the next. A failing benchmark is
reported in its section and makes the exit status non-zero; the others still run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> str:
    """Cores, CPU model, memory and load: what the numbers below depend on."""
    cpu = platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = f", load average {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
    return f"{os.cpu_count()} cores, {cpu}{mem}{load}; {platform.system()} {platform.release()}, Python {platform.python_version()}"


# Students trained and evaluated on CPU: hours, not minutes. Run with --quality or --only.
QUALITY = {"distill", "demo", "lion"}


def discover(only: list[str] | None, quality: bool = False) -> list[Path]:
    scripts = sorted(HERE.glob("bench_*.py"))
    if not only:
        return [s for s in scripts if (s.stem.removeprefix("bench_") in QUALITY) == quality]
    wanted = {name.removeprefix("bench_").removesuffix(".py") for name in only}
    chosen = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    missing = wanted - {s.stem.removeprefix("bench_") for s in chosen}
    if missing:
        known = ", ".join(s.stem.removeprefix("bench_") for s in scripts)
        sys.exit(f"error: no benchmark named {', '.join(sorted(missing))} (known: {known})")
    return chosen


def run(script: Path, timeout: float) -> tuple[str, bool]:
    """One benchmark's markdown section and whether it succeeded."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"## {script.name}\n\n**timed out after {timeout:.0f}s**\n", False
    took = time.perf_counter() - started
    body = done.stdout.strip()
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        body += f"\n\n**failed (exit {done.returncode})**\n\n```\n{tail}\n```"
    return f"## {script.name}\n\n{body}\n\n_({took:.0f}s)_\n", done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmarks and collect their markdown.")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only bench_NAME.py (repeatable)")
    parser.add_argument("--quality", action="store_true",
                        help=f"the quality benchmarks ({', '.join(sorted(QUALITY))}) instead of the speed ones")
    parser.add_argument("--output", type=Path, help="markdown file to write (default: stdout)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each benchmark may take (default: 1800, 4 h for the quality ones)")
    args = parser.parse_args()
    if args.timeout is None:
        args.timeout = 4 * 3600 if args.quality or QUALITY & set(args.only or []) else 1800

    scripts = discover(args.only, args.quality)
    output = args.output
    command = "python benchmarks/run_all.py " + " ".join(
        ["--quality"] * args.quality + [f"--only {n}" for n in args.only or []])
    header = (
        "# Benchmarks\n\n"
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {machine()}\n"
        f"- command: `{command}`\n\n"
        "Each table compares alternatives measured side by side in the same run; compare\n"
        "ratios across machines, not absolute times.\n"
    )
    sections, ok = [], True
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        section, success = run(script, args.timeout)
        sections.append(section)
        ok &= success
    text = header + "\n" + "\n".join(sections)
    if output is None:
        print(text)
    else:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
