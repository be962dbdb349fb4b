"""Dataset versions: freezing, immutability, seeded splits, errors, and every export format."""

from __future__ import annotations

import json

import datasets as hf
import pyarrow.parquet as pq
import pytest

from core.text import format_prompt
from storage.datasets import (
    ROW_COLUMNS,
    STEP_BY_STEP_PREFIXES,
    create_dataset,
    export_dataset,
    get_dataset,
    list_datasets,
    load_rows,
    parse_dataset_ref,
    step_by_step_examples,
)
from core.errors import InputError, NotFoundError
from storage.records import Instruction, Sample

SQL = "SELECT sample_id, instruction, input, response, label, system_prompt FROM sample_view"


def _ingest(store, start: int, stop: int) -> None:
    records = []
    for i in range(start, stop):
        ins = Instruction(text=f"Question {i}?", input="ctx" if i % 2 else "", method="seed")
        records += [ins, Sample(instruction_id=ins.id, response=f"Answer {i}.", label=str(i % 3), system_prompt="Be brief." if i == 0 else None)]
    store.ingest(records)


def test_create_freezes_an_immutable_version(store):
    _ingest(store, 0, 40)
    v1 = create_dataset(store, "qa", SQL, eval_fraction=0.25, seed=7)
    assert (v1.version, v1.n_rows, v1.n_train + v1.n_eval) == (1, 40, 40)
    assert 0 < v1.n_eval < 40
    rows_v1 = load_rows(store, "qa", 1)
    assert list(rows_v1[0]) == list(ROW_COLUMNS)

    _ingest(store, 40, 60)  # new samples arrive, and an old one is edited in place
    with store.write() as con:
        con.execute("UPDATE samples SET response = 'changed' WHERE response = 'Answer 3.'")
    v2 = create_dataset(store, "qa", SQL, eval_fraction=0.25, seed=7)
    assert (v2.version, v2.n_rows) == (2, 60)

    # Version 1 did not change: same rows, same hash.
    assert load_rows(store, "qa", 1) == rows_v1
    assert get_dataset(store, "qa", 1).content_hash == v1.content_hash
    assert get_dataset(store, "qa").version == 2
    assert [d.ref for d in list_datasets(store)] == ["qa@1", "qa@2"]
    # A row keeps its split across versions: nothing of v1's eval leaks into v2's train.
    eval_v1 = {r["sample_id"] for r in rows_v1 if r["split"] == "eval"}
    train_v2 = {r["sample_id"] for r in load_rows(store, "qa", 2, split="train")}
    assert eval_v1 and not eval_v1 & train_v2


def test_same_rows_and_seed_give_the_same_split_and_hash(store):
    _ingest(store, 0, 30)
    a = create_dataset(store, "a", SQL, seed=1)
    b = create_dataset(store, "b", SQL + " ORDER BY random()", seed=1)
    assert a.content_hash == b.content_hash
    assert [r["split"] for r in load_rows(store, "a")] == [r["split"] for r in load_rows(store, "b")]
    c = create_dataset(store, "c", SQL, seed=2)
    assert c.content_hash != a.content_hash


def test_select_must_return_instruction_and_response(store):
    _ingest(store, 0, 3)
    with pytest.raises(InputError, match=r"must return columns instruction, response \(missing: response"):
        create_dataset(store, "bad", "SELECT instruction FROM sample_view")
    with pytest.raises(InputError, match="single SELECT"):
        create_dataset(store, "bad", "DELETE FROM samples")
    with pytest.raises(InputError, match="dataset SQL failed: Catalog Error"):
        create_dataset(store, "bad", "SELECT * FROM nope")
    with pytest.raises(InputError, match="empty instruction or response"):
        create_dataset(store, "bad", "SELECT instruction, '' AS response FROM sample_view")
    with pytest.raises(InputError, match="bad dataset name"):
        create_dataset(store, "a@b", SQL)
    assert list_datasets(store) == []


def test_unknown_dataset_and_version(store):
    with pytest.raises(NotFoundError, match="'nope' does not exist .no datasets yet"):
        get_dataset(store, "nope")
    _ingest(store, 0, 3)
    create_dataset(store, "qa", SQL)
    with pytest.raises(NotFoundError, match="'qa' has no version 5 .versions: 1"):
        load_rows(store, "qa", 5)
    with pytest.raises(NotFoundError, match="known: qa"):
        export_dataset(store, "other", None, "parquet", "x.parquet")


def test_parse_dataset_ref():
    assert parse_dataset_ref("qa") == ("qa", None)
    assert parse_dataset_ref("qa@3") == ("qa", 3)
    with pytest.raises(InputError):
        parse_dataset_ref("qa@latest")


