"""`distill server | deploy | worker`: operate distillery continuously on a real Prefect server.

    distill server start              # background `prefect server start`; prints the UI URL
    distill deploy                    # register prefect.yaml's deployments (and the `distill` work pool)
    distill worker --detach           # a process worker polling the pool, in the background
    prefect deployment run 'pipeline/pipeline'     # or the UI's Run button; schedules and triggers run too
    distill server stop               # the server and every worker `--detach` started

`distill serve` still serves the deployments from this checkout without a worker.
"""

from __future__ import annotations

import os
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="A local Prefect server: start, stop, status.", no_args_is_help=True)
console = Console(soft_wrap=True)

POOL = "distill"


def _need_server() -> str:
    from core.errors import DistillError
    from flows.server import running_server

    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    rec = running_server()
    if rec is None:
        raise DistillError("no Prefect server is running: start one with `distill server start` "
                           "(or set PREFECT_API_URL)")
    # Before Prefect is imported: its client reads the API from the environment (without
    # it, `distill deploy` registered the deployments on a temporary server of its own).
    os.environ["PREFECT_API_URL"] = rec.url
    return rec.url


@app.command("start")
def start(port: int = typer.Option(4200, help="Port of the server (the UI and the API).")) -> None:
    """Start a local Prefect server in the background (SQLite under .distill/) and wait for it."""
    from flows.server import start_server, state_dir

    with console.status(f"starting the Prefect server on port {port} (the first start migrates its database)"):
        rec, started = start_server(port)
    ui = rec.url.removesuffix("/api")
    verb = "started" if started else "already running"
    console.print(f"Prefect server {verb} (pid {rec.pid}, log {rec.log}, state {state_dir()})", highlight=False)
    console.print(f"UI: {ui}\ndistill commands here use it; elsewhere: export PREFECT_API_URL={rec.url}",
                  highlight=False)


@app.command("prepare")
def prepare() -> None:
    """Migrate an empty server database once for this machine (make install runs it), so a new
    project's first server starts without migrating (BENCHMARKS.md run 7: 5.7 s less to the first request)."""
    from flows.server import prepare_template

    console.print(f"server database template: {prepare_template()}", highlight=False)


@app.command("stop")
def stop() -> None:
    """Stop the server `distill server start` started, and the workers `distill worker --detach` started."""
    from flows.server import stop_server

    stopped = stop_server()
    console.print("stopped " + ", ".join(stopped) if stopped else "no server was running", highlight=False)


@app.command("status")
def status() -> None:
    """Whether the recorded server answers (exit code 1 when it does not)."""
    from flows.server import running_server

    rec = running_server()
    if rec is None:
        console.print("no Prefect server is running (distill server start)")
        raise typer.Exit(1)
    console.print(f"running: UI {rec.url.removesuffix('/api')}, API {rec.url} (pid {rec.pid})", highlight=False)


ops = typer.Typer()  # `distill deploy` and `distill worker`: top-level commands


@ops.command("deploy")
def deploy(
    names: Optional[list[str]] = typer.Argument(None, help="Deployments to register (default: all in prefect.yaml)."),
    pool: str = typer.Option(POOL, help="Work pool (created as a process pool when missing)."),
) -> None:
    """Register prefect.yaml's deployments with the server, every one pointing at this
    project's database (the `db` parameter)."""
    api = _need_server()
    from flows.deployments import deploy_deployments
    from storage.store import default_db_path

    db = default_db_path().resolve()
    done = deploy_deployments(names=names or None, pool=pool, db=str(db))
    console.print(f"registered {', '.join(done)} on {api} (work pool {pool!r}, database {db})", highlight=False)
    console.print(f"start a worker: distill worker --detach   (or: prefect worker start --pool {pool})",
                  highlight=False)


@ops.command("worker")
def worker(
    pool: str = typer.Option(POOL, help="Work pool to poll."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background (`distill server stop` ends it)."),
    query_seconds: Optional[float] = typer.Option(None, help="How often to poll for runs (Prefect's default 10 s)."),
) -> None:
    """A process worker (`prefect worker start --type process`) that runs the pool's flow runs."""
    api = _need_server()
    from flows.server import start_worker_detached, worker_command, worker_env

    if detach:
        rec = start_worker_detached(pool, api, query_seconds)
        console.print(f"worker polling {pool!r} in the background (pid {rec.pid}, log {rec.log})", highlight=False)
        return
    os.execvpe(worker_command(pool)[0], worker_command(pool), worker_env(api, query_seconds))
