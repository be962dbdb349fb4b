"""`distill run | generate | curate | train`: the Prefect flows from the terminal.

    distill run                                   # the pipeline on configs/demo.yaml (make demo)
    distill run --config configs/openai-self-instruct.yaml --set generate.target=500
    distill generate --method responses --target 200 --instructions-file prompts.jsonl
    distill curate --dataset demo
    distill curate --judge-threshold 8            # LLM judge on (curate.judge), keep score >= 8
    distill train --dataset demo@2 --method sft --max-steps 50

Each command loads one pipeline config (``--config``, else configs/demo.yaml when it
exists, else the defaults), applies the command's options and any ``--set key=value``
over it, validates it once, and runs the flow in-process. With ``PREFECT_API_URL`` unset
it uses the project's Prefect server, starting it in the background when none runs
(``flows/server.py``; ``DISTILL_SERVER=ephemeral``: a temporary one per command).
Progress shows as a rich bar; each step ends with a summary table, and `distill run` ends
with the before/after evaluation table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from core.config import parse_sets

# Before torch is imported anywhere in this process: OpenMP threads that spin-wait make
# CPU generation and training 10-25x slower whenever the cores are shared with anything
# else (measured here: 170 s vs 6.6 s for the same SmolLM2 batch on 2 busy cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(help="Run the distillation flows (Prefect).", no_args_is_help=True)
console = Console()

DEFAULT_CONFIG = Path("configs/demo.yaml")


def _quiet_prefect(verbose: bool) -> None:
    """Before Prefect is imported: which API this command uses (flows/server.py: the
    project's server, started in the background when none runs), and a quiet terminal. Prefect's
    logs stay at WARNING on the terminal unless asked (-v); runs still send their INFO logs
    to the API, so a run's Logs tab in the UI shows what it did."""
    from flows.server import use_prefect_api

    if not verbose:
        # The console handler's level, not the loggers': INFO records still reach the API handler.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
        # Library tqdm bars (weights loading, dataset mapping) would interleave with ours.
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    use_prefect_api(announce=lambda message: console.print(message, style="dim", highlight=False))


def _load(config: Optional[Path], overrides: dict[str, Any], only: str | None = None):
    """The pipeline config: ``--config`` (else configs/demo.yaml when it exists, else the
    defaults) with the command's options and ``--set`` values over it. ``only``: the one
    step this command runs; the others are skipped, so their settings (and the checks
    across them) cannot stop it."""
    from flows.config import load_config

    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    if only is not None:
        steps = {"generate": ("generate",), "curate": ("curate",), "train": ("train", "evaluate")}[only]
        overrides = {**{f"skip.{step}": True for step in ("seeds", "generate", "curate", "train", "evaluate")
                        if step not in steps}, **overrides}
    return load_config(config, overrides)


def _db_default(overrides: dict[str, Any]) -> None:
    # `distill --db F run` publishes F as $DISTILL_DB; it wins over the config's db.
    if os.environ.get("DISTILL_DB"):
        overrides["db"] = os.environ["DISTILL_DB"]


class _Bars:
    """The rich progress display the flows report to (flows.progress)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: float, total: float, info: dict[str, Any]) -> None:
        label = {"generate": "generate (kept)", "curate": "curate (judged)", "judge": "curate (LLM judge)",
                 "compare": "curate (pairwise judge)", "train": "train (steps)"}.get(stage, stage)
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(label, total=total or None, info="")
        text = ""
        if stage == "generate":
            text = f"{info.get('requests', 0)} requests"
        elif info.get("loss") is not None:  # train, and any step that trains (lion's)
            text = f"loss {info['loss']:.4f}"
        self.progress.update(self.tasks[stage], completed=done, total=total or None, info=text)

    def __enter__(self) -> "_Bars":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


# What training and evaluation import first (torch alone is seconds on a small CPU).
TRAINING_MODULES = ("torch", "transformers")


def _run_with_bars(fn, *args, warm: tuple[str, ...] = (), **kwargs):
    """Run a flow with the progress bars; ``warm``: modules the flow imports early, imported
    while a Prefect server this command started still boots (flows.server.ensure_api_ready)."""
    from flows.progress import progress_sink
    from flows.server import ensure_api_ready

    # A server this command started boots while the command imports and loads its config.
    ensure_api_ready(warm=(*warm, "matplotlib.figure"))  # the reports' charts come last
    with _Bars() as bars, progress_sink(bars):
        return fn(*args, **kwargs)


def _summary_table(title: str, summary: dict[str, Any], keys: list[str]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key in keys:
        if key in summary and summary[key] is not None:
            value = summary[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
            table.add_row(key.replace("_", " "), str(value))
    return table


GENERATE_KEYS = ["status", "target", "kept", "requested", "sent", "cached", "failed", "retried", "lost", "samples",
                 "duplicates_of_other_runs", "dropped", "requests_used", "request_budget", "tokens_used",
                 "elapsed_s", "message"]
CURATE_KEYS = ["dataset", "version", "rows", "train", "eval", "new_rows", "candidates", "judged", "kept", "dropped",
               "judge", "compare", "exports", "event", "message"]
TRAIN_KEYS = ["dataset", "version", "method", "final_loss", "checkpoint", "training_run_id", "message"]


def _print_evaluations(evaluations: list[dict[str, Any]], title: str = "Before / after evaluation") -> None:
    if not evaluations:
        return
    from training.evaluate import EvalResult, comparison_table

    console.print(comparison_table([EvalResult(**e) for e in evaluations], title=title))


# -- commands ------------------------------------------------------------------------------


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML (default configs/demo.yaml)."),
    run_name: Optional[str] = typer.Option(None, help="Run name (re-running a name resumes it)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set generate.target=50 (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's INFO logs."),
) -> None:
    """Run the whole pipeline: seeds -> generate -> curate -> train -> evaluate."""
    _quiet_prefect(verbose)
    overrides = {"run_name": run_name, **parse_sets(set_)}
    _db_default(overrides)
    cfg = _load(config, overrides)
    from flows.pipeline import pipeline_flow

    console.print(f"[bold]distill run[/bold] {cfg.run_name}: database {cfg.db or 'default'}")
    from generators.teachers import backend_modules

    warm = (*(() if cfg.skip.generate else backend_modules(cfg.teacher)), *(() if cfg.skip.train else TRAINING_MODULES))
    out = _run_with_bars(pipeline_flow, cfg, warm=warm)
    if "generate" in out:
        console.print(_summary_table("generate", out["generate"], GENERATE_KEYS))
    if "curate" in out:
        console.print(_summary_table("curate", out["curate"], CURATE_KEYS))
    if "train" in out:
        console.print(_summary_table("train", out["train"], TRAIN_KEYS))
        _print_evaluations(out["train"].get("evaluations") or [])
    console.print(f"Everything is in {out['db']}: distill sql \"select flow, name, status from runs\"")


@app.command()
def generate(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML for teacher/generate settings."),
    method: Optional[str] = typer.Option(None, help="self_instruct | alpaca | evol_instruct | responses | rationales."),
    target: Optional[int] = typer.Option(None, help="Kept samples to reach."),
    run_name: Optional[str] = typer.Option(None, help="Run name (re-running a name resumes it)."),
    batch_size: Optional[int] = typer.Option(None, help="Teacher requests per task."),
    max_attempts: Optional[int] = typer.Option(None, help="Most requests this run may send."),
    token_budget: Optional[int] = typer.Option(None, help="Most tokens this run may spend."),
    instructions_file: Optional[Path] = typer.Option(None, help="JSONL of instructions to answer."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's INFO logs."),
) -> None:
    """Generate samples with the teacher until the target of KEPT samples is reached."""
    _quiet_prefect(verbose)
    overrides = {"run_name": run_name, "generate.method": method, "generate.target": target,
                 "generate.batch_size": batch_size, "generate.max_attempts": max_attempts,
                 "generate.token_budget": token_budget,
                 "generate.instructions_file": str(instructions_file) if instructions_file else None,
                 **parse_sets(set_)}
    _db_default(overrides)
    cfg = _load(config, overrides, only="generate")
    import asyncio

    from flows.generate import generate_flow
    from generators.teachers import backend_modules

    out = _run_with_bars(asyncio.run, generate_flow(run_name=cfg.run_name, teacher=cfg.teacher,
                                                    generate=cfg.generate, db=cfg.db, seeds=cfg.seeds),
                         warm=backend_modules(cfg.teacher))
    console.print(_summary_table(f"generate {cfg.run_name}", out, GENERATE_KEYS))


@app.command()
def curate(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML for the curate settings."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name (a new version is frozen)."),
    run_name: Optional[str] = typer.Option(None, help="Name of this curation run."),
    generate_run: Optional[str] = typer.Option(None, help="Only samples of this generate run."),
    judge_threshold: Optional[float] = typer.Option(
        None, help="LLM judge: keep samples scoring at least this (1-10); turns curate.judge on."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's INFO logs."),
) -> None:
    """Filter samples not yet judged (and LLM-judge them when curate.judge is set), freeze a
    new dataset version, export it."""
    _quiet_prefect(verbose)
    overrides = {"run_name": run_name, "curate.dataset": dataset, "curate.judge.min_score": judge_threshold,
                 **parse_sets(set_)}
    _db_default(overrides)
    cfg = _load(config, overrides, only="curate")
    from flows.curate import curate_flow

    out = _run_with_bars(curate_flow, run_name=cfg.run_name, curate=cfg.curate, db=cfg.db,
                         generate_run=generate_run, teacher=cfg.teacher)
    console.print(_summary_table(f"curate {cfg.run_name}", out, CURATE_KEYS))


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML for the train settings."),
    dataset: Optional[str] = typer.Option(None, help="NAME or NAME@VERSION (default: curate.dataset, latest)."),
    method: Optional[str] = typer.Option(None, help="sft | kd | rkl | jsd | seqkd | gkd | onpolicy | distill."),
    max_steps: Optional[int] = typer.Option(None, help="Optimizer steps."),
    output_dir: Optional[str] = typer.Option(None, help="Checkpoint folder."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Train only."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's INFO logs."),
) -> None:
    """Train a student on a dataset version and evaluate it before/after."""
    from storage.datasets import parse_dataset_ref

    _quiet_prefect(verbose)
    name, version = parse_dataset_ref(dataset) if dataset else (None, None)
    overrides = {"curate.dataset": name, "train.method": method, "train.max_steps": max_steps,
                 "train.output_dir": output_dir, **parse_sets(set_)}
    _db_default(overrides)
    cfg = _load(config, overrides, only="train")
    from flows.train import train_flow

    out = _run_with_bars(train_flow, dataset=cfg.curate.dataset, dataset_version=version, train=cfg.train,
                         evaluate=cfg.evaluate, skip_evaluate=no_eval, db=cfg.db, warm=TRAINING_MODULES)
    console.print(_summary_table("train", out, TRAIN_KEYS))
    _print_evaluations(out.get("evaluations") or [])


@app.command()
def serve(
    names: Optional[list[str]] = typer.Argument(None, help="Deployments to serve (default: all in prefect.yaml)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's INFO logs."),
) -> None:
    """Serve prefect.yaml's deployments from this checkout (schedules and event triggers)
    until Ctrl-C. Needs a Prefect server: `distill server start` (or PREFECT_API_URL)."""
    _quiet_prefect(verbose)
    from flows.deployments import load_deployments, serve_deployments

    deployments = load_deployments(names=names or None)
    console.print(f"serving {', '.join(d.name for d in deployments)} (Ctrl-C to stop)")
    serve_deployments(deployments)
