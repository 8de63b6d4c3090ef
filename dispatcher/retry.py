"""The one retry policy: tenacity, exponential backoff with full jitter, Retry-After.

A request that succeeds at its first attempt never enters tenacity: `RetryPolicy.call`
makes the first attempt itself and only builds the retrying machinery after a
retryable failure. Which failures are retryable is decided by the error tree
(`RetryableError.safe`) and the policy's ``retry_ambiguous`` switch, never by
message text.

A job that is halted (`dispatcher.halt.Halt`: cancelled, or expired) or that expires
before a wait would end stops its retries at once: the wait raises `Interrupted`
instead of sleeping, and the caller decides what the lines become (the halt's status
when the gateway cannot have acted, AMBIGUOUS when it may have).

`set_testing(True)` turns every wait to zero (as stamina's ``set_testing`` does);
the test suite switches it on and off with an autouse fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
)
from tenacity.stop import stop_base

from dispatcher.errors import RetryableError
from dispatcher.models import Status

if TYPE_CHECKING:
    from dispatcher.halt import Halt

T = TypeVar("T")

#: Why a retry stopped before a wait that would have ended after the job's expiry.
EXPIRES_FIRST = "not retried: the job expires before the retry's wait would end"


class Interrupted(Exception):
    """A retry stopped instead of waiting: the job was halted (``status``, ``reason``
    are the halt's) or expires before the wait would end (EXPIRED_UNSENT). ``error``
    is the last attempt's."""

    def __init__(self, error: RetryableError, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.status = status
        self.reason = reason


_testing = False


def set_testing(on: bool) -> None:
    """Make every retry wait zero seconds (for tests), or restore real waits."""
    global _testing
    _testing = on


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed request is tried again.

    ``retry_ambiguous`` allows retrying failures after which the gateway may already
    have acted — right when the gateway honours idempotency keys (the retry carries the
    same key) or when the user accepts the risk of a duplicate (``--retry-ambiguous``).
    """

    max_attempts: int = 5
    initial_wait: float = 0.25
    #: The longest wait between two attempts — whatever ``Retry-After`` asks — and the
    #: longest pause a sender code takes after a 429 or 503 (`Throttle.slow_down`).
    max_wait: float = 30.0
    deadline: float = 300.0
    retry_ambiguous: bool = False

    def clamp(self, retry_after: float | None) -> float | None:
        """A gateway's ``Retry-After`` within the policy: at most ``max_wait`` (a huge,
        infinite or far-future one too), never negative; None when there is none or it
        is not a number."""
        if retry_after is None or math.isnan(retry_after):
            return None
        return min(max(0.0, retry_after), self.max_wait)

    def retryable(self, exc: BaseException) -> bool:
        """Whether another attempt may follow this failure."""
        return isinstance(exc, RetryableError) and (exc.safe or self.retry_ambiguous)

    def delay(self, exc: BaseException, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failures, the last being ``exc``.

        Full jitter (uniform between zero and the exponential ceiling), but never less
        than the gateway's ``Retry-After`` — clamped to ``max_wait`` (`clamp`); the caller
        never waits past the deadline either.
        """
        if _testing:
            return 0.0
        doublings = min(max(0, failed_attempts - 1), 64)  # 2 ** 1100 overflows a float
        ceiling = min(self.max_wait, self.initial_wait * 2.0**doublings)
        wait = random.uniform(0, ceiling)
        retry_after = self.clamp(getattr(exc, "retry_after", None))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    async def call(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        on_retry: Callable[[RetryableError, int], None] | None = None,
        halt: Halt | None = None,
        expires: float | None = None,
    ) -> T:
        """Run ``attempt(n)`` (n = 1, 2, …) until it succeeds or the policy gives up.

        ``on_retry(error, failed_attempts)`` is called before each wait, so the caller
        can count retries by cause and slow down other senders. The last error is
        raised unchanged when the policy gives up. A wait raises `Interrupted` when
        ``halt`` is set (before or during it) or when it would end at or after
        ``expires`` (the job's expiry on the event loop's clock).
        """
        try:
            return await attempt(1)
        except RetryableError as exc:
            if self.max_attempts <= 1 or not self.retryable(exc):
                raise
            first = exc
        # The deadline runs on the event loop's clock (tenacity's own stop_after_delay
        # reads time.monotonic), so that tests can fast-forward it.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        if on_retry is not None:
            on_retry(first, 1)
        wait = _Wait(loop, halt, expires, first)
        await wait(min(self.delay(first, 1), max(0.0, deadline - loop.time())))
        return await self._retry(attempt, on_retry, loop, deadline, wait)

    async def _retry(
        self,
        attempt: Callable[[int], Awaitable[T]],
        on_retry: Callable[[RetryableError, int], None] | None,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        sleep: _Wait,
    ) -> T:
        def wait(state: RetryCallState) -> float:
            # never sleep past the deadline: the last attempt happens at it, not after
            remaining = max(0.0, deadline - loop.time())
            return min(self.delay(_error(state), state.attempt_number + 1), remaining)

        def before_sleep(state: RetryCallState) -> None:
            error = _error(state)
            if isinstance(error, RetryableError):
                sleep.last = error
                if on_retry is not None:
                    on_retry(error, state.attempt_number + 1)

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.max_attempts - 1), _StopAt(loop, deadline)),
            wait=wait,
            retry=retry_if_exception(self.retryable),
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        async for trial in retrying:
            with trial:
                return await attempt(trial.retry_state.attempt_number + 1)
        raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover


class _StopAt(stop_base):
    """Stop once the event loop's clock passes the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._loop = loop
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._loop.time() >= self._deadline


def _error(state: RetryCallState) -> BaseException:
    outcome = state.outcome
    assert outcome is not None
    assert outcome.failed
    error = outcome.exception()
    assert error is not None
    return error


class _Wait:
    """The wait between attempts: `_sleep`, unless the job is halted or expires first."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        halt: Halt | None,
        expires: float | None,
        last: RetryableError,
    ) -> None:
        self._loop = loop
        self._halt = halt
        self._expires = expires
        #: the last attempt's error (what `Interrupted` carries)
        self.last = last

    async def __call__(self, seconds: float) -> None:
        halt = self._halt
        self._check()
        if self._expires is not None and self._loop.time() + seconds >= self._expires:
            raise Interrupted(self.last, Status.EXPIRED_UNSENT, EXPIRES_FIRST)
        if halt is None:
            await _sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), seconds)
        self._check()

    def _check(self) -> None:
        halt = self._halt
        if halt is not None and halt.status is not None:
            raise Interrupted(self.last, halt.status, halt.reason)


async def _sleep(seconds: float) -> None:
    # Even a zero wait yields, so a storm of instant retries cannot starve the loop.
    await asyncio.sleep(seconds)
