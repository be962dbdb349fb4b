"""Reading JSONL: one JSON object per line, errors that name the file and the line.

    for line_no, row in read_jsonl("prompts.jsonl"):
        ...
    tasks = read_jsonl_models("seed_tasks.jsonl", SeedTask)   # validated, same errors

Blank lines are skipped. A missing file is a ``NotFoundError``; a line that is not a JSON
object (or that the model refuses) is an ``InputError`` reading ``FILE:LINE: problem``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.config import first_problem
from core.errors import InputError, NotFoundError

M = TypeVar("M", bound=BaseModel)


def line_error(path: str | Path, line_no: int, problem: str) -> InputError:
    """``InputError("FILE:LINE: problem")``: the one shape of a bad-line error."""
    return InputError(f"{path}:{line_no}: {problem}")


def read_jsonl(path: str | Path, *, what: str = "JSONL file") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise line_error(path, line_no, f"invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise line_error(path, line_no, f"expected a JSON object, got {type(row).__name__}")
            yield line_no, row


def read_jsonl_models(path: str | Path, model: type[M], *, what: str = "JSONL file") -> list[M]:
    """Every line of ``path`` validated as ``model``; an empty file is an error."""
    out = []
    for line_no, row in read_jsonl(path, what=what):
        try:
            out.append(model.model_validate(row))
        except ValidationError as err:
            raise line_error(path, line_no, first_problem(err)) from None
    if not out:
        raise InputError(f"{path}: no entries in the {what}")
    return out
