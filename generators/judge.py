"""LLM-as-judge: the teacher scores answers from 1 to 10 (Zheng et al. 2023; Lion, Jiang et al. 2023).

- **Pairwise** (``ajudge_pairwise``): two answers to one question, each scored 1-10 for
  helpfulness, relevance, accuracy and level of detail. The judge writes its explanation
  first and the two scores on a last line ``Scores: <1> <2>`` (Zheng et al.), or, with
  ``verdict_order="scores_first"``, the two scores alone on its first line and the
  explanation after them (Lion's referee). A verdict counts only when it names two scores
  (``Score: 8/10`` is one score on a scale of 10, not the pair 8, 10). Judges favour a position,
  so each pair is judged twice with the answers swapped and the two scores of each answer
  are averaged. Lion's discrimination step uses the gap between teacher and student.
- **Single answer** (``ajudge_single``): one answer scored 1-10 (``Score: <n>``), e.g. for
  a quality filter: ``verdict.to_decision(sample.id, threshold=7)``.

A verdict that does not parse (or a failed request) is asked again, up to ``max_retries``
times, each retry a new sample (``sample_index`` 1, 2, ...: its own ledger key) at
``retry_temperature`` so a deterministic judge can answer differently; after that the
verdict is returned with ``ok=False`` and its error, never a made-up score.

    verdicts = await ajudge_pairwise(teacher, [PairwiseItem(question=q, answer_a=t, answer_b=s)])
    if verdicts[0].ok:
        print(verdicts[0].score_a, verdicts[0].score_b, verdicts[0].winner)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from generators.common import make_request
from generators.teachers.base import Teacher
from generators.templates import load_template
from storage.records import FilterDecision, PairwiseJudgment

_NUM = r"(\d+(?:\.\d+)?)"
# "8/10" and "8 out of 10" are ONE score and its scale: a slash never separates two scores
# (a judge's "Scores: 8/10" is not the pair (8, 10)), so "Scores: 8/6" does not parse either.
_OUT_OF = r"(?:\s*(?:/|\bout\s+of\b)\s*\d+(?:\.\d+)?)?"
_SEP = r"\s*(?:,|;|\band\b|\s)\s*"
_PAIR_LINE = re.compile(rf"scores?\s*[:=\-]?\s*\**\s*{_NUM}{_OUT_OF}{_SEP}{_NUM}", re.I)  # Scores: 8 6
_BARE_PAIR = re.compile(rf"^\W*{_NUM}{_OUT_OF}{_SEP}{_NUM}{_OUT_OF}\W*$", re.I)  # 8 6, 8/10, 6/10
_LABEL = r"assistant\s*{n}\b(?:'s)?(?:\s+score)?\W*"  # "Assistant 1:", "Assistant 1's score:"
_LABELLED_PAIR = re.compile(rf"^\W*(?:scores?\W*)?{_LABEL.format(n=1)}{_NUM}{_OUT_OF}\W*(?:and\W*)?"
                            rf"{_LABEL.format(n=2)}{_NUM}{_OUT_OF}\W*$", re.I)  # Assistant 1: 8, Assistant 2: 6
_LABELLED_ONE = {n: re.compile(rf"^\W*{_LABEL.format(n=n)}{_NUM}{_OUT_OF}\W*$", re.I) for n in (1, 2)}
_SINGLE_LINE = re.compile(rf"score\s*[:=\-]?\s*\**\s*{_NUM}(?:\s*/\s*10)?", re.I)
_BARE_SINGLE = re.compile(rf"^\W*{_NUM}\s*(?:/\s*10)?\W*$")


VerdictOrder = Literal["explanation_first", "scores_first"]
# The pairwise prompt of each verdict order (generators/templates/<name>.yaml).
PAIRWISE_TEMPLATES: dict[str, str] = {"explanation_first": "judge_pairwise",
                                      "scores_first": "judge_pairwise_scores_first"}


class JudgeConfig(BaseModel):
    """Knobs of the judge."""

    model_config = ConfigDict(extra="forbid")

    request_format: Literal["chat", "completion"] = Field("chat", description="Chat message or plain completion.")
    system_prompt: str | None = Field(None, description="Optional system prompt for the judge.")
    temperature: float = Field(0.0, ge=0, le=2, description="Temperature of the first verdict (0: deterministic).")
    retry_temperature: float = Field(0.7, ge=0, le=2, description="Temperature of retries after an "
                                     "unparseable verdict, so a deterministic judge can answer differently.")
    max_tokens: int = Field(512, ge=1, description="Token limit of a verdict (explanation and scores).")
    max_retries: int = Field(2, ge=0, description="k: how many times an unparseable verdict is asked again.")
    swap_positions: bool = Field(True, description="Pairwise: judge each pair in both orders and average.")
    verdict_order: VerdictOrder = Field(
        "explanation_first", description="Pairwise: where the judge puts the two scores. explanation_first: "
        "explanation, then 'Scores: <1> <2>' on the last line (template judge_pairwise, as in Zheng et al.); "
        "scores_first: '<1> <2>' alone on the first line, then the explanation (template "
        "judge_pairwise_scores_first, the order of Lion's referee). The parser reads that line.")
    min_score: float = Field(1, description="Lowest valid score; a verdict outside the range does not parse.")
    max_score: float = Field(10, description="Highest valid score.")

    @model_validator(mode="after")
    def _range(self) -> "JudgeConfig":
        if self.min_score >= self.max_score:
            raise ValueError("min_score must be below max_score")
        return self


class PairwiseItem(BaseModel):
    """Two answers to one question. ``id`` is the caller's (e.g. a sample id), echoed back."""

    id: str | None = None
    question: str
    answer_a: str
    answer_b: str


