"""Evol-Instruct: operators, lineage across rounds, and each elimination case."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from generators.evol_instruct import (
    FILTER,
    IN_DEPTH,
    OPERATORS,
    EvolInstructConfig,
    EvolRunner,
    aevol_round,
    is_apology,
    is_stop_words_only,
    parse_equality,
)
from generators.teachers.base import ChatRequest, Completion
from generators.teachers.scripted import ScriptedTeacher, prompt_text
from runners import drive
from storage.records import Instruction

EXTRA = ["Use exactly three sentences.", "Cite one historical example.", "Answer in under fifty words.",
         "Compare two options first.", "End with a question."]


def given(req: ChatRequest) -> str:
    """The instruction being evolved: the text after the template's last 'Prompt:' line."""
    return prompt_text(req).rsplit("Prompt:\n", 1)[1].strip()


def growing_teacher(answer: str = "Here is a complete and careful answer with details.") -> ScriptedTeacher:
    def script(req: ChatRequest):
        if req.tag.startswith("evol_instruct.") and req.tag.split(".")[1] in OPERATORS:
            parent = given(req)
            return f"{parent} {EXTRA[parent.count('.') % len(EXTRA)]}"
        if req.tag == "evol_instruct.equality":
            return "Not Equal"
        return answer
    return ScriptedTeacher(script)


async def test_lineage_across_rounds():
    teacher = growing_teacher()
    seeds = [Instruction(text="Explain why leaves change colour.", method="seed"),
             Instruction(text="Describe how to brew green tea.", method="seed")]
    runner = EvolRunner(seeds, EvolInstructConfig(rounds=3), run_name="t", batch_size=8, run_id="r")
    result = await drive(runner, teacher)
    assert len(result.instructions) == 6 and len(result.samples) == 6
    by_id = {i.id: i for i in [*seeds, *result.instructions]}
    for final in runner.next_pool:
        chain = [final]
        while chain[-1].parent_id:
            chain.append(by_id[chain[-1].parent_id])
        assert [c.round for c in chain] == [3, 2, 1, 0]
        assert chain[-1] in seeds
        assert all(c.operator in OPERATORS and c.method == "evol_instruct" for c in chain[:-1])
        assert all(c.template_version in ("evol_in_depth@1", "evol_in_breadth@1") for c in chain[:-1])
    assert all(d.kept and d.filter == FILTER for d in result.decisions)
    sample = result.samples[0]
    assert sample.method == "evol_instruct" and sample.instruction_id in by_id and sample.request_key
    # Operators are drawn per instruction per round (6 draws here), and each evolve
    # request of a round carries the round as its sample index.
    evolve_calls = [r for r in teacher.calls if r.tag.split(".")[1] in OPERATORS]
    assert [r.sample_index for r in evolve_calls] == [0, 0, 1, 1, 2, 2]
    assert sum(v for k, v in result.counts.items() if k.startswith("operator_")) == 6


async def test_operator_prompts():
    teacher = growing_teacher()
    ins = [Instruction(text=f"Explain topic number {i} clearly.", method="seed") for i in range(30)]
    await aevol_round(teacher, ins, EvolInstructConfig(), rng=random.Random(3))
    ops = {r.tag.split(".")[1] for r in teacher.calls if r.tag.split(".")[1] in OPERATORS}
    assert ops == set(OPERATORS)  # random choice covers all six over 30 draws with this seed
    depth = next(r for r in teacher.calls if r.tag == "evol_instruct.add_constraints")
    assert "10 to 20 words" in prompt_text(depth) and "constraint" in prompt_text(depth)
    assert depth.kind == "chat" and depth.params.temperature == 1.0
    breadth = next(r for r in teacher.calls if r.tag == "evol_instruct.breadth")
    assert "rarer" in prompt_text(breadth)
    equality = next(r for r in teacher.calls if r.tag == "evol_instruct.equality")
    assert equality.params.temperature == 0.0

    only = EvolInstructConfig(operators=["concretizing"])
    t2 = growing_teacher()
    await aevol_round(t2, ins[:5], only, rng=random.Random(0))
    assert {r.tag for r in t2.calls if "concret" in r.tag or r.tag.split(".")[1] in IN_DEPTH} == {
        "evol_instruct.concretizing"}


