"""Teacher responses: the teacher answers a set of instructions (sequence-level KD data).

SeqKD (Kim & Rush 2016) trains the student on the teacher's own outputs: each instruction
(with its input, if any) goes to the teacher, optionally under a system prompt, ``n``
times; every successful answer becomes a ``Sample``. The prompt is
``core.text.format_prompt``, the same text the student is later trained and evaluated on.

    result = await agenerate_responses(teacher, instructions, ResponsesConfig(n=2, temperature=0.7))
    store.ingest(result.records)

Sampling fields left unset come from the teacher's ``defaults`` (then the backend's own
defaults); ``temperature: 0`` asks for the teacher's greedy answer (SeqKD's mode).

Within the call, an empty answer is asked again (``retry_empty`` times) and so is one cut
off by the token limit (``retry_truncated`` times, unless ``keep_truncated``): each retry
is a new request with its own ledger key (``sample_index`` n, 2n, ... above the
original), so a resumed run replays it instead of paying again. A greedy request
(temperature 0) is not retried: the teacher would give the same answer. What is still
missing after the retries is counted by why (``failed``, ``empty``, ``dropped_truncated``)
and never becomes a sample; a dropped cut-off answer gets a ``truncated`` decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.text import format_prompt
from generators.common import Batch, Counts, ListRunner, MethodResult, make_request, params_of
from generators.teachers.base import ChatRequest, Teacher
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
    retry_empty: int = Field(2, ge=0, description="Ask again, within the run, for an answer that came back empty "
                             "(each retry a new request; not at temperature 0).")
    retry_truncated: int = Field(1, ge=0, description="Ask again, within the run, for an answer cut off by "
                                 "max_tokens, unless keep_truncated (each retry a new request; not at temperature 0).")

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
    """Answer every instruction ``config.n`` times through the teacher, re-asking empty and
    cut-off answers (see the module docstring)."""
    config = config or ResponsesConfig()
    template = load_template("responses")
    counts = Counts()
    pending: list[tuple[Instruction, ChatRequest]] = []
    for ins in instructions:
        base = make_request(config.request_format, template.render(prompt=format_prompt(ins.text, ins.input)),
                            system=config.system_prompt, tag="responses", temperature=config.temperature,
                            top_p=config.top_p, max_tokens=config.max_tokens)
        pending += [(ins, req) for req in base.expand(config.n)]
    greedy = bool(pending) and pending[0][1].params.merged_over(teacher.defaults).temperature == 0

    result = ResponsesResult(given=list(instructions))
    seen: set[str] = set()
    for attempt in range(1 + max(config.retry_empty, config.retry_truncated)):
        if not pending:
            break
        counts.inc("requests" if attempt == 0 else "retries", len(pending))
        completions = await teacher.agenerate([req for _, req in pending])
        again: list[tuple[Instruction, ChatRequest]] = []
        for (ins, req), done in zip(pending, completions):
            text = (done.text or "").strip() if done.ok else ""
            empty = (done.ok and not text) or done.error == "empty content"  # the ledger marks empty answers failed
            if not done.ok and not empty:
                counts.inc("failed")  # the teacher layer already retried it; the next run sends it again
                continue
            cut = done.truncated and not config.keep_truncated
            if empty or cut:
                reason, budget = ("empty", config.retry_empty) if empty else ("truncated", config.retry_truncated)
                if attempt < budget and not greedy:
                    counts.inc(f"retried_{reason}")
                    # A new sample index is a new request (and ledger key): n, 2n, ... above the original.
                    again.append((ins, req.model_copy(update={"sample_index": req.sample_index + config.n})))
                    continue
                counts.inc("empty" if empty else "dropped_truncated")
                if cut:
                    result.decisions.append(FilterDecision(
                        item_id=Sample.key_for(ins.id, text), item_kind="sample", filter=FILTER, kept=False,
                        reason="truncated", run_id=run_id))
                continue
            sample = Sample(
                instruction_id=ins.id, response=text, system_prompt=config.system_prompt,
                method=config.method, teacher_model=teacher.model, request_key=done.key,
                finish_reason=done.finish_reason, template_version=template.ref,
                sampling_params=params_of(teacher, req), run_id=run_id)
            if sample.id in seen:  # the same answer twice is one sample
                counts.inc("duplicates")
                continue
            seen.add(sample.id)
            result.samples.append(sample)
        pending = again
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
