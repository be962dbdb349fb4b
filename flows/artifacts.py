"""Prefect artifacts the flows publish: progress, a table of counts, a markdown report with plots.

    progress = Progress("generate-demo", "teacher samples kept", stage="generate")   # 0 % artifact now
    progress.update(kept, target, requests=120)     # throttled artifact updates + the terminal's bar
    publish_counts("generate-demo-counts", {"requested": 120, "ok": 118, ...})

    report = Report("Generation report: demo")
    report.number("kept samples", 100, "select count(*) from samples where run_id = '...'")
    report.image("Response length (words)", length_histogram({"kept": [12, 40, ...]}))
    report.publish("generate-demo-report")

Plots are matplotlib PNGs embedded as ``data:image/png;base64,...`` URIs, so the Prefect UI
shows them without a file server. Every number in a report carries the SQL that
reproduces it (`distill sql "..."`), so a report is never the only copy of a fact.

Artifacts are a view, not the record: a failure to publish one (API down, key refused) is
logged and never fails the flow. Keys are slugged to Prefect's alphabet (a-z, 0-9, '-').
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.progress import report

log = logging.getLogger(__name__)


def artifact_key(*parts: Any) -> str:
    """A Prefect artifact key from parts: lowercase letters, digits and dashes only."""
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    key = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return key[:100] or "distill"


def _safely(what: str, fn, *args, **kwargs):
    """Publish an artifact; log (never raise) if Prefect refuses. ``_sync=True`` keeps the
    call synchronous even inside an async flow (async code calls us via ``to_thread``)."""
    try:
        return fn(*args, _sync=True, **kwargs)
    except Exception as exc:  # an artifact is a view; the data is in the store
        log.warning("could not publish %s artifact: %s", what, exc)
        return None


async def _asafely(what: str, fn, *args, **kwargs):
    """``_safely`` for async code: the call goes through the event loop's own API client
    (a sync call from a worker thread builds a client, TLS context and all, every time)."""
    try:
        return await fn(*args, _sync=False, **kwargs)
    except Exception as exc:
        log.warning("could not publish %s artifact: %s", what, exc)
        return None


class Progress:
    """A step's progress: a Prefect progress artifact (0-100 %) with throttled updates, and
    the terminal's progress bar when the CLI runs the flow (``flows.progress``, by ``stage``).

    Artifact updates closer than ``min_interval_s`` apart or smaller than ``min_step``
    percent are skipped (the last one, 100 %, always goes out), so a tight loop costs no
    API calls; ``info`` (kept=, requests=, loss=) goes to the terminal's bar.
    """

    def __init__(self, key: str, description: str, *, stage: str | None = None, min_interval_s: float = 1.0,
                 min_step: float = 1.0, publish: bool = True) -> None:
        self.stage = stage
        self.key = artifact_key(key)
        self.description = description
        self.min_interval_s = min_interval_s
        self.min_step = min_step
        self.value = 0.0
        self._sent_at = 0.0
        self.id: UUID | None = None
        self._pending: tuple[float, str] | None = None  # the next background update (aupdate)
        self._sending: asyncio.Future | None = None
        if publish:  # publish=False: the caller awaits ``acreate()`` instead
            self.id = _safely("progress", create_progress_artifact, 0.0, key=self.key, description=description)

    async def acreate(self) -> None:
        """Publish the artifact at 0 % from async code (the event loop's own client)."""
        try:
            self.id = await create_progress_artifact(0.0, key=self.key, description=self.description, _sync=False)
        except Exception as exc:
            log.warning("could not publish progress artifact: %s", exc)

    def _due(self, done: float, total: float) -> float | None:
        """The new percentage if an update is due now (throttled), else None."""
        pct = 100.0 if total <= 0 else max(0.0, min(100.0, 100.0 * done / total))
        now = time.monotonic()
        final = pct >= 100.0 and self.value < 100.0
        if self.id is None or (not final and (pct - self.value < self.min_step
                                              or now - self._sent_at < self.min_interval_s)):
            return None
        self.value, self._sent_at = pct, now
        return pct

    def update(self, done: float, total: float, description: str | None = None, **info: Any) -> None:
        """Set progress to done/total (clamped to 0-100 %)."""
        self._report(done, total, info)
        pct = self._due(done, total)
        if pct is not None:
            _safely("progress", update_progress_artifact, self.id, pct,
                    description=description or self.description)

    def _report(self, done: float, total: float, info: dict[str, Any]) -> None:
        if self.stage is not None:
            report(self.stage, done, total, **info)

    async def aupdate(self, done: float, total: float, description: str | None = None, **info: Any) -> None:
        """``update`` from async code, sent in the background: the caller never waits on
        the API (a busy server answers in hundreds of milliseconds, and a flow's batch loop
        must not stall meanwhile). One call is in flight at a time; the latest value wins.
        ``aclose()`` waits for the last one."""
        self._report(done, total, info)
        pct = self._due(done, total)
        if pct is None:
            return
        self._pending = (pct, description or self.description)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._send_pending())

    async def _send_pending(self) -> None:
        while self._pending is not None:
            (pct, description), self._pending = self._pending, None
            try:
                await update_progress_artifact(self.id, pct, description=description, _sync=False)
            except Exception as exc:
                log.warning("could not publish progress artifact: %s", exc)

    async def aclose(self) -> None:
        """Wait until the updates given to ``aupdate`` have gone out."""
        if self._sending is not None:
            await self._sending

    def finish(self, description: str | None = None) -> None:
        self.update(1, 1, description)


