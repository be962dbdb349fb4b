"""ROUGE-L novelty vs Self-Instruct's rouge_score loop, on the same 50k-instruction pool.

    .venv/bin/python benchmarks/bench_rouge.py [--pool 50000] [--queries 300] [--ref-queries 4]

The pool is synthetic English-like instructions: a word-bigram chain trained on the
project's own seed tasks and instruction sets (a small vocabulary with common words
everywhere, which is the hard case for overlap pruning). A quarter of the queries are
light edits of pool entries, so both decisions occur.

The reference is Self-Instruct/Alpaca's loop in one process: pool pre-tokenized once,
then ``rouge_scorer._score_lcs(query_tokens, entry_tokens)`` for every entry. It takes
seconds per query over 50k entries, so it is timed on ``--ref-queries`` queries over the
full pool and that per-query time is what the ratio uses (stated in the output).
Decisions and scores are compared on those full-pool queries, and on every query
against a 2,000-entry prefix of the pool.

Prints markdown table rows: | benchmark | measurement | value | notes | machine | command |.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rouge_score import rouge_scorer  # noqa: E402

from benchmarks._common import machine  # noqa: E402
from filters.rouge import RougeNovelty  # noqa: E402

THRESHOLD = 0.7


def corpus_words() -> list[list[str]]:
    """Sentences (as word lists) from the project's seed tasks and instruction sets."""
    sentences = []
    files = [ROOT / "storage/seeds/seed_tasks.jsonl", *sorted((ROOT / "benchmarks/data").glob("*.jsonl"))]
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            row = json.loads(line)
            texts = [row.get("instruction", ""), row.get("input", "")]
            texts += [i.get(k, "") for i in row.get("instances", []) for k in ("input", "output")]
            sentences += [t.split() for t in texts if t and len(t.split()) > 2]
    if not sentences:  # the data files are missing: fall back to a Zipf-ish vocabulary
        rng = random.Random(0)
        sentences = [[f"w{int(rng.paretovariate(1.1))}" for _ in range(12)] for _ in range(500)]
    return sentences


def instruction_generator(seed: int):
    """A word-bigram chain over the corpus: English-like instructions of 4-40 words."""
    chain: dict[str, list[str]] = {}
    starts = []
    for words in corpus_words():
        starts.append(words[0])
        for a, b in zip(words, words[1:] + ["<end>"]):
            chain.setdefault(a, []).append(b)
    rng = random.Random(seed)

    def generate() -> str:
        words = [rng.choice(starts)]
        while len(words) < 40:
            nxt = rng.choice(chain.get(words[-1], ["<end>"]))
            if nxt == "<end>":
                if len(words) >= 4:
                    break
                nxt = rng.choice(starts)
            words.append(nxt)
        return " ".join(words)

    return generate, rng


def edited(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.choice([1, 2, 3])):
        words[rng.randrange(len(words))] = rng.choice(["new", "other", "the", "a", "more"])
    return " ".join(words)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--ref-queries", type=int, default=4)
    args = ap.parse_args()

    generate, rng = instruction_generator(seed=0)
    pool = [generate() for _ in range(args.pool)]
    queries = [generate() if i % 4 else edited(rng, rng.choice(pool)) for i in range(args.queries)]

    t0 = time.perf_counter()
    novelty = RougeNovelty(THRESHOLD)
    novelty.extend(pool)
    build_s = time.perf_counter() - t0

    times, decisions = [], []
    for q in queries:
        t = time.perf_counter()
        decisions.append(novelty.check(q))
        times.append(time.perf_counter() - t)
    ours_ms = 1000 * statistics.mean(times)
    p99_ms = 1000 * sorted(times)[int(0.99 * (len(times) - 1))]

    # The reference loop, as Self-Instruct/Alpaca run it (minus multiprocessing).
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tokenize = scorer._tokenizer.tokenize
    pool_tokens = [tokenize(p) for p in pool]

    def reference(query: str, entries: list[list[str]]) -> float:
        q = tokenize(query)
        return max((rouge_scorer._score_lcs(q, e).fmeasure for e in entries), default=0.0)

    ref_idx = list(range(args.ref_queries))  # index 0 mod 4 is an edited pool entry
    ref_times, full_same = [], 0
    for i in ref_idx:
        t = time.perf_counter()
        s = reference(queries[i], pool_tokens)
        ref_times.append(time.perf_counter() - t)
        full_same += (s > THRESHOLD) == (not decisions[i].kept) and abs(s - decisions[i].score) <= 1e-9
    ref_ms = 1000 * statistics.mean(ref_times)

    prefix = RougeNovelty(THRESHOLD)
    prefix.extend(pool[:2000])
    prefix_tokens = pool_tokens[:2000]
    same = same_score = 0
    for q in queries:
        s = reference(q, prefix_tokens)
        d = prefix.check(q)
        same += (s > THRESHOLD) == (not d.kept)
        same_score += abs(s - d.score) <= 1e-9
    dropped = sum(not d.kept for d in decisions)

    cmd = "python benchmarks/bench_rouge.py " + " ".join(sys.argv[1:])
    env = f"{machine()} | `{cmd.strip()}`"
    rows = [
        ("pool build (extend)", f"{build_s:.2f} s", f"{args.pool} instructions"),
        ("RougeNovelty.check latency, mean", f"{ours_ms:.2f} ms", f"{args.queries} queries vs {args.pool} pool; p99 {p99_ms:.2f} ms; {dropped} dropped"),
        ("rouge_score loop latency, mean", f"{ref_ms:.0f} ms", f"measured on {len(ref_idx)} queries over the full pool (pre-tokenized `_score_lcs` loop, 1 process)"),
        ("speedup (rouge_score / RougeNovelty)", f"{ref_ms / ours_ms:.0f}x", "per-query mean latency ratio"),
        ("identical decision and score, full pool", f"{full_same}/{len(ref_idx)}", "score within 1e-9"),
        ("identical decisions, 2k-entry prefix", f"{same}/{len(queries)}", f"scores within 1e-9: {same_score}/{len(queries)}"),
    ]
    print("| benchmark | measurement | value | notes | machine | command |")
    print("|---|---|---|---|---|---|")
    for name, value, note in rows:
        print(f"| rouge_novelty | {name} | {value} | {note} | {env} |")


if __name__ == "__main__":
    main()
