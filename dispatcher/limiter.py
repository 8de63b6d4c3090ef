"""Per-sender-code rate limits, with aiolimiter's leaky bucket underneath.

The accuracy target (SPEC §4) is measured at the gateway: no sliding 1-second window
may carry more than 1.1 x the rate (rate + 1 below 10/s), the first second included.
A leaky bucket lets through its capacity at once and then the rate, so any 1-second
window carries at most ``capacity + rate``. We therefore size each code's bucket — and
with it the largest batch that code may send — to 1/20 of a second's worth of units
(at least one): the first second carries at most 1.05 x the rate, and a long send is
a steady stream of small batches instead of one burst per second. aiolimiter starting
with an empty (fully available) bucket is thus harmless by construction.

Rates are read from the event loop's clock (``loop.time()``), so tests fast-forward
time with ``looptime`` instead of sleeping.

A rate can change while the job runs (`RateLimits.set_rate`, from ``dispatcher ctl JOB
rate CODE=N``). The code gets a new bucket that starts *full*: its first units pass one
batch interval after the change, then the new rate holds. A full bucket is what rules
out a burst — the old bucket's debt is not carried over (it is at most one interval),
and nothing is let through early. A lane waiting in the old bucket is woken and waits
again in the new one, so the new rate holds within one batch interval (1/20 s; 1/rate
below 20/s) of the change. Batches built before a lower rate may be larger than its
capacity: the sender splits them (`capacity`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from dispatcher.halt import Halt

log = logging.getLogger("dispatcher.limiter")

#: Batches per second a rate-limited code is split into (see module docstring).
BATCHES_PER_SECOND = 20
#: Share of each acquisition forgiven to absorb float rounding in the bucket's leak:
#: without it, a level left at 2e-16 above empty makes aiolimiter re-arm a timer for
#: "now" over and over until the clock ticks (forever under a test's frozen clock).
_ROUNDING = 1e-9


def code_kind(code: str) -> str:
    """``shortcode`` (1–6 digits), ``longcode`` (7+ digits) or ``alphanumeric``."""
    if code.isdigit() and code.isascii():
        return "shortcode" if len(code) <= 6 else "longcode"
    return "alphanumeric"


class RateLimits:
    """The rate limit of every sender code, each limiter created on first use.

    ``rates`` maps a code to its rate; other codes get the rate of their kind from
    ``kind_rates``. ``math.inf`` means no limit.
    """

    def __init__(
        self,
        *,
        rates: Mapping[str, float],
        kind_rates: Mapping[str, float],
    ) -> None:
        self._rates = dict(rates)
        self._kind_rates = dict(kind_rates)
        self._limiters: dict[str, AsyncLimiter | None] = {}

    @property
    def codes(self) -> list[str]:
        """The codes with a rate of their own and those that have sent."""
        return sorted(self._rates.keys() | self._limiters.keys())

    def set_rate(self, code: str, rate: float) -> None:
        """Change ``code``'s rate now (``inf``: no limit), without a burst (see the
        module docstring)."""
        if not rate > 0:
            raise ValueError(f"a rate must be positive, got {rate!r}")
        old = self._limiters.pop(code, None)
        self._rates[code] = rate
        if not math.isinf(rate):
            limiter = self._limiter(code)
            assert limiter is not None
            # Private state of aiolimiter (>=1.1): a full bucket, checked from now.
            limiter._level = limiter.max_rate
            limiter._last_check = asyncio.get_running_loop().time()
        if old is not None:
            # Wake the lane waiting in the old bucket: `acquire` sees the bucket has
            # changed and waits in the new one.
            old.max_rate = math.inf
            old._rate_per_sec = math.inf
            old._wake_next()

    def rate(self, code: str) -> float:
        """Units per second this code may send (``inf`` when unlimited)."""
        rate = self._rates.get(code)
        if rate is None:
            rate = self._kind_rates.get(code_kind(code), math.inf)
        return rate

    def reported_rate(self, code: str) -> float | None:
        """The rate of a code as the summary reports it: None when unlimited."""
        rate = self.rate(code)
        return None if math.isinf(rate) else rate

    def capacity(self, code: str) -> float:
        """The most units one batch of this code may carry (``inf`` when unlimited)."""
        rate = self.rate(code)
        if math.isinf(rate):
            return math.inf
        return float(max(1, math.floor(rate / BATCHES_PER_SECOND)))

    def _limiter(self, code: str) -> AsyncLimiter | None:
        try:
            return self._limiters[code]
        except KeyError:
            pass
        rate = self.rate(code)
        limiter = None
        if not math.isinf(rate):
            capacity = self.capacity(code)
            limiter = AsyncLimiter(capacity, capacity / rate)
        self._limiters[code] = limiter
        return limiter

    async def acquire(self, code: str, amount: float) -> None:
        """Wait until ``code`` may send ``amount`` units.

        An amount above the bucket's capacity (one message with more segments than a
        slow code's batch may hold) is taken in capacity-sized pieces, so it waits as
        long as its size demands instead of failing.
        """
        while True:
            limiter = self._limiter(code)
            if limiter is None:
                return
            capacity = limiter.max_rate
            slack = capacity * _ROUNDING
            while amount > capacity:
                await limiter.acquire(capacity - slack)
                if self._limiters.get(code) is not limiter:
                    break  # the rate changed meanwhile: the rest waits in the new bucket
                amount -= capacity
            else:
                if amount > 0:
                    await limiter.acquire(max(0.0, amount - slack))
                if self._limiters.get(code) is limiter:
                    return

    def seconds_for(self, code: str, units: float) -> float:
        """How long sending ``units`` takes at this code's rate (for --dry-run)."""
        rate = self.rate(code)
        return 0.0 if math.isinf(rate) else units / rate


