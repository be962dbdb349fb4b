"""One entry point for every way of training a student: ``train(config, rows | store+dataset)``.

    from training.config import TrainConfig
    from training.train import train
    result = train(TrainConfig(method="kd", student="prune", keep_layers=10, max_steps=50),
                   store=Store("distillery.duckdb"), dataset="alpaca")
    print(result.checkpoint, result.final_loss)

What it does: resolve the teacher (by default the local weights of the model that generated
the dataset version, read from its lineage; ``embedded`` = SmolLM2-135M-Instruct) and the student
(``prune`` = the teacher with layers removed, training/student.py), refuse white-box KD
across tokenizers, build the method's TRL trainer (sft.py, kd.py, distill_step_by_step.py),
train with a rich progress bar and a caller-supplied progress callback, save the
checkpoint with ``train_config.yaml`` next to the weights, and record a ``training_runs``
row (dataset version, method + params, student/teacher, code version, times, losses).

Devices: CUDA when present (bf16 where supported), otherwise CPU in fp32 without gradient
checkpointing. Several GPUs: run the same code under Accelerate, which the HF Trainer
picks up by itself, e.g.

    accelerate launch --num_processes 4 -m training.train --config run.yaml --db distillery.duckdb --dataset alpaca

(one process per GPU, data-parallel; ``batch_size`` is per device). Only the main process
writes the run row and the checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.errors import DistillError, InputError, NotFoundError, TeacherError
from training import records
from core.embedded import cache_root, model_folder, same_weights
from training.config import TrainConfig, is_api_teacher
from training.data import as_rows
from training.progress import ProgressCallback, ProgressFn
from training.student import build_student, check_same_tokenizer

log = logging.getLogger(__name__)

CONFIG_FILE = "train_config.yaml"


class TrainResult(BaseModel):
    """What a run produced; the same numbers are in its training_runs row."""

    run_id: str = Field(description="training_runs.id")
    checkpoint: str = Field(description="Folder with the trained student (HF format) and train_config.yaml.")
    final_loss: float | None = Field(description="Loss at the last logged step.")
    loss_history: list[dict[str, Any]] = Field(description="[{step, loss}] per logged step.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Runtime, tokens/s, steps, samples.")
    student_init: str = Field(description="The student the run started from (path).")
    teacher: str | None = Field(None, description="Teacher path or id.")


# -- models ---------------------------------------------------------------------------


def resolve_teacher(teacher: str | None) -> Path | None:
    """Local folder of the teacher, or None when there is none / it is API-only."""
    if not teacher or is_api_teacher(teacher):
        return None
    path = model_folder(teacher)
    if not (path / "config.json").exists():
        raise NotFoundError(f"teacher {teacher!r}: no HF model folder (config.json) at {path}")
    return path


def dataset_teachers(store, name: str, version: int) -> dict[str, str | None]:
    """The models that generated a dataset version's samples (human seeds aside), each with the
    local weights its generate run recorded (None: not on this machine, e.g. an API)."""
    rows = store.query(records.DATASET_TEACHERS, [name, version])
    return {r["teacher_model"]: r["weights"] for r in rows}


def logit_teacher(config: TrainConfig, data_teachers: dict[str, str | None] | None) -> str | None:
    """The teacher a run uses: ``config.teacher``, else the data's own (its recorded weights).

    White-box methods distil the data's teacher unless the config says otherwise, and a
    different one only with ``allow_other_teacher``: a default must never silently distil
    the logits of a model other than the one that wrote the answers."""
    data = data_teachers or {}
    weights = {w for w in data.values() if w}
    if config.teacher is None:
        if len(data) > 1:
            raise TeacherError(f"the dataset's samples come from several teachers ({', '.join(sorted(data))}): "
                               "name the logit teacher in train.teacher")
        if not weights:
            which = f"the data's teacher {next(iter(data))!r} has" if data else "the rows have no lineage, so"
            if config.white_box:
                raise TeacherError(f"method {config.method!r} needs the teacher's logits: {which} no local weights "
                                   "recorded; set teacher.model_path when generating, or train.teacher")
            if config.student == "prune":
                raise TeacherError(f"student 'prune' cuts the student from the teacher's weights: {which} no local "
                                   "weights recorded; set train.teacher (e.g. 'embedded') or train.student")
            return None
        return weights.pop()
    if config.white_box and data and not config.allow_other_teacher and not any(
            same_weights(config.teacher, w) for w in weights):
        generated = ", ".join(f"{model} ({w or 'no local weights'})" for model, w in data.items())
        raise TeacherError(f"train.teacher {config.teacher!r} is not the model that generated the data "
                           f"({generated}); distilling another model's logits needs "
                           "train.allow_other_teacher: true")
    return config.teacher


def students_dir() -> Path:
    return cache_root() / "students"


def resolve_student(config: TrainConfig, teacher_path: Path | None) -> Path:
    """Local folder of the student to start from (building the pruned student if needed)."""
    if config.student == "prune" or config.student.startswith("prune:"):
        source = teacher_path if config.student == "prune" else resolve_teacher(config.student[len("prune:"):])
        if source is None:
            raise TeacherError(f"student {config.student!r}: there are no local weights to prune")
        tag = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
        keep = config.keep_layers
        keep_tag = "-".join(map(str, keep)) if isinstance(keep, list) else str(keep)
        return build_student(source, keep, students_dir() / f"{source.name}-{tag}-keep-{keep_tag}")
    path = Path(config.student).expanduser()
    if not (path / "config.json").exists():
        raise NotFoundError(f"student {config.student!r}: no HF model folder (config.json) at {path}")
    return path


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, device: str, *, for_inference: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    # Train in fp32 (bf16 autocast on GPU comes from the trainer); a frozen teacher on GPU can be bf16.
    dtype = torch.float32
    if for_inference and device == "cuda" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if for_inference:
        model.eval().to(device)
    return model


# -- data -----------------------------------------------------------------------------


def train_rows(rows: Any) -> list[dict[str, Any]]:
    """The rows to train on: the train split only, when rows say which split they are in."""
    rows = as_rows(rows)
    if rows and "split" in rows[0]:
        rows = [r for r in rows if (r.get("split") or "train") == "train"]
    if not rows:
        raise InputError("no training rows (the train split is empty)")
    return rows


def load_dataset_rows(store, name: str, version: int | None) -> tuple[list[dict[str, Any]], int]:
    """A dataset version's train rows and its version number."""
    from storage.datasets import get_dataset, load_rows

    info = get_dataset(store, name, version)
    number = info["version"] if isinstance(info, dict) else getattr(info, "version")
    return load_rows(store, name, number, split="train"), int(number)


