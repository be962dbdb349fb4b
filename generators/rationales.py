"""Chain-of-thought rationales for distilling step-by-step (Hsieh et al. 2023).

The teacher answers each question after a few worked examples (question, rationale,
"So the answer is", answer); its output is split at that separator into a rationale and
an answer. Following Fine-tune-CoT's *diverse reasoning* (Ho et al. 2023), each question
is sampled ``D`` times (default 4) at temperature 0.7, and only the samples whose answer
is right are kept: equal to the gold label when the question has one, else to the
majority answer over the D samples (no majority, a tie, keeps nothing).

    examples = load_cot_examples()                       # storage/seeds/cot_examples.jsonl
    result = await agenerate_rationales(teacher, questions, examples, RationalesConfig())
    store.ingest(result.records)

Each ``Sample`` holds the answer in ``response``, the reasoning in ``rationale`` and the
gold or majority label in ``label``. A dataset of them exports (``distill datasets export``)
as distilling step-by-step's multi-task examples (``--format jsonl-step-by-step``:
``"predict: x" -> label`` and ``"explain: x" -> rationale``), or as chat whose answer is
the rationale followed by the answer (``jsonl-chat``); ``storage.datasets`` defines both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.jsonl import read_jsonl_models
from core.text import ANSWER_SEPARATOR, format_prompt, normalize_answer, render_answer, split_answer
from generators.common import Batch, Counts, ListRunner, MethodResult, make_request, params_of
from generators.teachers.base import Teacher
from generators.templates import load_template
from storage.records import FilterDecision, Instruction, Sample
from storage.seeds import COT_EXAMPLES_FILE
FILTER = "rationales.answer"


class CotExample(BaseModel):
    """A worked example for the few-shot prompt (one line of cot_examples.jsonl)."""

    model_config = ConfigDict(extra="ignore")

    question: str
    rationale: str
    answer: str


def load_cot_examples(path: str | Path = COT_EXAMPLES_FILE) -> list[CotExample]:
    """Read worked examples from JSONL ({"question", "rationale", "answer"} per line)."""
    return read_jsonl_models(path, CotExample, what="chain-of-thought examples file")


class RationalesConfig(BaseModel):
    """Knobs of rationale generation; defaults follow distilling step-by-step / Fine-tune-CoT."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["rationales"] = Field("rationales", description="rationales: chain-of-thought answers "
                                          "to stored questions.")
    num_examples: int = Field(4, ge=0, description="Worked examples shown in the few-shot prompt (the first k).")
    separator: str = Field(ANSWER_SEPARATOR, min_length=1, description="Text between the rationale and "
                           "the answer, in the examples and when parsing the teacher's output (any case).")
    num_samples: int = Field(4, ge=1, description="D: reasoning samples per question (Fine-tune-CoT's diverse "
                             "reasoning); with no gold label the majority answer over the D is kept.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the reasoning samples.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus mass (None = backend default).")
    max_tokens: int = Field(256, ge=1, description="Token limit of one rationale and answer.")
    request_format: Literal["completion", "chat"] = Field(
        "completion", description="'completion': the teacher continues the few-shot text; 'chat': sent as a message.")
    system_prompt: str | None = Field(None, description="Optional system prompt.")
    stop: list[str] = Field(default_factory=lambda: ["\nQ:"], description="Stop sequences (the next question).")


@dataclass
class RationalesResult(MethodResult):
    """The samples made, and decisions on dropped answers (``instructions`` and
    ``rejected`` stay empty)."""


# --------------------------------------------------------------------------- prompt and parsing


def render_prompt(question: str, examples: Sequence[CotExample], config: RationalesConfig) -> tuple[str, str]:
    """The few-shot prompt for ``question``, and its template ref."""
    template = load_template("cot_fewshot")
    shots = "\n\n".join(f"Q: {ex.question.strip()}\nA: {render_answer(ex.rationale, ex.answer, config.separator)}"
                        for ex in examples[: config.num_examples])
    return template.render(examples=shots, question=question.strip(), separator=config.separator), template.ref


def _gold_of(ins: Instruction, gold: Mapping[str, str] | None) -> str | None:
    if gold and ins.id in gold:
        return gold[ins.id]
    label = ins.metadata.get("label") if ins.metadata else None
    return str(label) if label not in (None, "") else None


