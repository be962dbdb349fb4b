"""The input files a run starts from: seed tasks and instruction lists (JSONL) -> records.

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
    tasks = seed_tasks(instructions, samples)      # back to tasks (Self-Instruct's demonstrations)

This module is the one reader and writer of the seed format: the records carry the
task's name in ``metadata['seed_name']`` and ``seed_tasks`` rebuilds the tasks from
records, whether they were just parsed or read back from the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.config import first_problem
from core.errors import InputError
from core.jsonl import line_error, read_jsonl
from storage.records import Instruction, Record, Sample

SEEDS_DIR = Path(__file__).with_name("seeds")
DEFAULT_SEED_FILE = SEEDS_DIR / "seed_tasks.jsonl"
"""The seed tasks the project ships (written by the project)."""
COT_EXAMPLES_FILE = SEEDS_DIR / "cot_examples.jsonl"
"""Worked chain-of-thought examples for the rationales method's few-shot prompt."""
COT_QUESTIONS_FILE = SEEDS_DIR / "cot_questions.jsonl"
"""Questions with gold answers, for rationales (``parse_instructions_file`` reads them)."""
LION_POOL_FILE = SEEDS_DIR / "lion_pool.jsonl"
"""Instructions Lion's Train Pool and Cache Pool start from (``parse_instructions_file``)."""
LION_HELDOUT_FILE = SEEDS_DIR / "lion_heldout.jsonl"
"""Held-out prompts Lion evaluates each iteration's student on (none of them in the pool file)."""

HUMAN = "human"  # teacher_model of seed outputs


class SeedInstance(BaseModel):
    """One example of a seed task: an input ('' when the task needs none) and its output."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field("", description="The instance input ('' when the task needs none).")
    output: str = Field(description="The correct output for that input.")


class SeedTask(BaseModel):
    """A human-written seed task: one line of the seed file, or rebuilt from its records."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field("", description="Short unique name of the task.")
    instruction: str = Field(description="The task instruction.")
    instances: list[SeedInstance] = Field(default_factory=list, description="Example inputs and outputs.")
    is_classification: bool = Field(False, description="Whether the output is one of a few fixed labels.")




def _task_records(task: Any, path: Path, line_no: int, run_id: str | None) -> list[Record]:
    """The records of one parsed JSONL line (already known to be valid JSON)."""
    if not isinstance(task, dict):
        raise line_error(path, line_no, f"expected a JSON object, got {type(task).__name__}")
    instruction = task.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise line_error(path, line_no, "missing or empty 'instruction'")
    instances = task.get("instances", [])
    if not isinstance(instances, list):
        raise line_error(path, line_no, "'instances' must be a list of {input, output} objects")
    is_cls = task.get("is_classification")
    if is_cls is not None and not isinstance(is_cls, bool):
        raise line_error(path, line_no, "'is_classification' must be true or false")
    name = task.get("name")
    metadata = {"seed_name": name, "seed_file": path.name} if name else {"seed_file": path.name}

    try:
        parent = Instruction(
            text=instruction, method="seed", is_classification=is_cls, metadata=metadata, run_id=run_id
        )
        records: list[Record] = [parent]
        for k, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise line_error(path, line_no, f"instance {k} is not an object")
            text_input = instance.get("input") or ""
            output = instance.get("output")
            if not isinstance(text_input, str) or not isinstance(output, str) or not output.strip():
                raise line_error(path, line_no, f"instance {k} needs a string 'input' and a non-empty string 'output'")
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
        raise line_error(path, line_no, first_problem(err)) from None
    return records


def parse_seed_file(path: str | Path, run_id: str | None = None) -> tuple[list[Instruction], list[Sample]]:
    """Parse a seed-task JSONL file into records (tagged with ``run_id`` if given).

    Blank lines are skipped; anything malformed raises ``InputError`` naming the file
    and line; a missing file raises ``NotFoundError``."""
    path = Path(path)
    instructions: list[Instruction] = []
    samples: list[Sample] = []
    for line_no, task in read_jsonl(path, what="seed file"):
        for record in _task_records(task, path, line_no, run_id):
            (instructions if isinstance(record, Instruction) else samples).append(record)  # type: ignore[arg-type]
    if not instructions:
        raise InputError(f"{path}: no seed tasks in the file")
    return instructions, samples


def seed_tasks(instructions: Iterable[Instruction], samples: Iterable[Sample] = ()) -> list[SeedTask]:
    """Seed tasks rebuilt from their records: each task instruction (no ``parent_id``) with
    its instances (instance instructions' inputs, and the human samples answering them or
    the task itself), in the order the tasks come."""
    instructions = list(instructions)
    outputs: dict[str, list[str]] = {}
    for s in samples:
        outputs.setdefault(s.instruction_id, []).append(s.response)
    tasks: dict[str, SeedTask] = {}
    for ins in instructions:
        if ins.parent_id is None:
            tasks[ins.id] = SeedTask(
                name=str((ins.metadata or {}).get("seed_name") or ins.id), instruction=ins.text,
                is_classification=bool(ins.is_classification),
                instances=[SeedInstance(input=ins.input, output=o) for o in outputs.get(ins.id, ())])
    for ins in instructions:
        if ins.operator == "instance" and ins.parent_id in tasks:
            tasks[ins.parent_id].instances.extend(
                SeedInstance(input=ins.input, output=o) for o in outputs.get(ins.id, ()))
    return list(tasks.values())


def load_seed_tasks(path: str | Path = DEFAULT_SEED_FILE) -> list[SeedTask]:
    """The seed tasks of a seed file (default: the shipped one)."""
    return seed_tasks(*parse_seed_file(path))


def parse_instructions_file(path: str | Path, *, run_id: str | None = None) -> list[Instruction]:
    """Instructions to work on from JSONL, one per line: ``{"instruction", "input"?}`` or
    ``{"question", "answer"?}`` (a gold answer goes to ``metadata['label']``, where
    rationales look for it). They are stored as seed instructions."""
    path = Path(path)
    out: list[Instruction] = []
    for line_no, row in read_jsonl(path, what="instructions file"):
        text = row.get("instruction") or row.get("question")
        if not isinstance(text, str) or not text.strip():
            raise line_error(path, line_no, "no 'instruction' or 'question' field")
        meta: dict[str, Any] = {"source": path.name}
        answer = row.get("answer", row.get("label"))
        if answer not in (None, ""):
            meta["label"] = str(answer)
        out.append(Instruction(text=text, input=row.get("input") or "", method="seed", run_id=run_id, metadata=meta))
    if not out:
        raise InputError(f"{path}: no instructions")
    return out