# -- the entry point ------------------------------------------------------------------


def train(
    config: TrainConfig,
    rows: Any = None,
    *,
    store=None,
    dataset: str | None = None,
    version: int | None = None,
    on_progress: ProgressFn | None = None,
    show_progress: bool = True,
    flow_run_id: str | None = None,
) -> TrainResult:
    """Train a student as ``config`` says, on ``rows`` or on ``dataset`` (version) from ``store``.

    With a ``store`` the run is recorded in ``training_runs`` (status running -> completed,
    or failed with the error). ``on_progress`` receives ``{step, total, fraction, loss, ...}``
    after every optimizer step.
    """
    import torch
    from transformers import set_seed

    data_teachers = None
    if rows is None:
        if store is None or not dataset:
            raise InputError("train() needs rows, or a store and a dataset name")
        rows, version = load_dataset_rows(store, dataset, version)
        data_teachers = dataset_teachers(store, dataset, version)
    rows = train_rows(rows)
    teacher = logit_teacher(config, data_teachers)

    from training.sft import resolve_device

    device = resolve_device(config)
    if device == "cuda" and not torch.cuda.is_available():
        raise DistillError("device 'cuda' requested but torch sees no GPU")
    set_seed(config.seed)

    try:
        teacher_path = resolve_teacher(teacher)
    except NotFoundError:
        if config.white_box or config.student == "prune":
            raise
        teacher_path = None  # sft/distill on a given student: the teacher is only recorded
    if config.white_box and teacher_path is None:
        raise TeacherError(f"method {config.method!r} needs a local teacher; {teacher!r} is API-only")
    student_path = resolve_student(config, teacher_path)
    tokenizer = load_tokenizer(student_path)
    if config.white_box:
        check_same_tokenizer(tokenizer, load_tokenizer(teacher_path))

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_id = records.new_id()
    name = config.name or f"{config.method}-{dataset or 'rows'}" + (f"-v{version}" if version else "")
    teacher_id = str(teacher_path) if teacher_path else teacher
    started_at = records.utcnow()
    record = store is not None and _is_main_process()
    if record:
        records.start_run(
            store, run_id=run_id, name=name, dataset_name=dataset, dataset_version=version,
            method=config.method, params=config.method_params(), student=str(student_path),
            teacher=teacher_id, config=config.model_dump(mode="json"), started_at=started_at,
            flow_run_id=flow_run_id,
        )

    progress = ProgressCallback(on_progress, show=show_progress, description=f"{config.method} {name}")
    try:
        model = load_model(student_path, device)
        trainer = _build_trainer(config, model, teacher_path, device, tokenizer, rows, output_dir, [progress])
        output = trainer.train()
        trainer.save_model(str(output_dir))
        if _is_main_process():
            tokenizer.save_pretrained(output_dir)
            config.to_yaml(output_dir / CONFIG_FILE)
    except BaseException as exc:
        if record:
            records.finish_run(
                store, run_id=run_id, status="failed", final_loss=None, loss_history=progress.loss_history,
                metrics={"error": f"{type(exc).__name__}: {exc}"[:2000]}, checkpoint_path=None,
            )
        raise

    runtime = float(output.metrics.get("train_runtime") or 0.0)
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    metrics = {
        "train_runtime_s": runtime,
        "train_loss_mean": float(output.training_loss),
        "steps": int(trainer.state.global_step),
        "train_rows": len(rows),
        "examples": len(trainer.train_dataset),
        "tokens": tokens,
        "tokens_per_s": tokens / runtime if runtime else None,
        "device": device,
    }
    final_loss = progress.loss_history[-1]["loss"] if progress.loss_history else float(output.training_loss)
    if record:
        records.finish_run(
            store, run_id=run_id, status="completed" if math.isfinite(final_loss) else "diverged",
            final_loss=final_loss if math.isfinite(final_loss) else None, loss_history=progress.loss_history,
            metrics=metrics, checkpoint_path=str(output_dir.resolve()),
        )
    return TrainResult(
        run_id=run_id, checkpoint=str(output_dir.resolve()), final_loss=final_loss,
        loss_history=progress.loss_history, metrics=metrics, student_init=str(student_path), teacher=teacher_id,
    )


