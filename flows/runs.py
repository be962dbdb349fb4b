"""One ``runs`` row per named flow run: what ran, with what config, and what it produced.

    with recorded_run(store, "generate", "nightly", config) as run:   # status 'running'
        ...                                                           # records carry run.id
        run.finish("completed", counts)
    # leaving the block records the outcome; an exception records 'failed' and goes on

The row's id is derived from the flow and the run name, so re-running a name (to resume
it) updates the same row, and every record the run produced carries that id.
``select flow, name, status, counts from runs`` then says what each run did.

Also here, the process-level helpers every flow uses: ``freeze_startup_heap`` and
``run_sync`` (a coroutine from sync code, also inside a running event loop).
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from storage.records import Run, content_key, utcnow
from storage.store import Store, code_version

T = TypeVar("T")
_heap_frozen = threading.Event()


def freeze_startup_heap() -> None:
    """Leave what this process held before its first flow run out of full garbage collections.

    A worker that imported Prefect, pydantic, DuckDB and matplotlib holds some 250,000
    objects that live as long as the process. Each full (generation 2) collection walks
    them all: 0.3 s on a 2-vCPU machine, during which the event loop, and every request
    waiting on it, stands still (BENCHMARKS.md, the generate flow). ``gc.freeze()`` moves
    them to the permanent generation once, so later collections walk only what the runs
    allocate. Cyclic garbage left before the first run is never collected: a one-off,
    bounded amount.
    """
    if not _heap_frozen.is_set():
        _heap_frozen.set()
        gc.freeze()


SCHEDULED = "{scheduled}"


def resolve_run_name(name: str) -> str:
    """``name`` with ``{scheduled}`` replaced by this flow run's scheduled start (UTC, to the
    minute; now, outside a scheduled run): a deployment whose run name is
    ``nightly-{scheduled}`` gives each scheduled run a name of its own, so it adds new data,
    while re-running that same flow run gives the same name, so it resumes."""
    if SCHEDULED not in name:
        return name
    from datetime import timezone

    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time.astimezone(timezone.utc)
    return name.replace(SCHEDULED, when.strftime("%Y-%m-%dT%H-%M"))


def flow_run_name(flow: str):
    """A ``flow_run_name`` for ``@flow``: '<flow>-<run name>', with ``{scheduled}`` resolved
    (Prefect's own template would show the braces)."""
    def name() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters
        config = params.get("config")  # the pipeline's one parameter (a model, or its dict from the API)
        nested = config.get("run_name") if isinstance(config, dict) else getattr(config, "run_name", None)
        return f"{flow}-{resolve_run_name(params.get('run_name') or nested or 'default')}"

    return name


def run_id_for(flow: str, run_name: str) -> str:
    """The stable id of run ``run_name`` of ``flow`` (the same on every resume)."""
    return content_key("run", flow, run_name)


def prefect_flow_run_id() -> str | None:
    """The id of the Prefect flow run this code runs in (None outside one)."""
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    except Exception:  # outside Prefect (a plain function call in a test)
        return None


class RecordedRun:
    """The run a ``recorded_run`` block is in: its id, and the outcome to record."""

    def __init__(self, run: Run) -> None:
        self.record = run
        self.status = "completed"
        self.counts: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return self.record.id

    def finish(self, status: str, counts: dict[str, Any]) -> None:
        """The outcome written when the block ends (default: 'completed', no counts)."""
        self.status, self.counts = status, counts


@contextmanager
def recorded_run(store: Store, flow: str, run_name: str, config: dict[str, Any]) -> Iterator[RecordedRun]:
    """Write (or reopen) the run's row as 'running'; at the end record its outcome, or
    'failed' when the block raises (the exception goes on)."""
    run = Run(id=run_id_for(flow, run_name), name=run_name, flow=flow, status="running", config=config,
              prefect_flow_run_id=prefect_flow_run_id(), code_version=code_version())
    with store.write() as con:  # reopening a finished run: the upsert refuses, so replace it here
        con.execute("DELETE FROM runs WHERE id = ?", [run.id])
        store.insert(con, [run])
    handle = RecordedRun(run)
    try:
        yield handle
    except BaseException:
        _finish(store, run, "failed", handle.counts)
        raise
    _finish(store, run, handle.status, handle.counts)


def _finish(store: Store, run: Run, status: str, counts: dict[str, Any]) -> None:
    # Through ingest: a busy database spools the outcome to the journal instead of failing.
    store.ingest([run.model_copy(update={"status": status, "counts": counts, "ended_at": utcnow()})])


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when an event loop already runs in
    this thread (a sync flow or task called from an async flow): then in a short-lived
    thread of its own, since ``asyncio.run`` refuses to nest."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="distill-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
