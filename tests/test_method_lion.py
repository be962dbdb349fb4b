"""Lion's logic with scripted teachers: answers, the referee's swap-averaged gap and the
hard/easy threshold, seed sampling, and every generation filter with its reason."""

from __future__ import annotations

import asyncio
import random

import pytest
from pydantic import ValidationError

from filters.rouge import RougeNovelty
from generators.lion import (
    F_INSTRUCTION_WORD,
    F_LENGTH,
    F_ROUGE,
    F_START,
    F_STUDENT,
    F_TRUNCATED,
    LionPair,
    LionParams,
    LionSeed,
    aanswer,
    adiscriminate,
    agenerate_instructions,
    check_generated,
    classify,
    max_tokens_for,
    pick_seeds,
    student_exclusions,
)
from generators.teachers.base import Completion
from generators.teachers.scripted import ScriptedTeacher, prompt_text
from generators.templates import load_template
from storage.records import Instruction, LionJudgment, Sample


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------- answers


def test_teacher_and_student_answers_are_samples_of_their_own_method():
    instructions = [Instruction(text="Name a colour.", method="seed"), Instruction(text="Add 2 and 3.", method="seed")]
    params = LionParams(answer_max_tokens=64)
    teacher = ScriptedTeacher({"Name a colour.": "Blue.", "Add 2 and 3.": "5"}, model="teacher")
    out = run(aanswer(teacher, instructions, params, run_id="r"))
    assert [(s.response, s.method, s.teacher_model, s.system_prompt, s.run_id) for s in out.samples] == [
        ("Blue.", "lion", "teacher", params.system_prompt, "r"), ("5", "lion", "teacher", params.system_prompt, "r")]
    # The helpful-assistant system prompt and temperature 0.7 (the student samples at 0.7 too).
    req = teacher.calls[0]
    assert req.messages[0] == {"role": "system", "content": params.system_prompt}
    assert (req.params.temperature, req.params.max_tokens) == (0.7, 64)

    student = ScriptedTeacher({"Name a colour.": "Blue.", "Add 2 and 3.": "It is six."}, model="student-it1")
    answers = run(aanswer(student, instructions, params.model_copy(update={"student_temperature": 0.5}),
                          student=True)).samples
    assert {s.method for s in answers} == {"lion-student"} and student.calls[0].params.temperature == 0.5
    # The student's answers are kept out of kept_samples, except one that is word for word
    # the teacher's (the same sample: it stays the teacher's).
    decisions = student_exclusions(answers, keep={out.samples[0].id}, run_id="r")
    assert [(d.item_id, d.filter, d.kept, d.reason) for d in decisions] == [
        (answers[1].id, F_STUDENT, False, "student_answer")]
    assert answers[0].id == out.samples[0].id


# --------------------------------------------------------------------------- discrimination

TEACHER = "teacher-answer"
STUDENT = "student-answer"
# Per question: (verdict with the teacher's answer first, verdict with the student's first).
VERDICTS = {
    "q-hard": ("9 5\nThe first is right.", "6 8\nThe second is right."),  # teacher 8.5, student 5.5: gap 3
    "q-edge": ("8 7\nClose.", "7 8\nClose."),  # teacher 8, student 7: gap exactly 1.0, hard
    "q-easy": ("7 6\nBoth fine.", "7 7\nBoth fine."),  # teacher 7, student 6.5: gap 0.5
    "q-biased": ("9 4\nThe first.", "9 4\nThe first."),  # a position-biased referee: averages to a tie
    "q-student": ("5 8\nThe second.", "9 4\nThe first."),  # the student is better: gap -4
    "q-retry": ("I cannot decide.", "6 6\nEqual."),  # the first order parses on its second attempt
    "q-never": ("Score: 8/10", "7 7\nEqual."),  # one order never names two scores
}
RETRIED = "6 9\nThe second."


def _referee_script(req) -> str:
    text = prompt_text(req)
    question = text.split("[Question]\n", 1)[1].split("\n", 1)[0]
    teacher_first = text.index(f"{TEACHER} {question}") < text.index(f"{STUDENT} {question}")
    verdict = VERDICTS[question][0 if teacher_first else 1]
    if question == "q-retry" and teacher_first and req.sample_index > 0:
        return RETRIED
    return verdict


