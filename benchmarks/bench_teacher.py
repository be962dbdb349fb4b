"""Teacher-layer overhead: OpenAITeacher + the ledger (a real DuckDB) vs a bare asyncio loop.

    .venv/bin/python benchmarks/bench_teacher.py                 # 2,000 requests, 100 ms, concurrency 64
    .venv/bin/python benchmarks/bench_teacher.py --n 500

The fake OpenAI server (tests/fake_openai_server.py) runs in its own process with a
fixed 100 ms latency and no faults, so it neither shares our event loop nor our GIL.
Client-process CPU per request is reported too: unlike samples/s it does not depend
on how busy the machine is. Both sides send the same number of chat requests with fresh prompts (no ledger hits):

- bare: ``asyncio.gather`` of ``AsyncOpenAI.chat.completions.create`` under ``Semaphore(64)``;
- teacher: ``LedgeredTeacher(OpenAITeacher(concurrency=64), Store(tmp))``: key, ledger
  lookup, limiter, retries bookkeeping, one journal append per group of arrivals,
  and the merge into DuckDB at the end, all inside the timed span (the database file
  exists and is migrated beforehand, as it is for a flow). The teacher uses the same
  ``AsyncOpenAI`` client as the bare loop, but as it ships: ``client.post`` with the JSON
  body as is (no SDK request transform or response models) over the SDK's aiohttp backend
  (``http_client: aiohttp``, the default). That is why it can beat the bare loop; the
  "no ledger" row isolates what the ledger itself costs.

The physical limit is concurrency / latency (640/s). Target: teacher >= 0.95 x bare.
Prints markdown table rows: | benchmark | measurement | value | notes | machine | command |.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402

from benchmarks._common import machine  # noqa: E402  (bench_flow and bench_embedded import it from here)
from fake_openai_server import spawn_fake_server  # noqa: E402
from generators.teachers.base import ChatRequest  # noqa: E402
from generators.teachers.ledger import LedgeredTeacher  # noqa: E402
from generators.teachers.openai_backend import OpenAITeacher  # noqa: E402
from storage.store import Store  # noqa: E402

HEADER = "| benchmark | measurement | value | notes | machine | command |\n|---|---|---:|---|---|---|"


async def bare(url: str, prompts: list[str], concurrency: int) -> tuple[float, float]:
    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        async with sem:
            r = await client.chat.completions.create(model="fake", messages=[{"role": "user", "content": prompt}],
                                                     max_tokens=32)
            return r.choices[0].message.content

    start, cpu = time.perf_counter(), time.process_time()
    out = await asyncio.gather(*(one(p) for p in prompts))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await client.close()
    assert all(out)
    return elapsed, cpu


def teacher(url: str, prompts: list[str], concurrency: int, db: Path, ledger: bool,
            http_client: str = "aiohttp") -> tuple[float, float]:
    inner = OpenAITeacher("fake", base_url=url, concurrency=concurrency, http_client=http_client)
    if ledger:
        Store(db).init()  # an existing database, as a flow has: creating it is not per-batch work
    t = LedgeredTeacher(inner, Store(db)) if ledger else inner
    start, cpu = time.perf_counter(), time.process_time()
    done = t.generate([ChatRequest.chat(p, max_tokens=32) for p in prompts])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(d.ok for d in done) and len(done) == len(prompts)
    if ledger:
        assert Store(db).query("SELECT count(*) AS n FROM requests")[0]["n"] >= len(prompts)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the sides this many times")
    parser.add_argument("--no-header", dest="header", action="store_false", help="rows only")
    args = parser.parse_args()
    command = "python benchmarks/bench_teacher.py " + " ".join(sys.argv[1:])
    limit = args.concurrency / args.latency
    with spawn_fake_server(args.latency) as url, tempfile.TemporaryDirectory() as tmp:
        # Warm both paths (imports, pandas behind the first Arrow batch, connections).
        asyncio.run(bare(url, [f"warm bare {i}" for i in range(args.concurrency)], args.concurrency))
        teacher(url, [f"warm t {i}" for i in range(args.concurrency)], args.concurrency, Path(tmp) / "w.duckdb", True)
        # Interleave the sides over --rounds so a change in machine load hits all of them.
        bare_s = bare_cpu = led_s = led_cpu = plain_s = plain_cpu = httpx_s = httpx_cpu = 0.0
        per = args.n // args.rounds
        for r in range(args.rounds):
            s, c = asyncio.run(bare(url, [f"bare {r} {i}" for i in range(per)], args.concurrency))
            bare_s, bare_cpu = bare_s + s, bare_cpu + c
            s, c = teacher(url, [f"ledger {r} {i}" for i in range(per)], args.concurrency,
                           Path(tmp) / "b.duckdb", True)
            led_s, led_cpu = led_s + s, led_cpu + c
            s, c = teacher(url, [f"plain {r} {i}" for i in range(per)], args.concurrency, Path(tmp) / "p", False)
            plain_s, plain_cpu = plain_s + s, plain_cpu + c
            s, c = teacher(url, [f"httpx {r} {i}" for i in range(per)], args.concurrency,
                           Path(tmp) / "h.duckdb", True, http_client="httpx")
            httpx_s, httpx_cpu = httpx_s + s, httpx_cpu + c
        args.n = per * args.rounds
    rate = {name: args.n / s for name, s in (("bare", bare_s), ("ledger", led_s), ("plain", plain_s),
                                             ("httpx", httpx_s))}
    where = machine()
    if args.header:
        print(HEADER)
    def cpu(seconds: float) -> str:  # client-process CPU per request: independent of machine load
        return f"client CPU {seconds / args.n * 1e3:.2f} ms/request"

    rows = [
        ("bare AsyncOpenAI + Semaphore loop", f"{rate['bare']:.0f} samples/s",
         f"{args.n} requests in {bare_s:.2f}s; {cpu(bare_cpu)}"),
        ("OpenAITeacher (no ledger)", f"{rate['plain']:.0f} samples/s",
         f"{rate['plain'] / rate['bare']:.2f}x bare; {cpu(plain_cpu)}"),
        ("OpenAITeacher + ledger (DuckDB)", f"{rate['ledger']:.0f} samples/s",
         f"**{rate['ledger'] / rate['bare']:.2f}x bare** (target >= 0.95); {cpu(led_cpu)} "
         f"({led_cpu / bare_cpu:.2f}x bare)"),
        ("OpenAITeacher + ledger, http_client=httpx", f"{rate['httpx']:.0f} samples/s",
         f"{rate['httpx'] / rate['bare']:.2f}x bare: the SDK's default HTTP stack under the same teacher; "
         f"{cpu(httpx_cpu)}"),
        ("physical limit", f"{limit:.0f} samples/s", f"concurrency {args.concurrency} / latency {args.latency}s; "
         f"bare reaches {rate['bare'] / limit:.0%}"),
    ]
    for name, value, notes in rows:
        print(f"| teacher layer, fake server {args.latency * 1000:.0f} ms, c={args.concurrency} | {name} | {value} "
              f"| {notes} | {where} | `{command.strip()}` |")


if __name__ == "__main__":
    main()
