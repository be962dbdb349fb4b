"""Micro-scale distillation on the embedded default: does a pruned student learn from its teacher?

Teacher: SmolLM2-135M-Instruct (30 layers). Student: the teacher with 2/3 of its layers
removed (10 of 30 kept, evenly spaced, initialized from the teacher's weights). Training
set: the teacher's greedy responses to benchmarks/data/train_instructions.jsonl; held-out:
its greedy responses to benchmarks/data/eval_instructions.jsonl. Reported for the student
before training and after sft / kd / gkd: ROUGE-L F (x100, stemmed) against the teacher's
response, mean per-token KL(teacher || student) on the teacher's responses, and training
throughput (non-padding input tokens per second).

    .venv/bin/python benchmarks/bench_distill.py                      # 1-2 h on 2 busy CPU cores
    .venv/bin/python benchmarks/bench_distill.py --methods sft --n-train 64 --n-eval 16   # quick look

Resumable: teacher responses are cached (JSONL, appended batch by batch), each method's
checkpoint and result, and each evaluation, live under --work-dir and are reused on rerun.
Prints markdown (machine, command, table) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _common  # noqa: E402
from training.config import EvalConfig, TrainConfig  # noqa: E402
from training.evaluate import (  # noqa: E402
    EvalResult,
    comparison_markdown,
    evaluate_model,
    generate,
)
from training.student import build_student  # noqa: E402
from training.train import load_model, load_tokenizer, train  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def teacher_responses(teacher: Path, prompts: list[dict], cache: Path, *, max_new_tokens: int, batch: int,
                      cached_only: bool = False) -> list[dict]:
    """The teacher's greedy answers, cached one batch at a time (a rerun resumes)."""
    done = read_jsonl(cache)
    if len(done) >= len(prompts) or cached_only:
        return done[: len(prompts)]
    model, tok = load_model(teacher, "cpu", for_inference=True), load_tokenizer(teacher)
    t0 = time.time()
    with cache.open("a") as f:
        for start in range(len(done), len(prompts), batch):
            chunk = prompts[start:start + batch]
            answers = generate(model, tok, chunk, max_new_tokens=max_new_tokens, batch_size=batch)
            for p, a in zip(chunk, answers):
                row = {"instruction": p["instruction"], "input": p.get("input", ""), "response": a}
                f.write(json.dumps(row) + "\n")
                done.append(row)
            f.flush()
            print(f"  teacher: {len(done)}/{len(prompts)} responses ({time.time() - t0:.0f}s)", flush=True)
    return done


