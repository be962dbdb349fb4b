"""Quality heuristics: each check is a function returning a Decision with its own reason.

Reasons: ``'empty'``, ``'refusal'``, ``'boilerplate'``, ``'too_short'``, ``'too_long'``,
``'repetitive'``, ``'non_text'``, ``'low_judge_score'``, ``'unjudged'``.
:class:`QualityFilter` applies the enabled ones in that order and returns the first drop.

    >>> QualityFilter().check("I'm sorry, but I can't help with that.").reason
    'refusal'
    >>> QualityFilter().check("Paris is the capital of France.").kept
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from filters.base import Decision
from filters.config import QualityConfig

NAME = "quality"  # filter_decisions.filter (the reason says which check)

# Refusals are matched at the start of the text: "I cannot stress this enough" inside
# an answer is fine, an answer that opens with "I cannot" is not one.
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"(i'?m|i am) sorry,? but\b",
    r"sorry,? but i\b",
    r"(i'?m|i am) (sorry|afraid),? i (can'?t|cannot|am unable|won'?t)",
    r"i apologi[sz]e,? but\b",
    r"i (cannot|can'?t|can not)\b",
    r"(i'?m|i am) (not able|unable) to\b",
    r"i (won'?t|will not) be able to\b",
    r"unfortunately,? i (can'?t|cannot|am unable)",
)
# Boilerplate is matched anywhere: it does not belong in a student's training data.
BOILERPLATE_PATTERNS: tuple[str, ...] = (
    r"\bas an? (ai|artificial intelligence)( language model| model| assistant| chatbot)?\b",
    r"\bas an? (large )?language model\b",
    r"\b(i'?m|i am) (just )?an? (ai|artificial intelligence|language model)\b",
    r"\bmy (knowledge|training)(-| )(data )?cut-?off\b",
    r"\bi (don'?t|do not) have (personal )?(opinions|feelings|emotions|beliefs|preferences)\b",
    r"\bi (don'?t|do not) have (access to )?real-time\b",
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_WORD_RE = re.compile(r"\w+")


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


_REFUSAL_RE = _compile(REFUSAL_PATTERNS)
_BOILERPLATE_RE = _compile(BOILERPLATE_PATTERNS)


def _prepared(text: str) -> str:
    # Curly apostrophes are what teachers usually emit; patterns are written with "'".
    return (text or "").translate(_APOSTROPHES).strip()


def check_empty(text: str | None) -> Decision:
    """Drop (``'empty'``) a missing or whitespace-only text."""
    return Decision.drop("empty") if not text or not text.strip() else Decision.keep()


def check_refusal(text: str, pattern: re.Pattern[str] = _REFUSAL_RE) -> Decision:
    """Drop (``'refusal'``) a text that opens with a refusal (quotes/markdown skipped)."""
    head = _prepared(text).lstrip("\"'*_#>` ")
    return Decision.drop("refusal") if pattern.match(head) else Decision.keep()


def check_boilerplate(text: str, pattern: re.Pattern[str] = _BOILERPLATE_RE) -> Decision:
    """Drop (``'boilerplate'``) a text containing AI-assistant boilerplate anywhere."""
    return Decision.drop("boilerplate") if pattern.search(_prepared(text)) else Decision.keep()


def check_length(
    text: str,
    *,
    min_words: int | None = None,
    max_words: int | None = None,
    min_chars: int | None = None,
    max_chars: int | None = None,
) -> Decision:
    """Drop (``'too_short'`` / ``'too_long'``) outside the bounds; score = word count."""
    words = len(_WORD_RE.findall(text))
    chars = len(text.strip())
    if (min_words is not None and words < min_words) or (min_chars is not None and chars < min_chars):
        return Decision.drop("too_short", float(words))
    if (max_words is not None and words > max_words) or (max_chars is not None and chars > max_chars):
        return Decision.drop("too_long", float(words))
    return Decision.keep(float(words))


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of word n-gram occurrences that repeat an earlier one (0.0: none repeat).

    "a b c a b c a b c" with n=3 has 7 trigrams of which 3 are distinct: ratio 4/7.
    """
    words = _WORD_RE.findall(text.casefold())
    total = len(words) - n + 1
    if total <= 1:
        return 0.0
    distinct = len({tuple(words[i : i + n]) for i in range(total)})
    return 1.0 - distinct / total


