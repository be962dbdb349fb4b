"""ROUGE-L novelty: Self-Instruct's filter that drops instructions too similar to the pool.

A new text is dropped when its ROUGE-L F-measure against some text already in the pool
is above ``threshold`` (0.7 in Self-Instruct, reason ``'too_similar'``). Scores are
bit-for-bit those of ``rouge_score.rouge_scorer.RougeScorer(['rougeL'],
use_stemmer=False)``: the same tokenizer, the same LCS length, and the same float
operations in the same order for the F-measure.

Self-Instruct computes this with one ``rouge_score`` call per pool entry, which is
O(pool) Python-level dynamic programs per new instruction. Here one check is a handful of
numpy operations over the pool:

1. Tokens become integer ids, and every pool entry is indexed in an inverted index
   (token -> entries holding it, with the count and a bit mask of the positions).
2. Multiset token overlap bounds the LCS (a common subsequence uses each token at most
   as often as both texts hold it), so ``2 * overlap / (m + n)`` bounds the F-measure
   (F = 2 * LCS / (m + n)). The overlaps of every entry are one ``np.bincount`` over the
   posting lists of the query's tokens; entries sharing no token score exactly 0.
3. Exact LCS lengths are computed only for entries whose bound can beat the best score
   found so far, with the bit-parallel LCS-length recurrence (Allison-Dix, Hyyrö):
   for each query token, ``U = V & M; V = (V + U) | (V - U)`` where ``M`` marks the
   positions of that token in the pool entry; the LCS length is the number of zero bits
   of ``V``. Entries of up to 64 tokens are one ``uint64`` each, so the recurrence runs
   over all candidates at once in numpy; longer entries use Python big ints.

The score is always the exact maximum over the whole pool, also for kept texts (the
flow records it), not just "something above the threshold".

    >>> novelty = RougeNovelty(threshold=0.7)
    >>> novelty.add("Write a poem about the sea.")
    >>> novelty.check("Write a poem about the sea!").reason
    'too_similar'
    >>> novelty.check_and_add("List three prime numbers.").kept
    True
    >>> len(novelty)
    2
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
from rouge_score import tokenize as rouge_tokenize

from filters.base import Decision
from filters.config import RougeConfig

NAME = "rouge_novelty"  # filter_decisions.filter
REASON = "too_similar"

_WORD = 64  # pool entries up to this many tokens are one uint64 bit vector
_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
# Bounds are computed with a different (algebraically equal) formula than the score, so
# they may differ from it in the last bits; prune only with this much room to spare.
_EPS = 1e-9
# Exact LCS for this many best-bounded candidates first; their best score then prunes
# the rest (usually almost all of them).
_FIRST_PASS = 64


def fmeasure(lcs: int, n_target: int, n_prediction: int) -> float:
    """rouge_score's ROUGE-L F-measure, with the same float operations in the same order.

    (It is symmetric: swapping target and prediction swaps precision and recall, and
    ``2 * p * r / (p + r)`` is exactly symmetric in floats too.)
    """
    if lcs == 0:  # also covers an empty side: rouge_score returns 0 there
        return 0.0
    precision = lcs / n_prediction
    recall = lcs / n_target
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common subsequence of two id sequences (bit-parallel over ``b``)."""
    if not a or not b:
        return 0
    masks: dict[int, int] = {}
    for j, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << j)
    return _lcs_from_masks(a, masks, len(b))


def _lcs_from_masks(a: Iterable[int], masks: dict[int, int], n: int) -> int:
    """Hyyrö's bit-parallel LCS length; ``masks[t]`` has bit j set where ``b[j] == t``."""
    full = (1 << n) - 1
    v = full
    for tok in a:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full  # drop the carry out of the top bit
    return n - v.bit_count()