class SingleItem(BaseModel):
    id: str | None = None
    question: str
    answer: str


class JudgeCall(BaseModel):
    """One judged order (pairwise) or one single verdict, after its retries."""

    ok: bool
    scores: tuple[float, ...] | None = Field(None, description="Scores in the order the answers were shown.")
    explanation: str | None = None
    text: str | None = Field(None, description="The judge's last raw output.")
    request_key: str | None = None
    attempts: int = 0
    error: str | None = None


class PairwiseVerdict(BaseModel):
    """Averaged scores of answer A and answer B over both orders."""

    id: str | None = None
    ok: bool
    score_a: float | None = None
    score_b: float | None = None
    winner: Literal["a", "b", "tie"] | None = None
    calls: list[JudgeCall] = Field(description="As shown (A first), then swapped (B first), when swapping.")
    template_version: str
    error: str | None = None

    @property
    def gap(self) -> float | None:
        """score_a - score_b (Lion: a large gap marks a hard instruction for the student)."""
        return None if not self.ok else self.score_a - self.score_b

    def to_judgment(self, *, instruction_id: str, sample_a: str, sample_b: str, model_a: str | None,
                    model_b: str | None, judge_model: str, run_id: str | None = None) -> PairwiseJudgment:
        """The stored row: both orders' raw verdicts, their scores per answer, the averages
        (a failed verdict: ok false, its error, no scores)."""
        shown, swapped = self.calls[0], (self.calls[1] if len(self.calls) > 1 else None)
        per_order: dict[str, Any] = {}
        for prefix, call, a_at in (("ab", shown, 0), ("ba", swapped, 1)):
            if call is None:
                continue
            scores = call.scores if call.ok else None
            per_order |= {f"{prefix}_score_a": scores[a_at] if scores else None,
                          f"{prefix}_score_b": scores[1 - a_at] if scores else None,
                          f"{prefix}_text": call.text, f"{prefix}_request_key": call.request_key}
        return PairwiseJudgment(instruction_id=instruction_id, sample_a=sample_a, sample_b=sample_b,
                                model_a=model_a, model_b=model_b, judge_model=judge_model, ok=self.ok,
                                score_a=self.score_a, score_b=self.score_b, winner=self.winner,
                                error=self.error, template_version=self.template_version, run_id=run_id,
                                **per_order)


