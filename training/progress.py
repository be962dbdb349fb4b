"""A TrainerCallback that shows a rich progress bar, records the loss per step, and tells a
caller (the train flow turns it into a Prefect progress artifact) how far training is."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

ProgressFn = Callable[[dict[str, Any]], None]


class ProgressCallback(TrainerCallback):
    """Drives a rich bar and ``on_progress({step, total, fraction, loss, epoch, elapsed_s})``.

    ``loss_history`` holds one ``{"step", "loss"}`` per logged step (logging_steps apart).
    A failing ``on_progress`` never stops training: progress reporting is best effort.
    """

    def __init__(self, on_progress: ProgressFn | None = None, *, show: bool = True, description: str = "training"):
        self.on_progress = on_progress
        self.show = show
        self.description = description
        self.loss_history: list[dict[str, float]] = []
        self._progress = None
        self._task = None
        self._start = 0.0
        self._last_loss: float | None = None
        self._plain_every = 0
        self._console = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.monotonic()
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console()
            if not console.is_terminal:
                # A log file, not a terminal: a bar would only render at the end, so print a
                # line every ~10% instead.
                self._plain_every = max(1, (state.max_steps or 10) // 10)
                self._console = console
                self._report(state)
                return
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=state.max_steps or None, loss="-")
        self._report(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        # non-finite losses are kept too: the run record should show them
        self._last_loss = float(loss)
        self.loss_history.append({"step": int(state.global_step), "loss": float(loss)})
        if self._progress is not None:
            self._progress.update(self._task, loss=f"{self._last_loss:.4f}")
        step, total = state.global_step, state.max_steps
        if self._plain_every and (step % self._plain_every < args.logging_steps or step == total):
            self._console.print(f"{self.description}: step {step}/{total} loss {self._last_loss:.4f} "
                                f"({time.monotonic() - self._start:.0f}s)", highlight=False)
        self._report(state)

    def on_step_end(self, args, state, control, **kwargs):
        # The Trainer logs after on_step_end, so the loss shown here is the previous log's;
        # on_log below refreshes it.
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)
        self._report(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._report(state, done=True)

    def _report(self, state, done: bool = False) -> None:
        if self.on_progress is None:
            return
        total = state.max_steps or 0
        info = {
            "step": int(state.global_step),
            "total": int(total),
            "fraction": 1.0 if done else (state.global_step / total if total else 0.0),
            "loss": self._last_loss,
            "epoch": state.epoch,
            "elapsed_s": time.monotonic() - self._start,
            "done": done,
        }
        try:
            self.on_progress(info)
        except Exception:  # noqa: BLE001 - a broken progress sink must not kill a training run
            pass
