"""How text is shaped on every side of the pipeline: one definition each.

- ``format_prompt``: an instruction and its optional input as the user turn. The teacher
  is asked with it (generators/), datasets are exported with it (storage/), and the
  student is trained and evaluated on it (training/), so the student always sees the
  exact text the teacher answered.
- ``split_answer`` / ``extract_answer`` / ``normalize_answer``: a chain-of-thought text
  split into its rationale and final answer, and answers compared. Generation filters
  rationales by these rules and evaluation scores exact match by the same ones.

    >>> format_prompt("  Add the numbers. ", "2 + 2\\n")
    'Add the numbers.\\n\\n2 + 2'
    >>> split_answer("2 and 2 make 4. So the answer is 4.")
    ('2 and 2 make 4.', '4')
    >>> normalize_answer("(B) The Moon!") == normalize_answer("b moon")
    True
"""

from __future__ import annotations

import re

ANSWER_SEPARATOR = "So the answer is"
"""Between a rationale and its answer, in the few-shot examples and when reading outputs."""


def format_prompt(instruction: str, input: str | None = None) -> str:
    """The user turn: the instruction, then its input after a blank line when there is one
    (both stripped of surrounding whitespace)."""
    instruction = (instruction or "").strip()
    input = (input or "").strip()
    return f"{instruction}\n\n{input}" if input else instruction


def split_answer(text: str, separator: str = ANSWER_SEPARATOR) -> tuple[str, str] | None:
    """``(rationale, answer)`` split at the first ``separator`` (any case), or None without one.

    The answer is the rest of that line without a leading colon and without trailing
    punctuation or quotes; the rationale is everything before the separator."""
    m = re.search(re.escape(separator), text or "", re.I)
    if m is None:
        return None
    rationale = text[: m.start()].strip()
    answer = text[m.end():].strip().split("\n", 1)[0].strip()
    answer = answer.lstrip(":").strip().rstrip(".").strip().strip("\"'*").strip()
    return rationale, answer


def extract_answer(text: str, separator: str = ANSWER_SEPARATOR) -> str:
    """The final answer of ``text``: after the separator when there is one (``split_answer``),
    else the first line of the whole text."""
    split = split_answer(text, separator)
    if split is not None:
        return split[1]
    return (text or "").strip().split("\n", 1)[0].strip()


def normalize_answer(answer: str) -> str:
    """The form answers are compared in: case, punctuation, articles and spacing do not
    count ('(B) The Moon!' == 'b moon', '1,000' == '1000')."""
    text = re.sub(r"[^\w\s]", "", (answer or "").casefold())
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def render_answer(rationale: str | None, answer: str, separator: str = ANSWER_SEPARATOR) -> str:
    """A rationale and its answer as one text ('... So the answer is X.'), the shape of the
    few-shot examples and of a chat export of rationale data; the answer alone without a
    rationale."""
    answer = (answer or "").strip()
    if not (rationale or "").strip():
        return answer
    end = "" if answer[-1:] in ".!?" else "."
    return f"{rationale.strip()} {separator} {answer}{end}".strip()
