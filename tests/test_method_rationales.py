"""Chain-of-thought rationales: parsing, gold-label filtering, majority vote, export."""

from __future__ import annotations

import json

from generators.rationales import (
    CotExample,
    RationalesConfig,
    agenerate_rationales,
    load_cot_examples,
    render_prompt,
)
from core.text import normalize_answer, split_answer
from generators.teachers.base import Completion
from generators.teachers.scripted import ScriptedTeacher
from storage.datasets import create_dataset, export_dataset
from storage.records import Instruction
from storage.seeds import COT_QUESTIONS_FILE, parse_instructions_file

EXAMPLES = [
    CotExample(question="Tom has 2 red and 3 blue pens. How many pens?", rationale="2 plus 3 is 5.", answer="5"),
    CotExample(question="Do penguins fly?", rationale="Penguins have flippers, not flying wings.", answer="no"),
]


def scripted(outputs: dict[str, list]) -> ScriptedTeacher:
    """Answers keyed by the question's first word, one per sample_index."""
    def script(req):
        question = req.prompt.rsplit("Q: ", 1)[1].split()[0]
        return outputs[question][req.sample_index]
    return ScriptedTeacher(script)


def test_split_answer_and_normalize():
    assert split_answer("3 times 4 is 12. So the answer is 12.") == ("3 times 4 is 12.", "12")
    assert split_answer("Reasoning.\nso THE ANSWER IS: \"yes\".\nQ: next") == ("Reasoning.", "yes")
    assert split_answer("The answer is 12", "So the answer is") is None
    assert split_answer("x. Therefore: 7", "Therefore:") == ("x.", "7")
    assert normalize_answer(" (B). ") == "b" and normalize_answer("1,000") == "1000"


def test_prompt_has_examples_then_question():
    text, ref = render_prompt("What is 2+2?", EXAMPLES, RationalesConfig())
    assert ref == "cot_fewshot@1"
    assert "Q: Do penguins fly?\nA: Penguins have flippers, not flying wings. So the answer is no." in text
    assert text.endswith("Q: What is 2+2?\nA:")
    text, _ = render_prompt("Q?", EXAMPLES, RationalesConfig(num_examples=1))
    assert "penguins" not in text


async def test_gold_label_filtering_and_D_samples():
    outputs = {"Sam": ["4 and 4 make 8. So the answer is 8.",
                       "4 plus 4 is 9. So the answer is 9.",
                       "Double 4 is 8. So the answer is 8",
                       Completion(key="", ok=True, text="4 and 4 make", finish_reason="length")]}
    teacher = scripted(outputs)
    q = Instruction(text="Sam has 4 cats and gets 4 more. How many cats?", method="seed", metadata={"label": "8"})
    result = await agenerate_rationales(teacher, [q], EXAMPLES, RationalesConfig(), run_id="r")
    assert [(s.rationale, s.response, s.label) for s in result.samples] == [
        ("4 and 4 make 8.", "8", "8"), ("Double 4 is 8.", "8", "8")]
    assert sorted(d.reason for d in result.decisions) == ["truncated", "wrong_answer"]
    assert len(teacher.calls) == 4 and [c.sample_index for c in teacher.calls] == [0, 1, 2, 3]
    assert teacher.calls[0].params.temperature == 0.7 and teacher.calls[0].kind == "completion"
    s = result.samples[0]
    assert s.method == "rationales" and s.metadata["label_source"] == "gold" and s.template_version == "cot_fewshot@1"
    # A gold label passed explicitly wins over metadata.
    result = await agenerate_rationales(teacher, [q], EXAMPLES, gold={q.id: "9"})
    assert [s.response for s in result.samples] == ["9"]


async def test_majority_vote_without_gold_and_tie():
    outputs = {
        "Is": ["Fish need water. So the answer is no.", "It has gills. So the answer is No.",
               "Maybe it can. So the answer is yes.", "I do not know."],
        "Pick": ["A seems right. So the answer is A.", "B seems right. So the answer is B.",
                 Completion(key="", ok=False, error="http 500"), "So the answer is A."],
    }
    qs = [Instruction(text="Is a trout able to live on land?", method="seed"),
          Instruction(text="Pick A or B.", method="seed")]
    result = await agenerate_rationales(scripted(outputs), qs, EXAMPLES)
    assert [(s.response, s.label) for s in result.samples] == [("no", "no"), ("No", "no")]
    assert all(s.metadata["label_source"] == "majority" for s in result.samples)
    reasons = sorted(d.reason for d in result.decisions)
    assert reasons == ["no_answer", "no_majority", "no_majority", "no_rationale", "not_majority"]
    assert result.counts["failed"] == 1


async def test_stored_rationales_export_for_training(store, tmp_path):
    """Generated, stored and frozen as a dataset, a rationale exports as step-by-step's two
    tasks and as a chat answer that reasons first (the formats are storage.datasets')."""
    q = Instruction(text="Sam has 4 cats and gets 4 more. How many cats?", method="seed", metadata={"label": "8"})
    result = await agenerate_rationales(scripted({"Sam": ["4 and 4 make 8. So the answer is 8."]}), [q], EXAMPLES,
                                        RationalesConfig(num_samples=1))
    store.ingest([q, *result.records])
    create_dataset(store, "cot", "SELECT * FROM kept_samples", eval_fraction=0)

    sbs = export_dataset(store, "cot", None, "jsonl-step-by-step", tmp_path / "sbs.jsonl")
    assert [json.loads(line) for line in sbs.read_text().splitlines()] == [
        {"task": "predict", "input": "predict: " + q.text, "output": "8", "split": "train"},
        {"task": "explain", "input": "explain: " + q.text, "output": "4 and 4 make 8.", "split": "train"},
    ]
    chat = export_dataset(store, "cot", None, "jsonl-chat", tmp_path / "chat.jsonl")
    assert [json.loads(line) for line in chat.read_text().splitlines()] == [
        {"messages": [{"role": "user", "content": q.text},
                      {"role": "assistant", "content": "4 and 4 make 8. So the answer is 8."}], "split": "train"}]


def test_shipped_files_load():
    assert all(e.question and e.rationale and e.answer for e in load_cot_examples())
    qs = parse_instructions_file(COT_QUESTIONS_FILE)
    assert qs and all(q.metadata.get("label") for q in qs)
