"""What `make demo` can show on 2 CPU cores: a sweep of its settings, held-out gain per setting.

    .venv/bin/python benchmarks/bench_demo.py                     # the whole grid (about an hour on 2 cores)
    .venv/bin/python benchmarks/bench_demo.py --only keep15-sft60 --only keep10-sft30

Every setting is the real `distill run --config configs/demo.yaml --set ...` (a separate
process, as `make demo` runs it) on one shared database, so the teacher's answers are paid
once: runs with the same dataset size share a run name, and the ledger serves the answers
the first one bought. What varies: the layers the pruned student keeps, optimizer steps,
sft vs kd, the dataset size. Held-out: the version's eval split plus
benchmarks/data/eval_instructions.jsonl (the teacher answers those greedily at evaluation),
at least 40 prompts. Reported per setting: ROUGE-L vs the teacher and KL(teacher||student)
before and after training, the gain, and the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine  # noqa: E402

# name -> (dataset size, keep_layers, method, steps)
GRID: dict[str, tuple[int, int, str, int]] = {
    "keep10-sft30": (100, 10, "sft", 30),  # the demo before this sweep
    "keep15-sft30": (100, 15, "sft", 30),
    "keep20-sft30": (100, 20, "sft", 30),
    "keep15-sft60": (100, 15, "sft", 60),
    "keep15-kd60": (100, 15, "kd", 60),
    "keep20-kd60": (100, 20, "kd", 60),
    "keep15-sft60-n200": (200, 15, "sft", 60),
}
HELD_OUT = "benchmarks/data/eval_instructions.jsonl"


def run(setting: str, size: int, keep: int, method: str, steps: int, db: Path, work: Path) -> dict:
    sets = {
        "run_name": f"sweep-n{size}",  # the same data for every setting of one size (the ledger pays once)
        "generate.target": size,
        "generate.max_attempts": size * 3,
        "curate.dataset": f"sweep-n{size}",
        "train.keep_layers": keep,
        "train.method": method,
        "train.max_steps": steps,
        "train.output_dir": str(work / setting),
        "train.name": setting,
        "train.eval.prompts_jsonl": HELD_OUT,
        "train.eval.max_prompts": 80,
    }
    argv = [sys.executable, "-m", "flows.cli", "--db", str(db), "run", "--config", "configs/demo.yaml"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = dict(os.environ, DISTILL_SERVER="ephemeral", OMP_WAIT_POLICY="PASSIVE")
    last = _last_evaluation(db)
    start = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"{setting}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT model_label, metric, value, n FROM evaluations WHERE id > ? ORDER BY id",
                       [last]).fetchall()  # the rows this setting's run wrote
    con.close()
    metrics: dict[str, dict[str, float]] = {}
    n = 0
    for label, metric, value, count in rows:
        kind = "before" if "before" in label else "after"
        metrics.setdefault(kind, {})[metric] = value
        n = max(n, count or 0)
    return {"setting": setting, "size": size, "keep": keep, "method": method, "steps": steps, "wall_s": wall,
            "n_heldout": n, **{f"{k}_{m}": v for k, d in metrics.items() for m, v in d.items()}}


def _last_evaluation(db: Path) -> int:
    if not db.exists():
        return 0
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT coalesce(max(id), 0) FROM evaluations").fetchall()[0][0]
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", action="append", help="settings to run (default: the whole grid)")
    parser.add_argument("--work-dir", default=None, help="database and checkpoints (default: a temp folder)")
    args = parser.parse_args()
    names = args.only or list(GRID)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "sweep.duckdb"
    results = []
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
        results.append(run(name, *GRID[name], db=db, work=work))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    command = "python benchmarks/bench_demo.py " + " ".join(f"--only {n}" for n in (args.only or []))
    print("| setting | samples | layers kept | method | steps | held-out prompts | ROUGE-L vs teacher before -> after "
          "(gain) | KL before -> after | wall of `distill run` | machine | command |")
    print("|---|---:|---:|---|---:|---:|---|---|---:|---|---|")
    for r in results:
        rb, ra = r.get("before_rougeL_teacher", 0.0), r.get("after_rougeL_teacher", 0.0)
        kb, ka = r.get("before_kl_teacher_student"), r.get("after_kl_teacher_student")
        kl = f"{kb:.2f} -> {ka:.2f}" if kb is not None and ka is not None else "-"
        print(f"| {r['setting']} | {r['size']} | {r['keep']} of 30 | {r['method']} | {r['steps']} | {r['n_heldout']} | "
              f"{rb:.2f} -> {ra:.2f} ({ra - rb:+.2f}) | {kl} | {r['wall_s'] / 60:.1f} min | {machine()} | "
              f"`{command.strip()}` |")


if __name__ == "__main__":
    main()
