"""Supervised fine-tuning on a dataset version's responses: ``trl.SFTTrainer``, loss on the
assistant turn only.

Why prompt/completion and not ``assistant_only_loss``: TRL's assistant masks need a chat
template with ``{% generation %}`` markers; SmolLM2's template has none and is not among
the templates TRL can patch. A *conversational prompt/completion* dataset gives the same
mask with any template: TRL renders prompt and prompt+completion, and with
``completion_only_loss=True`` every prompt token (system, user, the assistant header) is
labelled -100. ``tests/test_training_sft.py`` checks the labels.
"""

from __future__ import annotations

from typing import Any

from trl import SFTConfig, SFTTrainer

from training.config import TrainConfig
from training.data import prompt_completion_dataset


def resolve_device(config: TrainConfig) -> str:
    """'cuda' or 'cpu' for this run (auto = CUDA when torch sees a GPU)."""
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


def trainer_args(config: TrainConfig, output_dir: str) -> dict[str, Any]:
    """TrainingArguments shared by every method: CPU-safe defaults, CUDA when present.

    On CPU: fp32 (no bf16 autocast unless asked), no gradient checkpointing, ``use_cpu``.
    Checkpoints are not saved mid-run (``train`` saves the final model itself).
    """
    import torch

    device = resolve_device(config)
    cuda = device == "cuda"
    bf16 = config.bf16 if config.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    return {
        "output_dir": output_dir,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "weight_decay": config.weight_decay,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,  # the rich bar of training.progress replaces it
        "bf16": bf16,
        "fp16": False,
        "use_cpu": not cuda,
        # transformers 5 renamed gradient_checkpointing; TRL's default for the old name is True
        "activation_checkpointing": config.gradient_checkpointing,
        "dataloader_pin_memory": cuda,
        "dataset_num_proc": None,
        "include_num_input_tokens_seen": "non_padding",  # for tokens/s
    }


def build_sft_trainer(config: TrainConfig, model, tokenizer, rows: Any, output_dir: str, callbacks=None) -> SFTTrainer:
    """An SFTTrainer over ``rows`` (dicts with instruction, input, response, system_prompt)."""
    args = SFTConfig(
        **trainer_args(config, output_dir),
        packing=config.packing,
        completion_only_loss=True,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=prompt_completion_dataset(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