# --------------------------------------------------------------------------- the method


async def agenerate_rationales(teacher: Teacher, questions: Sequence[Instruction], examples: Sequence[CotExample],
                               config: RationalesConfig | None = None, *, gold: Mapping[str, str] | None = None,
                               run_id: str | None = None) -> RationalesResult:
    """D reasoning samples per question, in one batch; keep those with the right answer.

    ``gold`` maps instruction id -> gold label; without an entry, ``metadata['label']`` of
    the instruction is used; without either, the majority answer is the label.
    """
    config = config or RationalesConfig()
    counts = Counts()
    requests, owners, refs = [], [], []
    for ins in questions:
        text, ref = render_prompt(format_prompt(ins.text, ins.input), examples, config)
        base = make_request(config.request_format, text, system=config.system_prompt, tag="rationales",
                            temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                            stop=config.stop or None)
        for req in base.expand(config.num_samples):
            requests.append(req)
            owners.append(ins)
            refs.append(ref)
    counts.inc("requests", len(requests))
    completions = await teacher.agenerate(requests) if requests else []

    result = RationalesResult(given=list(questions))
    by_question: dict[str, list[tuple[Any, ...]]] = {}
    for ins, req, ref, done in zip(owners, requests, refs, completions):
        by_question.setdefault(ins.id, []).append((ins, req, ref, done))

    def drop(ins: Instruction, response: str, rationale: str | None, reason: str) -> None:
        counts.inc(f"dropped_{reason}")
        result.decisions.append(FilterDecision(item_id=Sample.key_for(ins.id, response, rationale),
                                               item_kind="sample", filter=FILTER, kept=False, reason=reason,
                                               run_id=run_id))

    seen: set[str] = set()
    for items in by_question.values():
        ins = items[0][0]
        parsed = []
        for _, req, ref, done in items:
            if not done.ok or done.text is None:
                counts.inc("failed")
                continue
            if done.truncated:
                drop(ins, done.text, None, "truncated")
                continue
            split = split_answer(done.text, config.separator)
            if split is None or not split[1]:
                drop(ins, done.text, None, "no_answer")
                continue
            if not split[0]:
                drop(ins, split[1], None, "no_rationale")
                continue
            parsed.append((split[0], split[1], req, ref, done))
        if not parsed:
            continue

        label = _gold_of(ins, gold)
        wrong = "wrong_answer"
        if label is None:
            votes = Counter(normalize_answer(a) for _, a, *_ in parsed).most_common()
            if len(votes) > 1 and votes[0][1] == votes[1][1]:
                for rationale, answer, *_ in parsed:
                    drop(ins, answer, rationale, "no_majority")
                continue
            label = next(a for _, a, *_ in parsed if normalize_answer(a) == votes[0][0])
            wrong = "not_majority"
            counts.inc("majority_labels")
        else:
            counts.inc("gold_labels")
        for rationale, answer, req, ref, done in parsed:
            if normalize_answer(answer) != normalize_answer(label):
                drop(ins, answer, rationale, wrong)
                continue
            sample = Sample(
                instruction_id=ins.id, response=answer, rationale=rationale, label=label,
                system_prompt=config.system_prompt, method="rationales", teacher_model=teacher.model,
                request_key=done.key, finish_reason=done.finish_reason, template_version=ref,
                sampling_params=params_of(teacher, req), run_id=run_id,
                metadata={"label_source": "gold" if _gold_of(ins, gold) is not None else "majority"})
            if sample.id in seen:
                counts.inc("duplicates")
                continue
            seen.add(sample.id)
            result.samples.append(sample)
    counts.inc("kept", len(result.samples))
    result.counts = counts.as_dict()
    return result


class RationalesRunner(ListRunner[RationalesResult]):
    """The generate flow's batches of ``agenerate_rationales``: D requests per question."""

    method = "rationales"

    def __init__(self, questions: Sequence[Instruction], config: RationalesConfig, **kwargs: Any) -> None:
        super().__init__(questions, config, **kwargs)
        self.examples = load_cot_examples()

    @property
    def per_item(self) -> int:
        return self.config.num_samples

    async def run(self, teacher: Teacher, batch: Batch[list[Instruction]]) -> RationalesResult:
        return await agenerate_rationales(teacher, batch.payload, self.examples, self.config, run_id=self.run_id)
