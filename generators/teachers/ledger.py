"""The request ledger: a teacher never pays twice for the same request.

Wrap any teacher; every request is looked up by its key in the ``requests`` table first:

    teacher = LedgeredTeacher(OpenAITeacher(...), Store("distillery.duckdb"), run_id=run.id)
    done = await teacher.agenerate(requests)     # same contract as any Teacher
    teacher.last_stats                           # LedgerStats(requested=.., cached=.., sent=.., ok=.., failed=..)
    teacher.sent, teacher.tokens, teacher.failures  # what really reached the teacher, over its lifetime

- A key already ``ok`` is served from the ledger (``Completion.cached=True``) and never sent.
- Requests with the same key in one batch are sent once; every position gets the answer.
- Each result is appended to the store's journal as it arrives (``store.spool``, fsynced;
  results arriving within ``flush_interval_s`` (50 ms) of the last append go together in
  the next one), and the journal is merged into the database when the batch ends. A
  process killed mid-batch loses at most the requests on the wire and the last 50 ms of
  answers.
- A request that finally fails is recorded ``failed`` with its reason and is sent again
  on the next run; an "ok" answer with no text is recorded as failed ("empty content"),
  so a failure never turns into an empty sample.

This module talks to ``storage`` (the ledger is a table) but a teacher without a store
works the same minus the bookkeeping: methods never need to know which they have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from generators.teachers.base import ChatRequest, Completion, Teacher, TokenLogprob
from core.errors import DatabaseError
from storage.arrow import records_to_arrow
from storage.records import RequestRecord, utcnow

log = logging.getLogger(__name__)

# Ledger rows already paid for, for a batch of keys (bound as one list parameter).
OK_REQUESTS_SQL = """
SELECT key, response_text, finish_reason, prompt_tokens, completion_tokens, latency_s,
       attempts, logprobs, model
