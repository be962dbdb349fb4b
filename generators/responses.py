"""Teacher responses: the teacher answers a set of instructions (sequence-level KD data).

SeqKD (Kim & Rush 2016) trains the student on the teacher's own outputs: each instruction
(with its input, if any) goes to the teacher, optionally under a system prompt, ``n``
times; every successful answer becomes a ``Sample``. Greedy decoding (temperature 0, the
teacher's mode) is the default; ``n > 1`` needs a temperature above 0.

    result = generate_responses(teacher, instructions, ResponsesConfig(n=2, temperature=0.7))
    store.ingest(result.records)

Failed requests are counted and never become samples; an answer cut off by the token
limit is dropped (``truncated``) unless ``keep_truncated``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from generators.common import Counts, MethodResult, make_request, params_of, run_sync
from generators.teachers.base import Teacher
from generators.templates import load_template
from storage.records import FilterDecision, Instruction, Sample

FILTER = "responses.truncated"


class ResponsesConfig(BaseModel):
    """Knobs of teacher response generation."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(1, ge=1, description="Samples per instruction (sample_index 0..n-1, each its own request).")
    system_prompt: str | None = Field(None, description="System prompt given to the teacher (stored on each sample).")
    request_format: Literal["chat", "completion"] = Field("chat", description="Chat message or plain "
                                                          "completion prompt.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 = the teacher's greedy answer.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus mass (None = backend default).")
    max_tokens: int = Field(1024, ge=1, description="Token limit of an answer.")
    keep_truncated: bool = Field(False, description="Keep answers cut off by max_tokens (finish_reason 'length').")
    method: str = Field("responses", description="Method name stored on the samples.")

    @model_validator(mode="after")
    def _sampling_for_n(self) -> "ResponsesConfig":
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 samples need temperature > 0 (greedy decoding gives n identical answers)")
        return self


@dataclass
class ResponsesResult(MethodResult):
    """The samples made, and decisions on dropped answers (``instructions`` and
    ``rejected`` stay empty)."""


async def agenerate_responses(teacher: Teacher, instructions: Sequence[Instruction],
                              config: ResponsesConfig | None = None, *, run_id: str | None = None) -> ResponsesResult:
    """Answer every instruction ``config.n`` times, in one batch through the teacher."""
    config = config or ResponsesConfig()
    template = load_template("responses")
    counts = Counts()
    requests, owners = [], []
    for ins in instructions:
        text = template.render(instruction=ins.text.strip(),
                               input_block=f"\n\n{ins.input.strip()}" if ins.input.strip() else "")
        base = make_request(config.request_format, text, system=config.system_prompt, tag="responses",
                            temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
        for req in base.expand(config.n):
            requests.append(req)
            owners.append(ins)
    counts.inc("requests", len(requests))
    completions = await teacher.agenerate(requests) if requests else []

    result = ResponsesResult()
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


def generate_responses(teacher: Teacher, instructions: Sequence[Instruction],
                       config: ResponsesConfig | None = None, *, run_id: str | None = None) -> ResponsesResult:
    """Sync wrapper of :func:`agenerate_responses`."""
    return run_sync(agenerate_responses(teacher, instructions, config, run_id=run_id))
