"""ROUGE-L novelty: scores and decisions identical to rouge_score, on random and adversarial texts."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from filters.rouge import RougeNovelty, fmeasure, lcs_length

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
THRESHOLD = 0.7


def reference(text: str, pool: list[str]) -> float:
    """Self-Instruct's loop: max rouge_score ROUGE-L F-measure over the pool."""
    return max((SCORER.score(p, text)["rougeL"].fmeasure for p in pool), default=0.0)


def assert_same(text: str, pool: list[str], novelty: RougeNovelty | None = None) -> None:
    if novelty is None:
        novelty = RougeNovelty(THRESHOLD)
        novelty.extend(pool)
    expected = reference(text, pool)
    got = novelty.check(text)
    assert got.score == pytest.approx(expected, abs=1e-9), (text, pool)
    assert got.kept == (not expected > THRESHOLD), (text, pool, expected)
    assert got.reason == ("" if got.kept else "too_similar")


def random_text(rng: random.Random, words: list[str], lo: int, hi: int) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))


def test_random_pairs_match_rouge_score_exactly():
    rng = random.Random(0)
    # A tiny vocabulary with punctuation and case makes long common subsequences likely.
    words = "a b c d e f A the of , . ! ? x1 2 -".split()
    for _ in range(3000):
        a = random_text(rng, words, 0, 14)
        b = random_text(rng, words, 0, 14)
        novelty = RougeNovelty(THRESHOLD)
        novelty.add(b)
        expected = SCORER.score(b, a)["rougeL"].fmeasure
        got = novelty.check(a)
        assert got.score == expected  # bit-identical, not just close
        assert got.kept == (not expected > THRESHOLD)


def test_pairs_at_exactly_the_threshold():
    """F = 2 LCS / (m + n) = 0.7 exactly (in rationals): both libraries decide alike."""
    rng = random.Random(1)
    cases = 0
    for total in range(20, 201, 20):  # m + n, with LCS = 0.35 * total
        lcs = total * 7 // 20
        for m in range(lcs, total - lcs + 1, max(1, (total - 2 * lcs) // 6 or 1)):
            n = total - m
            common = [f"c{i}" for i in range(lcs)]
            a = common + [f"a{i}" for i in range(m - lcs)]
            b = common + [f"b{i}" for i in range(n - lcs)]
            # Shuffle fillers in while keeping the common tokens in order: LCS stays lcs.
            a = sorted(a, key=lambda t: (int(t[1:]) if t[0] == "c" else rng.uniform(0, lcs)))
            b = sorted(b, key=lambda t: (int(t[1:]) if t[0] == "c" else rng.uniform(0, lcs)))
            assert_same(" ".join(a), [" ".join(b)])
            cases += 1
    assert cases > 40


@pytest.mark.parametrize(
    "a, b",
    [
        ("", ""),
        ("", "hello"),
        ("!!! ... ???", "!!!"),  # punctuation only: no tokens at all
        ("word", "word"),
        ("word", "other"),
        ("a a a a a a", "a a"),
        ("a b a b a b a b", "b a b a"),
        ("The CAT sat.", "the cat SAT"),
        ("café naïve 東京", "caf na ve"),  # rouge_score drops non-ASCII letters
        ("x " * 63, "x " * 64),
        ("x " * 64, "x " * 65),
        ("a b " * 40, "b a " * 40),  # both over 64 tokens
        ("one two three four five six seven eight nine ten", "one two three four five six seven eight nine ten"),
    ],
)
def test_adversarial_pairs(a, b):
    assert_same(a, [b])
    assert_same(b, [a])


def test_pools_with_long_and_short_entries_match():
    rng = random.Random(2)
    words = [f"w{i}" for i in range(30)] + ["the", "a", "of"] * 5
    for _ in range(25):
        pool = [random_text(rng, words, 0, rng.choice([10, 10, 10, 70, 130])) for _ in range(rng.randint(0, 80))]
        novelty = RougeNovelty(THRESHOLD)
        novelty.extend(pool)
        for _ in range(5):
            query = random_text(rng, words, 0, rng.choice([12, 90]))
            assert_same(query, pool, novelty)
        # Near copies of pool entries land on both sides of the threshold.
        for p in pool[:5]:
            tokens = p.split()
            if tokens:
                tokens[rng.randrange(len(tokens))] = "zzz"
            assert_same(" ".join(tokens), pool, novelty)


def test_check_and_add_is_self_instructs_loop():
    rng = random.Random(3)
    words = [f"t{i}" for i in range(12)]
    texts = [random_text(rng, words, 3, 9) for _ in range(300)]
    novelty, kept = RougeNovelty(THRESHOLD), []
    for text in texts:
        expected_keep = not reference(text, kept) > THRESHOLD
        decision = novelty.check_and_add(text)
        assert decision.kept == expected_keep
        if expected_keep:
            kept.append(text)
    assert len(novelty) == len(kept)
    assert 0 < len(kept) < len(texts)


def test_empty_pool_and_empty_text():
    novelty = RougeNovelty()
    assert novelty.check("anything").kept and novelty.check("anything").score == 0.0
    novelty.add("")
    novelty.add("hello world")
    assert len(novelty) == 2
    assert novelty.check("").score == 0.0 and novelty.check("").kept
    assert novelty.check("completely different").score == 0.0


def test_identical_and_unicode_texts():
    novelty = RougeNovelty()
    novelty.add("Écris un poème sur la mer, s'il te plaît.")
    same = novelty.check("Écris un poème sur la mer, s'il te plaît.")
    assert (same.kept, same.score, same.reason) == (False, 1.0, "too_similar")
    assert novelty.check("日本語のテキスト").score == 0.0  # no ASCII tokens at all


def test_very_long_text():
    rng = random.Random(4)
    words = [f"w{i}" for i in range(500)]
    long_text = random_text(rng, words, 1000, 1000)
    novelty = RougeNovelty()
    novelty.extend([long_text, "w1 w2 w3"])
    assert novelty.check(long_text).score == 1.0
    edited = long_text.replace("w7 ", "zz ")
    assert novelty.check(edited).score == pytest.approx(reference(edited, [long_text]), abs=1e-12)


def test_stemmer_option_matches_rouge_score_with_stemming():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    novelty = RougeNovelty(use_stemmer=True)
    novelty.add("running dogs jumped quickly")
    text = "the dog runs and jumps"
    assert novelty.check(text).score == scorer.score("running dogs jumped quickly", text)["rougeL"].fmeasure


def test_helpers():
    assert lcs_length([1, 2, 3, 4], [2, 4, 1, 3]) == 2
    assert lcs_length([], [1]) == 0
    assert fmeasure(0, 3, 4) == 0.0
    assert fmeasure(3, 3, 3) == 1.0