FROM requests
WHERE status = 'ok' AND key IN (SELECT unnest(?::VARCHAR[]))"""
# Every key of one model already paid for (``prefetch``: one read instead of one per batch).
OK_KEYS_SQL = "SELECT key FROM requests WHERE status = 'ok' AND model = ?"


@dataclass
class LedgerStats:
    """What the last batch cost: ``sent`` requests went to the teacher, ``cached`` did not."""

    requested: int = 0
    cached: int = 0
    duplicate: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0


class _JournalWriter:
    """Appends ledger rows to the journal in the background, as group commits.

    Each append is fsynced and costs about 1 ms of CPU whatever its size, so rows that
    arrive within ``flush_interval_s`` of the previous append wait and go together: at
    most one append per interval, and a kill loses at most that interval's arrivals
    beyond the requests on the wire.
    """

    def __init__(self, store: Any, flush_interval_s: float) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.pending: list[RequestRecord] = []
        self.written = 0
        self._last = 0.0
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.ensure_future(self._run())

    def put(self, record: RequestRecord) -> None:
        self.pending.append(record)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            linger = self._last + self.flush_interval_s - time.monotonic()
            if linger > 0 and not self._closing:
                await asyncio.sleep(linger)
            while self.pending:
                batch, self.pending = self.pending, []
                self._last = time.monotonic()
                self.written += await asyncio.to_thread(self.store.spool, batch)
            if self._closing:
                return

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        await self._task


class LedgeredTeacher(Teacher):
    """Any teacher, with every request keyed, looked up and recorded in the ``requests`` table."""

    def __init__(self, inner: Teacher, store: Any, *, run_id: str | None = None,
                 merge: bool = True, flush_interval_s: float = 0.05, prefetch: bool = False,
                 prefetch_refresh_s: float = 30.0) -> None:
        super().__init__(inner.model, defaults=inner.defaults)
        self.inner = inner
        self.backend = inner.backend
        self.store = store
        self.run_id = run_id
        self.merge = merge
        self.flush_interval_s = flush_interval_s
        self.last_stats = LedgerStats()
        # Over this object's lifetime, requests that really went to the teacher (not served
        # from the ledger): how many, their tokens, and the failures by reason. A flow's
        # budgets and its "the teacher is down" check read these.
        self.sent = 0
        self.tokens = 0
        self.failures: Counter[str] = Counter()
        # prefetch: the keys of this model already ok (database + journal) are read once and
        # kept in memory, with every key this object records ok added as it arrives; a batch
        # with none of them skips the per-batch lookup (a database open). Re-read after
        # ``prefetch_refresh_s`` so keys another process paid for meanwhile are found.
        self.prefetch = prefetch
        self.prefetch_refresh_s = prefetch_refresh_s
        self._known: set[str] | None = None
        self._known_at = 0.0
        self._prefetch_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LedgeredTeacher({self.inner!r}, {self.store!r})"

    def key(self, request: ChatRequest) -> str:
        return self.inner.key(request)

    # -- looking up ------------------------------------------------------------------------
    def lookup(self, keys: list[str]) -> dict[str, Completion]:
        """Completions already ``ok`` in the ledger (database or pending journal), by key."""
        if not keys:
            return {}
        rows: list[dict[str, Any]] = []
        if self.store.path.exists():
            try:
                rows = self.store.query(OK_REQUESTS_SQL, [keys])
            except DatabaseError as err:  # locked too long: fall back to the journal alone
                log.warning("ledger lookup in %s failed (%s); using the journal only", self.store.path, err)
        found = {row["key"]: row for row in rows}
        # Rows spooled but not merged yet (a crash, a busy database) are paid for too.
        found.update(self.store.pending_ok_requests(set(keys) - set(found)))
        return {key: _cached_completion(key, row) for key, row in found.items()}

    def prefetch_keys(self) -> None:
        """Read the ledger's ok keys for this model now (``prefetch``), e.g. inside a caller's
        ``store.write()`` block so it costs no database open of its own."""
        self._refresh_known(force=True)

    def _refresh_known(self, *, force: bool = False) -> set[str]:
        with self._prefetch_lock:  # batches starting together read the keys once
            if force or self._known is None or time.monotonic() - self._known_at > self.prefetch_refresh_s:
                self._known = self._ok_keys()
                self._known_at = time.monotonic()
            return self._known

    def _prepare(self, keys: list[str]) -> dict[str, Completion]:
        if self.prefetch:
            known = self._refresh_known()
            keys = [k for k in keys if k in known]  # the others are not in the ledger
        # Build one throw-away Arrow batch first: the first conversion imports pandas
        # (~0.5 s), and a result must not wait that long to become durable.
        if not self._warm:
            records_to_arrow([RequestRecord(key="warm-up", model="", backend="", status="failed")])
            self._warm = True
        return self.lookup(keys)

    _warm = False

    def _ok_keys(self) -> set[str]:
        """Every key of this model already ``ok`` in the ledger (database and journal)."""
        keys: set[str] = set()
        if self.store.path.exists():
            try:
                keys = {row["key"] for row in self.store.query(OK_KEYS_SQL, [self.inner.model])}
            except DatabaseError as err:  # locked too long: look every batch up instead
                log.warning("ledger prefetch from %s failed (%s); looking keys up per batch", self.store.path, err)
                return _ALL
        keys.update(self.store.pending_ok_keys(self.inner.model))  # spooled, not merged yet
        return keys

    # -- generating ------------------------------------------------------------------------
    def _record(self, request: ChatRequest, done: Completion) -> tuple[RequestRecord, Completion]:
        if done.ok and not (done.text or "").strip():
            done = done.model_copy(update={"ok": False, "text": None, "error": "empty content"})
        # model_construct: every field is built right here from typed values, and this
        # runs once per request on the hot path (validation would double the ledger's cost).
        record = RequestRecord.model_construct(
            key=done.key, model=self.inner.model, backend=self.inner.backend, kind=request.kind,
            messages=[dict(m) for m in request.messages] if request.messages is not None else None,
            prompt=request.prompt, params=request.merged_params_dict(self.inner.defaults),
            sample_index=request.sample_index, status="ok" if done.ok else "failed",
            response_text=done.text if done.ok else None, finish_reason=done.finish_reason,
            prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
            latency_s=done.latency_s, attempts=done.attempts,
            error=None if done.ok else (done.error or "failed without a reason"),
            logprobs=[t.model_dump() for t in done.logprobs] if done.logprobs else None,
            run_id=self.run_id, created_at=utcnow(),
        )
        return record, done

    async def astream(self, requests: list[ChatRequest]) -> AsyncIterator[tuple[int, Completion]]:
        requests = list(requests)
        keys = [self.key(r) for r in requests]
        stats = self.last_stats = LedgerStats(requested=len(requests))
        cached = await asyncio.to_thread(self._prepare, list(set(keys)))
        positions: dict[str, list[int]] = {}
        todo: list[ChatRequest] = []
        for i, (key, request) in enumerate(zip(keys, requests)):
            if key in cached:
                stats.cached += 1
                yield i, cached[key].model_copy(update={"tag": request.tag})
            elif key in positions:
                stats.duplicate += 1
                positions[key].append(i)
            else:
                positions[key] = [i]
                todo.append(request)
        if not todo:
            return
        stats.sent = len(todo)
        self.sent += len(todo)
        writer = _JournalWriter(self.store, self.flush_interval_s)
        try:
            async for j, done in self.inner.astream(todo):
                record, done = self._record(todo[j], done)
                writer.put(record)
                self.tokens += (done.prompt_tokens or 0) + (done.completion_tokens or 0)
                if not done.ok:
                    self.failures[record.error] += 1
                if done.ok and self._known is not None:
                    self._known.add(record.key)
                stats.ok += done.ok
                stats.failed += not done.ok
                for i in positions[record.key]:
                    tag = requests[i].tag
                    yield i, done if done.tag == tag else done.model_copy(update={"tag": tag})
        finally:
            await writer.close()
            if self.merge:
                await asyncio.to_thread(self._merge)
        if stats.failed:
            log.warning("%d of %d requests to %s failed; they will be retried on the next run",
                        stats.failed, stats.sent, self.model)

    def _merge(self) -> None:
        try:
            self.store.merge_journal()
        except DatabaseError as err:  # busy: the journal keeps the rows for the next commit
            log.info("ledger rows stay in the journal for now: %s", err)

    async def agenerate(self, requests: list[ChatRequest]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        async for i, done in self.astream(list(requests)):
            out[i] = done
        return out  # type: ignore[return-value]

    async def adetach(self) -> None:
        await self.inner.adetach()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Everything(set):
    """Stands for "any key may be in the ledger" (prefetch failed): look every key up."""

    def __contains__(self, key: object) -> bool:
        return True

    def add(self, key: Any) -> None:
        return None


_ALL = _Everything()


def _cached_completion(key: str, row: dict[str, Any]) -> Completion:
    logprobs = row.get("logprobs")
    if isinstance(logprobs, str):
        logprobs = json.loads(logprobs)
    return Completion(
        key=key, ok=True, text=row["response_text"], finish_reason=row.get("finish_reason"),
        prompt_tokens=row.get("prompt_tokens"), completion_tokens=row.get("completion_tokens"),
        latency_s=row.get("latency_s"), attempts=row.get("attempts") or 1,
        logprobs=[TokenLogprob(**t) for t in logprobs] if logprobs else None,
        cached=True, model=row.get("model"),
    )
