"""Embedded teacher on CPU: generated tokens/s batched vs one prompt at a time.

    .venv/bin/python benchmarks/bench_embedded.py                       # 32 prompts x 32 tokens
    .venv/bin/python benchmarks/bench_embedded.py --prompts 16 --single 4 --threads 1

SmolLM2-135M-Instruct through ``TransformersTeacher`` (greedy, float32). "One at a time"
sends ``--single`` prompts as separate ``generate`` calls; "batched" sends all
``--prompts`` in one call (the backend batches them, left-padded, ``--batch-size`` per
forward). Tokens/s counts completion tokens actually produced (tokens computed for rows
that already hit EOS are padding and do not count). Target: batched >= 6x.
Prints markdown table rows: | benchmark | measurement | value | notes | machine | command |.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_teacher import HEADER, machine  # noqa: E402
from generators.teachers.base import ChatRequest  # noqa: E402
from generators.teachers.transformers_backend import TransformersTeacher  # noqa: E402

TOPICS = ["the ocean", "a city", "music", "a forest", "the moon", "bread", "a library", "rain", "trains",
          "mountains", "coffee", "winter", "a garden", "bicycles", "the desert", "friendship"]


def prompts(n: int) -> list[str]:
    kinds = ["Write one sentence about {}.", "Describe {} in a few words."]
    return [kinds[i // len(TOPICS) % 2].format(TOPICS[i % len(TOPICS)]) + ("" if i < 32 else f" ({i})")
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--single", type=int, default=6, help="prompts timed one at a time")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the backend's choice")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    parser.add_argument("--no-header", dest="header", action="store_false", help="rows only")
    args = parser.parse_args()
    command = "python benchmarks/bench_embedded.py " + " ".join(sys.argv[1:])

    teacher = TransformersTeacher(batch_size=args.batch_size, num_threads=args.threads)
    teacher.load()
    texts = prompts(args.prompts)
    req = [ChatRequest.chat(t, max_tokens=args.max_tokens, temperature=0) for t in texts]
    teacher.generate(req[:1])  # warm-up

    start = time.perf_counter()
    single = [teacher.generate([r])[0] for r in req[: args.single]]
    single_s = time.perf_counter() - start
    single_tok = sum(d.completion_tokens or 0 for d in single)

    start = time.perf_counter()
    batched = teacher.generate(req)
    batched_s = time.perf_counter() - start
    batched_tok = sum(d.completion_tokens or 0 for d in batched)
    assert all(d.ok for d in batched)

    single_rate, batched_rate = single_tok / single_s, batched_tok / batched_s
    import torch

    where = f"{machine()}, torch threads {torch.get_num_threads()}"
    size = args.batch_size or teacher.auto_batch_size(64 + args.max_tokens)
    if args.header:
        print(HEADER)
    name = f"embedded SmolLM2-135M, CPU, greedy, {args.max_tokens} new tokens"
    for measurement, value, notes in [
        ("one prompt at a time", f"{single_rate:.1f} tokens/s", f"{args.single} prompts, {single_tok} tokens, {single_s:.1f}s"),
        ("batched", f"{batched_rate:.1f} tokens/s",
         f"{args.prompts} prompts (batch size {size}), {batched_tok} tokens, {batched_s:.1f}s; "
         f"**{batched_rate / single_rate:.1f}x** one at a time (target >= 6x)"),
    ]:
        print(f"| {name} | {measurement} | {value} | {notes} | {where} | `{command.strip()}` |")


if __name__ == "__main__":
    main()
