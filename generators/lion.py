"""Lion (Jiang et al. 2023, "Lion: Adversarial Distillation of Proprietary Large Language
Models"): the logic of one iteration of the adversarial loop, as plain functions.

1. **Imitation.** The teacher answers the Train Pool under a helpful-assistant system
   prompt at temperature 0.7 (``aanswer``); the flow fine-tunes the student on the pairs.
2. **Discrimination.** Teacher and student answer the Cache Pool (the student samples at
   0.7 too; ``aanswer(..., student=True)``). The referee, the pairwise judge
   (``generators.judge.ajudge_pairwise``, scores on the first line), scores both answers
   1-10 for helpfulness, relevance, accuracy and level of detail, twice with the positions
   swapped, and the two scores of each answer are averaged; an unparseable verdict is
   asked again and, if it never parses, stored as failed: never invented
   (``adiscriminate``). The gap d = teacher - student makes an instruction hard when
   d >= threshold (1.0), easy otherwise (``classify``).
3. **Generation.** ``pick_seeds`` draws the hard and easy instructions to build on (as
   many of each as configured, 1:1 by default). For a hard one the generator writes a new
   instruction of the same domain and task type, of similar length and difficulty
   (template ``lion_hard``); for an easy one, a new instruction of the same domain but
   rarer (``lion_easy``); temperature 1.0, at most 4x the seed's word count in tokens
   (``agenerate_instructions``). ``check_generated`` drops, with the reason recorded, a
   new instruction that mentions "instruction" (``mentions_instruction``), was cut by the
   token limit (``cut_by_length``), has 3 words or fewer (``too_short``), starts with
   punctuation or a non-ASCII character (``starts_with_punctuation``,
   ``starts_non_ascii``), or has ROUGE-L > 0.7 against the Cache Pool and what this
   iteration generated before it (``too_similar``, ``filters.rouge.RougeNovelty``).
4. The kept instructions join the Train Pool and the Cache Pool (the flow's part).

Every generated ``Instruction`` has method 'lion', ``parent_id`` the hard or easy
instruction it came from, ``operator`` 'hard' or 'easy' and ``round`` the iteration. The
teacher's answers are samples of method 'lion'; the student's, method 'lion-student', each
with a 'lion.student' decision (``student_exclusions``) so that no dataset selected from
``kept_samples`` (what curation selects by default) trains on a student's answer.

No Prefect and no database here (flows/lion.py persists what these return)::

    answers = await aanswer(teacher, train_pool, params)
    judgments = await adiscriminate(referee, pairs, params, iteration=1, run_id=run_id)
    seeds = pick_seeds(judgments, cache_pool_by_id, params, rng)
    novelty = RougeNovelty(params.rouge_threshold)
    novelty.extend(i.text for i in cache_pool)
    new = await agenerate_instructions(generator, seeds, params, novelty=novelty, iteration=1)
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.text import format_prompt
from filters import rouge
from filters.base import Decision, to_record
from filters.rouge import RougeNovelty
from generators.common import Counts, MethodResult, make_request, params_of
from generators.judge import JudgeConfig, PairwiseItem, PairwiseVerdict, ajudge_pairwise
from generators.responses import ResponsesConfig, ResponsesResult, agenerate_responses
from generators.teachers.base import Teacher
from generators.templates import load_template
from storage.records import FilterDecision, Instruction, LionJudgment, Sample

METHOD = "lion"  # instructions.method of generated instructions, samples.method of the teacher's answers
STUDENT_METHOD = "lion-student"  # samples.method of the student's answers
Origin = Literal["hard", "easy"]
TEMPLATES: dict[str, str] = {"hard": "lion_hard", "easy": "lion_easy"}

# filter_decisions.filter of each generation filter; the reasons are the API tests assert.
F_INSTRUCTION_WORD = "lion.instruction_word"  # reason 'mentions_instruction'
F_TRUNCATED = "lion.truncated"  # reason 'cut_by_length'
F_LENGTH = "lion.length"  # reason 'too_short'
F_START = "lion.start"  # reasons 'starts_with_punctuation', 'starts_non_ascii'
F_ROUGE = rouge.NAME  # reason 'too_similar'
F_STUDENT = "lion.student"  # reason 'student_answer': kept out of datasets

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, knowledgeable assistant. Answer the user's request accurately and clearly, "
    "with the detail it calls for.")


class LionParams(BaseModel):
    """The knobs of Lion's loop: the paper's values for the temperatures, the threshold, the
    generation length limit and the filters; counts per iteration sized for small runs (the
    paper asks for thousands of hard and easy ones, 1:1)."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System prompt of the teacher's and the "
                               "student's answers (a helpful assistant); the student trains with it too.")
    request_format: Literal["chat", "completion"] = Field("chat", description="Chat messages or plain "
                                                          "completions, for answers and generation.")
    answer_temperature: float = Field(0.7, ge=0, le=2, description="Temperature of the teacher's answers "
                                      "(Train Pool and Cache Pool).")
    student_temperature: float = Field(0.7, ge=0, le=2, description="Temperature of the student's answers "
                                       "(Cache Pool).")
    answer_max_tokens: int = Field(512, ge=1, description="Token limit of an answer, teacher's and student's.")
    judge: JudgeConfig = Field(
        default_factory=lambda: JudgeConfig(verdict_order="scores_first"),
        description="The referee's knobs (generators.judge.JudgeConfig): scores first, positions swapped and "
        "averaged, unparseable verdicts asked again max_retries times, temperature, max_tokens.")
    threshold: float = Field(1.0, ge=0, description="An instruction is hard when the teacher's score minus the "
                             "student's is at least this, easy otherwise.")
    hard_per_iteration: int = Field(16, ge=0, description="New instructions asked for from hard instructions per "
                                    "iteration (one request each; hard instructions are used in random order, "
                                    "some more than once when there are fewer).")
    easy_per_iteration: int = Field(16, ge=0, description="New instructions asked for from easy instructions per "
                                    "iteration (1:1 with hard_per_iteration in the paper).")
    generation_temperature: float = Field(1.0, ge=0, le=2, description="Temperature of generation.")
    generation_top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass of generation.")
    length_factor: float = Field(4.0, gt=0, description="A generation request may take at most this many tokens "
                                 "per word of the instruction it starts from; a reply cut there is dropped.")
    min_words: int = Field(4, ge=1, description="Fewest words a new instruction has ('too_short' below: the "
                           "paper drops 3 words or fewer).")
    rouge_threshold: float = Field(0.7, ge=0, le=1, description="Drop a new instruction whose ROUGE-L F1 against "
                                   "the Cache Pool or an instruction this iteration generated is above this.")

    @field_validator("judge", mode="before")
    @classmethod
    def _scores_first(cls, value: Any) -> Any:
        """Lion's referee writes the scores first: a judge section that does not say
        otherwise gets that order, not the generic judge's default."""
        if isinstance(value, dict):
            return {"verdict_order": "scores_first", **value}
        return value

    @model_validator(mode="after")
    def _threshold_on_scale(self) -> "LionParams":
        span = self.judge.max_score - self.judge.min_score
        if self.threshold > span:
            raise ValueError(f"threshold {self.threshold} is larger than any gap on the referee's scale "
                             f"{self.judge.min_score:g}..{self.judge.max_score:g}: no instruction could be hard")
        return self


