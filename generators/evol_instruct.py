"""Evol-Instruct (Xu et al. 2023, WizardLM): the teacher rewrites instructions to be harder.

Each round, every instruction in the pool gets one operator chosen at random:

- in depth (make it harder; the rewrite may add only 10-20 words): ``add_constraints``,
  ``deepening``, ``concretizing``, ``increase_reasoning``, ``complicate_input``;
- in breadth (``breadth``): a brand-new, rarer instruction in the same domain.

The teacher answers each evolved instruction, and the evolution is **eliminated** when:

- ``copied_prompt_wording``: it copies the evolving prompt's own words ("#Rewritten
  Prompt#", "given prompt", ...), checked first since it costs no request;
- ``no_information_gain``: the teacher judges it equal to its parent (same constraints,
  depth and breadth; an identical text needs no request);
- ``apology``: the answer is a short apology ("sorry" and fewer than 80 words), i.e. the
  evolved instruction is too hard or ill-posed;
- ``stop_words_only``: the answer is only punctuation and stop words;
- ``truncated`` / ``response_failed``: the rewrite was cut off, or no answer came back.

An eliminated evolution leaves its parent in the pool for the next round; a kept one
replaces its parent. Every evolved ``Instruction`` records ``parent_id``, ``operator`` and
``round``, so a chain is one recursive SQL query::

    with recursive chain as (select * from instructions where id = ?
        union all select i.* from instructions i join chain c on i.id = c.parent_id)
    select round, operator, text from chain order by round

``aevol_round`` evolves one batch once; ``EvolRunner`` drives all M rounds (default 4)
over a pool in batches, each round's survivors (or their parents) forming the next
round's pool, as the generate flow runs it::

    step = await aevol_round(teacher, instructions, EvolInstructConfig(), rng=rng, round=1)
    store.ingest(step.records)
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import InputError
from core.text import format_prompt
from generators.common import Batch, Counts, MethodResult, make_request, params_of, rng_for
from generators.teachers.base import Teacher
from generators.templates import load_template
from storage.records import FilterDecision, Instruction, Sample, normalize_text

IN_DEPTH: tuple[str, ...] = ("add_constraints", "deepening", "concretizing", "increase_reasoning", "complicate_input")
IN_BREADTH = "breadth"
OPERATORS: tuple[str, ...] = (*IN_DEPTH, IN_BREADTH)

FILTER = "evol_instruct.elimination"

#: Words of the evolving prompts (the paper's and ours) that an evolved instruction must not copy.
COPIED_PHRASES: tuple[str, ...] = (
    "#rewritten prompt#", "rewritten prompt", "#given prompt#", "given prompt", "#created prompt#",
    "created prompt", "prompt rewriter", "prompt creator", "make a prompt harder", "your version of the prompt",
)

#: English stop words, for the "answer is only punctuation and stop words" elimination.
STOP_WORDS: frozenset[str] = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't
my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't she she'd
she'll she's should shouldn't so some such than that that's the their theirs them themselves then there
there's these they they'd they'll they're they've this those through to too under until up very was wasn't we
we'd we'll we're we've were weren't what what's when when's where where's which while who who's whom why
why's will with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves yes ok okay
s t d ll m o re ve y just also well oh
""".split())


