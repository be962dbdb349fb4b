"""Where flows report progress besides Prefect: the terminal of the `distill` command.

Flows report through ``flows.artifacts.Progress`` (a Prefect artifact), which passes every
update on to ``report(...)`` here; the CLI installs a sink that drives a rich progress
bar. With no sink installed (a worker, the UI, a test) it does nothing.

    with progress_sink(my_fn):        # my_fn(stage, done, total, info)
        generate_flow(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

Sink = Callable[[str, float, float, dict[str, Any]], None]
_sink: Sink | None = None


def report(stage: str, done: float, total: float, **info: Any) -> None:
    if _sink is not None:
        try:
            _sink(stage, done, total, info)
        except Exception:  # a broken progress display never stops a flow
            pass


@contextlib.contextmanager
def progress_sink(sink: Sink) -> Iterator[None]:
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
