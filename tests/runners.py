"""Drive a method's runner the way the generate flow does, without a database or Prefect.

    result = await drive(EvolRunner(pool, config, run_name="t", batch_size=8), teacher)

next_batch -> run -> absorb until the runner has no more work; the results are merged
into one ``MethodResult``. The flow adds storage, filters and scheduling around exactly
these three calls (flows/generate.py).
"""

from __future__ import annotations

from generators.common import MethodResult


async def drive(runner, teacher, *, max_requests: int = 10**9, max_batches: int | None = None) -> MethodResult:
    total = MethodResult()
    batches = 0
    while max_batches is None or batches < max_batches:
        batch = runner.next_batch(max_requests)
        if batch is None:
            break
        result = await runner.run(teacher, batch)
        runner.absorb(batch, result)
        total.extend(result)
        batches += 1
    return total