def _pairs() -> list[LionPair]:
    pairs = []
    for question in VERDICTS:
        ins = Instruction(text=question, method="seed")
        pairs.append(LionPair(ins, Sample(instruction_id=ins.id, response=f"{TEACHER} {question}", teacher_model="t"),
                              Sample(instruction_id=ins.id, response=f"{STUDENT} {question}", teacher_model="s")))
    return pairs


def test_swap_averaging_and_threshold_classify_a_hand_made_set_exactly():
    referee = ScriptedTeacher(_referee_script, model="referee")
    params = LionParams(judge={"verdict_order": "scores_first", "max_retries": 1})
    judgments = run(adiscriminate(referee, _pairs(), params, iteration=2, run_id="run", flow_run_id="flow"))
    got = {j.instruction_id: (j.ok, j.teacher_score, j.student_score, j.gap, j.label) for j in judgments}
    key = Instruction.key_for
    assert got == {
        key("q-hard"): (True, 8.5, 5.5, 3.0, "hard"),
        key("q-edge"): (True, 8.0, 7.0, 1.0, "hard"),  # gap == threshold: hard
        key("q-easy"): (True, 7.0, 6.5, 0.5, "easy"),
        key("q-biased"): (True, 6.5, 6.5, 0.0, "easy"),  # each order alone says 'hard'
        key("q-student"): (True, 4.5, 8.5, -4.0, "easy"),
        key("q-retry"): (True, 6.0, 7.5, -1.5, "easy"),  # (6 + 6) / 2 vs (9 + 6) / 2
        key("q-never"): (False, None, None, None, None),  # never invented
    }
    by_question = {j.instruction_id: j for j in judgments}
    hard = by_question[key("q-hard")]
    # Each order's scores per answer: 'ab' shows the teacher's answer first.
    assert (hard.ab_teacher_score, hard.ab_student_score, hard.ba_teacher_score, hard.ba_student_score) == (
        9.0, 5.0, 8.0, 6.0)
    assert (hard.ab_text, hard.ba_text) == VERDICTS["q-hard"]
    assert (hard.run_id, hard.iteration, hard.flow_run_id, hard.threshold) == ("run", 2, "flow", 1.0)
    assert (hard.referee_model, hard.teacher_model, hard.student_model) == ("referee", "t", "s")
    assert hard.template_version == "judge_pairwise_scores_first@1"
    never = by_question[key("q-never")]
    assert never.error == "unparseable verdict after 2 attempts" and never.ab_text == "Score: 8/10"
    assert by_question[key("q-retry")].ab_text == RETRIED
    # Two orders of seven pairs, plus one retry each for q-retry's and q-never's first order.
    assert len(referee.calls) == 16
    assert all(isinstance(j, LionJudgment) for j in judgments)


def test_classify_at_any_threshold():
    assert [classify(g, 1.0) for g in (None, -2.0, 0.99, 1.0, 4.5)] == [None, "easy", "easy", "hard", "hard"]
    assert classify(0.0, 0.0) == "hard"


# --------------------------------------------------------------------------- generation


def _judged(label: str, text: str) -> tuple[LionJudgment, Instruction]:
    ins = Instruction(text=text, method="seed")
    return LionJudgment(run_id="r", iteration=1, instruction_id=ins.id, teacher_sample="a", student_sample="b",
                        referee_model="j", ok=label != "failed", threshold=1.0,
                        label=None if label == "failed" else label, template_version="t@1"), ins


def test_pick_seeds_keeps_the_counts_and_the_ratio():
    rows = [_judged("hard", f"Hard task number {i}") for i in range(2)] + [
        _judged("easy", f"Easy task number {i}") for i in range(5)] + [_judged("failed", "Failed task")]
    judgments, instructions = [j for j, _ in rows], {i.id: i for _, i in rows}
    seeds = pick_seeds(judgments, instructions, LionParams(hard_per_iteration=3, easy_per_iteration=3),
                       random.Random(0))
    assert [s.origin for s in seeds] == ["hard"] * 3 + ["easy"] * 3
    hard = seeds[:3]
    # Two hard instructions for three requests: one is used again, as a new sample.
    assert len({s.instruction.id for s in hard}) == 2 and sorted(s.sample_index for s in hard) == [0, 0, 1]
    assert len({s.instruction.id for s in seeds[3:]}) == 3 and all(s.instruction.text.startswith("Easy")
                                                                   for s in seeds[3:])
    assert "Failed task" not in {s.instruction.text for s in seeds}
    again = pick_seeds(judgments, instructions, LionParams(hard_per_iteration=3, easy_per_iteration=3),
                       random.Random(0))
    assert again == seeds  # a resumed run draws the same seeds
    assert pick_seeds(judgments, instructions, LionParams(hard_per_iteration=0, easy_per_iteration=2),
                      random.Random(0))[0].origin == "easy"
    assert pick_seeds([], {}, LionParams(), random.Random(0)) == []


