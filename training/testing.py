"""Tiny models and rows for tests and examples (no hub: the tokenizer is the embedded teacher's).

    from training.testing import tiny_llama
    path = tiny_llama("/tmp/tiny", num_layers=2)      # a random LLaMA on the SmolLM2 tokenizer
"""

from __future__ import annotations

from pathlib import Path


def tiny_llama(out_dir: str | Path, *, num_layers: int = 2, hidden_size: int = 32, seed: int = 0) -> Path:
    """Save a random LlamaForCausalLM (4 heads, intermediate 64) with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.embedded import ensure_embedded_teacher

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_teacher())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def toy_rows(n: int = 8, *, rationale: bool = False, eval_rows: int = 0) -> list[dict]:
    """``n`` train rows (+ ``eval_rows`` eval rows) shaped like ``storage.datasets.load_rows``."""
    rows = []
    for i in range(n + eval_rows):
        a, b = i % 7 + 1, i % 5 + 2
        row = {
            "sample_id": f"s{i}",
            "instruction": f"What is {a} plus {b}?",
            "input": "" if i % 2 else f"Numbers: {a}, {b}",
            "response": f"{a} plus {b} is {a + b}.",
            "rationale": None,
            "label": None,
            "system_prompt": None,
            "split": "train" if i < n else "eval",
        }
        if rationale:
            row["rationale"] = f"Start at {a} and count up {b} more to reach {a + b}."
            row["label"] = str(a + b)
            row["response"] = f"{row['rationale']} So the answer is {a + b}."
        rows.append(row)
    return rows