def _is_main_process() -> bool:
    """False in the non-zero ranks of an `accelerate launch` run."""
    return int(os.environ.get("RANK", "0")) == 0


def _build_trainer(config, model, teacher_path, device, tokenizer, rows, output_dir, callbacks):
    """The method's TRL trainer (one module per way of training)."""
    from transformers import PrinterCallback

    out = str(output_dir)
    if config.method == "sft":
        from training.sft import build_sft_trainer

        trainer = build_sft_trainer(config, model, tokenizer, rows, out, callbacks)
    elif config.method == "distill":
        from training.distill_step_by_step import build_distill_trainer

        trainer = build_distill_trainer(config, model, tokenizer, rows, out, callbacks)
    else:
        from training.kd import build_kd_trainer

        teacher = load_model(teacher_path, device, for_inference=True)
        trainer = build_kd_trainer(config, model, teacher, tokenizer, rows, out, callbacks)
    trainer.remove_callback(PrinterCallback)  # the rich bar shows the loss; no dict per step on stdout
    return trainer


# -- command line (also the `accelerate launch` target) -------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a student on a dataset version.")
    parser.add_argument("--config", required=True, help="TrainConfig YAML")
    parser.add_argument("--db", default=None, help="DuckDB file (default $DISTILL_DB or ./distillery.duckdb)")
    parser.add_argument("--dataset", required=True, help="dataset name")
    parser.add_argument("--version", type=int, default=None, help="dataset version (default: latest)")
    args = parser.parse_args(argv)
    from storage.store import Store

    config = TrainConfig.from_yaml(args.config)
    result = train(config, store=Store(args.db), dataset=args.dataset, version=args.version,
                   show_progress=_is_main_process())
    if _is_main_process():
        print(f"run {result.run_id}: final loss {result.final_loss}, checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