class EvolInstructConfig(BaseModel):
    """Knobs of Evol-Instruct; defaults follow the paper (WizardLM)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["evol_instruct"] = Field("evol_instruct", description="evol_instruct: the teacher rewrites "
                                             "instructions to be harder (WizardLM).")
    rounds: int = Field(4, ge=1, description="Evolution rounds M.")
    operators: list[str] = Field(default_factory=lambda: list(OPERATORS), description="Operators to choose "
                                 "from uniformly at random, per instruction per round: " + ", ".join(OPERATORS) + ".")
    request_format: Literal["chat", "completion"] = Field("chat", description="Send prompts as chat messages "
                                                          "(the paper used a chat model) or as plain completions.")
    system_prompt: str | None = Field(None, description="Optional system prompt for every request.")
    min_added_words: int = Field(10, ge=0, description="In-depth rewrites may add at least this many words...")
    max_added_words: int = Field(20, ge=1, description="...and at most this many (stated in the prompt).")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature for evolving.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus mass for evolving.")
    max_tokens: int = Field(2048, ge=1, description="Token limit of an evolved instruction.")
    response_temperature: float = Field(0.7, ge=0, le=2, description="Temperature of the teacher's answers.")
    response_max_tokens: int = Field(2048, ge=1, description="Token limit of the teacher's answers.")
    check_information_gain: bool = Field(True, description="Ask the teacher whether the evolved instruction "
                                         "equals its parent (elimination 'no_information_gain').")
    apology_max_words: int = Field(80, ge=1, description="An answer containing 'sorry' with fewer words than "
                                   "this eliminates the evolution ('apology').")
    copied_phrases: list[str] = Field(default_factory=lambda: list(COPIED_PHRASES), description="Phrases "
                                      "(any case) an evolved instruction must not contain ('copied_prompt_wording').")

    @field_validator("operators")
    @classmethod
    def _known_operators(cls, ops: list[str]) -> list[str]:
        unknown = sorted(set(ops) - set(OPERATORS))
        if unknown:
            raise ValueError(f"unknown operators {unknown}; choose from {list(OPERATORS)}")
        if not ops:
            raise ValueError("at least one operator is needed")
        return ops

    @model_validator(mode="after")
    def _consistent(self) -> "EvolInstructConfig":
        if self.min_added_words > self.max_added_words:
            raise ValueError("min_added_words is above max_added_words")
        return self


@dataclass
class EvolRoundResult(MethodResult):
    """One round over a batch. ``pool`` is the next round's input: each kept evolution in
    place of its parent, each eliminated one's parent unchanged (same order as the input).
    ``records`` is what the flow stores (eliminated evolutions are explained by their
    decisions); ``extend`` leaves ``pool`` alone."""

    pool: list[Instruction] = field(default_factory=list)


def evolve_prompt(instruction: Instruction, operator: str, config: EvolInstructConfig) -> tuple[str, str]:
    """The evolving prompt for ``instruction`` under ``operator``, and its template ref."""
    prompt = format_prompt(instruction.text, instruction.input)
    if operator == IN_BREADTH:
        template = load_template("evol_in_breadth")
        return template.render(prompt=prompt), template.ref
    template = load_template("evol_in_depth")
    method = template.extra["operators"][operator]
    return (template.render(prompt=prompt, method=method, min_words=config.min_added_words,
                            max_words=config.max_added_words), template.ref)


def clean_evolved(text: str) -> str:
    """The rewrite as an instruction: surrounding whitespace and quotes removed."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def parse_equality(text: str) -> bool | None:
    """True when the judge said Equal, False for Not Equal, None when neither."""
    text = (text or "").lower()
    if re.search(r"\bnot\s+equal\b|\bunequal\b", text):
        return False
    if re.search(r"\bequal\b", text):
        return True
    return None


def copies_prompt_wording(text: str, phrases: Sequence[str]) -> bool:
    lowered = text.lower()
    return any(p.lower() in lowered for p in phrases)


def is_apology(answer: str, max_words: int = 80) -> bool:
    return "sorry" in answer.lower() and len(answer.split()) < max_words


def is_stop_words_only(answer: str) -> bool:
    """Only punctuation and stop words (or nothing at all)."""
    return all(w in STOP_WORDS for w in re.findall(r"[\w']+", answer.lower()))


@dataclass
class _Candidate:
    parent: Instruction
    operator: str
    instruction: Instruction
    reason: str | None = None