def test_exports_load_with_hf_datasets(store, tmp_path):
    _ingest(store, 0, 20)
    info = create_dataset(store, "qa", SQL, eval_fraction=0.3)
    rows = load_rows(store, "qa")
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "eval")}

    # Parquet: one file with a split column, or a directory of train/eval files.
    single = export_dataset(store, "qa", 1, "parquet", tmp_path / "qa.parquet")
    loaded = hf.load_dataset("parquet", data_files=str(single), split="train")
    assert loaded.num_rows == 20 and sorted(loaded["response"]) == sorted(r["response"] for r in rows)
    folder = export_dataset(store, "qa", 1, "parquet", tmp_path / "qa_parquet")
    dd = hf.load_dataset("parquet", data_files={s: str(folder / f"{s}.parquet") for s in ("train", "eval")})
    assert (dd["train"].num_rows, dd["eval"].num_rows) == (info.n_train, info.n_eval)

    # JSONL chat messages: the system prompt, the user turn (instruction + input), the answer.
    chat = export_dataset(store, "qa", None, "jsonl-chat", tmp_path / "chat")
    dd = hf.load_dataset("json", data_files={s: str(chat / f"{s}.jsonl") for s in ("train", "eval")})
    assert dd["train"].num_rows == info.n_train
    first = next(r for r in rows if r["system_prompt"])
    all_messages = list(dd["train"]["messages"]) + list(dd["eval"]["messages"])
    assert [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": first["instruction"]},
        {"role": "assistant", "content": first["response"]},
    ] in all_messages
    with_input = next(r for r in by_split["train"] if r["input"])
    assert {"role": "user", "content": f"{with_input['instruction']}\n\nctx"} in [m[0] for m in dd["train"]["messages"]]

    # JSONL prompt/completion in one file, with the split.
    pc = export_dataset(store, "qa", 1, "jsonl-prompt", tmp_path / "pc.jsonl")
    ds = hf.load_dataset("json", data_files=str(pc), split="train")
    assert set(ds.column_names) == {"prompt", "completion", "split"}
    assert ds.filter(lambda r: r["split"] == "eval").num_rows == info.n_eval

    # Hugging Face save_to_disk: a DatasetDict with both splits.
    saved = export_dataset(store, "qa", 1, "hf", tmp_path / "hf")
    dd = hf.load_from_disk(str(saved))
    assert set(dd) == {"train", "eval"} and dd["eval"].num_rows == info.n_eval
    assert dd["train"][0]["messages"][-1]["role"] == "assistant"

    with pytest.raises(InputError, match="unknown export format"):
        export_dataset(store, "qa", 1, "csv", tmp_path / "x")


def test_empty_eval_split_still_exports(store, tmp_path):
    _ingest(store, 0, 3)
    create_dataset(store, "all-train", SQL, eval_fraction=0)
    dd = hf.load_from_disk(str(export_dataset(store, "all-train", 1, "hf", tmp_path / "hf")))
    assert (dd["train"].num_rows, dd["eval"].num_rows) == (3, 0)


# --- rationale datasets ---------------------------------------------------------------

RATIONALE_SQL = "SELECT sample_id, instruction, input, response, rationale, label, system_prompt FROM sample_view"


def _ingest_rationales(store) -> dict[str, str]:
    """Two samples as the rationales method stores them (the answer in ``response``, the
    reasoning in ``rationale``, the gold label in ``label``); returns their sample ids."""
    cats = Instruction(text="Sam has 4 cats and gets 4 more. How many cats?", method="seed")
    trout = Instruction(text="Can a trout live on land?", input="Answer yes or no.", method="seed")
    samples = {
        "cats": Sample(instruction_id=cats.id, response="8", rationale="4 and 4 make 8.", label="8",
                       method="rationales"),
        "trout": Sample(instruction_id=trout.id, response="No", rationale="Fish need water.", label="no",
                        system_prompt="Think first.", method="rationales"),
    }
    store.ingest([cats, trout, *samples.values()])
    return {name: s.id for name, s in samples.items()}


def _lines(store, name: str, by_sample: dict[str, list[dict]]) -> str:
    """The expected JSONL text: each row's records, in the version's row order."""
    return "".join(json.dumps(rec, ensure_ascii=False) + "\n"
                   for row in load_rows(store, name) for rec in by_sample[row["sample_id"]])