def _count_rows(counts: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"count": name, "value": value} for name, value in counts.items()]


def publish_counts(key: str, counts: Mapping[str, Any], description: str = "Counts") -> UUID | None:
    """A two-column table artifact (count, value) in the order given."""
    return _safely("table", create_table_artifact, _count_rows(counts), key=artifact_key(key),
                   description=description)


async def apublish_counts(key: str, counts: Mapping[str, Any], description: str = "Counts") -> UUID | None:
    """``publish_counts`` from async code."""
    return await _asafely("table", create_table_artifact, _count_rows(counts), key=artifact_key(key),
                          description=description)


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> UUID | None:
    """Any list of dict rows as a table artifact."""
    return _safely("table", create_table_artifact, [dict(r) for r in rows], key=artifact_key(key),
                   description=description)


# -- plots -------------------------------------------------------------------------------


# Figures are built on matplotlib's object API (``Figure``, no pyplot): no global figure
# registry, so two charts can be drawn in two threads at once, and nothing to close.
# Margins are set by hand from the labels' lengths instead of ``bbox_inches="tight"``,
# which draws every figure twice to measure it (about 40% of a chart's cost).
_DPI = 80
_CHAR_IN = 0.075  # width of an average 10 pt label character, in inches


def _figure(width: float, height: float, *, left_in: float = 0.7, right_in: float = 0.2,
            bottom_in: float = 0.55, top_in: float = 0.35):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    fig.subplots_adjust(left=left_in / width, right=1 - right_in / width, bottom=bottom_in / height,
                        top=1 - top_in / height)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG as a data URI a markdown ``![alt](...)`` can show without a file server."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def length_histogram(series: Mapping[str, Sequence[int]], *, title: str = "Length (words)",
                     bins: int = 30) -> bytes:
    """Overlaid histograms of lengths, one per named series (e.g. instruction, response)."""
    import numpy as np

    fig, ax = _figure(6, 3)
    present = {name: np.asarray(values) for name, values in series.items() if len(values)}
    if present:  # shared bins; stairs draw one path per series (ax.hist draws a patch per bin)
        edges = np.histogram_bin_edges(np.concatenate(list(present.values())), bins=bins)
        for name, values in present.items():
            ax.stairs(np.histogram(values, bins=edges)[0], edges, fill=True, alpha=0.6,
                      label=f"{name} (n={len(values)})")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel("words")
    ax.set_ylabel("count")
    return _png(fig)


