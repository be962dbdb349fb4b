"""`distill lion`: Lion's adversarial loop (flows/lion.py) from the terminal.

    distill lion --config configs/lion.yaml --iterations 1
    distill lion --config configs/lion.yaml --iterations 3        # the same run name: goes on with 2 and 3
    distill lion --set referee.backend=openai --set referee.model=gpt-4o-mini --set referee.api_key_env=OPENAI_API_KEY
    distill sql "select * from lion_iterations"

Loads one Lion config (``--config``, else configs/lion.yaml when it exists, else the
defaults), applies ``--iterations``, ``--run-name`` and any ``--set key=value`` over it,
validates it once and runs the flow in-process with a progress bar per step; ends with a
table of the run's iterations (the ``lion_iterations`` rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from core.config import parse_sets
from flows.cli_flows import TRAINING_MODULES, _db_default, _quiet_prefect, _run_with_bars, console

app = typer.Typer(help="Lion's adversarial distillation loop.")

DEFAULT_CONFIG = Path("configs/lion.yaml")
ROWS = [("train_pool", "Train Pool"), ("cache_pool", "Cache Pool"), ("judged", "judged pairs"),
        ("failed", "failed verdicts"), ("hard", "hard"), ("easy", "easy"), ("mean_teacher_score", "mean teacher score"),
        ("mean_student_score", "mean student score"), ("mean_gap", "mean gap"), ("generated", "new instructions"),
        ("dropped", "dropped by filters"), ("rougeL_teacher", "ROUGE-L vs teacher"),
        ("kl_teacher_student", "KL(teacher||student)"), ("tokens", "tokens"), ("elapsed_s", "seconds")]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def iterations_table(rows: list[dict[str, Any]], title: str) -> Table:
    """One column per iteration (a few of them fit a terminal; the rows are the numbers)."""
    table = Table(title=title)
    table.add_column("iteration", style="bold")
    for row in rows:
        table.add_column(str(row["iteration"]), justify="right")
    for name, label in ROWS:
        table.add_row(label, *(_cell(row.get(name)) for row in rows))
    return table


@app.command()
def lion(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Lion YAML (default configs/lion.yaml)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-n", min=1,
                                             help="Iterations the run should have finished (default: the config's)."),
    run_name: Optional[str] = typer.Option(None, help="Run name (re-running a name resumes it)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set loop.threshold=2 (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's INFO logs."),
) -> None:
    """Run Lion: imitation, discrimination and generation, iteration after iteration."""
    _quiet_prefect(verbose)
    overrides = {"run_name": run_name, "iterations": iterations, **parse_sets(set_)}
    _db_default(overrides)
    from flows.config import load_lion_config

    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    cfg = load_lion_config(config, overrides)
    from flows.lion import lion_flow

    console.print(f"[bold]distill lion[/bold] {cfg.run_name}: {cfg.iterations} iteration(s), "
                  f"database {cfg.db or 'default'}")
    from generators.teachers import backend_modules

    out = _run_with_bars(lion_flow, cfg, warm=(*backend_modules(cfg.teacher), *TRAINING_MODULES))
    console.print(iterations_table(out["iterations"], f"lion {out['run_name']}"))
    console.print(f"Everything is in {out['db']}: distill sql \"select * from lion_iterations\"")
