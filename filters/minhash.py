"""MinHash LSH near-duplicate detection over word n-grams, incremental and persistable.

A text is a near-duplicate when the Jaccard similarity of its set of word n-grams
(shingles) with some indexed text is at least ``threshold``. MinHash signatures
estimate that Jaccard (the fraction of equal signature values); LSH banding finds the
few indexed texts worth comparing without looking at all of them.

- Hashing shingles into signatures is done by ``rensa`` (Rust), many texts at a time.
- Banding is done here over the signatures as numpy arrays, because the index must be
  rebuilt from signatures stored in the database (``MinHashSignature`` records), and a
  signature is just ``num_perm`` uint32 values there.
- Every LSH candidate is verified: the decision's score is the best *estimated* Jaccard
  among the candidates, and the text is dropped (``'near_duplicate'``) only when that
  score is >= ``threshold``. Band collisions alone never drop anything.

Choosing the bands. With ``b`` bands of ``r`` rows (``b * r <= num_perm``), two texts of
Jaccard ``s`` become candidates with probability ``1 - (1 - s**r)**b``, an S-curve whose
steep part sits near ``(1/b)**(1/r)``. A false positive (candidate below the threshold)
costs one vectorized comparison, because candidates are verified; a false negative
(a duplicate never compared) is a duplicate kept. :func:`optimal_bands` therefore picks
``(b, r)`` minimizing the areas under the curve on the wrong side of the threshold,
weighting the false-negative area ``false_negative_weight`` (0.9) against 0.1 for false
positives. For ``num_perm=128`` this gives threshold 0.8 -> 14 bands x 9 rows (a pair
at Jaccard 0.8 becomes a candidate with probability 0.87, at 0.9 with 0.998, at 0.5 with
0.03), 0.7 -> 21 x 6, 0.5 -> 32 x 4. Pass ``bands=`` to override.

Signatures depend on the shingling (``ngram``), ``num_perm``, ``seed`` and rensa's
algorithm version, all encoded in :attr:`MinHashIndex.config` (e.g. ``'p128-n3-s0-r2'``);
records with another config are refused by :meth:`MinHashIndex.load`, so signatures of
different settings are never mixed. Bands are not part of it: they can change freely.

    >>> index = MinHashIndex(threshold=0.8, ngram=2)
    >>> index.check_and_add("a", "The quick brown fox jumps over the lazy dog").kept
    True
    >>> index.check("the quick  brown fox jumps over the lazy dog!").reason
    'near_duplicate'
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import rensa

from filters.base import Decision
from filters.config import MinHashConfig
from storage.records import MinHashSignature

NAME = "minhash"  # filter_decisions.filter
REASON = "near_duplicate"

_WORD_RE = re.compile(r"\w+")
_EMPTY = np.uint32(0xFFFF_FFFF)  # rensa's value for every slot of an empty set
# Odd 64-bit multipliers that fold the r uint32 values of a band into one uint64 key.
_FOLD = np.random.default_rng(0x5EED).integers(1, 2**63, size=1024, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def shingles(text: str, ngram: int = 3) -> list[str]:
    """The word n-grams of ``text`` (Unicode NFC, case-folded, punctuation dropped).

    Words are ``\\w+`` runs, so whitespace and punctuation never matter. A text with
    fewer than ``ngram`` words is one shingle of all its words, so short texts are still
    comparable; a text without words has no shingles.
    """
    # Same normal form as storage.records.normalize_text; its whitespace collapsing is
    # skipped because only the words are kept anyway.
    words = _WORD_RE.findall(unicodedata.normalize("NFC", text or "").casefold())
    if len(words) <= ngram:
        return [" ".join(words)] if words else []
    return list(map(" ".join, zip(*(words[k:] for k in range(ngram)))))


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Exact Jaccard similarity of two shingle sets (1.0 when both are empty)."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


@lru_cache(maxsize=256)
def optimal_bands(threshold: float, num_perm: int, false_negative_weight: float = 0.9) -> tuple[int, int]:
    """``(bands, rows)`` minimizing the weighted LSH error areas around ``threshold``."""
    below = np.linspace(0.0, threshold, 1001)
    above = np.linspace(threshold, 1.0, 1001)
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        fp = np.trapezoid(1 - (1 - below**rows) ** bands, below)
        fn = np.trapezoid((1 - above**rows) ** bands, above)
        err = (1 - false_negative_weight) * fp + false_negative_weight * fn
        if best is None or err < best[0]:
            best = (float(err), bands, rows)
    assert best is not None
    return best[1], best[2]


class MinHashIndex:
    """An incremental MinHash LSH index of texts, each under a caller-chosen item id.

    Args:
        threshold: Jaccard similarity (of word n-gram sets) at or above which a text is a
            near-duplicate of an indexed one.
        num_perm: signature length (more = better estimates, slower).
        ngram: words per shingle.
        seed: seed of rensa's hash permutations.
        bands: LSH bands; default from :func:`optimal_bands`. Rows per band =
            ``num_perm // bands``.
    """

    def __init__(
        self,
        threshold: float = 0.8,
        *,
        num_perm: int = 128,
        ngram: int = 3,
        seed: int = 0,
        bands: int | None = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if bands is not None and not 1 <= bands <= num_perm:
            raise ValueError(f"bands must be in [1, num_perm={num_perm}], got {bands}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        if bands is None:
            self.bands, self.rows = optimal_bands(threshold, num_perm)
        else:
            self.bands, self.rows = bands, num_perm // bands
        if self.rows > len(_FOLD):
            raise ValueError("too many rows per band")
        self._fold = _FOLD[: self.rows]
        self._sigs = np.empty((64, num_perm), dtype=np.uint32)  # row i = signature of entry i
        self._ids: list[str] = []  # entry -> item id
        self._entry: dict[str, int] = {}  # item id -> entry
        self._buckets: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]

    @classmethod
    def from_config(cls, config: MinHashConfig) -> "MinHashIndex":
        """The index a :class:`filters.config.MinHashConfig` describes."""
        return cls(config.threshold, num_perm=config.num_perm, ngram=config.ngram, seed=config.seed, bands=config.bands)

    @property
    def config(self) -> str:
        """What the signatures depend on; stored with every ``MinHashSignature``."""
        return f"p{self.num_perm}-n{self.ngram}-s{self.seed}-r{rensa.RMinHash.ALGORITHM_VERSION}"

    # -- signatures --------------------------------------------------------------------

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        """Signatures of many texts, one uint32 row of ``num_perm`` values each."""
        token_sets = [shingles(t, self.ngram) for t in texts]
        if not token_sets:
            return np.empty((0, self.num_perm), dtype=np.uint32)
        matrix = rensa.RMinHash.digest_matrix_from_token_sets(token_sets, self.num_perm, self.seed)
        return np.array(matrix.to_rows(), dtype=np.uint32)

    def signature(self, text: str) -> np.ndarray:
        """The signature of one text (uint32, ``num_perm`` values)."""
        return self.signatures([text])[0]

    def _as_signature(self, text_or_sig: str | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(text_or_sig, str):
            return self.signature(text_or_sig)
        sig = np.asarray(text_or_sig, dtype=np.uint32)
        if sig.shape != (self.num_perm,):
            raise ValueError(f"signature has shape {sig.shape}, this index uses ({self.num_perm},)")
        return sig

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        """One uint64 per band (a collision of unequal bands costs only a verification)."""
        return self._band_keys_many(sig[None, :])[0]

    def _band_keys_many(self, sigs: np.ndarray) -> list[list[int]]:
        """Band keys of many signatures at once: a weighted sum of each band's values."""
        bands = sigs[:, : self.bands * self.rows].reshape(len(sigs), self.bands, self.rows).astype(np.uint64)
        return (bands * self._fold).sum(axis=2).tolist()  # wraps modulo 2**64 by design

    # -- checking and indexing ---------------------------------------------------------

    def query(self, text_or_sig: str | Sequence[int] | np.ndarray) -> list[tuple[str, float]]:
        """Indexed items that are LSH candidates, with their estimated Jaccard, best first."""
        sig = self._as_signature(text_or_sig)
        entries = self._candidates(sig, self._band_keys(sig))
        if not entries:
            return []
        est = self._estimates(sig, entries)
        order = np.argsort(-est, kind="stable")
        return [(self._ids[entries[i]], float(est[i])) for i in order]

    def check(self, text_or_sig: str | Sequence[int] | np.ndarray) -> Decision:
        """Drop (``'near_duplicate'``) when some candidate's estimated Jaccard >= threshold.

        The score is the best estimated Jaccard among LSH candidates (0.0 when there are
        none). A text without shingles (no words) is kept with score None: there is
        nothing to compare, and the quality filter is what drops empty texts.
        """
        sig = self._as_signature(text_or_sig)
        return self._check(sig, self._band_keys(sig))

    def add(self, item_id: str, text_or_sig: str | Sequence[int] | np.ndarray) -> None:
        """Index ``item_id``; adding an id already indexed does nothing."""
        sig = self._as_signature(text_or_sig)
        self._add(item_id, sig, self._band_keys(sig))

    def check_and_add(self, item_id: str, text_or_sig: str | Sequence[int] | np.ndarray) -> Decision:
        """Check, and index the item when it is kept."""
        sig = self._as_signature(text_or_sig)
        keys = self._band_keys(sig)
        decision = self._check(sig, keys)
        if decision.kept:
            self._add(item_id, sig, keys)
        return decision

    def check_and_add_many(self, items: Iterable[tuple[str, str]]) -> list[Decision]:
        """``check_and_add`` for ``(item_id, text)`` pairs in order, hashing them in bulk.

        Each item is checked against the index and against the kept items before it.
        """
        items = list(items)
        sigs = self.signatures(text for _, text in items)
        decisions = []
        for (item_id, _), sig, keys in zip(items, sigs, self._band_keys_many(sigs)):
            decision = self._check(sig, keys)
            if decision.kept:
                self._add(item_id, sig, keys)
            decisions.append(decision)
        return decisions

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entry

    def _check(self, sig: np.ndarray, keys: list[int]) -> Decision:
        if (sig == _EMPTY).all():
            return Decision.keep(None)
        entries = self._candidates(sig, keys)
        if not entries:
            return Decision.keep(0.0)
        best = float(self._estimates(sig, entries).max())
        return Decision.drop(REASON, best) if best >= self.threshold else Decision.keep(best)

    def _candidates(self, sig: np.ndarray, keys: list[int]) -> list[int]:
        found: set[int] = set()
        for buckets, key in zip(self._buckets, keys):
            hit = buckets.get(key)
            if hit:
                found.update(hit)
        return sorted(found)

    def _estimates(self, sig: np.ndarray, entries: list[int]) -> np.ndarray:
        return (self._sigs[entries] == sig).mean(axis=1)

    def _add(self, item_id: str, sig: np.ndarray, keys: list[int]) -> None:
        if item_id in self._entry:
            return
        entry = len(self._ids)
        if entry == len(self._sigs):
            self._sigs = np.resize(self._sigs, (2 * entry, self.num_perm))
        self._sigs[entry] = sig
        self._ids.append(item_id)
        self._entry[item_id] = entry
        if (sig == _EMPTY).all():
            return  # nothing to collide with; kept so that it round-trips through records
        for buckets, key in zip(self._buckets, keys):
            buckets.setdefault(key, []).append(entry)

    # -- persistence -------------------------------------------------------------------

    def to_records(
        self, item_ids: Iterable[str] | None = None, *, item_kind: str = "sample"
    ) -> list[MinHashSignature]:
        """``MinHashSignature`` records of ``item_ids`` (default: every indexed item)."""
        ids = self._ids if item_ids is None else list(item_ids)
        return [
            MinHashSignature(
                item_id=item_id,
                item_kind=item_kind,  # type: ignore[arg-type]  # validated by pydantic
                config=self.config,
                signature=self._sigs[self._entry[item_id]].tolist(),
            )
            for item_id in ids
        ]

    def load(self, records: Iterable[MinHashSignature | dict]) -> int:
        """Index stored signatures (records or rows as dicts); returns how many were new.

        Raises ValueError for a record made with another config: mixing signatures of
        different settings would give meaningless estimates.
        """
        added = 0
        for rec in records:
            row = rec if isinstance(rec, dict) else rec.model_dump()
            signature = row["signature"]
            if isinstance(signature, str):  # a JSON text column, as some queries return it
                signature = json.loads(signature)
            if row["config"] != self.config:
                raise ValueError(
                    f"signature of {row['item_id']!r} has config {row['config']!r}, "
                    f"this index uses {self.config!r}"
                )
            if row["item_id"] in self._entry:
                continue
            self.add(row["item_id"], signature)
            added += 1
        return added
