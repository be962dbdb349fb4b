"""Ingest throughput: Store.ingest (Arrow scan + ON CONFLICT) vs row-by-row executemany.

    .venv/bin/python benchmarks/bench_ingest.py            # 200k samples
    .venv/bin/python benchmarks/bench_ingest.py --n 20000  # quicker

Prints a markdown table (benchmarks/run_all.py collects it). Every number comes from
this one run, side by side on the same machine; times are wall clock of the call alone
(building the pydantic records is reported separately, it is the caller's cost; a
10-record ingest into a scratch store runs first, untimed, so pyarrow's one-time lazy
import of pandas is not charged to the first measurement).
Row-by-row executemany is measured on a subset (it is far too slow for 200k rows) and
its rows/s is what the ratio uses.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common  # noqa: E402
from storage.records import Sample  # noqa: E402
from storage.store import Store  # noqa: E402

HEADER = (
    "| benchmark | rows | seconds | CPU s | rows/s | vs executemany | notes |\n"
    "|---|---:|---:|---:|---:|---:|---|"
)


def machine() -> str:
    return _common.machine(f"DuckDB {duckdb.__version__}")


def make_samples(n: int, seed: int = 0) -> list[Sample]:
    """Teacher samples shaped like real ones: 10 answers per instruction, a shared
    sampling-params dict, responses of a few hundred characters."""
    rng = random.Random(seed)
    words = "the of and to in is for that with as on model answer data teacher student token".split()
    params = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512}
    samples = []
    for i in range(n):
        body = " ".join(rng.choices(words, k=rng.randint(20, 60)))
        samples.append(
            Sample(
                instruction_id=f"{i // 10:032x}",
                response=f"{i}: {body}",
                teacher_model="SmolLM2-135M-Instruct",
                request_key=f"{i:032x}",
                finish_reason="stop",
                template_version="responses@1",
                sampling_params=params,
                run_id="0" * 32,
            )
        )
    return samples


class Timing:
    """Wall and CPU seconds of one call (CPU: this process, DuckDB's threads included;
    on a shared machine it says how much work was done when wall time is inflated)."""

    def __init__(self, fn) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.result = fn()
        self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu


def row(name: str, rows: int, t: Timing, base_rate: float | None, notes: str) -> str:
    rate = rows / t.wall
    ratio = f"{rate / base_rate:.0f}x" if base_rate else "1x"
    return f"| {name} | {rows:,} | {t.wall:.2f} | {t.cpu:.2f} | {rate:,.0f} | {ratio} | {notes} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_INGEST_N", 200_000)), help="samples to ingest")
    parser.add_argument("--executemany-n", type=int, default=2_000, help="subset for row-by-row executemany")
    args = parser.parse_args()

    build = Timing(lambda: make_samples(args.n))
    samples = build.result
    workdir = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        # Baseline: the same rows, one INSERT per row through executemany, one transaction.
        base = Store(workdir / "executemany.duckdb")
        base.init()
        subset = [s.row() for s in samples[: args.executemany_n]]
        columns = list(subset[0])
        sql = (
            f"INSERT INTO samples ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            "ON CONFLICT DO NOTHING"
        )
        with base.write() as con:
            values = [list(r.values()) for r in subset]
            em = Timing(lambda: con.executemany(sql, values))
        em_rate = len(subset) / em.wall

        # Warm-up, untimed: pyarrow imports pandas on its first conversion in a process
        # (~0.4s once), which would otherwise land in the first timed call below.
        warm = Store(workdir / "warmup.duckdb")
        warm.ingest(samples[:10])

        store = Store(workdir / "ingest.duckdb")
        store.init()
        new = Timing(lambda: store.ingest(samples))
        assert new.result.new == {"samples": args.n}, new.result
        dup = Timing(lambda: store.ingest(samples))
        assert dup.result.duplicate == {"samples": args.n} and dup.result.total_new == 0, dup.result

        batched = Store(workdir / "batched.duckdb")
        batched.init()
        size = max(1, args.n // 20)  # 20 commits, as a flow persisting batch by batch
        batches = Timing(lambda: [batched.ingest(samples[i : i + size]) for i in range(0, args.n, size)])
        assert batched.table_counts()["samples"] == args.n

        # Small commits (a flow's batches at a fast teacher): the file opened for each one
        # vs kept open between them (Store(keep_open_s=...)), on the same rows.
        small_n = min(args.n, 10_000)
        small = {}
        for keep in (0.0, 2.0):
            s_store = Store(workdir / f"small-{keep}.duckdb", keep_open_s=keep)
            s_store.init()
            small[keep] = Timing(lambda: [s_store.ingest(samples[i: i + 50]) for i in range(0, small_n, 50)])
            s_store.release()
            assert Store(s_store.path).table_counts()["samples"] == small_n
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(HEADER)
    print(row("ingest: row-by-row `executemany` (baseline)", len(subset), em, None,
              f"measured on a {len(subset):,}-row subset of the same samples, one transaction"))
    print(row("ingest: `Store.ingest`, all new", args.n, new, em_rate,
              "one call on an empty table (new rows found by anti-join); includes records -> Arrow and the commit"))
    print(row("ingest: `Store.ingest`, all duplicates (re-ingest)", args.n, dup, em_rate,
              "the same records again; nothing inserted"))
    print(row(f"ingest: `Store.ingest`, {-(-args.n // size)} batches of {size:,}", args.n, batches, em_rate,
              "one connection + commit per batch, as flows do"))
    open_rate = small_n / small[0.0].wall
    print(row(f"ingest: `Store.ingest`, {small_n // 50} batches of 50, file opened per commit", small_n,
              small[0.0], em_rate, "`keep_open_s=0` (the default)"))
    print(row(f"ingest: `Store.ingest`, {small_n // 50} batches of 50, file kept open", small_n, small[2.0], em_rate,
              f"`keep_open_s=2`: {small_n / small[2.0].wall / open_rate:.1f}x the row above"))
    print(f"\n_ingest machine: {machine()}; building the {args.n:,} pydantic records took {build.wall:.1f}s "
          f"(not counted); one untimed 10-record warm-up ingest first (pyarrow's one-time import of pandas); command: `python benchmarks/bench_ingest.py {' '.join(sys.argv[1:])}`_")


if __name__ == "__main__":
    main()