def machine() -> str:
    import torch
    import transformers
    import trl

    return _common.machine(f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
                           f"transformers {transformers.__version__}", f"trl {trl.__version__}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", default=None, help="cache folder (default: ~/.cache/distillery/bench_distill)")
    ap.add_argument("--methods", default="sft,kd,gkd")
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-eval", type=int, default=50)
    ap.add_argument("--keep-layers", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads: 1 is ~10x faster than 2 on a 2-core machine other jobs share")
    ap.add_argument("--eval-teacher", action="store_true",
                    help="also score the teacher (ROUGE-L 100 / KL 0 vs its own greedy answers, by construction)")
    ap.add_argument("--report-only", action="store_true", help="print what is cached, compute nothing")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    from core.embedded import ensure_embedded_teacher

    from core.embedded import cache_root

    work = Path(args.work_dir) if args.work_dir else cache_root() / "bench_distill"
    work.mkdir(parents=True, exist_ok=True)
    teacher = ensure_embedded_teacher()
    data = ROOT / "benchmarks" / "data"
    train_prompts = read_jsonl(data / "train_instructions.jsonl")[: args.n_train]
    eval_prompts = read_jsonl(data / "eval_instructions.jsonl")[: args.n_eval]

    print(f"[1/4] teacher responses ({len(train_prompts)} train, {len(eval_prompts)} eval)", flush=True)
    t0 = time.time()
    train_rows = teacher_responses(teacher, train_prompts, work / "teacher_train.jsonl",
                                   max_new_tokens=args.max_new_tokens, batch=16, cached_only=args.report_only)
    eval_rows = teacher_responses(teacher, eval_prompts, work / "teacher_eval.jsonl",
                                  max_new_tokens=args.max_new_tokens, batch=16, cached_only=args.report_only)
    gen_s = time.time() - t0
    train_rows = [{**r, "split": "train"} for r in train_rows if r["response"].strip()]
    items = [{"instruction": r["instruction"], "input": r["input"], "system_prompt": None,
              "teacher_response": r["response"], "references": [], "label": None} for r in eval_rows]

    print(f"[2/4] student: keep {args.keep_layers} of the teacher's layers", flush=True)
    student = build_student(teacher, args.keep_layers, work / "student")

    methods = [m for m in args.methods.split(",") if m]
    eval_config = EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=16)
    teacher_pair = None

    def evaluate(label: str, path: Path) -> EvalResult | None:
        """Cached per model; the student before training is scored first, then each method
        right after it trains, so an interrupted run still has comparable numbers."""
        nonlocal teacher_pair
        cache = work / f"eval_{label.split()[0]}_{len(items)}.json"
        if cache.exists():
            return EvalResult.model_validate_json(cache.read_text())
        if args.report_only:
            return None
        print(f"[4/4] evaluating {label} on {len(items)} held-out prompts", flush=True)
        if teacher_pair is None:
            teacher_pair = (load_model(teacher, "cpu", for_inference=True), load_tokenizer(teacher))
        r = evaluate_model(str(path), items, label=label, teacher=teacher_pair, config=eval_config, device="cpu")
        cache.write_text(r.model_dump_json())
        return r

    results: list[EvalResult] = []
    if args.eval_teacher and (r := evaluate("teacher", teacher)):
        results.append(r)
    if r := evaluate("student (before)", student):
        results.append(r)
    runs: dict[str, dict] = {}
    for method in methods:
        out = work / method
        done = out / "result.json"
        if done.exists():
            runs[method] = json.loads(done.read_text())
        elif args.report_only:
            continue
        else:
            print(f"[3/4] training: {method}", flush=True)
            config = TrainConfig(
                method=method, student=str(student), teacher=str(teacher), epochs=args.epochs,
                learning_rate=args.lr, batch_size=args.batch_size, max_length=args.max_length,
                max_new_tokens=args.max_new_tokens, seed=args.seed, warmup_ratio=0.05, logging_steps=5,
                output_dir=str(out),
            )
            result = train(config, train_rows)
            runs[method] = {"final_loss": result.final_loss, **result.metrics}
            done.write_text(json.dumps(runs[method], indent=1))
        if r := evaluate(method, out):
            results.append(r)

    before = next((r for r in results if r.label == "student (before)"), None)
    trained = [r for r in results if r.label in methods]
    if before is None or not trained:
        print("no evaluated students yet: run without --report-only")
        return 1
    best_rouge = max(trained, key=lambda r: r.metrics["rougeL_teacher"])
    best_kl = min(trained, key=lambda r: r.metrics["kl_teacher_student"])
    all_beat = all(r.metrics["rougeL_teacher"] > before.metrics["rougeL_teacher"]
                   and r.metrics["kl_teacher_student"] < before.metrics["kl_teacher_student"] for r in trained)

    print("\n## Distillation (micro-scale, embedded SmolLM2-135M-Instruct)\n")
    print(f"- Machine: {machine()}")
    print(f"- Command: `.venv/bin/python benchmarks/bench_distill.py {' '.join(argv or sys.argv[1:])}`".rstrip())
    print(f"- Teacher: SmolLM2-135M-Instruct (30 layers); student: {args.keep_layers} of 30 layers kept "
          f"(evenly spaced), initialized from the teacher")
    print(f"- Data: {len(train_rows)} teacher responses (greedy, <= {args.max_new_tokens} new tokens) to "
          f"benchmarks/data/train_instructions.jsonl; {len(items)} held-out prompts "
          f"(eval_instructions.jsonl); teacher generation took {gen_s:.0f}s (0 if cached)")
    print(f"- Training: {args.epochs:g} epoch, batch {args.batch_size}, lr {args.lr:g} (linear, 5% warmup), "
          f"max_length {args.max_length}, seed {args.seed}; KD presets from training/config.py (kd: lmbda 0 beta 0; "
          f"gkd: lmbda 0.5 beta 0.5, temperature 0.9); evaluation greedy, <= {args.max_new_tokens} new tokens\n")
    print(comparison_markdown(results))
    if not args.eval_teacher:
        print("\n(The teacher itself scores ROUGE-L 100 and KL 0 here by construction: the references are its own "
              "greedy answers.)")
    print("\n| method | steps | train time (s) | tokens/s (non-padding input) | final loss |")
    print("|---|---|---|---|---|")
    for m in runs:
        r = runs[m]
        tps = f"{r['tokens_per_s']:.0f}" if r.get("tokens_per_s") else "-"
        print(f"| {m} | {r['steps']} | {r['train_runtime_s']:.0f} | {tps} | {r['final_loss']:.4f} |")
    print(f"\nBest ROUGE-L vs teacher: {best_rouge.label} ({best_rouge.metrics['rougeL_teacher']:.2f}); "
          f"lowest KL: {best_kl.label} ({best_kl.metrics['kl_teacher_student']:.4f}). "
          f"Every trained student beats the untrained pruned student on both metrics: {'yes' if all_beat else 'NO'}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
