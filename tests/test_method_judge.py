"""LLM-as-judge: verdict parsing, position swap and averaging, retries, single scores."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from generators.judge import (
    JudgeConfig,
    PairwiseItem,
    SingleItem,
    ajudge_pairwise,
    ajudge_single,
    parse_pairwise,
    parse_single,
)
from generators.teachers.base import Completion
from generators.teachers.scripted import ScriptedTeacher, prompt_text


def first_answer(req) -> str:
    return prompt_text(req).split("[Assistant 1's answer]\n", 1)[1].split("\n[End", 1)[0]


def test_parse_verdicts():
    assert parse_pairwise("Both fine, A clearer.\nScores: 8 6") == ((8.0, 6.0), "Both fine, A clearer.")
    assert parse_pairwise("Reasons.\n**Scores:** 7.5/10, 9/10\n") == ((7.5, 9.0), "Reasons.")
    assert parse_pairwise("Reasons.\n8 6") == ((8.0, 6.0), "Reasons.")
    assert parse_pairwise("Scores: 8 and 6\nThanks.") == ((8.0, 6.0), "")
    assert parse_pairwise("Scores: 11 6") is None  # out of range
    assert parse_pairwise("I like the first one more.") is None
    assert parse_pairwise("") is None
    assert parse_single("Clear and correct.\nScore: 9") == (9.0, "Clear and correct.")
    assert parse_single("Fine.\n7/10") == (7.0, "Fine.")
    assert parse_single("Score: 0") is None and parse_single("good") is None


@pytest.mark.parametrize("text", [
    "Score: 8/10", "Scores: 8/10", "Reasons.\nScores: 8/10", "Scores: 8 / 10", "Score: 8 out of 10", "8/10",
    "Scores: 10/10", "Scores: 8/6",  # a slash is a scale, never a separator: 8/6 is no pair either
    "Assistant 1: 8", "Assistant 1: 8\nBoth are fine.", "Assistant 12: 8\nAssistant 2: 6",
])
def test_a_verdict_naming_one_score_is_not_a_pair(text):
    assert parse_pairwise(text) is None


@pytest.mark.parametrize("text, scores", [
    ("Scores: 8 6", (8.0, 6.0)),
    ("Scores: 8/10, 6/10", (8.0, 6.0)),
    ("Scores: 8/10 6/10", (8.0, 6.0)),
    ("Scores: 8 and 6", (8.0, 6.0)),
    ("Scores - 8; 6", (8.0, 6.0)),
    ("Score: 8 6", (8.0, 6.0)),
    ("Final scores: 8 and 6.", (8.0, 6.0)),
    ("Scores: 8 out of 10 and 6 out of 10", (8.0, 6.0)),
    ("8 6", (8.0, 6.0)),
    ("8, 6", (8.0, 6.0)),
    ("8/10, 6/10", (8.0, 6.0)),
    ("Assistant 1: 8\nAssistant 2: 6", (8.0, 6.0)),
    ("**Assistant 1**: 8/10\n**Assistant 2**: 6/10", (8.0, 6.0)),
    ("Assistant 1: 8/10, Assistant 2: 6/10", (8.0, 6.0)),
    ("Assistant 1's score: 8, Assistant 2's score: 6", (8.0, 6.0)),
])
def test_a_verdict_naming_two_scores_parses(text, scores):
    assert parse_pairwise("Why.\n" + text) == (scores, "Why.")


def test_scores_on_another_scale():
    assert parse_pairwise("Scores: 4/5 3/5", lo=1, hi=5) == ((4.0, 3.0), "")
    assert parse_pairwise("Scores: 4/5", lo=1, hi=5) is None


async def test_pairwise_swaps_positions_and_averages():
    # A position-biased judge: always +2 for whatever is shown first.
    base = {"teacher answer": 8, "student answer": 5}

    def script(req):
        first = first_answer(req)
        second = next(a for a in base if a != first)
        return f"Explanation here.\nScores: {min(10, base[first] + 2)} {base[second]}"

    teacher = ScriptedTeacher(script)
    item = PairwiseItem(id="s1", question="Q?", answer_a="teacher answer", answer_b="student answer")
    [v] = await ajudge_pairwise(teacher, [item])
    assert v.ok and v.id == "s1" and v.winner == "a"
    assert (v.score_a, v.score_b) == (9.0, 6.0)  # (10 + 8) / 2 and (5 + 7) / 2
    assert v.gap == 3.0
    assert [c.scores for c in v.calls] == [(10.0, 5.0), (7.0, 8.0)]
    assert [first_answer(r) for r in teacher.calls] == ["teacher answer", "student answer"]
    assert v.template_version == "judge_pairwise@1" and all(c.explanation == "Explanation here." for c in v.calls)
    assert teacher.calls[0].params.temperature == 0.0

    row = v.to_judgment(instruction_id="i", sample_a="sa", sample_b="sb", model_a="t", model_b="s",
                        judge_model="j", run_id="r")
    assert (row.ok, row.score_a, row.score_b, row.winner, row.error) == (True, 9.0, 6.0, "a", None)
    # Scores per answer in each order: A got 10 shown first, 8 shown second.
    assert (row.ab_score_a, row.ab_score_b, row.ba_score_a, row.ba_score_b) == (10.0, 5.0, 8.0, 7.0)
    assert row.ab_text == "Explanation here.\nScores: 10 5" and row.ba_text == "Explanation here.\nScores: 7 8"
    assert (row.ab_request_key, row.ba_request_key) == (v.calls[0].request_key, v.calls[1].request_key)
    assert row.template_version == "judge_pairwise@1" and row.run_id == "r"

    [v] = await ajudge_pairwise(ScriptedTeacher(script), [item], JudgeConfig(swap_positions=False))
    assert (v.score_a, v.score_b, len(v.calls)) == (10.0, 5.0, 1)
    row = v.to_judgment(instruction_id="i", sample_a="sa", sample_b="sb", model_a="t", model_b="s", judge_model="j")
    assert (row.ab_score_a, row.ba_score_a, row.ba_text) == (10.0, None, None)


def test_parse_scores_first():
    first = dict(order="scores_first")
    assert parse_pairwise("8 6\nThe first answer is more detailed.", **first) == (
        (8.0, 6.0), "The first answer is more detailed.")
    assert parse_pairwise("\nScores: 8/10, 6/10\nWhy.\nMore why.", **first) == ((8.0, 6.0), "Why.\nMore why.")
    assert parse_pairwise("Assistant 1: 8\nAssistant 2: 6\nWhy.", **first) == ((8.0, 6.0), "Why.")
    assert parse_pairwise("7.5 9", **first) == ((7.5, 9.0), "")
    # The scores belong on the first line: an explanation-first verdict does not parse in
    # this mode, nor does one score.
    assert parse_pairwise("The first is better.\nScores: 8 6", **first) is None
    assert parse_pairwise("8/10\nGood.", **first) is None
    assert parse_pairwise("11 6\nWhy.", **first) is None


async def test_scores_first_template_swaps_and_averages():
    base = {"teacher answer": 8, "student answer": 5}

    def script(req):  # position-biased, scores on the first line
        first = first_answer(req)
        second = next(a for a in base if a != first)
        return f"{min(10, base[first] + 2)} {base[second]}\nThe first one is better."

    teacher = ScriptedTeacher(script)
    item = PairwiseItem(id="s1", question="Q?", answer_a="teacher answer", answer_b="student answer")
    config = JudgeConfig(verdict_order="scores_first")
    [v] = await ajudge_pairwise(teacher, [item], config)
    assert v.ok and (v.score_a, v.score_b, v.winner) == (9.0, 6.0, "a")
    assert [c.scores for c in v.calls] == [(10.0, 5.0), (7.0, 8.0)]
    assert v.template_version == "judge_pairwise_scores_first@1"
    assert all(c.explanation == "The first one is better." for c in v.calls)
    prompt = prompt_text(teacher.calls[0])
    assert "Begin your reply with a line holding only the two scores" in prompt
    assert "\n<score of Assistant 1> <score of Assistant 2>\n" in prompt and "Scores: <score of" not in prompt
    assert [first_answer(r) for r in teacher.calls] == ["teacher answer", "student answer"]

    # A judge that ignores the order and explains first is asked again, then fails.
    late = ScriptedTeacher(lambda r: "The first one is better.\nScores: 8 6")
    [v] = await ajudge_pairwise(late, [item], JudgeConfig(verdict_order="scores_first", max_retries=1))
    assert not v.ok and v.error == "unparseable verdict after 2 attempts" and len(late.calls) == 4


async def test_tie():
    [v] = await ajudge_pairwise(ScriptedTeacher(lambda r: "Same.\nScores: 6 6"),
                         [PairwiseItem(question="Q", answer_a="x", answer_b="y")])
    assert v.winner == "tie" and v.score_a == v.score_b == 6.0


async def test_unparseable_verdict_is_retried_with_a_new_sample_then_fails():
    def script(req):
        # The first order parses only on its second try; the swapped order never does.
        if first_answer(req) == "one":
            return "Scores: 7 4" if req.sample_index == 1 else "Hmm, hard to say."
        return Completion(key="", ok=False, error="http 500") if req.sample_index == 0 else "No scores here."

    teacher = ScriptedTeacher(script)
    [v] = await ajudge_pairwise(teacher, [PairwiseItem(question="Q", answer_a="one", answer_b="two")],
                         JudgeConfig(max_retries=2))
    assert not v.ok and v.score_a is None and v.winner is None
    assert v.calls[0].ok and v.calls[0].attempts == 2 and v.calls[0].scores == (7.0, 4.0)
    assert not v.calls[1].ok and v.calls[1].attempts == 3
    assert v.error == "unparseable verdict after 3 attempts"
    row = v.to_judgment(instruction_id="i", sample_a="sa", sample_b="sb", model_a="t", model_b="s", judge_model="j")
    assert (row.ok, row.score_a, row.winner, row.error) == (False, None, None, "unparseable verdict after 3 attempts")
    assert (row.ab_score_a, row.ab_score_b, row.ba_score_a, row.ba_text) == (7.0, 4.0, None, "No scores here.")
    retries = [r for r in teacher.calls if r.sample_index > 0]
    assert {r.params.temperature for r in retries} == {0.7}
    assert sorted(r.sample_index for r in teacher.calls) == [0, 0, 1, 1, 2]
    assert len({teacher.key(r) for r in teacher.calls}) == 5  # every retry is its own ledger key


async def test_single_scoring_and_decision():
    scores = {"good answer": "Accurate and detailed.\nScore: 8", "weak answer": "Vague.\nScore: 3",
              "broken": "I refuse to rate."}
    teacher = ScriptedTeacher(lambda r: scores[prompt_text(r).split("[Assistant's answer]\n")[1].split("\n[End")[0]])
    items = [SingleItem(id=k, question="Q", answer=k) for k in scores]
    verdicts = await ajudge_single(teacher, items, JudgeConfig(max_retries=1))
    assert [(v.id, v.ok, v.score) for v in verdicts] == [
        ("good answer", True, 8.0), ("weak answer", True, 3.0), ("broken", False, None)]
    assert verdicts[0].explanation == "Accurate and detailed." and verdicts[2].call.attempts == 2
    d = [v.to_decision(v.id, threshold=7) for v in verdicts]
    assert [(x.kept, x.reason, x.score) for x in d] == [(True, "", 8.0), (False, "low_score", 3.0),
                                                        (False, "judge_failed", None)]
    assert d[0].filter == "judge.single"


def test_config_validation():
    with pytest.raises(ValidationError):
        JudgeConfig(min_score=10, max_score=1)
    with pytest.raises(ValidationError, match="verdict_order"):
        JudgeConfig(verdict_order="scores_last")