class _Postings:
    """The pool entries holding one token: entry ids (ascending), counts, position masks.

    Appends go to Python lists (cheap); :meth:`arrays` moves them into growable numpy
    arrays when a query needs them, so neither adding nor querying converts whole lists.
    ``masks`` is 0 for entries longer than 64 tokens (those keep big-int masks apart).
    """

    __slots__ = ("entries", "counts", "masks", "n", "pending")

    def __init__(self) -> None:
        self.entries = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)
        self.masks = np.empty(0, dtype=np.uint64)
        self.n = 0
        self.pending: tuple[list[int], list[int], list[int]] = ([], [], [])

    def append(self, entry: int, count: int, mask: int) -> None:
        entries, counts, masks = self.pending
        entries.append(entry)
        counts.append(count)
        masks.append(mask)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(entries, counts, masks) of every entry appended so far."""
        entries, counts, masks = self.pending
        if entries:
            n, k = self.n, len(entries)
            if n + k > len(self.entries):  # grow by doubling: amortized O(1) per entry
                size = max(2 * len(self.entries), n + k, 8)
                self.entries = np.resize(self.entries, size)
                self.counts = np.resize(self.counts, size)
                self.masks = np.resize(self.masks, size)
            self.entries[n : n + k] = entries
            self.counts[n : n + k] = counts
            self.masks[n : n + k] = masks
            self.n = n + k
            self.pending = ([], [], [])
        return self.entries[: self.n], self.counts[: self.n], self.masks[: self.n]


class _PlainTokenizer:
    """rouge_score's tokenizer without a stemmer (what ``DefaultTokenizer(use_stemmer=False)``
    does), without importing ``rouge_score.tokenizers``: that module imports nltk for its
    stemmer, about a second of start-up that a run with no stemming never needs."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return rouge_tokenize.tokenize(text, None)


def _stemming_tokenizer():
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=True)