def distribution_chart(series: Mapping[str, Sequence[float]], *, title: str, xlabel: str,
                       edges: Sequence[float], marker: tuple[str, float] | None = None) -> bytes:
    """Overlaid histograms of values on fixed bin ``edges`` (e.g. judge scores 1-10), one per
    named series; ``marker`` draws a labelled vertical line (e.g. a threshold)."""
    import numpy as np

    fig, ax = _figure(6, 3)
    for name, values in series.items():
        if len(values):
            ax.stairs(np.histogram(np.asarray(values, dtype=float), bins=edges)[0], edges, fill=True, alpha=0.5,
                      label=f"{name} (n={len(values)})")
    if marker is not None:
        ax.axvline(marker[1], color="black", linestyle="--", linewidth=1, label=marker[0])
    if any(len(v) for v in series.values()) or marker is not None:
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(fig)


def funnel_chart(stages: Sequence[tuple[str, int]], *, title: str = "Filter funnel") -> bytes:
    """Horizontal bars: how many items survive each stage, top to bottom."""
    return _png(_funnel_figure(stages, title))


def _funnel_figure(stages: Sequence[tuple[str, int]], title: str):
    labels = [s for s, _ in stages]
    values = [v for _, v in stages]
    longest = max((len(label) for label in labels), default=0)
    fig, ax = _figure(6, 0.45 * max(len(stages), 2) + 0.9, left_in=0.25 + _CHAR_IN * longest)
    bars = ax.barh(range(len(stages)), values, color="#4C72B0")
    ax.set_yticks(range(len(stages)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(values, default=0), 1) * 1.15)  # room for the counts after the bars
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v}", va="center")
    ax.set_title(title)
    ax.set_xlabel("items")
    return fig


def loss_curve(steps: Sequence[float], losses: Sequence[float], *, title: str = "Training loss") -> bytes:
    """Loss per logged step."""
    fig, ax = _figure(6, 3)
    ax.plot(list(steps), list(losses), marker="." if len(steps) < 50 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return _png(fig)


# -- the report --------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts as a GitHub-flavoured markdown table (columns of the first row)."""
    if not rows:
        return "_(no rows)_"
    cols = list(rows[0].keys())
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


class Report:
    """A markdown report built section by section; numbers carry the SQL that reproduces them."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = [f"# {title}"]
        self._numbers: list[tuple[str, Any, str | None]] = []

    def heading(self, text: str) -> "Report":
        self._flush_numbers()
        self.parts.append(f"## {text}")
        return self

    def text(self, markdown: str) -> "Report":
        self._flush_numbers()
        self.parts.append(markdown)
        return self

    def number(self, label: str, value: Any, sql: str | None = None) -> "Report":
        """One number; consecutive numbers render as one table with their SQL."""
        self._numbers.append((label, value, sql))
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], sql: str | None = None) -> "Report":
        self._flush_numbers()
        self.parts.append(markdown_table(rows))
        if sql:
            self.parts.append(_sql_block(sql))
        return self

    def image(self, alt: str, png: bytes) -> "Report":
        self._flush_numbers()
        self.parts.append(f"![{alt}]({data_uri(png)})")
        return self

    def _flush_numbers(self) -> None:
        if not self._numbers:
            return
        rows = [{"what": label, "value": value} for label, value, _ in self._numbers]
        self.parts.append(markdown_table(rows))
        queries = [(label, sql) for label, _, sql in self._numbers if sql]
        if queries:
            lines = ["<details><summary>SQL to reproduce these numbers</summary>", ""]
            for label, sql in queries:
                lines += [f"**{label}**", "", _sql_block(sql), ""]
            lines.append("</details>")
            self.parts.append("\n".join(lines))
        self._numbers = []

    def markdown(self) -> str:
        self._flush_numbers()
        return "\n\n".join(self.parts) + "\n"

    def publish(self, key: str, description: str | None = None) -> UUID | None:
        return _safely("markdown", create_markdown_artifact, self.markdown(), key=artifact_key(key),
                       description=description or self.title)

    async def apublish(self, key: str, description: str | None = None) -> UUID | None:
        """``publish`` from async code."""
        return await _asafely("markdown", create_markdown_artifact, self.markdown(), key=artifact_key(key),
                              description=description or self.title)


def _sql_block(sql: str) -> str:
    return f"```sql\n{sql.strip()}\n```"