class SingleVerdict(BaseModel):
    id: str | None = None
    ok: bool
    score: float | None = None
    explanation: str | None = None
    call: JudgeCall
    template_version: str
    error: str | None = None

    def to_decision(self, item_id: str, threshold: float, *, filter: str = "judge.single",
                    run_id: str | None = None) -> FilterDecision:
        """Keep the item when its score is at least ``threshold`` ('low_score' / 'judge_failed')."""
        if not self.ok:
            return FilterDecision(item_id=item_id, filter=filter, kept=False, reason="judge_failed", run_id=run_id)
        kept = self.score >= threshold
        return FilterDecision(item_id=item_id, filter=filter, kept=kept, score=self.score,
                              reason="" if kept else "low_score", run_id=run_id)


# --------------------------------------------------------------------------- parsing


def _in_range(values: tuple[float, ...], lo: float, hi: float) -> bool:
    return all(lo <= v <= hi for v in values)


Match = Callable[[list[str], int], "tuple[tuple[float, ...], int] | None"]


def _pair_at(lines: list[str], i: int) -> tuple[tuple[float, ...], int] | None:
    """The two scores a verdict names at line ``i`` and how many lines they take: one line
    (``Scores: 8 6``, ``8/10, 6/10``, ``Assistant 1: 8, Assistant 2: 6``) or two
    (``Assistant 1: 8`` then ``Assistant 2: 6``). A line naming one score is no pair."""
    line = lines[i].strip()
    m = _PAIR_LINE.search(line) or _BARE_PAIR.match(line) or _LABELLED_PAIR.match(line)
    if m:
        return (float(m.group(1)), float(m.group(2))), 1
    if i + 1 < len(lines):
        first, second = _LABELLED_ONE[1].match(line), _LABELLED_ONE[2].match(lines[i + 1].strip())
        if first and second:
            return (float(first.group(1)), float(second.group(1))), 2
    return None


def _single_at(lines: list[str], i: int) -> tuple[tuple[float, ...], int] | None:
    m = _SINGLE_LINE.search(lines[i]) or _BARE_SINGLE.match(lines[i].strip())
    return ((float(m.group(1)),), 1) if m else None


def _split_last(text: str, match: Match) -> tuple[tuple[float, ...], str] | None:
    """Scores on (one of) the last lines, and the explanation above them."""
    lines = (text or "").strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        got = match(lines, i)
        if got:
            return got[0], "\n".join(lines[:i]).strip()
        if lines[i].strip() and i < len(lines) - 1 - 2:
            break  # the scores belong on (one of) the last lines
    return None


def _split_first(text: str, match: Match) -> tuple[tuple[float, ...], str] | None:
    """Scores on the first non-empty line (Lion's referee), and the explanation below them."""
    lines = (text or "").strip().splitlines()
    got = match(lines, 0) if lines else None
    if got is None:
        return None
    return got[0], "\n".join(lines[got[1]:]).strip()


def parse_pairwise(text: str, lo: float = 1, hi: float = 10,
                   order: VerdictOrder = "explanation_first") -> tuple[tuple[float, float], str] | None:
    """((score 1, score 2), explanation) from a verdict that names both scores: on (one of)
    its last lines (``explanation_first``) or its first line (``scores_first``), as
    ``Scores: 8 6``, ``Scores: 8/10, 6/10``, ``8 6`` or ``Assistant 1: 8`` / ``Assistant 2: 6``.
    None if it does not name two scores in range there (``Score: 8/10`` is one score)."""
    got = (_split_first if order == "scores_first" else _split_last)(text, _pair_at)
    if got is None or not _in_range(got[0], lo, hi):
        return None
    return (got[0][0], got[0][1]), got[1]


def parse_single(text: str, lo: float = 1, hi: float = 10) -> tuple[float, str] | None:
    """(score, explanation) from a verdict ending in ``Score: 7`` (or ``7/10``); None if none."""
    got = _split_last(text, _single_at)
    if got is None or not _in_range(got[0], lo, hi):
        return None
    return got[0][0], got[1]


# --------------------------------------------------------------------------- asking with retries