class RougeNovelty:
    """A pool of texts and an exact ROUGE-L novelty check against all of them.

    Args:
        threshold: drop a text whose max ROUGE-L F-measure against the pool is above this.
        use_stemmer: tokenize as ``RougeScorer(..., use_stemmer=True)`` does (Porter stemmer
            on tokens longer than 3 characters). Self-Instruct uses False.
        tokenizer: any object with ``tokenize(text) -> list[str]`` (a rouge_score
            tokenizer); overrides ``use_stemmer``.
    """

    def __init__(self, threshold: float = 0.7, *, use_stemmer: bool = False, tokenizer=None) -> None:
        self.threshold = threshold
        self._tokenizer = tokenizer or (_stemming_tokenizer() if use_stemmer else _PlainTokenizer())
        self._vocab: dict[str, int] = {}
        self._postings: list[_Postings] = []  # indexed by token id
        self._lengths = np.zeros(16, dtype=np.int64)  # token count of each pool entry
        self._size = 0
        # Entries longer than 64 tokens: entry id -> (token id -> big-int position mask).
        self._long: dict[int, dict[int, int]] = {}

    @classmethod
    def from_config(cls, config: RougeConfig) -> "RougeNovelty":
        """The filter a :class:`filters.config.RougeConfig` describes."""
        return cls(config.threshold, use_stemmer=config.use_stemmer)

    # -- building the pool -------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """The tokens rouge_score scores ``text`` on."""
        return self._tokenizer.tokenize(text or "")

    def add(self, text: str) -> None:
        """Add one text to the pool."""
        tokens = self.tokenize(text)
        entry = self._size
        if entry == len(self._lengths):
            self._lengths = np.resize(self._lengths, 2 * entry)
        self._lengths[entry] = len(tokens)
        self._size += 1

        masks: dict[int, int] = {}
        for j, tok in enumerate(tokens):
            tid = self._vocab.get(tok)
            if tid is None:
                tid = self._vocab[tok] = len(self._vocab)
                self._postings.append(_Postings())
            masks[tid] = masks.get(tid, 0) | (1 << j)
        short = len(tokens) <= _WORD
        if not short:
            self._long[entry] = masks
        for tid, mask in masks.items():
            self._postings[tid].append(entry, mask.bit_count(), mask if short else 0)

    def extend(self, texts: Iterable[str]) -> None:
        """Add many texts to the pool (no checks among them)."""
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return self._size

    # -- checking ----------------------------------------------------------------------

    def score(self, text: str) -> float:
        """Max ROUGE-L F-measure of ``text`` against the pool (0.0 for an empty pool)."""
        # Unseen tokens get id -1: they match nothing but still count in the length.
        query = [self._vocab.get(tok, -1) for tok in self.tokenize(text)]
        m = len(query)
        counts = Counter(t for t in query if t >= 0)
        if not counts:
            return 0.0

        # Multiset overlap with every pool entry, from the posting lists of the query.
        postings = {t: self._postings[t].arrays() for t in counts}
        entries = np.concatenate([postings[t][0] for t in counts])
        shared = np.concatenate([np.minimum(postings[t][1], c) for t, c in counts.items()])
        overlap = np.bincount(entries, weights=shared, minlength=self._size)
        candidates = np.flatnonzero(overlap)
        bound = 2.0 * overlap[candidates] / (m + self._lengths[candidates])

        # First pass: the best-bounded few. Second: whatever can still beat their best.
        if len(candidates) > _FIRST_PASS:
            top = np.argpartition(-bound, _FIRST_PASS)[:_FIRST_PASS]
            best = self._exact_max(query, m, np.sort(candidates[top]))
            rest = np.ones(len(candidates), dtype=bool)
            rest[top] = False
            rest &= bound >= best - _EPS
            if rest.any():
                best = max(best, self._exact_max(query, m, candidates[rest]))
            return best
        return self._exact_max(query, m, candidates)

    def check(self, text: str) -> Decision:
        """Keep ``text`` unless its max ROUGE-L against the pool is above the threshold."""
        s = self.score(text)
        return Decision.drop(REASON, s) if s > self.threshold else Decision.keep(s)

    def check_and_add(self, text: str) -> Decision:
        """Check ``text`` and add it to the pool when kept (Self-Instruct's loop)."""
        decision = self.check(text)
        if decision.kept:
            self.add(text)
        return decision

    # -- exact scores ------------------------------------------------------------------

    def _exact_max(self, query: list[int], m: int, candidates: np.ndarray) -> float:
        """Max exact F-measure of ``query`` over ``candidates`` (ascending entry ids)."""
        lengths = self._lengths[candidates]
        is_short = lengths <= _WORD
        best = 0.0
        short = candidates[is_short]
        if len(short):
            lcs = self._lcs_short(query, short)
            n = lengths[is_short]
            # rouge_score's formula, elementwise; lcs > 0 for every candidate (they
            # share a token), so there is no 0/0.
            precision = lcs / n
            recall = lcs / m
            f = 2 * precision * recall / (precision + recall)
            best = float(f.max())
        for entry in candidates[~is_short].tolist():
            n = int(self._lengths[entry])
            best = max(best, fmeasure(_lcs_from_masks(query, self._long[entry], n), m, n))
        return best

    def _lcs_short(self, query: list[int], short: np.ndarray) -> np.ndarray:
        """LCS lengths of ``query`` against pool entries of <= 64 tokens, all at once."""
        k = len(short)
        # Row of each candidate, looked up by entry id while gathering position masks.
        row = np.full(self._size, -1, dtype=np.int64)
        row[short] = np.arange(k)
        token_masks: dict[int, np.ndarray] = {}
        for t in set(query):
            if t < 0:
                continue
            entries, _, masks = self._postings[t].arrays()
            r = row[entries]
            hit = r >= 0
            mask = np.zeros(k, dtype=np.uint64)
            mask[r[hit]] = masks[hit]
            token_masks[t] = mask

        v = np.full(k, _ALL_ONES, dtype=np.uint64)
        u = np.empty_like(v)
        s = np.empty_like(v)
        for t in query:
            mask = token_masks.get(t)
            if mask is None:
                continue  # a token no candidate holds leaves V unchanged
            np.bitwise_and(v, mask, out=u)
            np.add(v, u, out=s)  # wraps modulo 2**64: carries past bit n are masked below
            np.subtract(v, u, out=v)
            np.bitwise_or(s, v, out=v)
        n = self._lengths[short].astype(np.uint64)
        low = _ALL_ONES >> (np.uint64(_WORD) - n)  # the n bits that belong to the entry
        return np.bitwise_count(~v & low).astype(np.int64)
