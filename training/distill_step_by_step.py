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

Both tasks' losses are averaged *per task* before weighting (the mean token loss of each
example, then the mean over the batch's predict examples and over its explain examples), so
the weights hold in every batch whatever its mix of tasks. The reference gets the same by
putting both tasks of a row into every batch; here the two examples of a row are shuffled
independently, so a batch may hold one task only: its loss is then that task's weighted
mean alone (``label_weight * mean L_predict``, or the explain term), which gives that task
the same weight per batch as in a mixed batch, and never trains a task weighted 0.
One difference from the reference remains: its per-task loss is T5's token mean over all of
the task's tokens in the batch; ours is the mean of per-example token means, so a long
rationale counts as much as a short one.

The two examples of a row are ``storage.datasets.step_by_step_examples``, the same
definition the ``jsonl-step-by-step`` export writes, so an exported file holds exactly the
tasks the student trains on (here with the row's system prompt, if any, as a system turn).

The layer over TRL is thin: SFTTrainer prepares both tasks as conversational
prompt/completion examples (completion-only loss); a ``task`` column rides along to
``compute_loss``, which averages and weights per task.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTConfig, SFTTrainer

from core.errors import InputError
from storage.datasets import STEP_BY_STEP_PREFIXES, step_by_step_examples
from training.config import TrainConfig
from training.data import as_rows, system_messages
from training.sft import trainer_args

PREDICT = STEP_BY_STEP_PREFIXES["predict"]  # a step-by-step student is evaluated with this prefix
EXPLAIN = STEP_BY_STEP_PREFIXES["explain"]


def step_by_step_dataset(rows: Any):
    """Two prompt/completion examples per row: task "predict" (-> label), then "explain" (-> rationale)."""
    from datasets import Dataset

    rows = as_rows(rows)
    examples = []
    for i, row in enumerate(rows):
        tasks = step_by_step_examples(row)  # predict, then explain when the row has a rationale
        if not tasks[0]["output"] or len(tasks) < 2:
            missing = "label" if not tasks[0]["output"] else "rationale"
            raise InputError(
                f"row {i} (sample {row.get('sample_id')}) has no {missing}: "
                "method 'distill' needs a rationale dataset (e.g. from the 'rationales' generator)"
            )
        examples += [_example(row, task) for task in tasks]
    return Dataset.from_list(examples)


def _example(row: dict, task: dict[str, str]) -> dict:
    return {
        "prompt": system_messages(row) + [{"role": "user", "content": task["input"]}],
        "completion": [{"role": "assistant", "content": task["output"]}],
        "task": task["task"],
    }


class _TaskCollator:
    """Wrap SFTTrainer's collator and pass each example's task through as ``is_predict``."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        batch = self.inner([{k: v for k, v in ex.items() if k != "task"} for ex in examples])
        batch["is_predict"] = torch.tensor([ex["task"] == "predict" for ex in examples], dtype=torch.bool)
        return batch


class DistillStepByStepTrainer(SFTTrainer):
    """SFTTrainer whose loss is ``label_weight * mean L_predict + (1 - label_weight) * mean L_explain``
    over the batch's examples of each task."""

    def __init__(self, *args, label_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_weight = label_weight
        self.data_collator = _TaskCollator(self.data_collator)
        # Our loss is a mean over examples, so the Trainer must divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "task" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "task"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        is_predict = inputs.pop("is_predict")
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[:, :-1, :].float()
        targets = labels[:, 1:]
        token_loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(targets.shape)
        mask = (targets != -100).float()
        per_example = (token_loss * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        is_predict = is_predict.to(per_example.device)
        loss = per_example.new_zeros(())
        # A task absent from this batch adds nothing; the other keeps its weight (module docstring).
        if is_predict.any():
            loss = loss + self.label_weight * per_example[is_predict].mean()
        if not is_predict.all():
            loss = loss + (1.0 - self.label_weight) * per_example[~is_predict].mean()
        return (loss, outputs) if return_outputs else loss


def build_distill_trainer(
    config: TrainConfig, model, tokenizer, rows: Any, output_dir: str, callbacks=None
) -> DistillStepByStepTrainer:
    args = SFTConfig(**trainer_args(config, output_dir), completion_only_loss=True)
    return DistillStepByStepTrainer(
        model=model,
        args=args,
        train_dataset=step_by_step_dataset(rows),
        label_weight=config.label_weight,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
