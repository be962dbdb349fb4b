"""Teacher responses (SeqKD-style), driven by a scripted teacher."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from generators.responses import ResponsesConfig, agenerate_responses
from generators.teachers.base import Completion
from generators.teachers.scripted import ScriptedTeacher, prompt_text
from storage.records import Instruction


async def test_answers_each_instruction_n_times_with_system_prompt():
    answers = iter(["Paris.", "Paris, France.", "Four.", "Four."])
    teacher = ScriptedTeacher(lambda req: next(answers))
    instructions = [Instruction(text="Name the capital of France.", method="seed"),
                    Instruction(text="Count the letters.", input="word", method="seed")]
    config = ResponsesConfig(n=2, temperature=0.7, system_prompt="Be brief.")
    result = await agenerate_responses(teacher, instructions, config, run_id="r")
    assert [(s.instruction_id, s.response) for s in result.samples] == [
        (instructions[0].id, "Paris."), (instructions[0].id, "Paris, France."), (instructions[1].id, "Four.")]
    assert result.counts == {"requests": 4, "duplicates": 1, "kept": 3}
    s = result.samples[0]
    assert (s.system_prompt, s.method, s.teacher_model, s.template_version, s.run_id) == (
        "Be brief.", "responses", "scripted", "responses@2", "r")
    assert s.sampling_params["temperature"] == 0.7 and s.request_key
    calls = teacher.calls
    assert [c.sample_index for c in calls] == [0, 1, 0, 1]
    assert calls[0].messages[0] == {"role": "system", "content": "Be brief."}
    assert prompt_text(calls[2]) == "Count the letters.\n\nword"


async def test_failed_truncated_and_empty_answers_never_become_samples():
    outcomes = {
        "a": Completion(key="", ok=False, error="timeout"),
        "b": Completion(key="", ok=True, text="Cut off mid", finish_reason="length"),
        "c": "   ",
        "d": "Fine.",
    }
    teacher = ScriptedTeacher(lambda req: outcomes[prompt_text(req)])
    ins = [Instruction(text=t, method="seed") for t in "abcd"]
    result = await agenerate_responses(teacher, ins)
    assert [s.response for s in result.samples] == ["Fine."]
    assert result.counts["failed"] == 1 and result.counts["empty"] == 1 and result.counts["dropped_truncated"] == 1
    assert [(d.filter, d.reason, d.kept) for d in result.decisions] == [("responses.truncated", "truncated", False)]
    kept = await agenerate_responses(teacher, ins, ResponsesConfig(keep_truncated=True))
    assert [s.finish_reason for s in kept.samples] == ["length", "stop"]


async def test_config_rejects_identical_samples_and_completion_format():
    with pytest.raises(ValidationError):
        ResponsesConfig(n=3, temperature=0)  # greedy decoding would give three identical answers
    teacher = ScriptedTeacher(lambda req: "ok")
    await agenerate_responses(teacher, [Instruction(text="Hi there", method="seed")],
                       ResponsesConfig(request_format="completion", system_prompt="Sys"))
    assert teacher.calls[0].kind == "completion" and teacher.calls[0].prompt == "Sys\n\nHi there"


async def test_unset_sampling_params_come_from_the_teachers_defaults():
    """One layer of defaults: what ResponsesConfig leaves unset, teacher.defaults sets."""
    from generators.teachers.base import SamplingParams

    teacher = ScriptedTeacher(lambda req: "ok", defaults=SamplingParams(temperature=0.3, max_tokens=40))
    ins = [Instruction(text="Say ok.", method="seed")]
    sample = (await agenerate_responses(teacher, ins)).samples[0]
    assert teacher.calls[0].params.as_dict() == {}  # nothing set by the method
    assert sample.sampling_params == {"temperature": 0.3, "max_tokens": 40}  # what the teacher used
    sample = (await agenerate_responses(teacher, ins, ResponsesConfig(temperature=0.9))).samples[0]
    assert sample.sampling_params == {"temperature": 0.9, "max_tokens": 40}  # the method's setting wins
