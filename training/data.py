"""Dataset rows -> the chat examples TRL trains on.

A row is what ``storage.datasets.load_rows`` returns (instruction, input, response,
rationale, label, system_prompt, sample_id, split). The student sees exactly what the
teacher saw: an optional system turn, a user turn (instruction, then input after a blank
line), and as the assistant turn exactly what the dataset exports
(``storage.datasets.chat_messages``): the response, or for a rationale row the reasoning
then the answer (Fine-tune-CoT's target).

    >>> prompt_messages({"instruction": "Add.", "input": "2 + 2"})
    [{'role': 'user', 'content': 'Add.\\n\\n2 + 2'}]
"""

from __future__ import annotations

from typing import Any, Iterable

from core.errors import InputError
from core.text import format_prompt
from storage.datasets import chat_messages, system_messages


def user_text(row: dict[str, Any]) -> str:
    """The user turn (``core.text.format_prompt``): the text the teacher answered, which
    ``storage.datasets`` exports too, so the teacher, exported data and the student agree."""
    return format_prompt(row.get("instruction") or "", row.get("input"))


def prompt_messages(row: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """System (when the row has one) + user messages for a row; ``prefix`` goes before the
    user text (a step-by-step student is asked with ``"predict: "``)."""
    return system_messages(row) + [{"role": "user", "content": prefix + user_text(row)}]


def as_rows(data: Any) -> list[dict[str, Any]]:
    """Accept a list of dicts or a ``datasets.Dataset``; return a list of dicts."""
    if hasattr(data, "to_list"):
        return data.to_list()
    return [dict(r) for r in data]


def _check(rows: list[dict[str, Any]], need: Iterable[str]) -> None:
    if not rows:
        raise InputError("no training rows: the dataset's train split is empty")
    for i, row in enumerate(rows):
        for key in need:
            if not (row.get(key) or "").strip():
                raise InputError(f"training row {i} (sample {row.get('sample_id')}) has no {key!r}")


def prompt_completion_dataset(rows: Any):
    """Conversational prompt/completion examples: SFTTrainer then computes the loss on the
    completion (the assistant turn) only, which works with any chat template, including
    SmolLM2's that has no ``{% generation %}`` markers for ``assistant_only_loss``."""
    from datasets import Dataset

    rows = as_rows(rows)
    _check(rows, ("instruction", "response"))
    conversations = [chat_messages(r) for r in rows]
    return Dataset.from_list([{"prompt": c[:-1], "completion": c[-1:]} for c in conversations])


def messages_dataset(rows: Any):
    """Full ``messages`` conversations (prompt turns + assistant response), the format TRL's
    GKD collator splits into a prompt (all but the last turn) and a completion."""
    from datasets import Dataset

    rows = as_rows(rows)
    _check(rows, ("instruction", "response"))
    return Dataset.from_list(
        [{"messages": chat_messages(r)} for r in rows]
    )
