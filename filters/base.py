"""What every filter returns: a decision to keep or drop one item, with a score and a reason.

Filters here are pure: they look at text (and, for indexes, at what they were given
before) and return a :class:`Decision`. They never touch the database. The curate flow
turns decisions into :class:`storage.records.FilterDecision` rows with
:func:`to_record`, so every drop is explainable in SQL::

    select filter, reason, kept, count(*) from filter_decisions group by all
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.records import FilterDecision


@dataclass(frozen=True)
class Decision:
    """Keep or drop one item.

    ``score`` is the filter's measurement (max ROUGE-L, estimated Jaccard, repeated
    n-gram ratio, ...) or None when the filter has none. ``reason`` is '' when kept and a
    short code when dropped ('too_similar', 'near_duplicate', 'refusal', 'empty', ...);
    tests assert the exact code, so treat reasons as part of the API.
    """

    kept: bool
    score: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        # A drop without a reason cannot be explained later; a keep with one is a bug.
        if self.kept and self.reason:
            raise ValueError(f"a kept decision has no reason (got {self.reason!r})")
        if not self.kept and not self.reason:
            raise ValueError("a dropped decision needs a reason code")

    @classmethod
    def keep(cls, score: float | None = None) -> "Decision":
        return cls(True, score, "")

    @classmethod
    def drop(cls, reason: str, score: float | None = None) -> "Decision":
        return cls(False, score, reason)

    def __bool__(self) -> bool:  # ``if decision:`` reads as "if kept"
        return self.kept


def to_record(
    decision: Decision,
    *,
    item_id: str,
    filter: str,
    item_kind: str = "sample",
    run_id: str | None = None,
) -> FilterDecision:
    """The row the flow stores for ``decision`` about ``item_id`` by filter ``filter``."""
    return FilterDecision(
        item_id=item_id,
        item_kind=item_kind,  # type: ignore[arg-type]  # validated by pydantic
        filter=filter,
        kept=decision.kept,
        score=decision.score,
        reason=decision.reason,
        run_id=run_id,
    )
