"""Teacher responses: the teacher answers a set of instructions (sequence-level KD data).

SeqKD (Kim & Rush 2016) trains the student on the teacher's own outputs: each instruction
(with its input, if any) goes to the teacher, optionally under a system prompt, ``n``
times; every successful answer becomes a ``Sample``. The prompt is
``core.text.format_prompt``, the same text the student is later trained and evaluated on.

    result = await agenerate_responses(teacher, instructions, ResponsesConfig(n=2, temperature=0.7))
    store.ingest(result.records)

Sampling fields left unset come from the teacher's ``defaults`` (then the backend's own
defaults); ``temperature: 0`` asks for the teacher's greedy answer (SeqKD's mode).
Failed requests are counted and never become samples; an answer cut off by the token
limit is dropped (``truncated``) unless ``keep_truncated``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.text import format_prompt
from generators.common import Batch, Counts, ListRunner, MethodResult, make_request, params_of
from generators.teachers.base import Teacher
from generators.templates import load_template
from storage.records import FilterDecision, Instruction, Sample

FILTER = "responses.truncated"


class ResponsesConfig(BaseModel):
    """Knobs of teacher response generation."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["responses"] = Field("responses", description="responses: the teacher answers stored "
                                         "instructions (the name stored on the samples).")
    n: int = Field(1, ge=1, description="Samples per instruction (sample_index 0..n-1, each its own request).")
    system_prompt: str | None = Field(None, description="System prompt given to the teacher (stored on each sample).")
    request_format: Literal["chat", "completion"] = Field("chat", description="Chat message or plain "
                                                          "completion prompt.")
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; None = the teacher's defaults (then the backend's); "
        "0 = the teacher's greedy answer.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus mass; None = the teacher's defaults.")
    max_tokens: int | None = Field(None, ge=1, description="Token limit of an answer; None = the teacher's defaults.")
    keep_truncated: bool = Field(False, description="Keep answers cut off by max_tokens (finish_reason 'length').")

    @model_validator(mode="after")
    def _sampling_for_n(self) -> "ResponsesConfig":
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 samples need temperature > 0 (greedy decoding gives n identical answers)")
        return self


@dataclass
class ResponsesResult(MethodResult):
    """The samples made, and decisions on dropped answers (``given``: the instructions asked)."""


async def agenerate_responses(teacher: Teacher, instructions: Sequence[Instruction],
                              config: ResponsesConfig | None = None, *, run_id: str | None = None) -> ResponsesResult:
    """Answer every instruction ``config.n`` times, in one batch through the teacher."""
    config = config or ResponsesConfig()
    template = load_template("responses")
    counts = Counts()
    requests, owners = [], []
    for ins in instructions:
        base = make_request(config.request_format, template.render(prompt=format_prompt(ins.text, ins.input)),
                            system=config.system_prompt, tag="responses", temperature=config.temperature,
                            top_p=config.top_p, max_tokens=config.max_tokens)
        for req in base.expand(config.n):
            requests.append(req)
            owners.append(ins)
    counts.inc("requests", len(requests))
    completions = await teacher.agenerate(requests) if requests else []

    result = ResponsesResult(given=list(instructions))
    seen: set[str] = set()
    for ins, req, done in zip(owners, requests, completions):
        if not done.ok or not (done.text or "").strip():
            counts.inc("failed" if not done.ok else "empty")
            continue
        sample = Sample(
            instruction_id=ins.id, response=done.text.strip(), system_prompt=config.system_prompt,
            method=config.method, teacher_model=teacher.model, request_key=done.key,
            finish_reason=done.finish_reason, template_version=template.ref,
            sampling_params=params_of(teacher, req), run_id=run_id)
        if done.truncated and not config.keep_truncated:
            counts.inc("dropped_truncated")
            result.decisions.append(FilterDecision(item_id=sample.id, item_kind="sample", filter=FILTER,
                                                   kept=False, reason="truncated", run_id=run_id))
            continue
        if sample.id in seen:  # the same answer twice is one sample
            counts.inc("duplicates")
            continue
        seen.add(sample.id)
        result.samples.append(sample)
    counts.inc("kept", len(result.samples))
    result.counts = counts.as_dict()
    return result


class ResponsesRunner(ListRunner[ResponsesResult]):
    """The generate flow's batches of ``agenerate_responses``: ``config.n`` requests per instruction."""

    method = "responses"

    @property
    def per_item(self) -> int:
        return self.config.n

    async def run(self, teacher: Teacher, batch: Batch[list[Instruction]]) -> ResponsesResult:
        return await agenerate_responses(teacher, batch.payload, self.config, run_id=self.run_id)
