"""Self-Instruct seed tasks (JSONL) -> Instruction and Sample records.

One line per task, in the format of the Self-Instruct paper's seed file:

    {"name": "review_sentiment", "instruction": "Decide whether ...",
     "instances": [{"input": "The blender is loud, but ...", "output": "Positive"}],
     "is_classification": true}

Each task becomes an Instruction with method "seed". An instance with an input becomes
its own Instruction (parent = the task, operator "instance", the input filled in), since
the same task on two inputs asks two different things; its output is a human Sample of
that instruction. An instance without input answers the task itself. For classification
tasks the output is also the sample's label.

    instructions, samples = parse_seed_file("storage/seeds/seed_tasks.jsonl")
    store.ingest([*instructions, *samples])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import InputError, NotFoundError
from storage.records import Instruction, Record, Sample

SEEDS_DIR = Path(__file__).with_name("seeds")
DEFAULT_SEED_FILE = SEEDS_DIR / "seed_tasks.jsonl"
"""The seed tasks the project ships (written by the project)."""

HUMAN = "human"  # teacher_model of seed outputs


def _fail(path: Path, line_no: int, problem: str) -> InputError:
    return InputError(f"{path}:{line_no}: {problem}")


def _task_records(task: Any, path: Path, line_no: int, run_id: str | None) -> list[Record]:
    """The records of one parsed JSONL line (already known to be valid JSON)."""
    if not isinstance(task, dict):
        raise _fail(path, line_no, f"expected a JSON object, got {type(task).__name__}")
    instruction = task.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise _fail(path, line_no, "missing or empty 'instruction'")
    instances = task.get("instances", [])
    if not isinstance(instances, list):
        raise _fail(path, line_no, "'instances' must be a list of {input, output} objects")
    is_cls = task.get("is_classification")
    if is_cls is not None and not isinstance(is_cls, bool):
        raise _fail(path, line_no, "'is_classification' must be true or false")
    name = task.get("name")
    metadata = {"seed_name": name, "seed_file": path.name} if name else {"seed_file": path.name}

    try:
        parent = Instruction(
            text=instruction, method="seed", is_classification=is_cls, metadata=metadata, run_id=run_id
        )
        records: list[Record] = [parent]
        for k, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise _fail(path, line_no, f"instance {k} is not an object")
            text_input = instance.get("input") or ""
            output = instance.get("output")
            if not isinstance(text_input, str) or not isinstance(output, str) or not output.strip():
                raise _fail(path, line_no, f"instance {k} needs a string 'input' and a non-empty string 'output'")
            target = parent
            if text_input.strip():
                target = Instruction(
                    text=instruction,
                    input=text_input,
                    method="seed",
                    parent_id=parent.id,
                    operator="instance",
                    is_classification=is_cls,
                    metadata=metadata,
                    run_id=run_id,
                )
                records.append(target)
            records.append(
                Sample(
                    instruction_id=target.id,
                    response=output,
                    label=output.strip() if is_cls else None,
                    method="seed",
                    teacher_model=HUMAN,
                    run_id=run_id,
                )
            )
    except ValidationError as err:
        first = err.errors()[0]
        raise _fail(path, line_no, f"{'.'.join(map(str, first['loc'])) or 'record'}: {first['msg']}") from err
    return records


def parse_seed_file(path: str | Path, run_id: str | None = None) -> tuple[list[Instruction], list[Sample]]:
    """Parse a seed-task JSONL file into records (tagged with ``run_id`` if given).

    Blank lines are skipped; anything malformed raises ``InputError`` naming the file
    and line; a missing file raises ``NotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"seed file not found: {path}")
    instructions: list[Instruction] = []
    samples: list[Sample] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                task = json.loads(line)
            except json.JSONDecodeError as err:
                raise _fail(path, line_no, f"invalid JSON ({err.msg} at column {err.colno})") from err
            for record in _task_records(task, path, line_no, run_id):
                (instructions if isinstance(record, Instruction) else samples).append(record)  # type: ignore[arg-type]
    if not instructions:
        raise InputError(f"{path}: no seed tasks in the file")
    return instructions, samples
