"""Seed-task JSONL -> records: structure, lineage, dedup, and errors with line numbers."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError, NotFoundError
from storage.seeds import DEFAULT_SEED_FILE, parse_seed_file

TASKS = [
    {"name": "capital", "instruction": "Name the capital of the country.", "is_classification": False,
     "instances": [{"input": "France", "output": "Paris"}, {"input": "Japan", "output": "Tokyo"}]},
    {"name": "joke", "instruction": "Tell a one-line joke about cats.", "is_classification": False,
     "instances": [{"input": "", "output": "My cat ignores me in four languages."}]},
    {"name": "sentiment", "instruction": "Is the review positive or negative?", "is_classification": True,
     "instances": [{"input": "Loved it.", "output": "Positive"}]},
]


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tasks_instances_and_outputs(tmp_path):
    path = _write(tmp_path, [json.dumps(t) for t in TASKS] + [""])
    instructions, samples = parse_seed_file(path, run_id="r1")
    by_text = {(i.text, i.input): i for i in instructions}
    capital = by_text[("Name the capital of the country.", "")]
    france = by_text[("Name the capital of the country.", "France")]
    assert (capital.method, capital.parent_id, capital.metadata["seed_name"]) == ("seed", None, "capital")
    assert (france.parent_id, france.operator, france.run_id) == (capital.id, "instance", "r1")
    assert len(instructions) == 3 + 3  # three tasks, three instances with input
    joke = by_text[("Tell a one-line joke about cats.", "")]
    answers = {s.instruction_id: s for s in samples}
    assert answers[joke.id].response == "My cat ignores me in four languages."  # no input: on the task
    assert answers[france.id].teacher_model == "human" and answers[france.id].method == "seed"
    sentiment = by_text[("Is the review positive or negative?", "Loved it.")]
    assert answers[sentiment.id].label == "Positive" and answers[france.id].label is None


def test_ingest_twice_is_all_duplicates(store):
    instructions, samples = parse_seed_file(DEFAULT_SEED_FILE)
    first = store.ingest([*instructions, *samples])
    assert first.new["instructions"] >= 40 and first.duplicate == {"instructions": 0, "samples": 0}
    second = store.ingest([*instructions, *samples])
    assert second.total_new == 0
    assert store.check_integrity() == {}
    kinds = store.query(
        "SELECT bool_or(is_classification) AS cls, bool_or(NOT is_classification) AS gen, "
        "bool_or(input <> '') AS with_input FROM instructions"
    )[0]
    assert kinds == {"cls": True, "gen": True, "with_input": True}


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", r"seeds.jsonl:2: invalid JSON"),
        ("[1, 2]", r"seeds.jsonl:2: expected a JSON object"),
        ('{"instances": []}', r"seeds.jsonl:2: missing or empty 'instruction'"),
        ('{"instruction": "x", "instances": [{"input": "a"}]}', r"seeds.jsonl:2: instance 0 needs"),
        ('{"instruction": "x", "instances": {}}', r"seeds.jsonl:2: 'instances' must be a list"),
        ('{"instruction": "x", "is_classification": "yes"}', r"seeds.jsonl:2: 'is_classification'"),
    ],
)
def test_malformed_lines_are_named(tmp_path, bad_line, message):
    path = _write(tmp_path, [json.dumps(TASKS[0]), bad_line])
    with pytest.raises(InputError, match=message):
        parse_seed_file(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(NotFoundError, match="seed file not found"):
        parse_seed_file(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="no seed tasks"):
        parse_seed_file(_write(tmp_path, [""]))


def test_seed_tasks_round_trip_through_the_store_with_their_names(store):
    """One seed format: tasks parsed from the file, stored, read back, are the same tasks."""
    from storage.seeds import load_seed_tasks, seed_tasks
    from storage.records import Instruction, Sample

    instructions, samples = parse_seed_file(DEFAULT_SEED_FILE)
    store.ingest([*instructions, *samples])
    stored_ins = [Instruction(**{**r, "metadata": json.loads(r["metadata"]),
                                 "sampling_params": None}) for r in store.query("SELECT * FROM instructions")]
    stored_samples = [Sample(**{**r, "metadata": json.loads(r["metadata"]), "sampling_params": None})
                      for r in store.query("SELECT * FROM samples")]
    from_file = {t.name: t for t in load_seed_tasks()}
    from_store = {t.name: t for t in seed_tasks(stored_ins, stored_samples)}
    assert from_store.keys() == from_file.keys() and "review_sentiment" in from_file  # names survive
    for name, task in from_file.items():
        back = from_store[name]
        assert (back.instruction, back.is_classification) == (task.instruction, task.is_classification)
        assert sorted((i.input, i.output) for i in back.instances) == sorted((i.input, i.output) for i in task.instances)
