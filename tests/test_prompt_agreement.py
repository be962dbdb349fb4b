"""The student is trained and evaluated on exactly the text the teacher answered."""

from __future__ import annotations

import json

from generators.responses import ResponsesConfig, agenerate_responses
from generators.teachers.scripted import ScriptedTeacher
from storage.datasets import create_dataset, export_dataset, load_rows
from storage.records import Instruction
from training.data import prompt_messages
from training.evaluate import eval_items


def _key(messages) -> str:
    return json.dumps([dict(m) for m in messages], sort_keys=True)


async def test_students_prompt_for_a_sample_equals_the_teachers(store, tmp_path):
    # Whitespace around the instruction and the input is where the two sides used to differ.
    instructions = [Instruction(text="  Translate to French. \n", input="\n Good morning  ", method="seed"),
                    Instruction(text="Name a colour.\n", method="seed")]
    teacher = ScriptedTeacher(lambda req: "Bonjour.")
    result = await agenerate_responses(teacher, instructions, ResponsesConfig(system_prompt="Be brief."))
    store.ingest([*instructions, *result.records])
    asked = {_key(c.messages) for c in teacher.calls}  # (system, user) as the teacher saw them

    create_dataset(store, "agree", "SELECT * FROM sample_view", eval_fraction=0.5)
    rows = load_rows(store, "agree")
    assert {_key(prompt_messages(r)) for r in rows} == asked  # training
    assert {_key(prompt_messages(it)) for it in eval_items(rows + [{**r, "split": "eval"} for r in rows])} == asked
    export_dataset(store, "agree", None, "jsonl-chat", tmp_path / "chat.jsonl")  # export
    exported = [json.loads(line)["messages"] for line in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert {_key(m[:-1]) for m in exported} == asked


def test_the_students_target_is_what_the_dataset_exports():
    """SFT/KD train on the exported assistant turn: for a rationale row, the reasoning then
    the answer (Fine-tune-CoT), the same text `jsonl-chat` writes."""
    from storage.datasets import chat_messages
    from training.data import messages_dataset, prompt_completion_dataset

    row = {"instruction": "Sam has 4 cats and gets 4 more. How many cats?", "input": "", "response": "8",
           "rationale": "4 and 4 make 8.", "label": "8", "system_prompt": None, "sample_id": "s", "split": "train"}
    [example] = prompt_completion_dataset([row]).to_list()
    assert example["completion"] == [{"role": "assistant", "content": "4 and 4 make 8. So the answer is 8."}]
    assert example["prompt"] + example["completion"] == chat_messages(row)
    assert messages_dataset([row]).to_list()[0]["messages"] == chat_messages(row)
