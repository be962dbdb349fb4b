"""The generate flow's committer: finished batches judged by the filters and stored, in order.

A batch's teacher requests finish in any order; its samples must then be judged (the
filters' pools must see every sample kept before it) and stored before the batch ends,
so a crash loses at most the batches in flight. Doing that one batch at a time would
queue a fast teacher's batches behind one database commit each, so:

    committer = Committer(store, filters, run_id)
    others, outcome = await committer.commit(items, records)   # from each batch task

Batches that finish while a commit runs wait and go together in the next one: one
database open, one check against other runs and one insert per table for all of them.
The commit runs in a worker thread, so the other batches' requests go on meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from core.errors import DatabaseLockedError
from flows import queries
from flows.filtering import FilterOutcome, SampleFilters, SampleItem
from storage.records import Record
from storage.store import Store

T = TypeVar("T")
Judged = tuple[set[str], FilterOutcome]  # (samples other runs stored already, the filters' outcome)


class Committer:
    """Judges and stores finished batches, one commit at a time, in the order they finish."""

    def __init__(self, store: Store, filters: SampleFilters, run_id: str) -> None:
        self.store = store
        self.filters = filters
        self.run_id = run_id
        self.queue: list[tuple[list[SampleItem], Sequence[Record], asyncio.Future]] = []
        self.lock = asyncio.Lock()
        self.commits = 0

    async def commit(self, items: list[SampleItem], records: Sequence[Record]) -> Judged:
        """Judge ``items`` (this batch's samples) and store them with ``records``."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.queue.append((items, records, fut))
        async with self.lock:
            if not fut.done():  # no earlier commit took it along: commit everything queued now
                pending, self.queue = self.queue, []
                try:
                    results = await asyncio.to_thread(self._judge_and_store, [(i, r) for i, r, _ in pending])
                except Exception as exc:  # every batch of this commit fails with it
                    for *_, f in pending:
                        f.set_exception(exc)
                except BaseException:  # cancelled: so are the batches waiting on this commit
                    for *_, f in pending:
                        f.cancel()
                    raise
                else:
                    self.commits += 1
                    for (*_, f), result in zip(pending, results):
                        f.set_result(result)
        return await fut

    def _judge_and_store(self, batches: list[tuple[list[SampleItem], Sequence[Record]]]) -> list[Judged]:
        """Find the samples other runs stored, filter the rest, store it all: one commit.

        Batches are judged in order, each as a unit (the filters' pools grow between them).
        A sample another run already stored is that run's (an exact duplicate of it): it is
        neither judged again here (its decisions are that run's) nor counted as kept.
        """
        ids = [i.sample_id for items, _ in batches for i in items]

        def judge_and_store() -> list[Judged]:
            others = ({r["id"] for r in self.store.query(queries.OTHER_RUNS_SAMPLES, [ids, self.run_id])}
                      if ids else set())
            results = []
            for items, _ in batches:
                mine = {i.sample_id for i in items} & others
                results.append((mine, self.filters.apply([i for i in items if i.sample_id not in others])))
            self.store.ingest([r for (_, records), (_, outcome) in zip(batches, results)
                               for r in (*records, *outcome.records)])
            return results

        return in_one_commit(self.store, judge_and_store)


def in_one_commit(store: Store, steps: Callable[[], T]) -> T:
    """``steps()`` inside one ``store.write()`` block, so its queries and ingests share one
    database open and one commit. If the database is busy (another process past
    ``lock_timeout``, or a reader waiting), ``steps()`` runs on its own instead: its reads
    wait for the lock and its ingests spool to the journal."""
    if not store.readers_waiting():
        opened = False
        try:
            with store.write(timeout=store.lock_timeout):
                opened = True
                return steps()
        except DatabaseLockedError:
            if opened:  # raised by the steps themselves, not by opening the file
                raise
    return steps()