CACHE_POOL = ["Give three tips for keeping houseplants alive in winter.", "Explain why the sky is blue."]
SEEDS = {
    # seed text -> what the generator answers (a Completion to script a cut-off reply)
    "Explain how a bicycle gear works.": "Write a new instruction that explains how a car clutch works.",
    "Describe the life cycle of a frog.": Completion(key="", ok=True, text="Describe the life cycle of a",
                                                     finish_reason="length"),
    "List four farm animals.": "Name three birds.",
    "Summarize the plot of a fairy tale.": '"Summarize the plot of a famous opera."',
    "Translate a greeting into French.": "Écrivez trois salutations en français, s'il vous plaît.",
    "Give three tips for growing tomatoes.": "Give three tips for keeping houseplants alive in summer.",
    "Suggest a name for a bakery.": "Suggest five catchy names for a small neighbourhood bakery.",
    "Suggest a name for a cafe.": "Suggest five catchy names for a small neighbourhood bakery shop.",
    "Explain what a rainbow is.": "Explain why the sky is blue.",  # a pool instruction word for word
}


def _generator_script(req) -> str | Completion:
    text = prompt_text(req)
    for seed, reply in SEEDS.items():
        if seed in text:
            return reply
    raise KeyError(text)


def test_each_generation_filter_drops_its_bad_case_with_its_reason():
    seeds = [LionSeed(Instruction(text=t, method="seed"), "hard" if k % 2 == 0 else "easy")
             for k, t in enumerate(SEEDS)]
    novelty = RougeNovelty(0.7)
    novelty.extend(CACHE_POOL)
    generator = ScriptedTeacher(_generator_script, model="gen")
    params = LionParams()
    pool_ids = {Instruction.key_for(t) for t in CACHE_POOL}
    out = run(agenerate_instructions(generator, seeds, params, novelty=novelty, iteration=3, known_ids=pool_ids,
                                     run_id="r"))

    decisions = {d.item_id: (d.filter, d.kept, d.reason) for d in out.decisions}
    by_text = {Instruction.key_for(t if isinstance(t, str) else t.text).strip(): t for t in SEEDS.values()}
    expected = {
        "Write a new instruction that explains how a car clutch works.": (F_INSTRUCTION_WORD, False,
                                                                          "mentions_instruction"),
        "Describe the life cycle of a": (F_TRUNCATED, False, "cut_by_length"),
        "Name three birds.": (F_LENGTH, False, "too_short"),
        '"Summarize the plot of a famous opera."': (F_START, False, "starts_with_punctuation"),
        "Écrivez trois salutations en français, s'il vous plaît.": (F_START, False, "starts_non_ascii"),
        "Give three tips for keeping houseplants alive in summer.": (F_ROUGE, False, "too_similar"),  # vs the pool
        "Suggest five catchy names for a small neighbourhood bakery.": (F_ROUGE, True, ""),
        # vs what this iteration generated just before it
        "Suggest five catchy names for a small neighbourhood bakery shop.": (F_ROUGE, False, "too_similar"),
    }
    assert decisions == {Instruction.key_for(t): v for t, v in expected.items()}
    assert len(by_text) == len(SEEDS)
    # The copy of a pool instruction is counted, not decided (a drop would mark the pool's instruction dropped).
    assert Instruction.key_for("Explain why the sky is blue.") not in decisions
    assert out.counts == {"copies_of_pool_items": 1, "dropped_cut_by_length": 1, "dropped_mentions_instruction": 1,
                          "dropped_starts_non_ascii": 1, "dropped_starts_with_punctuation": 1,
                          "dropped_too_short": 1, "dropped_too_similar": 3, "kept": 1, "kept_hard": 1,
                          "requests": 9}

    (kept,) = out.instructions
    parent = seeds[6].instruction
    assert (kept.text, kept.method, kept.parent_id, kept.operator, kept.round, kept.run_id, kept.teacher_model) == (
        "Suggest five catchy names for a small neighbourhood bakery.", "lion", parent.id, "hard", 3, "r", "gen")
    assert kept.template_version == "lion_hard@1" and 0 < kept.metadata["rouge_l_max"] <= 0.7
    assert kept.sampling_params == {"temperature": 1.0, "top_p": 1.0, "max_tokens": 4 * 6}  # 4 x the seed's words
    assert {r.metadata["reason"] for r in out.rejected} == {
        "mentions_instruction", "cut_by_length", "too_short", "starts_with_punctuation", "starts_non_ascii",
        "too_similar"}
    assert all(r.parent_id and r.method == "lion" for r in out.rejected)
    # Hard and easy seeds get their own prompts, at temperature 1.0 with 4x the seed's words.
    hard_req, easy_req = generator.calls[0], generator.calls[1]
    assert "Explain how a bicycle gear works." in prompt_text(hard_req)
    assert prompt_text(hard_req) == load_template("lion_hard").render(seed="Explain how a bicycle gear works.")
    assert prompt_text(easy_req) == load_template("lion_easy").render(seed="Describe the life cycle of a frog.")
    assert (hard_req.params.temperature, hard_req.params.max_tokens) == (1.0, 24)


