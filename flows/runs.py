"""One ``runs`` row per named flow run: what ran, with what config, and what it produced.

The row's id is derived from the flow and the run name, so re-running a name (to resume
it) updates the same row, and every record the run produced carries that id:

    run = start_run(store, "generate", "nightly", config)     # status 'running'
    ...
    finish_run(store, run, "completed", counts)               # status, counts, ended_at

``select flow, name, status, counts from runs`` then says what each run did.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

from storage.records import Run, content_key, utcnow
from storage.store import code_version


_heap_frozen = threading.Event()


def freeze_startup_heap() -> None:
    """Leave what this process held before its first flow run out of full garbage collections.

    A worker that imported Prefect, pydantic, DuckDB and matplotlib holds some 250,000
    objects that live as long as the process. Each full (generation 2) collection walks
    them all: 0.3 s on a 2-vCPU machine, during which the event loop, and every request
    waiting on it, stands still (see BENCHMARKS.md, the generate flow). ``gc.freeze()``
    moves them to the permanent generation once, so the later collections walk only
    what the runs themselves allocate. Cyclic garbage left before the first run is never
    collected: a one-off, bounded amount.
    """
    if not _heap_frozen.is_set():
        _heap_frozen.set()
        gc.freeze()


def run_id_for(flow: str, run_name: str) -> str:
    """The stable id of run ``run_name`` of ``flow`` (the same on every resume)."""
    return content_key("run", flow, run_name)


def _prefect_flow_run_id() -> str | None:
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    except Exception:  # outside Prefect (a plain function call in a test)
        return None


def start_run(store: Any, flow: str, run_name: str, config: dict[str, Any]) -> Run:
    """Write (or reopen) the run's row with status 'running'."""
    run = Run(id=run_id_for(flow, run_name), name=run_name, flow=flow, status="running", config=config,
              prefect_flow_run_id=_prefect_flow_run_id(), code_version=code_version())
    with store.write() as con:  # reopening a finished run: the upsert refuses, so update here
        con.execute("DELETE FROM runs WHERE id = ?", [run.id])
        con.execute(
            "INSERT INTO runs (id, name, flow, status, config, counts, prefect_flow_run_id, code_version, "
            "started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            [run.id, run.name, run.flow, run.status, run.row()["config"], "{}", run.prefect_flow_run_id,
             run.code_version, run.started_at],
        )
    return run


def finish_run(store: Any, run: Run, status: str, counts: dict[str, Any]) -> Run:
    """Record the run's outcome. Goes through ingest, so a busy database spools it."""
    done = run.model_copy(update={"status": status, "counts": counts, "ended_at": utcnow()})
    store.ingest([done])
    return done