async def test_each_elimination_case():
    parents = {
        "copy": "Name a primary colour.",
        "equal": "Name a large mammal.",
        "identical": "Name a planet.",
        "sorry": "Name a prime number.",
        "long_sorry": "Name a famous river.",
        "stop": "Name a musical instrument.",
        "truncated": "Name a kind of cloud.",
        "evolve_failed": "Name a gemstone.",
        "answer_failed": "Name a chess opening.",
        "ok": "Name a type of bread.",
    }
    evolved = {
        "copy": "#Rewritten Prompt#: Name a primary colour found in rainbows.",
        "equal": "Name one large mammal.",
        "identical": "Name a planet.",
        "sorry": "Name the largest prime number ever to exist.",
        "long_sorry": "Name a famous river and its length.",
        "stop": "Name a musical instrument of the future.",
        "truncated": "Name a kind of cloud and",
        "evolve_failed": None,
        "answer_failed": "Name a chess opening for beginners.",
        "ok": "Name a type of bread from Georgia and its filling.",
    }
    answers = {
        "sorry": "I'm sorry, but there is no largest prime number.",
        "long_sorry": "Sorry for the long answer. " + "The Nile runs through many countries. " * 20,
        "stop": "It is what it is, and so on.",
        "answer_failed": None,
    }
    case_of = {parents[k]: k for k in parents}
    case_of_evolved = {v: k for k, v in evolved.items() if v}

    def script(req: ChatRequest):
        if req.tag == "evol_instruct.equality":
            second = prompt_text(req).rsplit("Second instruction:\n", 1)[1].strip()
            return "Equal" if case_of_evolved[second] == "equal" else "Not Equal"
        if req.tag == "evol_instruct.answer":
            case = case_of_evolved[prompt_text(req).strip()]
            if answers.get(case, "x") is None:
                return Completion(key="", ok=False, error="timeout")
            return answers.get(case, "Khachapuri, filled with cheese and egg.")
        case = case_of[given(req)]
        if evolved[case] is None:
            return Completion(key="", ok=False, error="http 500")
        if case == "truncated":
            return Completion(key="", ok=True, text=evolved[case], finish_reason="length")
        return evolved[case]

    teacher = ScriptedTeacher(script)
    pool = [Instruction(text=t, method="seed") for t in parents.values()]
    step = await aevol_round(teacher, pool, EvolInstructConfig(), rng=random.Random(0), round=1)

    reasons = {case_of_evolved[r.text]: r.metadata["eliminated"] for r in step.rejected}
    assert reasons == {
        "copy": "copied_prompt_wording", "equal": "no_information_gain",
        "sorry": "apology", "stop": "stop_words_only", "truncated": "truncated", "answer_failed": "response_failed",
    }
    assert sorted(case_of_evolved[i.text] for i in step.instructions) == ["long_sorry", "ok"]
    assert {d.reason for d in step.decisions if not d.kept} == set(reasons.values())
    # One decision per new evolution; none for the failed request, and none for the
    # verbatim copy of its parent (its id *is* the parent's: a drop would mark the parent).
    assert len(step.decisions) == 8
    assert not [d for d in step.decisions if d.item_id in {p.id for p in pool}]
    assert step.counts["eliminated_no_information_gain"] == 2 and step.counts["copies_of_pool_items"] == 1
    assert step.counts["failed"] == 1 and step.counts["answer_failed"] == 1
    # The pool keeps each eliminated evolution's parent (and the failed one's) in place.
    for parent, nxt in zip(pool, step.pool):
        case = case_of[parent.text]
        assert (nxt is parent) == (case not in ("long_sorry", "ok")), case
    # Copied wording and identical text are eliminated before any answer is requested.
    answered = {prompt_text(r).strip() for r in teacher.calls if r.tag == "evol_instruct.answer"}
    assert evolved["copy"] not in answered and evolved["identical"] not in answered
    assert {s.instruction_id for s in step.samples} == {i.id for i in step.instructions}


async def test_failed_parent_is_evolved_again_next_round():
    calls = []

    def script(req):
        if req.tag == "evol_instruct.equality":
            return "Equal"  # nothing ever gains information
        if req.tag == "evol_instruct.answer":
            return "An answer."
        calls.append(req.sample_index)
        return given(req) + " In detail."

    pool = [Instruction(text="Describe a sunrise.", method="seed")]
    runner = EvolRunner(pool, EvolInstructConfig(rounds=3), run_name="t", batch_size=8)
    result = await drive(runner, ScriptedTeacher(script))
    assert result.instructions == [] and runner.next_pool == pool and calls == [0, 1, 2]
    assert result.counts["eliminated_no_information_gain"] == 3


def test_helpers_and_config():
    assert parse_equality("Not Equal") is False and parse_equality("equal.") is True
    assert parse_equality("I think so") is None
    assert is_apology("Sorry, I can't.") and not is_apology("Sorry " + "word " * 90)
    assert not is_apology("I cannot do that.")
    assert is_stop_words_only("It is what it is!") and is_stop_words_only("...")
    assert not is_stop_words_only("It is 42.")
    with pytest.raises(ValidationError):
        EvolInstructConfig(operators=["shrink"])
    with pytest.raises(ValidationError):
        EvolInstructConfig(min_added_words=30, max_added_words=20)


async def test_no_equality_check():
    teacher = growing_teacher()
    pool = [Instruction(text="Write a riddle about time.", method="seed")]
    runner = EvolRunner(pool, EvolInstructConfig(rounds=1, check_information_gain=False), run_name="t",
                        batch_size=8)
    result = await drive(runner, teacher)
    assert len(result.instructions) == 1 and result.instructions[0].parent_id == Instruction.key_for(
        "Write a riddle about time.")
    assert not [r for r in teacher.calls if r.tag == "evol_instruct.equality"]
