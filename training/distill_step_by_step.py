"""Distilling step-by-step (Hsieh et al., 2023): learn the label and the teacher's rationale
as two tasks of one model.

Every rationale row (instruction, input, rationale, label) becomes two examples:

    "predict: <task>"  ->  <label>
    "explain: <task>"  ->  <rationale>

and the loss is ``label_weight * L_predict + (1 - label_weight) * L_explain``: the reference
code's ``alpha * L_label + (1 - alpha) * L_rationale`` (google-research/distilling-step-by-step,
``model_utils.py`` ``TaskPrefixTrainer.compute_loss``; ``--alpha 0.5``, its recommended
value, is our default). At inference the student is prompted with "predict: " and answers
directly, without generating the rationale.

The layer over TRL is thin: SFTTrainer prepares both tasks as conversational
prompt/completion examples (completion-only loss); a ``task_weight`` column rides along,
and ``compute_loss`` takes the per-example mean token loss and weights it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTConfig, SFTTrainer

from core.errors import InputError
from training.config import TrainConfig
from training.data import as_rows, prompt_messages
from training.sft import trainer_args

PREDICT = "predict: "
EXPLAIN = "explain: "


def step_by_step_dataset(rows: Any, label_weight: float):
    """Two prompt/completion examples per row, with weights label_weight and 1 - label_weight."""
    from datasets import Dataset

    rows = as_rows(rows)
    examples = []
    for i, row in enumerate(rows):
        label = (row.get("label") or row.get("response") or "").strip()
        rationale = (row.get("rationale") or "").strip()
        if not label or not rationale:
            raise InputError(
                f"row {i} (sample {row.get('sample_id')}) has no {'label' if not label else 'rationale'}: "
                "method 'distill' needs a rationale dataset (e.g. from the 'rationales' generator)"
            )
        examples.append(_example(row, PREDICT, label, label_weight))
        examples.append(_example(row, EXPLAIN, rationale, 1.0 - label_weight))
    return Dataset.from_list(examples)


def _example(row: dict, prefix: str, target: str, weight: float) -> dict:
    return {
        "prompt": prompt_messages(row, prefix=prefix),
        "completion": [{"role": "assistant", "content": target}],
        "task_weight": float(weight),
    }


class _WeightCollator:
    """Wrap SFTTrainer's collator and pass the per-example ``task_weight`` through."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        batch = self.inner([{k: v for k, v in ex.items() if k != "task_weight"} for ex in examples])
        batch["task_weight"] = torch.tensor([ex["task_weight"] for ex in examples], dtype=torch.float32)
        return batch


class DistillStepByStepTrainer(SFTTrainer):
    """SFTTrainer whose loss weights each example by its task (predict vs explain)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = _WeightCollator(self.data_collator)
        # Our loss is a mean over examples, so the Trainer must divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "task_weight" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "task_weight"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("task_weight")
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[:, :-1, :].float()
        targets = labels[:, 1:]
        token_loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(targets.shape)
        mask = (targets != -100).float()
        per_example = (token_loss * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        # With as many predict as explain examples in a batch this is exactly
        # label_weight * mean L_predict + (1 - label_weight) * mean L_explain.
        loss = 2.0 * (weights.to(per_example.device) * per_example).mean()
        return (loss, outputs) if return_outputs else loss


def build_distill_trainer(
    config: TrainConfig, model, tokenizer, rows: Any, output_dir: str, callbacks=None
) -> DistillStepByStepTrainer:
    args = SFTConfig(**trainer_args(config, output_dir), completion_only_loss=True)
    return DistillStepByStepTrainer(
        model=model,
        args=args,
        train_dataset=step_by_step_dataset(rows, config.label_weight),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
