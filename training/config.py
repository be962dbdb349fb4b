"""The one typed configuration behind every training run (YAML, CLI and the Prefect form).

A run is ``method`` + ``student`` + ``teacher`` + a handful of optimizer settings. Methods:

==========  ===========================================================  ==================
method      what it optimizes                                            teacher needed
==========  ===========================================================  ==================
sft         next-token NLL on the dataset's responses (assistant only)   none (data only)
kd          forward KL(teacher || student) on the dataset's responses    local (white-box)
rkl         reverse KL(student || teacher) on the dataset's responses    local
jsd         generalized JSD (beta 0.5) on the dataset's responses        local
seqkd       forward KL on sequences the teacher samples during training  local
gkd         JSD (beta 0.5); each step, with probability 0.5, on the      local
            student's own samples, else on the dataset's responses
onpolicy    reverse KL on the student's own samples at every step        local
            (GKD's on-policy setting, lmbda 1)
distill     step-by-step: label_weight * NLL("predict:" -> label) +      none (data only)
            (1 - label_weight) * NLL("explain:" -> rationale), per task
==========  ===========================================================  ==================

The white-box presets map onto TRL's ``GKDConfig`` (lmbda = probability that a training
step uses sequences the student samples, beta = JSD interpolation: 0 forward KL, 1 reverse
KL, seq_kd = sequences the teacher samples on the other steps); an explicit
``lmbda``/``beta`` overrides the preset.

``rkl`` is off-policy: reverse KL, token by token, on the dataset's sequences. MiniLLM (Gu
et al., 2024) also minimizes reverse KL, but on sequences the student samples, optimized
with policy gradient; the nearest preset here is ``onpolicy`` (reverse KL on student
samples, GKD's gradient, which does not differentiate through the sampling).

    >>> TrainConfig(method="rkl").gkd_params()["beta"]
    1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.config import load_config_file
from core.errors import InputError

Method = Literal["sft", "kd", "rkl", "jsd", "seqkd", "gkd", "onpolicy", "distill"]

WHITE_BOX_METHODS = ("kd", "rkl", "jsd", "seqkd", "gkd", "onpolicy")

# (lmbda, beta, seq_kd) per white-box method: the survey's names for GKD's three knobs.
PRESETS: dict[str, dict[str, Any]] = {
    # Supervised (off-policy) KD on the dataset's responses; beta picks the divergence.
    "kd": {"lmbda": 0.0, "beta": 0.0, "seq_kd": False},
    # Reverse KL on the dataset's sequences (off-policy), not MiniLLM: see the module docstring.
    "rkl": {"lmbda": 0.0, "beta": 1.0, "seq_kd": False},
    "jsd": {"lmbda": 0.0, "beta": 0.5, "seq_kd": False},
    # Kim & Rush's sequence-level KD: the teacher samples the sequences (TRL: forward KL on them).
    "seqkd": {"lmbda": 0.0, "beta": 0.0, "seq_kd": True},
    # A 50/50 mix, not on-policy training: each step is on student samples with probability 0.5.
    "gkd": {"lmbda": 0.5, "beta": 0.5, "seq_kd": False},
    # GKD's on-policy setting (lmbda 1: student samples at every step). beta 1 = reverse KL: the
    # paper finds the best divergence task-dependent, with the mode-seeking end (reverse KL,
    # JSD 0.9) ahead on student-generated data, and uses on-policy reverse KL for task-agnostic
    # distillation (instruction tuning), the setting closest to ours. TRL's DistillationTrainer,
    # which TRL names as the successor for lmbda 1, defaults to beta 1 too. Tune beta per task.
    "onpolicy": {"lmbda": 1.0, "beta": 1.0, "seq_kd": False},
}

# Teacher ids that name a remote model: fine for SFT on its data, useless for white-box KD.
API_PREFIXES = ("api:", "openai:", "http://", "https://", "vllm:")


def is_api_teacher(teacher: str | None) -> bool:
    """True when the teacher id names a remote (black-box) model rather than local weights."""
    return bool(teacher) and teacher.lower().startswith(API_PREFIXES)


class EvalConfig(BaseModel):
    """How a trained student is evaluated (training/evaluate.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Evaluate after training (train flow / CLI).")
    max_new_tokens: int = Field(64, ge=1, description="Greedy generation length per held-out prompt.")
    batch_size: int = Field(8, ge=1, description="Prompts generated per batch (left padding).")
    max_prompts: int | None = Field(
        None, ge=1, description="Cap on held-out prompts (None = the whole eval split + JSONL)."
    )
    prompts_jsonl: str | None = Field(
        None, description='Extra held-out prompts: JSONL of {"instruction","input","response"?}.'
    )
    agreement: bool = Field(
        True, description="Also compute mean per-token KL(teacher || student) when the teacher is local."
    )


class TrainConfig(BaseModel):
    """Everything one training run needs; validated once, saved next to the checkpoint."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "sft", description="sft | kd | rkl | jsd | seqkd | gkd | onpolicy | distill (table above)."
    )
    student: str = Field(
        "prune",
        description="Student model: a local HF folder, 'prune' (the teacher with layers removed) "
        "or 'prune:<path>' (that model with layers removed).",
    )
    keep_layers: list[int] | int | float | Literal["every_other"] = Field(
        "every_other",
        description="Which decoder layers a pruned student keeps: explicit indices, a count (evenly "
        "spaced, first and last kept), a fraction in (0, 1), or 'every_other'.",
    )
    teacher: str | None = Field(
        None,
        description="The logit teacher of the white-box methods and the model 'prune' cuts the student from: "
        "None = the local weights of the model that generated the dataset version (from its lineage); "
        "'embedded' (SmolLM2-135M-Instruct); a local HF folder; or an API id like 'openai:gpt-4o-mini' "
        "(recorded only: sft/distill).",
    )
    allow_other_teacher: bool = Field(
        False,
        description="White-box methods: distil the logits of train.teacher even though it is not the model "
        "that generated the data (refused otherwise, so a default never silently distils the wrong model).",
    )
    lmbda: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Probability that a training step (one micro-batch) uses student-sampled (on-policy) "
        "sequences instead of the dataset's (or the teacher's, with seq_kd); preset if None.",
    )
    beta: float | None = Field(
        None, ge=0.0, le=1.0, description="JSD interpolation: 0 forward KL, 1 reverse KL; preset if None."
    )
    temperature: float = Field(
        0.9, gt=0.0,
        description="Sampling temperature for on-policy / seq-KD generation (TRL's GKD loss itself uses 1).",
    )
    max_new_tokens: int = Field(64, ge=1, description="Tokens sampled per on-policy / seq-KD completion.")
    label_weight: float = Field(
        0.5, ge=0.0, le=1.0,
        description="distill only: weight of the 'predict' (label) task's loss; the 'explain' (rationale) "
        "task's gets 1 - label_weight. The reference code's alpha; 0.5 weighs both tasks equally.",
    )
    epochs: float = Field(1.0, gt=0.0, description="Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(5e-5, gt=0.0, description="Peak AdamW learning rate.")
    lr_scheduler: str = Field("linear", description="transformers scheduler name (linear, cosine, constant, ...).")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of steps spent warming up the LR.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    batch_size: int = Field(4, ge=1, description="Examples per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps per optimizer step.")
    max_length: int = Field(512, ge=16, description="Token limit per training sequence (prompt + response).")
    packing: bool = Field(False, description="sft only: pack several examples into each max_length block.")
    seed: int = Field(0, description="Seed for data order, initialization of any new weights, and sampling.")
    output_dir: str = Field("checkpoints/run", description="Where the checkpoint folder (and config.yaml) goes.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA when available, else CPU (fp32, no gradient checkpointing)."
    )
    bf16: bool | None = Field(None, description="bf16 mixed precision; None = on for CUDA with bf16 support, off on CPU.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (useful on GPU for big students).")
    logging_steps: int = Field(1, ge=1, description="Record the loss every N optimizer steps.")
    name: str | None = Field(None, description="Run name recorded in training_runs (default: method + dataset).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation settings.")

    @model_validator(mode="before")
    @classmethod
    def _reject_alpha(cls, data: Any) -> Any:
        # An old config's alpha weighted the rationale: refuse it rather than read it the other way round.
        if isinstance(data, dict) and "alpha" in data:
            raise ValueError(
                "'alpha' was renamed 'label_weight' and now weights the label ('predict') loss, as in the "
                "reference code; the old alpha weighted the rationale: set label_weight to 1 - alpha"
            )
        return data

    @model_validator(mode="after")
    def _reject_contradictions(self) -> "TrainConfig":
        white_box = self.method in WHITE_BOX_METHODS
        if white_box and is_api_teacher(self.teacher):
            raise ValueError(
                f"method {self.method!r} needs the teacher's logits, but teacher {self.teacher!r} is "
                "API-only; use method 'sft' (or 'distill') on its data, or a local teacher folder"
            )
        if self.student == "prune" and is_api_teacher(self.teacher):
            raise ValueError(
                f"student 'prune' needs the teacher's weights, but teacher {self.teacher!r} is API-only; "
                "give a local student folder or 'prune:<local model>'"
            )
        if not white_box and (self.lmbda is not None or self.beta is not None):
            raise ValueError(f"lmbda/beta only apply to the white-box methods {WHITE_BOX_METHODS}, not {self.method!r}")
        if self.method == "seqkd" and self.lmbda not in (None, 0.0):
            raise ValueError("seqkd trains on teacher-sampled sequences only; lmbda must be 0 (or use 'gkd')")
        if self.method == "onpolicy" and self.lmbda not in (None, 1.0):
            raise ValueError("onpolicy trains on student-sampled sequences only; lmbda must be 1 (or use 'gkd')")
        if self.packing and self.method != "sft":
            raise ValueError(f"packing is supported for 'sft' only, not {self.method!r}")
        if isinstance(self.keep_layers, float) and not 0.0 < self.keep_layers < 1.0:
            raise ValueError("keep_layers as a fraction must be in (0, 1); use an int for a layer count")
        if isinstance(self.keep_layers, int) and self.keep_layers < 1:
            raise ValueError("keep_layers as a count must be >= 1")
        if isinstance(self.keep_layers, list) and (
            not self.keep_layers or len(set(self.keep_layers)) != len(self.keep_layers)
        ):
            raise ValueError("keep_layers as a list must be non-empty with no repeats")
        return self

    @property
    def white_box(self) -> bool:
        return self.method in WHITE_BOX_METHODS

    def gkd_params(self) -> dict[str, Any]:
        """lmbda/beta/seq_kd/temperature/max_new_tokens for TRL's GKDConfig (preset + overrides)."""
        if not self.white_box:
            raise InputError(f"method {self.method!r} is not a white-box distillation method")
        params = dict(PRESETS[self.method])
        if self.lmbda is not None:
            params["lmbda"] = self.lmbda
        if self.beta is not None:
            params["beta"] = self.beta
        params["temperature"] = self.temperature
        params["max_new_tokens"] = self.max_new_tokens
        return params

    def method_params(self) -> dict[str, Any]:
        """The method's own knobs, as recorded in training_runs.params."""
        if self.white_box:
            return self.gkd_params()
        if self.method == "distill":
            return {"label_weight": self.label_weight}
        return {"packing": self.packing}

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """A training config from YAML (a file of its own, or one with a top-level ``train:``)."""
        return load_config_file(path, cls, section="train")

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
        return path