class Throttle:
    """The shared slow-down of one sender code after 429 or 503.

    Every batch of the code passes `enter` before its request and `leave` after it. On
    a 429/503 the code's in-flight limit halves and, with a ``Retry-After``, the code
    pauses — for at most ``max_pause`` seconds (the retry policy's longest wait), so
    one answer with a huge ``Retry-After`` cannot park the code for ever; each pause is
    logged at info level. Each success grows the limit back by about one request per
    round trip (additive increase, multiplicative decrease). So a rate-limited gateway
    sees fewer requests from the whole code, not a retry storm from each batch. While
    nothing went wrong, `enter` is a counter increment and never waits.

    Batches that must wait queue on an `asyncio.Condition`, first come first served: a
    newcomer never overtakes them. `leave` runs in a task's done-callback, where the
    condition's lock cannot be taken, so it hands the wake-up to a small task.

    A ``halt`` (`dispatcher.halt.Halt`: the job cancelled or expired) ends a pause at
    once: the batch is let in, and its lane accounts for it instead of sending it.
    """

    def __init__(
        self, ceiling: int, *, code: str = "", max_pause: float = 30.0, halt: Halt | None = None
    ) -> None:
        self.ceiling = ceiling
        self.code = code
        self.max_pause = max_pause
        self._halt = halt
        self.limit = float(ceiling)
        self.in_flight = 0
        self.paused_until = 0.0
        self._room = asyncio.Condition()
        #: batches waiting in `enter`, a woken one until it is in
        self._queued = 0
        self._waking: asyncio.Task[None] | None = None

    async def enter(self) -> None:
        """Wait until this code may have one more request in flight."""
        loop = asyncio.get_running_loop()
        if self._queued or self.in_flight >= self.limit or self.paused_until > loop.time():
            await self._wait_for_room(loop)
        else:
            self.in_flight += 1

    async def _wait_for_room(self, loop: asyncio.AbstractEventLoop) -> None:
        self._queued += 1
        try:
            async with self._room:
                try:
                    if self._queued > 1:
                        await self._room.wait()  # others came first: line up behind them
                    while True:
                        pause = self.paused_until - loop.time()
                        if pause > 0 and not self._halted():
                            # Holding the lock: the batches behind keep their places.
                            await self._sleep(pause)
                        elif self.in_flight < self.limit:
                            self.in_flight += 1
                            if self.in_flight < self.limit:
                                self._room.notify(1)  # room for the next one too
                            return
                        else:
                            await self._room.wait()
                except asyncio.CancelledError:
                    self._room.notify(1)  # pass on the wake-up this batch may have taken
                    raise
        finally:
            self._queued -= 1

    def _halted(self) -> bool:
        return self._halt is not None and self._halt.halted

    async def _sleep(self, seconds: float) -> None:
        if self._halt is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), seconds)

    def leave(self, *, ok: bool) -> None:
        """A request of this code finished; ``ok`` when the gateway accepted it."""
        self.in_flight -= 1
        if ok and self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
        self._wake()

    def slow_down(self, retry_after: float | None, *, cause: str = "429") -> float:
        """The gateway pushed back (``cause``: 429, 503…): halve in-flight, honour
        Retry-After up to ``max_pause``. Returns the seconds the code now pauses."""
        self.limit = max(1.0, self.limit / 2)
        if retry_after is None or not retry_after > 0:  # none, zero, negative or NaN
            return 0.0
        pause = min(retry_after, self.max_pause)
        if pause <= 0:  # retry_max_wait = 0: never pause
            return 0.0
        now = asyncio.get_running_loop().time()
        until = now + pause
        if until <= self.paused_until:
            return self.paused_until - now
        started = self.paused_until <= now
        self.paused_until = until
        clamped = pause < retry_after
        if started or clamped:  # a pause extended within itself is not news
            asked = f"{retry_after:.0f}" if retry_after < 1e15 else f"{retry_after:g}"
            note = f" (Retry-After {asked} clamped to {pause:g} s)" if clamped else ""
            log.info("code %s paused %g s after %s%s", self.code, pause, cause, note)
        return pause

    def _wake(self) -> None:
        if self._queued and self._waking is None and self.in_flight < self.limit:
            self._waking = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._room:
            self._waking = None
            self._room.notify(max(0, math.ceil(self.limit) - self.in_flight))