# --------------------------------------------------------------------------- imitation


def answer_config(params: LionParams, *, student: bool = False) -> ResponsesConfig:
    """How the teacher (or the student) answers: one answer each, under the system prompt."""
    return ResponsesConfig(
        system_prompt=params.system_prompt, request_format=params.request_format,
        temperature=params.student_temperature if student else params.answer_temperature,
        max_tokens=params.answer_max_tokens, keep_truncated=True, retry_truncated=0)


async def aanswer(teacher: Teacher, instructions: Sequence[Instruction], params: LionParams, *,
                  student: bool = False, run_id: str | None = None) -> ResponsesResult:
    """One answer per instruction (``generators.responses``; an empty answer is asked
    again), as samples of method 'lion' (teacher) or 'lion-student' (student)."""
    result = await agenerate_responses(teacher, instructions, answer_config(params, student=student), run_id=run_id)
    method = STUDENT_METHOD if student else METHOD
    result.samples = [s.model_copy(update={"method": method}) for s in result.samples]
    return result


def student_exclusions(samples: Iterable[Sample], keep: Collection[str] = (), *,
                       run_id: str | None = None) -> list[FilterDecision]:
    """A 'lion.student' drop for each student answer, so ``kept_samples`` (what datasets
    are selected from) leaves it out; ``keep``: sample ids that are not only the student's
    (an answer word for word the teacher's is the same sample, and stays kept)."""
    return [FilterDecision(item_id=s.id, item_kind="sample", filter=F_STUDENT, kept=False, reason="student_answer",
                           run_id=run_id)
            for s in samples if s.id not in keep]