def test_check_generated_order_and_limits():
    novelty = RougeNovelty(0.7)
    params = LionParams()
    # The reference's order: the word 'instruction' first, even in a cut-off reply.
    assert check_generated("Instructions: bake", truncated=True, params=params, novelty=novelty)[1].reason == \
        "mentions_instruction"
    assert check_generated("Name four birds please.", truncated=False, params=params, novelty=novelty)[1].kept
    assert max_tokens_for("one two three", params) == 12
    assert max_tokens_for("one two three", LionParams(length_factor=2.5)) == 8


def test_templates_never_say_instruction():
    # A reply that says "instruction" is dropped, so the prompts avoid the word.
    for name in ("lion_hard", "lion_easy"):
        template = load_template(name)
        assert "instruction" not in template.text.lower()
        assert "$seed" in template.text and template.version == "1"


def test_params_defaults_and_checks():
    params = LionParams()
    assert (params.threshold, params.hard_per_iteration, params.easy_per_iteration) == (1.0, 16, 16)
    assert (params.answer_temperature, params.student_temperature, params.generation_temperature) == (0.7, 0.7, 1.0)
    assert params.judge.verdict_order == "scores_first" and params.judge.swap_positions
    # A judge section that does not name the order still gets Lion's (scores first).
    assert LionParams(judge={"max_retries": 4}).judge.verdict_order == "scores_first"
    assert LionParams(judge={"verdict_order": "explanation_first"}).judge.verdict_order == "explanation_first"
    with pytest.raises(ValidationError, match="larger than any gap on the referee's scale 1..10"):
        LionParams(threshold=9.5)
    with pytest.raises(ValidationError, match="Extra inputs"):
        LionParams(treshold=1.0)


def test_a_referee_that_did_not_answer_is_no_verdict():
    from generators.lion import unanswered

    def script(req):
        if "q-half" in prompt_text(req) and prompt_text(req).split("[Assistant 1's answer]\n", 1)[1].startswith(STUDENT):
            return Completion(key="", ok=False, error="http 503")  # the second order never answered
        return "I like both."  # the first order: answered, without two scores
    pairs = [p for p in _pairs() if p.instruction.text == "q-hard"]
    ins = Instruction(text="q-half", method="seed")
    pairs.append(LionPair(ins, Sample(instruction_id=ins.id, response=f"{TEACHER} q-half"),
                          Sample(instruction_id=ins.id, response=f"{STUDENT} q-half")))
    rows = run(adiscriminate(ScriptedTeacher(script, model="r"), pairs, LionParams(judge={"max_retries": 0}),
                             iteration=1, run_id="run"))
    assert [(r.ok, unanswered(r)) for r in rows] == [(False, False), (False, True)]
    assert rows[0].error == "unparseable verdict after 1 attempts"
    assert rows[1].error == "request failed: http 503 after 1 attempts"
