"""Async rate limiters for teacher APIs: requests per minute and tokens per minute.

Both are reservation-based: ``acquire`` books its slot synchronously (no lock needed on
one event loop) and then sleeps until the slot is due, so waiters are served in order
and the limiter itself costs a few microseconds per request.

    rpm = RequestRateLimiter(600)     # at most 600 requests in any 60 s window, evenly spaced
    tpm = TokenBucket(90_000)         # 90k tokens/min, bursts up to one minute's worth
    await rpm.acquire(); await tpm.acquire(estimated_tokens)
    ...; tpm.settle(estimated_tokens, actual_tokens)
"""

from __future__ import annotations

import asyncio
import time


class RequestRateLimiter:
    """Space requests ``60 / rpm`` seconds apart (GCRA without burst).

    Requests spaced exactly that far apart put at most ``rpm`` of them into any half-open
    60-second window, which is how providers count; there is no initial burst to overrun it.
    """

    def __init__(self, rpm: float) -> None:
        if rpm <= 0:
            raise ValueError("rpm must be positive")
        self.interval = 60.0 / rpm
        self._next = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        due = max(now, self._next)
        self._next = due + self.interval
        if due > now:
            await asyncio.sleep(due - now)


class TokenBucket:
    """Tokens per minute: a bucket of ``tpm`` tokens refilled at ``tpm / 60`` per second.

    The balance may go negative: a reservation larger than what is left makes the caller
    (and everyone after it) wait until the refill covers it. ``settle`` corrects an
    estimate once the real usage is known.
    """

    def __init__(self, tpm: float) -> None:
        if tpm <= 0:
            raise ValueError("tpm must be positive")
        self.capacity = float(tpm)
        self.rate = tpm / 60.0
        self._tokens = float(tpm)
        self._stamp = time.monotonic()

    def _refill(self) -> float:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return now

    async def acquire(self, tokens: float) -> None:
        self._refill()
        self._tokens -= min(float(tokens), self.capacity)
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)

    def settle(self, reserved: float, actual: float) -> None:
        """Charge the difference between what was reserved and what was really used."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens - (actual - min(reserved, self.capacity)))