async def _ask(teacher: Teacher, prompts: Sequence[str], parse: Callable[[str], Any], config: JudgeConfig,
               tag: str) -> list[tuple[JudgeCall, Any]]:
    """Ask every prompt; re-ask the unparseable ones (new sample_index) up to max_retries times."""
    calls = [JudgeCall(ok=False) for _ in prompts]
    parsed: list[Any] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(config.max_retries + 1):
        if not pending:
            break
        temperature = config.temperature if attempt == 0 else config.retry_temperature
        requests = [make_request(config.request_format, prompts[i], system=config.system_prompt, sample_index=attempt,
                                 tag=tag, temperature=temperature, max_tokens=config.max_tokens) for i in pending]
        still = []
        for i, done in zip(pending, await teacher.agenerate(requests)):
            call = calls[i]
            call.attempts += 1
            call.request_key, call.text = done.key, done.text
            result = parse(done.text) if done.ok and done.text else None
            if result is None:
                call.error = f"request failed: {done.error}" if not done.ok else "unparseable verdict"
                still.append(i)
            else:
                call.ok, call.error = True, None
                parsed[i] = result
        pending = still
    for i in pending:
        calls[i].error = f"{calls[i].error} after {calls[i].attempts} attempts"
    return list(zip(calls, parsed))


async def ajudge_pairwise(teacher: Teacher, items: Sequence[PairwiseItem],
                          config: JudgeConfig | None = None) -> list[PairwiseVerdict]:
    """Score both answers of every item, in both orders when ``swap_positions``; one batch."""
    config = config or JudgeConfig()
    template = load_template(PAIRWISE_TEMPLATES[config.verdict_order])
    prompts = []
    for it in items:
        prompts.append(template.render(question=it.question, answer_1=it.answer_a, answer_2=it.answer_b))
        if config.swap_positions:
            prompts.append(template.render(question=it.question, answer_1=it.answer_b, answer_2=it.answer_a))
    answers = await _ask(teacher, prompts,
                         lambda t: parse_pairwise(t, config.min_score, config.max_score, config.verdict_order),
                         config, "judge.pairwise")
    per_item = 2 if config.swap_positions else 1
    verdicts = []
    for k, it in enumerate(items):
        mine = answers[k * per_item:(k + 1) * per_item]
        calls = []
        for call, parsed in mine:
            if parsed is not None:
                call.scores, call.explanation = parsed
            calls.append(call)
        failed = [c for c in calls if not c.ok]
        if failed:
            verdicts.append(PairwiseVerdict(id=it.id, ok=False, calls=calls, template_version=template.ref,
                                            error=failed[0].error))
            continue
        a_scores = [calls[0].scores[0]] + ([calls[1].scores[1]] if config.swap_positions else [])
        b_scores = [calls[0].scores[1]] + ([calls[1].scores[0]] if config.swap_positions else [])
        score_a, score_b = sum(a_scores) / len(a_scores), sum(b_scores) / len(b_scores)
        winner = "a" if score_a > score_b else "b" if score_b > score_a else "tie"
        verdicts.append(PairwiseVerdict(id=it.id, ok=True, score_a=score_a, score_b=score_b, winner=winner,
                                        calls=calls, template_version=template.ref))
    return verdicts


async def ajudge_single(teacher: Teacher, items: Sequence[SingleItem],
                        config: JudgeConfig | None = None) -> list[SingleVerdict]:
    """Score every answer 1-10, in one batch."""
    config = config or JudgeConfig()
    template = load_template("judge_single")
    prompts = [template.render(question=it.question, answer=it.answer) for it in items]
    answers = await _ask(teacher, prompts, lambda t: parse_single(t, config.min_score, config.max_score),
                         config, "judge.single")
    verdicts = []
    for it, (call, parsed) in zip(items, answers):
        if parsed is None:
            verdicts.append(SingleVerdict(id=it.id, ok=False, call=call, template_version=template.ref,
                                          error=call.error))
            continue
        call.scores, call.explanation = (parsed[0],), parsed[1]
        verdicts.append(SingleVerdict(id=it.id, ok=True, score=parsed[0], explanation=parsed[1], call=call,
                                      template_version=template.ref))
    return verdicts