# --------------------------------------------------------------------------- discrimination


@dataclass(frozen=True)
class LionPair:
    """A Cache Pool instruction with the teacher's answer (A) and the student's (B)."""

    instruction: Instruction
    teacher: Sample
    student: Sample


def classify(gap: float | None, threshold: float) -> Origin | None:
    """'hard' when the teacher beat the student by at least ``threshold``, else 'easy';
    None when there is no gap (the verdict failed)."""
    if gap is None:
        return None
    return "hard" if gap >= threshold else "easy"


def judgment(verdict: PairwiseVerdict, pair: LionPair, *, iteration: int, threshold: float, referee_model: str,
             run_id: str, flow_run_id: str | None = None) -> LionJudgment:
    """The stored row of one verdict: both orders' raw text and scores (``ab``: the teacher's
    answer shown first), the averages, the gap and the label."""
    row = verdict.to_judgment(instruction_id=pair.instruction.id, sample_a=pair.teacher.id,
                              sample_b=pair.student.id, model_a=pair.teacher.teacher_model,
                              model_b=pair.student.teacher_model, judge_model=referee_model)
    gap = verdict.gap
    # Name a failed request first, whichever order it was in: the referee did not answer.
    error = next((c.error for c in verdict.calls if c.error and c.error.startswith(_NO_ANSWER)), verdict.error)
    return LionJudgment(
        run_id=run_id, iteration=iteration, instruction_id=pair.instruction.id, teacher_sample=pair.teacher.id,
        student_sample=pair.student.id, teacher_model=pair.teacher.teacher_model,
        student_model=pair.student.teacher_model, referee_model=referee_model, ok=verdict.ok,
        teacher_score=verdict.score_a, student_score=verdict.score_b, gap=gap, threshold=threshold,
        label=classify(gap, threshold), ab_teacher_score=row.ab_score_a, ab_student_score=row.ab_score_b,
        ab_text=row.ab_text, ab_request_key=row.ab_request_key, ba_teacher_score=row.ba_score_a,
        ba_student_score=row.ba_score_b, ba_text=row.ba_text, ba_request_key=row.ba_request_key,
        error=error, template_version=verdict.template_version, flow_run_id=flow_run_id)


_NO_ANSWER = "request failed"  # generators.judge's error for a call whose requests failed


def unanswered(row: LionJudgment) -> bool:
    """The referee did not answer (its requests failed, in either order): no verdict, and
    the pair is to be judged again; unlike a verdict it gave without two scores."""
    return not row.ok and (row.error or "").startswith(_NO_ANSWER)


async def adiscriminate(referee: Teacher, pairs: Sequence[LionPair], params: LionParams, *, iteration: int,
                        run_id: str, flow_run_id: str | None = None) -> list[LionJudgment]:
    """The referee's verdict on every pair (the teacher's answer is answer A), classified."""
    items = [PairwiseItem(id=p.instruction.id, question=format_prompt(p.instruction.text, p.instruction.input),
                          answer_a=p.teacher.response, answer_b=p.student.response) for p in pairs]
    verdicts = await ajudge_pairwise(referee, items, params.judge)
    return [judgment(v, p, iteration=iteration, threshold=params.threshold, referee_model=referee.model,
                     run_id=run_id, flow_run_id=flow_run_id) for v, p in zip(verdicts, pairs)]


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class LionSeed:
    """An instruction to build a new one on; ``sample_index`` > 0 when it is used again."""

    instruction: Instruction
    origin: Origin
    sample_index: int = 0


