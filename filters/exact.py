"""Exact duplicates: the same content after normalization (whitespace, Unicode, case).

Keys are ``storage.records.content_key`` over ``normalize_text`` of each part, the same
keys the store uses, so ``ExactDedup.key(text, input) == Instruction.key_for(text,
input)``: the flow can seed the filter with ids already stored and check new items
against the whole store, not only against their batch.

    >>> dedup = ExactDedup([exact_key("Name three  primary colours.")])
    >>> dedup.check(exact_key("name three primary colours.")).reason
    'exact_duplicate'
"""

from __future__ import annotations

from collections.abc import Iterable

from filters.base import Decision
from storage.records import content_key, normalize_text

NAME = "exact"  # filter_decisions.filter
REASON = "exact_duplicate"


def exact_key(*parts: str | None) -> str:
    """Content key of the normalized parts (e.g. instruction text and input)."""
    return content_key(*(normalize_text(p or "") for p in parts))


class ExactDedup:
    """A set of known content keys and a membership check against it.

    Args:
        known: keys already present (e.g. ids of stored instructions).
    """

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._keys: set[str] = set(known)

    def check(self, key: str) -> Decision:
        """Drop (``'exact_duplicate'``) when the content key is already known."""
        return Decision.drop(REASON) if key in self._keys else Decision.keep()

    def add_keys(self, keys: Iterable[str]) -> None:
        """Remember keys computed elsewhere (e.g. loaded from the store)."""
        self._keys.update(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys
