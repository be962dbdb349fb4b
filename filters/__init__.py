"""Curation filters: pure functions and indexes over text that decide keep or drop.

- ``base``: :class:`~filters.base.Decision` (kept, score, reason) and ``to_record``.
- ``exact``: normalized exact duplicates (the store's content keys).
- ``minhash``: MinHash LSH near-duplicates over word n-grams, persistable signatures.
- ``rouge``: Self-Instruct's ROUGE-L novelty filter, exact and fast.
- ``quality``: empty, refusal, boilerplate, length, repetition, non-text, judge score.
- ``config``: the pydantic configs the curate flow builds them from.

No filter opens a file or the database: the flow loads what they need (known keys,
stored signatures) and records their decisions as ``FilterDecision`` rows.
"""