async def aevol_round(teacher: Teacher, instructions: Sequence[Instruction], config: EvolInstructConfig, *,
                      rng: random.Random, round: int = 1, run_id: str | None = None) -> EvolRoundResult:
    """Evolve every instruction once (one operator each, at random), answer the evolutions,
    and eliminate the failed ones. Three batched teacher calls: evolve; answer + equality."""
    counts = Counts()
    result = EvolRoundResult()
    chosen = [rng.choice(config.operators) for _ in instructions]
    requests, refs = [], []
    for ins, op in zip(instructions, chosen):
        text, ref = evolve_prompt(ins, op, config)
        # sample_index = round: a parent that failed last round is evolved anew, not
        # served the same cached rewrite from the ledger.
        requests.append(make_request(config.request_format, text, system=config.system_prompt,
                                     sample_index=round - 1, tag=f"evol_instruct.{op}",
                                     temperature=config.temperature, top_p=config.top_p,
                                     max_tokens=config.max_tokens))
        refs.append(ref)
        counts.inc(f"operator_{op}")
    counts.inc("requests", len(requests))
    completions = await teacher.agenerate(requests)

    candidates: list[_Candidate] = []
    next_pool: dict[int, Instruction] = {}
    known = {i.id for i in instructions}
    for pos, (parent, op, request, ref, done) in enumerate(zip(instructions, chosen, requests, refs, completions)):
        next_pool[pos] = parent
        if not done.ok or done.text is None:
            counts.inc("failed")
            continue
        text = clean_evolved(done.text)
        if not text:
            counts.inc("empty")
            continue
        evolved = Instruction(
            text=text, method="evol_instruct", parent_id=parent.id, operator=op, round=round,
            request_key=done.key, teacher_model=teacher.model, template_version=ref,
            sampling_params=params_of(teacher, request), run_id=run_id,
            metadata={"finish_reason": done.finish_reason})
        if evolved.id in known:
            # The rewrite is the parent (or another instruction of the batch) verbatim: no
            # new item exists, and a decision under that id would mark the original dropped.
            counts.inc("eliminated_no_information_gain")
            counts.inc("copies_of_pool_items")
            continue
        cand = _Candidate(parent, op, evolved)
        if done.truncated:
            cand.reason = "truncated"
        elif copies_prompt_wording(text, config.copied_phrases):
            cand.reason = "copied_prompt_wording"
        elif normalize_text(text) == normalize_text(format_prompt(parent.text, parent.input)):
            cand.reason = "no_information_gain"
        candidates.append(cand)
        cand.instruction.metadata["pool_position"] = pos

    # Answer the survivors so far, and ask whether each differs from its parent, at once.
    live = [c for c in candidates if c.reason is None]
    answer_template = load_template("responses")
    equality_template = load_template("evol_equality")
    answer_requests = [
        make_request(config.request_format, answer_template.render(prompt=format_prompt(c.instruction.text)),
                     system=config.system_prompt, tag="evol_instruct.answer",
                     temperature=config.response_temperature, max_tokens=config.response_max_tokens)
        for c in live
    ]
    equality_requests = [
        make_request(config.request_format,
                     equality_template.render(first=format_prompt(c.parent.text, c.parent.input),
                                              second=c.instruction.text),
                     system=config.system_prompt, tag="evol_instruct.equality", temperature=0.0, max_tokens=8)
        for c in live
    ] if config.check_information_gain else []
    counts.inc("answer_requests", len(answer_requests))
    counts.inc("equality_requests", len(equality_requests))
    done_all = await teacher.agenerate(answer_requests + equality_requests) if live else []
    answers = done_all[: len(live)]
    equalities = done_all[len(live):] or [None] * len(live)

    for cand, request, answer, equality in zip(live, answer_requests, answers, equalities):
        if equality is not None:
            same = parse_equality(equality.text) if equality.ok else None
            if not equality.ok:
                counts.inc("equality_failed")
            elif same is None:
                counts.inc("equality_unparsed")
            cand.instruction.metadata["equality_check"] = None if equality.text is None else equality.text.strip()
            if same:
                cand.reason = "no_information_gain"
                continue
        if not answer.ok or not (answer.text or "").strip():
            counts.inc("answer_failed")
            cand.reason = "response_failed"
        elif is_apology(answer.text, config.apology_max_words):
            cand.reason = "apology"
        elif is_stop_words_only(answer.text):
            cand.reason = "stop_words_only"
        else:
            result.samples.append(Sample(
                instruction_id=cand.instruction.id, response=answer.text.strip(), method="evol_instruct",
                system_prompt=config.system_prompt, teacher_model=teacher.model, request_key=answer.key,
                finish_reason=answer.finish_reason, template_version=answer_template.ref,
                sampling_params=params_of(teacher, request), run_id=run_id))

    for cand in candidates:
        pos = cand.instruction.metadata.pop("pool_position")
        kept = cand.reason is None
        result.decisions.append(FilterDecision(item_id=cand.instruction.id, item_kind="instruction", filter=FILTER,
                                               kept=kept, reason=cand.reason or "", run_id=run_id))
        if kept:
            result.instructions.append(cand.instruction)
            next_pool[pos] = cand.instruction
            counts.inc("kept")
        else:
            cand.instruction.metadata["eliminated"] = cand.reason
            result.rejected.append(cand.instruction)
            counts.inc(f"eliminated_{cand.reason}")
    result.pool = [next_pool[i] for i in range(len(instructions))]
    result.counts = counts.as_dict()
    return result


class EvolRunner:
    """Evol-Instruct rounds over a pool, one slice of the pool per batch; each batch's
    ``pool`` (survivors, else their parents) forms the next round's pool."""

    parallel = False
    method = "evol_instruct"

    def __init__(self, instructions: Sequence[Instruction], config: EvolInstructConfig, *, run_name: str,
                 batch_size: int, run_id: str | None = None) -> None:
        if not instructions:
            raise InputError("Evol-Instruct needs instructions to evolve: ingest seeds or give instructions_file")
        self.config = config
        self.pool = list(instructions)
        self.next_pool: list[Instruction] = []
        self.round = 1
        self.pos = 0
        self.rng = rng_for(run_name, self.method)
        self.batch_size = batch_size
        self.run_id = run_id
        self.batches = 0

    def next_batch(self, max_requests: int) -> Batch[tuple[int, list[Instruction]]] | None:
        if self.pos >= len(self.pool):
            if self.round >= self.config.rounds:
                return None
            self.round += 1
            self.pool, self.next_pool, self.pos = self.next_pool, [], 0
        size = min(self.batch_size, max_requests // 3 or 0, len(self.pool) - self.pos)
        if size <= 0:
            return None
        items = self.pool[self.pos: self.pos + size]
        self.pos += size
        self.batches += 1
        return Batch(self.batches, (self.round, items), requests=3 * size, max_samples=size)

    async def run(self, teacher: Teacher, batch: Batch[tuple[int, list[Instruction]]]) -> EvolRoundResult:
        round_, items = batch.payload
        step = await aevol_round(teacher, items, self.config, rng=self.rng, round=round_, run_id=self.run_id)
        step.counts = {**step.counts, "round": round_}
        return step

    def absorb(self, batch: Batch[tuple[int, list[Instruction]]], result: EvolRoundResult) -> None:
        self.next_pool.extend(result.pool)
