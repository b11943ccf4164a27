"""Per-key request limits over a sliding window, on the injected clock.

Hand-written rather than `limits`/`pyrate-limiter`: both read the wall clock themselves, and the house rule is
that time is injected (tests pin it with FakeClock); a sliding log per key is a dozen lines.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindowLimiter:
    """At most `limit` hits per key in any window of `window_ms`; a refused hit is not counted."""

    def __init__(self, limit: int, window_ms: int) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self._hits: dict[str, deque[int]] = {}

    def hit(self, key: str, now_ms: int) -> float | None:
        """Count a hit at now_ms; None when allowed, else the seconds until the oldest hit leaves the window."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now_ms - self.window_ms:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.001, (hits[0] + self.window_ms - now_ms) / 1000)
        hits.append(now_ms)
        return None

    def forget_idle(self, now_ms: int) -> None:
        """Drop keys with no hit inside the window, so the map does not grow with every shop ever seen."""
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now_ms - self.window_ms]:
            del self._hits[key]


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
