"""Per-sender-code rate limits: a token bucket holding one second's worth of messages."""

from __future__ import annotations

import math
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, one second's worth stored (at least one); starts full.

    Time comes from ``clock`` (seconds, monotonic) so tests can move it by hand.
    """

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def take(self, n: int) -> float:
        """Take ``n`` tokens; 0.0 when taken, else the seconds until they would fit.

        A request never takes part of what it needs: refused means nothing taken.
        """
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        # The epsilon forgives float error: 0.1 s at 10/s must refill a whole token.
        if n <= tokens + 1e-9:
            self._tokens = max(0.0, tokens - n)
            return 0.0
        self._tokens = tokens
        return (n - tokens) / self.rate


class GatewayRateLimits:
    """One bucket per sender code, created on first use with the code's rate."""

    def __init__(self, rate_for: Callable[[str], float], clock: Callable[[], float]) -> None:
        self._rate_for = rate_for
        self._clock = clock
        self._buckets: dict[str, TokenBucket | None] = {}

    def rate(self, code: str) -> float:
        bucket = self._bucket(code)
        return math.inf if bucket is None else bucket.rate

    def take(self, code: str, n: int) -> float:
        """0.0 when ``n`` messages of ``code`` may go now, else seconds to wait."""
        bucket = self._bucket(code)
        return 0.0 if bucket is None else bucket.take(n)

    def _bucket(self, code: str) -> TokenBucket | None:
        try:
            return self._buckets[code]
        except KeyError:
            rate = self._rate_for(code)
            bucket = None if math.isinf(rate) else TokenBucket(rate, self._clock)
            self._buckets[code] = bucket
            return bucket

    def reset(self) -> None:
        self._buckets.clear()


def retry_after(seconds: float) -> int:
    """Retry-After value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))
