"""White-box distillation presets (kd, rkl, jsd, seqkd, gkd, onpolicy) through TRL's GKDTrainer.

GKD (Agarwal et al., 2024) is one loss with three knobs that cover the classic methods:
``beta`` interpolates the generalized JSD between forward KL (0, Hinton-style, mode
covering) and reverse KL (1, mode seeking); ``lmbda`` is the probability that a step
trains on sequences the *student* samples (on-policy; 1 = always, the paper's on-policy
GKD, preset ``onpolicy``; 0.5 = the ``gkd`` preset's 50/50 mix); ``seq_kd`` makes the other
steps train on sequences the *teacher* samples (Kim & Rush's sequence-level KD). With
lmbda 0 the sequences are the dataset's: ``rkl`` is then reverse KL on fixed data, not
MiniLLM, which optimizes reverse KL on the student's own samples with policy gradient.
The presets in ``training.config.PRESETS`` name the combinations; this module only wires
them into ``trl.experimental.gkd.GKDConfig``.

The teacher runs in-process (its logits are needed at every position), so it must be a
local HF folder with the student's tokenizer.
"""

from __future__ import annotations

import os
from typing import Any

# GKDTrainer lives in trl.experimental (TRL 1.x); we pin TRL < 2 and test the presets, so the
# "experimental API" warning on every import is noise.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl.experimental.gkd import GKDConfig, GKDTrainer

from training.config import TrainConfig
from training.data import messages_dataset
from training.sft import trainer_args


def build_kd_trainer(
    config: TrainConfig, model, teacher_model, tokenizer, rows: Any, output_dir: str, callbacks=None
) -> GKDTrainer:
    """A GKDTrainer with the method's preset (lmbda, beta, seq_kd) and sampling settings."""
    args = GKDConfig(**trainer_args(config, output_dir), **config.gkd_params())
    return GKDTrainer(
        model=model,
        teacher_model=teacher_model,
        args=args,
        train_dataset=messages_dataset(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
