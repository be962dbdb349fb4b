"""ROUGE-L novelty: Self-Instruct's filter that drops instructions too similar to the pool.

A new text is dropped when its ROUGE-L F-measure against any text already in the pool
is above ``threshold`` (0.7 in Self-Instruct). Scores are those of
``rouge_score.rouge_scorer.RougeScorer(['rougeL'], use_stemmer=False)`` with the same
tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from rouge_score import tokenizers

from filters.base import Decision

REASON = "too_similar"


def _lcs_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common subsequence, bit-parallel over ``b`` (Hyyrö 2004)."""
    if not a or not b:
        return 0
    masks: dict[int, int] = {}
    for j, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def _fmeasure(lcs: int, n_target: int, n_prediction: int) -> float:
    """rouge_score's F-measure, computed with the same float operations in the same order."""
    if lcs == 0:
        return 0.0
    precision = lcs / n_prediction
    recall = lcs / n_target
    return 2 * precision * recall / (precision + recall)


class RougeNovelty:
    """A pool of texts and a ROUGE-L novelty check against all of them."""

    def __init__(self, threshold: float = 0.7, *, use_stemmer: bool = False) -> None:
        self.threshold = threshold
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=use_stemmer)
        self._vocab: dict[str, int] = {}
        self._pool: list[list[int]] = []

    def _ids(self, text: str, *, grow: bool) -> list[int]:
        ids = []
        for tok in self._tokenizer.tokenize(text):
            i = self._vocab.get(tok)
            if i is None:
                if not grow:
                    i = -1  # unseen token: matches nothing in the pool
                else:
                    i = self._vocab[tok] = len(self._vocab)
            ids.append(i)
        return ids

    def add(self, text: str) -> None:
        self._pool.append(self._ids(text, grow=True))

    def extend(self, texts: Iterable[str]) -> None:
        for t in texts:
            self.add(t)

    def score(self, text: str) -> float:
        q = self._ids(text, grow=False)
        best = 0.0
        for p in self._pool:
            best = max(best, _fmeasure(_lcs_length(q, p), len(q), len(p)))
        return best

    def check(self, text: str) -> Decision:
        s = self.score(text)
        return Decision.drop(REASON, s) if s > self.threshold else Decision.keep(s)

    def check_and_add(self, text: str) -> Decision:
        d = self.check(text)
        if d.kept:
            self.add(text)
        return d

    def __len__(self) -> int:
        return len(self._pool)