def check_repetition(text: str, *, max_ratio: float = 0.3, n: int = 3) -> Decision:
    """Drop (``'repetitive'``) when the repeated n-gram ratio is above ``max_ratio``."""
    ratio = repeated_ngram_ratio(text, n)
    return Decision.drop("repetitive", ratio) if ratio > max_ratio else Decision.keep(ratio)


# Below this many non-space characters the letter share says little ("42", "x = 3").
_MIN_CHARS_FOR_ALPHA = 16


def _alpha_ratio_and_chars(text: str) -> tuple[float, int]:
    """(letter share, non-whitespace characters) of ``text``, counted in C loops, not per
    character in Python. ``str.split()`` splits on exactly what ``str.isspace`` accepts."""
    chars = sum(map(len, text.split()))
    return (sum(map(str.isalpha, text)) / chars if chars else 1.0), chars


def alpha_ratio(text: str) -> float:
    """Share of letters (any script) among the non-whitespace characters (1.0 if none)."""
    return _alpha_ratio_and_chars(text)[0]


def check_non_text(text: str, *, min_alpha_ratio: float = 0.3) -> Decision:
    """Drop (``'non_text'``) texts that are mostly symbols/digits; short texts pass."""
    ratio, chars = _alpha_ratio_and_chars(text)
    long_enough = chars >= _MIN_CHARS_FOR_ALPHA
    return Decision.drop("non_text", ratio) if long_enough and ratio < min_alpha_ratio else Decision.keep(ratio)


def check_judge_score(score: float | None, *, min_score: float, require: bool = False) -> Decision:
    """Drop (``'low_judge_score'``) below ``min_score``; unscored items drop only if ``require``."""
    if score is None:
        return Decision.drop("unjudged") if require else Decision.keep()
    return Decision.drop("low_judge_score", score) if score < min_score else Decision.keep(score)


class QualityFilter:
    """The enabled quality checks of a :class:`QualityConfig`, applied in order."""

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        c = self.config
        self._refusal = _compile(REFUSAL_PATTERNS + tuple(c.extra_refusal_patterns))
        self._boilerplate = _compile(BOILERPLATE_PATTERNS + tuple(c.extra_boilerplate_patterns))

    def checks(self, text: str | None, judge_score: float | None = None) -> list[tuple[str, Decision]]:
        """Every enabled check's decision, named, in order (stops after 'empty')."""
        c = self.config
        empty = check_empty(text)
        if not empty.kept or text is None:
            return [("empty", empty)]
        out = [("empty", empty)]
        if c.refusal:
            out.append(("refusal", check_refusal(text, self._refusal)))
        if c.boilerplate:
            out.append(("boilerplate", check_boilerplate(text, self._boilerplate)))
        if any(v is not None for v in (c.min_words, c.max_words, c.min_chars, c.max_chars)):
            out.append(
                (
                    "length",
                    check_length(
                        text, min_words=c.min_words, max_words=c.max_words, min_chars=c.min_chars, max_chars=c.max_chars
                    ),
                )
            )
        if c.max_repeated_ngram_ratio is not None:
            out.append(
                ("repetition", check_repetition(text, max_ratio=c.max_repeated_ngram_ratio, n=c.repeated_ngram_size))
            )
        if c.min_alpha_ratio is not None:
            out.append(("non_text", check_non_text(text, min_alpha_ratio=c.min_alpha_ratio)))
        if c.min_judge_score is not None:
            out.append(
                ("judge", check_judge_score(judge_score, min_score=c.min_judge_score, require=c.require_judge_score))
            )
        return out

    def check(self, text: str | None, judge_score: float | None = None) -> Decision:
        """The first failing check's decision, or keep (score None) when all pass."""
        for _, decision in self.checks(text, judge_score):
            if not decision.kept:
                return decision
        return Decision.keep()