def test_rationale_dataset_exports(store, tmp_path):
    ids = _ingest_rationales(store)
    create_dataset(store, "cot", RATIONALE_SQL, eval_fraction=0)
    cats_q, trout_q = "Sam has 4 cats and gets 4 more. How many cats?", "Can a trout live on land?\n\nAnswer yes or no."

    # Chat: the assistant reasons, then answers, as in the teacher's few-shot examples.
    chat = {
        ids["cats"]: [{"messages": [{"role": "user", "content": cats_q},
                                    {"role": "assistant", "content": "4 and 4 make 8. So the answer is 8."}]}],
        ids["trout"]: [{"messages": [{"role": "system", "content": "Think first."},
                                     {"role": "user", "content": trout_q},
                                     {"role": "assistant", "content": "Fish need water. So the answer is No."}]}],
    }
    folder = export_dataset(store, "cot", 1, "jsonl-chat", tmp_path / "chat")
    assert (folder / "train.jsonl").read_text() == _lines(store, "cot", chat)
    assert (folder / "eval.jsonl").read_text() == ""

    # Step-by-step: per row "predict: x" -> label, then "explain: x" -> rationale.
    tasks = {
        ids["cats"]: [{"task": "predict", "input": "predict: " + cats_q, "output": "8"},
                      {"task": "explain", "input": "explain: " + cats_q, "output": "4 and 4 make 8."}],
        ids["trout"]: [{"task": "predict", "input": "predict: " + trout_q, "output": "no"},
                       {"task": "explain", "input": "explain: " + trout_q, "output": "Fish need water."}],
    }
    folder = export_dataset(store, "cot", 1, "jsonl-step-by-step", tmp_path / "sbs")
    assert (folder / "train.jsonl").read_text() == _lines(store, "cot", tasks)
    assert (folder / "eval.jsonl").read_text() == ""
    one_file = export_dataset(store, "cot", 1, "jsonl-step-by-step", tmp_path / "sbs.jsonl")
    with_split = {k: [t | {"split": "train"} for t in v] for k, v in tasks.items()}
    assert one_file.read_text() == _lines(store, "cot", with_split)

    # Prompt/completion: the completion is the chat answer, reasoning first (Fine-tune-CoT's shape).
    prompt = {ids["cats"]: [{"prompt": cats_q, "completion": "4 and 4 make 8. So the answer is 8."}],
              ids["trout"]: [{"prompt": trout_q, "completion": "Fish need water. So the answer is No."}]}
    folder = export_dataset(store, "cot", 1, "jsonl-prompt", tmp_path / "prompt")
    assert (folder / "train.jsonl").read_text() == _lines(store, "cot", prompt)

    # Parquet: the rows as load_rows gives them; hf: those columns plus the chat messages.
    file = export_dataset(store, "cot", 1, "parquet", tmp_path / "cot.parquet")
    assert pq.read_table(file).to_pylist() == load_rows(store, "cot")
    dd = hf.load_from_disk(str(export_dataset(store, "cot", 1, "hf", tmp_path / "hf")))
    assert dd["train"].to_list() == [{**row, **chat[row["sample_id"]][0]} for row in load_rows(store, "cot")]
    assert dd["eval"].num_rows == 0


def test_chat_export_without_rationales_is_the_response(store, tmp_path):
    _ingest(store, 0, 2)
    create_dataset(store, "qa", SQL, eval_fraction=0)
    expected = {
        row["sample_id"]: [{"messages": [
            *([{"role": "system", "content": "Be brief."}] if row["system_prompt"] else []),
            {"role": "user", "content": row["instruction"] + ("\n\nctx" if row["input"] else "")},
            {"role": "assistant", "content": row["response"]}]}]
        for row in load_rows(store, "qa")
    }
    chat = export_dataset(store, "qa", 1, "jsonl-chat", tmp_path / "chat")
    assert (chat / "train.jsonl").read_text() == _lines(store, "qa", expected)
    # Step-by-step without rationales: the predict task alone, towards the label.
    tasks = {
        row["sample_id"]: [{"task": "predict", "input": "predict: " + format_prompt(row["instruction"], row["input"]),
                            "output": row["label"]}]
        for row in load_rows(store, "qa")
    }
    sbs = export_dataset(store, "qa", 1, "jsonl-step-by-step", tmp_path / "sbs")
    assert (sbs / "train.jsonl").read_text() == _lines(store, "qa", tasks)


def test_step_by_step_examples():
    row = {"instruction": " Add. ", "input": "2 + 2", "response": "4", "rationale": " 2 and 2 make 4. ", "label": None}
    assert step_by_step_examples(row) == [
        {"task": "predict", "input": "predict: Add.\n\n2 + 2", "output": "4"},
        {"task": "explain", "input": "explain: Add.\n\n2 + 2", "output": "2 and 2 make 4."},
    ]
    assert step_by_step_examples({**row, "rationale": "  "}) == step_by_step_examples(row)[:1]
    assert STEP_BY_STEP_PREFIXES == {"predict": "predict: ", "explain": "explain: "}
