"""Abuse limits: per-key token buckets (client IP, shop, token) with an injected clock, and the query gate.

Why not a library: pyrate-limiter keeps a timestamp per admitted request for every key (memory grows with the limit,
and a shop allowed 1,000 events/s would hold 10,000 timestamps), and `limits` reads the wall clock itself and offers
windows, not buckets. A token bucket is two numbers per key and a few lines, and takes our clock, so tests can
advance time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping

from aiohttp import web

from server.errors import ApiError

# Keys idle long enough to be full again are forgotten once this many are held, so random IPs cannot grow memory.
MAX_KEYS = 100_000


class RateLimited(ApiError):
    def __init__(self, what: str, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(429, "rate_limited", f"Too many requests {what}: retry after {seconds} s.",
                         headers={"Retry-After": str(seconds)})


class TokenBuckets:
    """One bucket per key: `rate` tokens per second refill it up to `burst`; a request takes `cost` tokens."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], int], *, max_keys: int = MAX_KEYS) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, int]] = {}  # key -> (tokens, at ms)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens from the key's bucket: 0.0 when admitted, else the seconds until it would be."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) / 1000 * self.rate)
        # A request bigger than the whole bucket passes when the bucket is full and leaves it in debt, so a large
        # batch is slowed down rather than refused for ever.
        needed = min(cost, self.burst)
        if tokens >= needed:
            if key not in self._buckets and len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            self._buckets[key] = (tokens - cost, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (needed - tokens) / self.rate

    def take_many(self, costs: Mapping[str, float]) -> tuple[str, float] | None:
        """All or nothing: take every key's cost, or none and return (a key that is short, seconds to wait)."""
        now = self._clock()
        for key, cost in costs.items():
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) / 1000 * self.rate)
            needed = min(cost, self.burst)
            if tokens < needed:
                return key, (needed - tokens) / self.rate
        for key, cost in costs.items():
            self.take(key, cost)
        return None

    def _forget_full(self, now: int) -> None:
        # A key whose bucket has refilled completely behaves exactly like a key never seen: forget it.
        self._buckets = {k: v for k, v in self._buckets.items()
                         if v[0] + (now - v[1]) / 1000 * self.rate < self.burst}
        if len(self._buckets) >= self._max_keys:
            # Everyone is active: drop the oldest half rather than grow without bound.
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[len(self._buckets) // 2:]
            self._buckets = dict(keep)

    def __len__(self) -> int:
        return len(self._buckets)


class QueryGate:
    """At most `limit` expensive queries run at once; a request waits up to `wait_s` for a slot, then gets 503."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self._semaphore = asyncio.Semaphore(limit)
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self._wait_s)
        except TimeoutError:
            raise ApiError(503, "overloaded", "Too many reports are running right now: retry in a few seconds.",
                           headers={"Retry-After": "2"}) from None
        try:
            yield
        finally:
            self._semaphore.release()


class Limits:
    """The app's abuse limits, built from Settings; a rate of 0 turns that bucket off."""

    def __init__(self, *, ip_rate: float, shop_rate: float, read_rate: float, burst_seconds: float,
                 max_queries: int, clock: Callable[[], int], query_wait_s: float = 10.0) -> None:
        def buckets(rate: float) -> TokenBuckets | None:
            return TokenBuckets(rate, max(1.0, rate * burst_seconds), clock) if rate > 0 else None

        self.ip = buckets(ip_rate)
        self.shop = buckets(shop_rate)
        self.read = buckets(read_rate)
        self.queries = QueryGate(max_queries, query_wait_s)


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole request body, or 400 invalid_json (the body is incomplete) when it takes longer than timeout_s."""
    if request.content.is_eof():
        # Already all here (a tracker's small POST arrives with its headers): no timer to arm and cancel, which cost
        # about a tenth of a single-event request.
        return await request.read()
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise ApiError(400, "invalid_json", f"The request body did not arrive complete within {timeout_s:g} s: "
                       "send it in one go.") from None
