"""The configured filters over samples, with their state loaded from the store.

Used inline by the generate flow (so its target counts kept samples) and by the curate
flow (over samples not yet judged). Every filter that looks at a sample records its
decision, kept or dropped; a sample's first drop ends its checks:

    filters = SampleFilters(config, run_id=run.id)
    filters.load(store)                         # stored signatures, kept instructions, ...
    outcome = filters.apply(items)              # items: SampleItem(sample_id, instruction_id, ...)
    store.ingest(outcome.records)               # FilterDecision + MinHashSignature rows

Filter names in ``filter_decisions.filter``: ``exact``, ``quality`` (reason: refusal,
boilerplate, too_short, ...), ``minhash`` (near_duplicate), ``rouge_novelty``
(too_similar, on the instruction). Explain a run with
``select filter, reason, kept, count(*) from filter_decisions group by all``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from filters import exact, minhash, quality, rouge
from filters.base import Decision, to_record
from filters.config import FilterConfig
from filters.exact import ExactDedup
from filters.minhash import MinHashIndex
from filters.quality import QualityFilter
from filters.rouge import RougeNovelty
from flows import queries
from storage.records import FilterDecision, MinHashSignature, Record

F_EXACT, F_QUALITY, F_MINHASH, F_ROUGE = exact.NAME, quality.NAME, minhash.NAME, rouge.NAME
ORDER = (F_EXACT, F_QUALITY, F_MINHASH, F_ROUGE)


@dataclass(frozen=True)
class SampleItem:
    """What the filters look at for one sample."""

    sample_id: str
    instruction_id: str
    instruction: str
    input: str
    response: str
    judge_score: float | None = None

    @property
    def dedup_text(self) -> str:
        """Instruction and response together: a near-duplicate *sample* repeats both."""
        return f"{self.instruction}\n{self.input}\n{self.response}"


@dataclass
class FilterOutcome:
    decisions: list[FilterDecision] = field(default_factory=list)
    signatures: list[MinHashSignature] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # "filter:reason" -> n

    @property
    def records(self) -> list[Record]:
        return [*self.decisions, *self.signatures]

    def extend(self, other: "FilterOutcome") -> None:
        self.decisions += other.decisions
        self.signatures += other.signatures
        self.kept += other.kept
        self.dropped.update(other.dropped)


class SampleFilters:
    """The filters a :class:`FilterConfig` turns on, applied in the order of ``ORDER``."""

    def __init__(self, config: FilterConfig, *, run_id: str | None = None,
                 only: Iterable[str] | None = None) -> None:
        self.config = config
        self.run_id = run_id
        enabled = {
            F_EXACT: config.exact,
            F_QUALITY: config.quality is not None,
            F_MINHASH: config.minhash is not None,
            F_ROUGE: config.rouge is not None,
        }
        self.names = tuple(n for n in ORDER if enabled[n] and (only is None or n in set(only)))
        self.exact = ExactDedup() if F_EXACT in self.names else None
        self.quality = QualityFilter(config.quality) if F_QUALITY in self.names else None
        self.minhash = MinHashIndex.from_config(config.minhash) if F_MINHASH in self.names else None
        self.rouge = (RougeNovelty(config.rouge.threshold, use_stemmer=config.rouge.use_stemmer)
                      if F_ROUGE in self.names else None)
        self._rouge_kept: set[str] = set()  # instruction ids already in the ROUGE pool

    # -- state ----------------------------------------------------------------------------

    def load(self, store: Any, *, exclude_run: str | None = None) -> int:
        """Fill the pools with samples already kept in ``store``; returns how many.

        ``exclude_run``: leave out that run's own samples (a resumed generate run replays
        them, and must not find them to be duplicates of themselves)."""
        if not self.names or not store.path.exists():
            return 0
        rows = store.query(queries.KEPT_POOL, [list(self.names), exclude_run or ""])
        if self.exact is not None:
            self.exact.add_keys(r["sample_id"] for r in rows)
        if self.rouge is not None:
            for r in rows:
                if r["instruction_id"] not in self._rouge_kept:
                    self._rouge_kept.add(r["instruction_id"])
                    self.rouge.add(r["instruction"])
        if self.minhash is not None:
            self.minhash.load(store.query(queries.MINHASH_SIGNATURES, [self.minhash.config, exclude_run or ""]))
        return len(rows)

    # -- deciding -------------------------------------------------------------------------

    def apply(self, items: Sequence[SampleItem], *, skip: dict[str, set[str]] | None = None) -> FilterOutcome:
        """Decide every item; ``skip[sample_id]`` names filters that already judged it."""
        out = FilterOutcome()
        sigs = None
        if self.minhash is not None and items:
            sigs = self.minhash.signatures(item.dedup_text for item in items)
        for i, item in enumerate(items):
            done = (skip or {}).get(item.sample_id, set())
            dropped = False
            for name in self.names:
                if name in done:
                    continue
                decision = self._decide(name, item, None if sigs is None else sigs[i])
                out.decisions.append(to_record(decision, item_id=item.sample_id, filter=name,
                                               item_kind="sample", run_id=self.run_id))
                if not decision.kept:
                    out.dropped[f"{name}:{decision.reason}"] += 1
                    dropped = True
                    break
            if not dropped:
                out.kept.append(item.sample_id)
                self._remember(item, None if sigs is None else sigs[i], out)
        return out

    def _decide(self, name: str, item: SampleItem, sig) -> Decision:
        if name == F_EXACT:
            return self.exact.check(item.sample_id)
        if name == F_QUALITY:
            return self.quality.check(item.response, item.judge_score)
        if name == F_MINHASH:
            return self.minhash.check(sig)
        if name == F_ROUGE:
            if item.instruction_id in self._rouge_kept:  # another sample of a kept instruction
                return Decision.keep(1.0)
            return self.rouge.check(item.instruction)
        raise ValueError(name)

    def _remember(self, item: SampleItem, sig, out: FilterOutcome) -> None:
        """A kept item joins every pool, so later items are checked against it too."""
        if self.exact is not None:
            self.exact.add_keys([item.sample_id])
        if self.minhash is not None and item.sample_id not in self.minhash:
            self.minhash.add(item.sample_id, sig)
            out.signatures.extend(self.minhash.to_records([item.sample_id]))
        if self.rouge is not None and item.instruction_id not in self._rouge_kept:
            self._rouge_kept.add(item.instruction_id)
            self.rouge.add(item.instruction)
