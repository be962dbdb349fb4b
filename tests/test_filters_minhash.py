"""MinHash LSH near-duplicates: labelled duplicates, recall/precision vs exact Jaccard, persistence."""

from __future__ import annotations

import random

import pytest

from filters.config import MinHashConfig
from filters.minhash import MinHashIndex, jaccard, optimal_bands, shingles
from storage.records import MinHashSignature

THRESHOLD = 0.7
VOCAB = [f"w{i}" for i in range(3000)]


def doc(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def edit(rng: random.Random, text: str, k: int) -> str:
    """Replace ``k`` random words."""
    words = text.split()
    for _ in range(k):
        words[rng.randrange(len(words))] = rng.choice(VOCAB)
    return " ".join(words)


def labelled_set(seed: int = 0):
    """Base docs, and variants from near-copies to unrelated, with their exact Jaccard."""
    rng = random.Random(seed)
    bases = [doc(rng) for _ in range(150)]
    variants = []
    for base in bases:
        words = base.split()
        half = len(words) // 2
        variants += [
            edit(rng, base, rng.choice([1, 2, 3])),  # light edits: duplicates
            edit(rng, base, rng.choice([8, 12, 20])),  # heavy edits: mostly not
            "  ".join(words).upper() + " !",  # whitespace, case and punctuation only
            " ".join(words[half:] + words[:half]),  # reordered halves: most 3-grams survive
            doc(rng),  # unrelated
        ]
    return bases, variants


def best_exact_jaccard(text: str, base_sets: list[set[str]], ngram: int) -> float:
    s = set(shingles(text, ngram))
    return max(jaccard(s, b) for b in base_sets)


def test_recall_and_precision_against_exact_jaccard():
    bases, variants = labelled_set()
    index = MinHashIndex(THRESHOLD, num_perm=128, ngram=3)
    for i, base in enumerate(bases):
        index.add(f"base{i}", base)
    base_sets = [set(shingles(b, 3)) for b in bases]
    truth = [best_exact_jaccard(v, base_sets, 3) >= THRESHOLD for v in variants]
    predicted = [not index.check(v).kept for v in variants]
    tp = sum(t and p for t, p in zip(truth, predicted))
    recall = tp / sum(truth)
    precision = tp / sum(predicted)
    assert sum(truth) > 200 and len(variants) - sum(truth) > 200  # both classes well populated
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision


def test_labelled_kinds_of_duplicates():
    rng = random.Random(5)
    base = doc(rng, 80)
    index = MinHashIndex(0.8)
    index.add("base", base)
    words = base.split()
    duplicates = {
        "identical": base,
        "whitespace": "\n\t ".join(words) + "   ",
        "case_punct": base.upper().replace(" ", ", "),
        "one_edit": edit(rng, base, 1),
        "reordered_halves": " ".join(words[40:] + words[:40]),
    }
    for kind, text in duplicates.items():
        d = index.check(text)
        assert (d.kept, d.reason) == (False, "near_duplicate"), kind
        assert d.score >= 0.8
    assert index.check(base).score == 1.0
    for text in (doc(rng, 80), " ".join(rng.sample(words, len(words))), edit(rng, base, 30)):
        d = index.check(text)
        assert d.kept and d.reason == "" and d.score < 0.8


def test_near_duplicates_across_batches():
    rng = random.Random(6)
    first = [doc(rng) for _ in range(50)]
    index = MinHashIndex(THRESHOLD)
    assert all(d.kept for d in index.check_and_add_many((f"a{i}", t) for i, t in enumerate(first)))
    second = [edit(rng, t, 1) for t in first[:10]] + [doc(rng) for _ in range(10)]
    second.append(second[-1] + " .")  # a duplicate within the batch itself
    decisions = index.check_and_add_many((f"b{i}", t) for i, t in enumerate(second))
    assert [d.reason for d in decisions] == ["near_duplicate"] * 10 + [""] * 10 + ["near_duplicate"]
    assert len(index) == 60  # dropped items are not indexed
    assert "b10" in index and "b0" not in index


def test_persistence_across_two_ingests():
    """Signatures saved by one run (as records) catch duplicates in the next run."""
    rng = random.Random(7)
    run1 = [doc(rng) for _ in range(40)]
    index1 = MinHashIndex(THRESHOLD, ngram=3, num_perm=64, seed=3)
    index1.check_and_add_many((f"s{i}", t) for i, t in enumerate(run1))
    # What the store would hold and hand back: records, through their row form.
    stored = [MinHashSignature.model_validate(r.row()) for r in index1.to_records()]
    assert {r.config for r in stored} == {"p64-n3-s3-r2"}
    assert all(len(r.signature) == 64 and max(r.signature) < 2**32 for r in stored)

    index2 = MinHashIndex(THRESHOLD, ngram=3, num_perm=64, seed=3)
    assert index2.load(stored) == 40
    assert index2.load([r.row() for r in stored]) == 0  # already there: idempotent
    run2 = [edit(rng, t, 1) for t in run1[:5]] + [doc(rng) for _ in range(5)]
    decisions = index2.check_and_add_many((f"t{i}", t) for i, t in enumerate(run2))
    assert [d.kept for d in decisions] == [False] * 5 + [True] * 5
    # Same signatures whether computed now or loaded: the config pins them.
    assert index2.signature(run1[0]).tolist() == stored[0].signature


def test_mismatched_config_is_refused():
    index = MinHashIndex(ngram=3)
    index.add("x", "some text here to index")
    records = index.to_records()
    with pytest.raises(ValueError, match="config"):
        MinHashIndex(ngram=5).load(records)
    with pytest.raises(ValueError, match="shape"):
        MinHashIndex(num_perm=64).check(index.signature("abc"))


def test_empty_unicode_and_long_texts():
    index = MinHashIndex(0.8)
    assert shingles("", 3) == [] and shingles("!!! ...", 3) == []
    assert index.check("").kept and index.check("").score is None
    index.add("empty", "   ")
    assert index.check(" ").kept  # empty texts never collide with each other
    assert shingles("Hello, world", 3) == ["hello world"]  # shorter than n: one shingle

    russian = "Съешь же ещё этих мягких французских булок да выпей чаю пожалуйста"
    index.add("ru", russian)
    assert not index.check(russian.upper() + "!").kept
    assert index.check("Совсем другой текст про погоду и море").kept

    rng = random.Random(8)
    long_text = doc(rng, 50_000)
    index.add("long", long_text)
    assert index.check(edit(rng, long_text, 10)).reason == "near_duplicate"


def test_adding_an_id_twice_keeps_the_first():
    index = MinHashIndex()
    index.add("a", "the first text of many words here")
    index.add("a", "another text entirely about other things")
    assert len(index) == 1
    assert not index.check("the first text of many words here").kept


def test_query_lists_candidates_best_first():
    rng = random.Random(9)
    base = doc(rng)
    index = MinHashIndex(0.5)
    index.add("exact", base)
    index.add("edited", edit(rng, base, 4))
    found = index.query(base)
    assert [item for item, _ in found] == ["exact", "edited"]
    assert found[0][1] == 1.0 > found[1][1]


def test_bands_and_config():
    assert optimal_bands(0.8, 128) == (14, 9)
    index = MinHashIndex.from_config(MinHashConfig(threshold=0.5, num_perm=64, bands=16))
    assert (index.bands, index.rows, index.num_perm) == (16, 4, 64)
    with pytest.raises(ValueError):
        MinHashConfig(num_perm=32, bands=64)
    with pytest.raises(ValueError):
        MinHashIndex(threshold=0)
