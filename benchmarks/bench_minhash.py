"""MinHash LSH near-duplicate throughput: filters.minhash (rensa) vs datasketch, same 100k docs.

    .venv/bin/python benchmarks/bench_minhash.py [--docs 100000] [--threshold 0.7] [--labelled 2000]

Docs are synthetic: 30-150 words from a Zipf-distributed 20k-word vocabulary. A fifth
are planted near-duplicates of an earlier original (a few words edited, whitespace and
case changed, halves swapped, a chunk appended) or 3-20% of their words edited, which
spreads their Jaccard around the threshold.

Both sides do the same work per doc, in stream order: signature, LSH query, verify the
candidates by estimated Jaccard >= threshold, insert the doc when it is kept. Both use
128 permutations, word 3-gram shingles from :func:`filters.minhash.shingles` (shingling
time is counted on both sides), and the same bands x rows. datasketch computes its
signatures with ``MinHash.bulk`` (its fastest CPU path) per batch of 1,000 docs.

Recall and precision are measured on the last ``--labelled`` docs against exact Jaccard:
a doc is a true duplicate when its shingle set has Jaccard >= threshold with some earlier
doc (any earlier doc, also dropped ones, so the labels are slightly harsher than the
streaming decisions).

Prints markdown table rows: | benchmark | measurement | value | notes | machine | command |.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datasketch import MinHash, MinHashLSH  # noqa: E402

from benchmarks._common import machine  # noqa: E402
from filters.minhash import MinHashIndex, shingles  # noqa: E402

BATCH = 1000


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    weights /= weights.sum()
    docs: list[str] = []
    originals: list[int] = []
    for i in range(n):
        if originals and rng.random() < 0.2:
            words = docs[originals[rng.integers(len(originals))]].split()
            kind = rng.integers(5)
            if kind == 0:  # a few words edited: a near-duplicate
                for j in rng.integers(len(words), size=max(1, len(words) // 50)):
                    words[j] = vocab[rng.integers(len(vocab))]
                docs.append(" ".join(words))
            elif kind == 1:  # whitespace, case and punctuation only
                docs.append("\n  ".join(words).upper() + " !")
            elif kind == 2:  # halves swapped
                half = len(words) // 2
                docs.append(" ".join(words[half:] + words[:half]))
            elif kind == 3:  # a chunk appended
                docs.append(" ".join(words + list(rng.choice(vocab, size=len(words) // 10, p=weights))))
            else:  # 3-20% of words edited: Jaccard of 3-grams spread around the threshold
                for j in rng.integers(len(words), size=max(1, int(len(words) * rng.uniform(0.03, 0.2)))):
                    words[j] = vocab[rng.integers(len(vocab))]
                docs.append(" ".join(words))
        else:
            originals.append(i)
            docs.append(" ".join(rng.choice(vocab, size=int(rng.integers(30, 151)), p=weights)))
    return docs


def run_ours(docs: list[str], threshold: float) -> tuple[float, list[bool], MinHashIndex]:
    index = MinHashIndex(threshold, num_perm=128, ngram=3)
    dropped: list[bool] = []
    t = time.perf_counter()
    for start in range(0, len(docs), BATCH):
        items = [(str(i), docs[i]) for i in range(start, min(start + BATCH, len(docs)))]
        dropped += [not d.kept for d in index.check_and_add_many(items)]
    return time.perf_counter() - t, dropped, index


def run_datasketch(docs: list[str], threshold: float, bands: int, rows: int) -> tuple[float, list[bool]]:
    lsh = MinHashLSH(threshold=threshold, num_perm=128, params=(bands, rows))
    kept: dict[str, MinHash] = {}
    dropped: list[bool] = []
    t = time.perf_counter()
    for start in range(0, len(docs), BATCH):
        batch = range(start, min(start + BATCH, len(docs)))
        sets = [[s.encode() for s in shingles(docs[i], 3)] for i in batch]
        for i, mh in zip(batch, MinHash.bulk(sets, num_perm=128)):
            best = max((mh.jaccard(kept[k]) for k in lsh.query(mh)), default=0.0)
            dup = best >= threshold
            dropped.append(dup)
            if not dup:
                lsh.insert(str(i), mh)
                kept[str(i)] = mh
    return time.perf_counter() - t, dropped


def exact_labels(docs: list[str], labelled: range, threshold: float) -> list[bool]:
    """True where a labelled doc's exact shingle Jaccard with some earlier doc >= threshold."""
    sets = {i: set(shingles(docs[i], 3)) for i in labelled}
    where: dict[str, list[int]] = {}
    for i, s in sets.items():
        for sh in s:
            where.setdefault(sh, []).append(i)
    shared: dict[tuple[int, int], int] = {}  # (labelled doc, earlier doc) -> shared shingles
    sizes: dict[int, int] = {}
    for j in range(labelled.stop):
        sj = set(shingles(docs[j], 3))
        sizes[j] = len(sj)
        for sh in sj:
            for i in where.get(sh, ()):
                if j < i:
                    shared[(i, j)] = shared.get((i, j), 0) + 1
    best = dict.fromkeys(labelled, 0.0)
    for (i, j), inter in shared.items():
        best[i] = max(best[i], inter / (len(sets[i]) + sizes[j] - inter))
    return [best[i] >= threshold for i in labelled]


