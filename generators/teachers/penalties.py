"""The OpenAI API's presence and frequency penalties, as a transformers logits processor.

The OpenAI API (and vLLM behind it) lowers the logit of every token the completion has
already produced, before temperature and top-p:

    logit[t] -= frequency_penalty * count[t] + presence_penalty * (count[t] > 0)

where ``count[t]`` is how many times token ``t`` occurs in the generated text so far; the
prompt does not count. transformers has nothing equivalent (its ``repetition_penalty``
divides logits and counts the prompt too), hence this processor:

    penalties = OpenAIPenalties(prompt_length=enc["input_ids"].shape[1], presence=1.5)
    model.generate(**enc, logits_processor=LogitsProcessorList([penalties]))

``generate`` runs a caller's processors before its own temperature and top-p warpers, so
the order is the API's.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class OpenAIPenalties(LogitsProcessor):
    """Subtract ``presence`` once from every token already generated, and ``frequency``
    times the number of times it was generated. ``prompt_length`` is the width of the
    (left-padded) prompt batch: every row's generated tokens start at that column."""

    def __init__(self, prompt_length: int, *, presence: float = 0.0, frequency: float = 0.0) -> None:
        self.prompt_length = prompt_length
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)
