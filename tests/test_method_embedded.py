"""Each generation method against the real embedded teacher (SmolLM2-135M-Instruct on CPU).

The content is weak; these check that real model output flows through every method into
well-formed records without crashing and without empty samples. Token limits are small
so each test runs in seconds of CPU (one torch thread).
"""

from __future__ import annotations

import random

import pytest

from generators.evol_instruct import EvolInstructConfig, aevol_round
from generators.judge import JudgeConfig, PairwiseItem, SingleItem, ajudge_pairwise, ajudge_single
from generators.rationales import RationalesConfig, agenerate_rationales, load_cot_examples
from generators.responses import ResponsesConfig, agenerate_responses
from generators.self_instruct import SelfInstructConfig, SelfInstructState, aself_instruct_step
from storage.records import Instruction, Sample
from storage.seeds import COT_QUESTIONS_FILE, load_seed_tasks, parse_instructions_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher():
    import torch

    from generators.teachers import build_teacher
    from generators.teachers.config import TransformersConfig

    # One thread: on a shared, oversubscribed CPU, torch's spinning worker threads cost
    # ~15x more CPU time than a single thread for this tiny model. The setting is
    # process-wide, so it is restored for the tests that run after these.
    threads = torch.get_num_threads()
    t = build_teacher(TransformersConfig(batch_size=8, num_threads=1))
    yield t
    t.close()
    torch.set_num_threads(threads)


def well_formed(records, model: str) -> None:
    for r in records:
        if isinstance(r, Instruction):
            assert r.text.strip() and r.id and r.teacher_model == model and r.template_version and r.request_key
        elif isinstance(r, Sample):
            assert r.response.strip() and r.instruction_id and r.teacher_model == model and r.request_key
            assert r.template_version and r.finish_reason in ("stop", "length")


async def test_self_instruct_embedded(teacher):
    seeds = load_seed_tasks()
    for fmt in ("chat", "completion"):
        config = SelfInstructConfig(request_format=fmt, max_tokens=48, instance_max_tokens=32,
                                    instance_max_tokens_classification=32)
        state = SelfInstructState.create(seeds, config)
        step = await aself_instruct_step(teacher, state, config, rng=random.Random(0), batch_size=1)
        assert step.counts["requests"] == 1
        accounted = sum(v for k, v in step.counts.items() if k.startswith("dropped_")) + step.counts.get("kept", 0)
        assert accounted == step.counts.get("parsed", 0)
        well_formed(step.records, teacher.model)
        assert all(d.kept or d.reason for d in step.decisions)
        assert state.accepted == step.counts.get("kept", 0)


async def test_evol_instruct_embedded(teacher):
    pool = [Instruction(text=t.instruction, method="seed") for t in load_seed_tasks()[:2]]
    config = EvolInstructConfig(max_tokens=32, response_max_tokens=32)
    step = await aevol_round(teacher, pool, config, rng=random.Random(0), round=1)
    assert len(step.pool) == 2 and step.counts["requests"] == 2
    well_formed(step.records, teacher.model)
    assert {i.parent_id for i in step.instructions} <= {p.id for p in pool}
    assert all(i.operator and i.round == 1 for i in [*step.instructions, *step.rejected])
    assert len(step.decisions) == len(step.instructions) + len(step.rejected)


async def test_responses_embedded(teacher):
    instructions = [Instruction(text="Name two colours of the rainbow.", method="seed"),
                    Instruction(text="Translate to French.", input="Good morning", method="seed")]
    result = await agenerate_responses(teacher, instructions,
                                ResponsesConfig(n=2, temperature=0.7, max_tokens=16, keep_truncated=True))
    assert result.counts["requests"] == 4 and result.samples
    well_formed(result.samples, teacher.model)


async def test_rationales_embedded(teacher):
    questions = parse_instructions_file(COT_QUESTIONS_FILE)[:2]
    result = await agenerate_rationales(teacher, questions, load_cot_examples(),
                                 RationalesConfig(num_samples=2, max_tokens=32))
    assert result.counts["requests"] == 4
    well_formed(result.samples, teacher.model)
    for s in result.samples:
        assert s.rationale and s.label and s.method == "rationales"
    assert all(not d.kept and d.reason for d in result.decisions)


async def test_judge_embedded(teacher):
    config = JudgeConfig(max_tokens=32, max_retries=1)
    [pair] = await ajudge_pairwise(teacher, [PairwiseItem(question="What is 2 + 2?", answer_a="4.", answer_b="5.")], config)
    assert len(pair.calls) == 2 and all(c.attempts >= 1 and c.text for c in pair.calls)
    assert pair.ok == (pair.score_a is not None) and (pair.ok or pair.error)
    [single] = await ajudge_single(teacher, [SingleItem(question="What is 2 + 2?", answer="4.")], config)
    assert single.call.attempts >= 1 and (single.ok or single.error)
    if single.ok:
        assert 1 <= single.score <= 10
