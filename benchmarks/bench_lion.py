"""Lion's loop against a baseline that spends the same teacher requests on plain responses.

    .venv/bin/python benchmarks/bench_lion.py                       # 3 iterations of configs/lion.yaml (~45 min on 2 cores)
    .venv/bin/python benchmarks/bench_lion.py --iterations 1

1. `distill lion --config configs/lion.yaml --iterations N` (a separate process, as a user
   runs it) in a fresh project: per iteration, from `lion_iterations`, the hard fraction,
   the mean gap, and the student's held-out ROUGE-L vs the teacher and KL.
2. The baseline: the teacher requests the loop paid for (every request of the run but
   the student's: imitation answers, referee verdicts, generated instructions), spent
   instead on `distill generate --method responses` over project-written instructions
   (benchmarks/data/train_instructions.jsonl), under Lion's system prompt, temperature and
   answer length; the same student (configs/lion.yaml's pruned teacher) trained with SFT
   for the loop's total steps; evaluated on the same held-out prompts, the same way
   (greedy, against the teacher's greedy answers, KL on them).
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

INSTRUCTIONS = ROOT / "benchmarks" / "data" / "train_instructions.jsonl"


def cli(args: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"distill {' '.join(args[:4])}: exit {done.returncode}\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-lion-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DISTILL_SERVER="ephemeral", OMP_WAIT_POLICY="PASSIVE")
    import duckdb

    from flows.config import load_lion_config
    from storage.store import Store
    from training.config import EvalConfig, TrainConfig
    from training.evaluate import eval_items, evaluate_models
    from training.train import train

    config = load_lion_config(ROOT / "configs" / "lion.yaml")
    lion_db = work / "lion.duckdb"
    lion_wall = cli(["--db", str(lion_db), "lion", "--config", "configs/lion.yaml", "--iterations",
                     str(args.iterations), "--set", f"db={lion_db}", "--set", "run_name=bench",
                     "--set", f"train.output_dir={work / 'lion-ck'}"], env)
    con = duckdb.connect(str(lion_db), read_only=True)
    iterations = con.execute("SELECT * FROM lion_iterations ORDER BY iteration").fetch_df().to_dict("records")
    student_prefix = "lion-bench-student"
    paid = con.execute("SELECT count(*) FROM requests WHERE model NOT LIKE ? AND status = 'ok'",
                       [student_prefix + "%"]).fetchall()[0][0]
    con.close()

    # The baseline: the same teacher requests, on plain responses.
    base_db = work / "baseline.duckdb"
    params = config.loop
    n = min(paid, sum(1 for line in INSTRUCTIONS.read_text().splitlines() if line.strip()))
    gen_wall = cli(["--db", str(base_db), "generate", "--method", "responses", "--target", str(n),
                    "--max-attempts", str(paid), "--instructions-file", str(INSTRUCTIONS), "--run-name", "baseline",
                    "--set", "teacher.backend=transformers", "--set", "teacher.defaults.top_p=0.9",
                    "--set", f"generate.params.system_prompt={json.dumps(params.system_prompt)}",
                    "--set", f"generate.params.temperature={params.answer_temperature}",
                    "--set", f"generate.params.max_tokens={params.answer_max_tokens}",
                    "--set", "generate.params.keep_truncated=true",
                    "--set", "generate.batch_size=16", "--set", "generate.max_concurrent_batches=1"], env)
    from storage.datasets import create_dataset

    store = Store(base_db)
    create_dataset(store, "baseline", "SELECT * FROM kept_samples", eval_fraction=0.0)
    steps = config.train.max_steps * args.iterations
    train_config = config.train.model_copy(update={"max_steps": steps, "output_dir": str(work / "baseline-ck"),
                                                   "name": "baseline"})
    start = time.monotonic()
    result = train(train_config, store=store, dataset="baseline", show_progress=False)
    train_wall = time.monotonic() - start
    items = [{**item, "system_prompt": params.system_prompt}
             for item in eval_items(jsonl=ROOT / config.heldout.file, max_prompts=config.heldout.size)]
    from core.embedded import ensure_embedded_teacher

    [evaluated] = evaluate_models({"baseline": result.checkpoint}, items, teacher=str(ensure_embedded_teacher()),
                                  config=EvalConfig(max_new_tokens=config.heldout.max_new_tokens))

    print(f"Lion: `distill lion --config configs/lion.yaml --iterations {args.iterations}` in {lion_wall / 60:.1f} min; "
          f"{paid} teacher requests (imitation answers, referee verdicts, generated instructions; the student's "
          f"answers not counted). Baseline: {n} plain responses for those requests ({gen_wall / 60:.1f} min), "
          f"SFT of the same student for {steps} steps ({train_wall / 60:.1f} min), the same {len(items)} held-out "
          f"prompts. Machine: {machine()}; command: `python benchmarks/bench_lion.py --iterations {args.iterations}`.")
    print()
    print("| | train pool | judged / failed verdicts | hard fraction | mean gap | new instructions | "
          "held-out ROUGE-L vs teacher | held-out KL(teacher‖student) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for it in iterations:
        judged = it["judged"] or 0
        hard = f"{it['hard'] / judged:.2f}" if judged else "-"
        gap = f"{it['mean_gap']:.2f}" if it["mean_gap"] is not None and it["mean_gap"] == it["mean_gap"] else "-"
        print(f"| Lion iteration {it['iteration']} | {it['train_pool']} | {judged} / {it['failed']} | {hard} | {gap} | "
              f"{it['generated']} | {it['rougeL_teacher']:.2f} | {it['kl_teacher_student']:.3f} |")
    m = evaluated.metrics
    print(f"| baseline: {n} plain responses, {steps} SFT steps | {n} | - | - | - | - | "
          f"{m.get('rougeL_teacher', float('nan')):.2f} | {m.get('kl_teacher_student', float('nan')):.3f} |")


if __name__ == "__main__":
    main()