def recall_precision(truth: list[bool], predicted: list[bool]) -> tuple[float, float]:
    tp = sum(t and p for t, p in zip(truth, predicted))
    return tp / max(1, sum(truth)), tp / max(1, sum(predicted))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--labelled", type=int, default=2000)
    args = ap.parse_args()

    docs = make_docs(args.docs)
    ours_s, ours_dropped, index = run_ours(docs, args.threshold)
    ds_s, ds_dropped = run_datasketch(docs, args.threshold, index.bands, index.rows)

    labelled = range(len(docs) - min(args.labelled, len(docs)), len(docs))
    truth = exact_labels(docs, labelled, args.threshold)
    ours_r, ours_p = recall_precision(truth, ours_dropped[labelled.start :])
    ds_r, ds_p = recall_precision(truth, ds_dropped[labelled.start :])
    agree = sum(a == b for a, b in zip(ours_dropped, ds_dropped))

    cmd = "python benchmarks/bench_minhash.py " + " ".join(sys.argv[1:])
    env = f"{machine()} | `{cmd.strip()}`"
    setup = f"{len(docs)} docs, threshold {args.threshold}, 128 perms, {index.bands}x{index.rows} bands, word 3-grams"
    rows = [
        ("filters.minhash (rensa) throughput", f"{len(docs) / ours_s:,.0f} docs/s", f"{ours_s:.1f} s; {sum(ours_dropped)} dropped; {setup}"),
        ("datasketch throughput", f"{len(docs) / ds_s:,.0f} docs/s", f"{ds_s:.1f} s; {sum(ds_dropped)} dropped; MinHash.bulk + MinHashLSH"),
        ("speedup (datasketch time / ours)", f"{ds_s / ours_s:.1f}x", "signatures + LSH query + verify + insert"),
        ("filters.minhash recall / precision", f"{ours_r:.3f} / {ours_p:.3f}", f"last {len(truth)} docs vs exact Jaccard, {sum(truth)} true duplicates"),
        ("datasketch recall / precision", f"{ds_r:.3f} / {ds_p:.3f}", "same labelled docs"),
        ("same decision, ours vs datasketch", f"{agree}/{len(docs)}", "different hash functions: estimates differ near the threshold"),
    ]
    print("| benchmark | measurement | value | notes | machine | command |")
    print("|---|---|---|---|---|---|")
    for name, value, note in rows:
        print(f"| minhash_near_dup | {name} | {value} | {note} | {env} |")


if __name__ == "__main__":
    main()