def pick_seeds(judgments: Iterable[LionJudgment], instructions: Mapping[str, Instruction], params: LionParams,
               rng: random.Random) -> list[LionSeed]:
    """``hard_per_iteration`` seeds from the hard instructions and ``easy_per_iteration``
    from the easy ones, each list in random order, cycled when it is shorter (a repeat is
    a new sample of the same prompt). Deterministic for a given ``rng`` state."""
    labelled: dict[str, list[str]] = {"hard": [], "easy": []}
    for j in judgments:
        if j.label is not None:
            labelled[j.label].append(j.instruction_id)
    seeds: list[LionSeed] = []
    for origin, count in (("hard", params.hard_per_iteration), ("easy", params.easy_per_iteration)):
        ids = sorted(set(labelled[origin]))
        rng.shuffle(ids)
        for k in range(count if ids else 0):
            seeds.append(LionSeed(instructions[ids[k % len(ids)]], origin, sample_index=k // len(ids)))
    return seeds


def max_tokens_for(seed_text: str, params: LionParams) -> int:
    """The token limit of a generation request: ``length_factor`` x the seed's word count."""
    return max(1, math.ceil(params.length_factor * len(seed_text.split())))


def check_generated(text: str, *, truncated: bool, params: LionParams, novelty: RougeNovelty,
                    add: bool = True) -> tuple[str, Decision]:
    """Lion's filters in the reference's order; (filter name, decision) of the first that
    drops ``text``, else the ROUGE-L decision (kept, with its score). With ``add`` a kept
    text joins the novelty pool at once (later ones are compared with it too)."""
    if "instruction" in text.lower():
        return F_INSTRUCTION_WORD, Decision.drop("mentions_instruction")
    if truncated:
        return F_TRUNCATED, Decision.drop("cut_by_length")
    n_words = len(text.split())
    if n_words < params.min_words:
        return F_LENGTH, Decision.drop("too_short", n_words)
    if text[0] in string.punctuation:
        return F_START, Decision.drop("starts_with_punctuation")
    if not text[0].isascii():
        return F_START, Decision.drop("starts_non_ascii")
    return F_ROUGE, (novelty.check_and_add(text) if add else novelty.check(text))


@dataclass
class GenerationResult(MethodResult):
    """New instructions (kept), the dropped ones (``rejected``, their ``metadata`` names the
    filter and reason) and a decision for each (kept ones carry their ROUGE-L score)."""


async def agenerate_instructions(generator: Teacher, seeds: Sequence[LionSeed], params: LionParams, *,
                                 novelty: RougeNovelty, iteration: int, known_ids: Collection[str] = (),
                                 run_id: str | None = None) -> GenerationResult:
    """One generation request per seed, in one batch; every reply filtered in seed order.

    ``novelty`` holds the Cache Pool's texts; kept instructions join it as they are kept.
    ``known_ids``: the pools' instruction ids; a reply that is one of them word for word is
    counted (``copies_of_pool_items``) but gets no decision, which would mark the existing
    instruction dropped."""
    counts = Counts()
    requests, refs = [], []
    for seed in seeds:
        template = load_template(TEMPLATES[seed.origin])
        text = format_prompt(seed.instruction.text, seed.instruction.input)
        requests.append(make_request(
            params.request_format, template.render(seed=text), sample_index=seed.sample_index,
            tag=f"lion.{seed.origin}", temperature=params.generation_temperature, top_p=params.generation_top_p,
            max_tokens=max_tokens_for(text, params)))
        refs.append(template.ref)
    counts.inc("requests", len(requests))
    completions = await generator.agenerate(requests) if requests else []

    result = GenerationResult()
    known = set(known_ids)
    for seed, request, ref, done in zip(seeds, requests, refs, completions):
        text = (done.text or "").strip() if done.ok else ""
        if not text:
            counts.inc("failed" if not done.ok else "empty")
            continue
        name, decision = check_generated(text, truncated=done.truncated, params=params, novelty=novelty)
        new = Instruction(text=text, method=METHOD, parent_id=seed.instruction.id, operator=seed.origin,
                          round=iteration, request_key=done.key, teacher_model=generator.model,
                          template_version=ref, sampling_params=params_of(generator, request), run_id=run_id,
                          metadata={"finish_reason": done.finish_reason})
        if name == F_ROUGE:
            new.metadata["rouge_l_max"] = decision.score
        if not decision.kept and new.id in known:
            counts.inc(f"dropped_{decision.reason}")
            counts.inc("copies_of_pool_items")
            continue
        result.decisions.append(to_record(decision, item_id=new.id, filter=name, item_kind="instruction",
                                          run_id=run_id))
        if not decision.kept:
            counts.inc(f"dropped_{decision.reason}")
            new.metadata.update(rejected_by=name, reason=decision.reason)
            result.rejected.append(new)
            continue
        known.add(new.id)
        result.instructions.append(new)
        counts.inc(f"kept_{seed.origin}")
    counts.inc("kept", len(result.instructions))
    result.counts = counts.as_dict()
    return result
