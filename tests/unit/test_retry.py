"""The retry policy: what is retried, how long it waits, and the untouched fast path."""

import asyncio
import math

import pytest

from dispatcher import retry
from dispatcher.errors import (
    ConnectError,
    ConnectionLost,
    RateLimited,
    RequestRejected,
    ServerError,
    Unavailable,
)
from dispatcher.retry import RetryPolicy


class Flaky:
    """Fails with the given errors in turn, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_success_never_builds_tenacity(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity entered on the fast path")

    monkeypatch.setattr(retry, "AsyncRetrying", boom)
    flaky = Flaky()
    assert await RetryPolicy().call(flaky) == "ok"
    assert flaky.attempts == [1]


async def test_safe_failures_are_retried_and_counted() -> None:
    seen: list[tuple[str, int]] = []
    flaky = Flaky(RateLimited("429"), ConnectError("refused"))
    result = await RetryPolicy(max_attempts=5).call(
        flaky, on_retry=lambda e, n: seen.append((e.cause, n))
    )
    assert result == "ok"
    assert flaky.attempts == [1, 2, 3]
    assert seen == [("429", 1), ("connect", 2)]


async def test_ambiguous_failure_is_not_retried_by_default() -> None:
    flaky = Flaky(ServerError("500"))
    with pytest.raises(ServerError):
        await RetryPolicy().call(flaky)
    assert flaky.attempts == [1]


async def test_ambiguous_failure_is_retried_when_allowed() -> None:
    flaky = Flaky(ServerError("500"), ConnectionLost("dropped"))
    assert await RetryPolicy(retry_ambiguous=True).call(flaky) == "ok"
    assert flaky.attempts == [1, 2, 3]


async def test_permanent_errors_are_never_retried() -> None:
    flaky = Flaky(RequestRejected("400", status=400))
    with pytest.raises(RequestRejected):
        await RetryPolicy(retry_ambiguous=True).call(flaky)
    assert flaky.attempts == [1]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    flaky = Flaky(*(RateLimited(f"429 #{n}") for n in range(10)))
    with pytest.raises(RateLimited, match="429 #2"):
        await RetryPolicy(max_attempts=3).call(flaky)
    assert flaky.attempts == [1, 2, 3]


async def test_single_attempt_policy() -> None:
    flaky = Flaky(RateLimited("429"))
    with pytest.raises(RateLimited):
        await RetryPolicy(max_attempts=1).call(flaky)
    assert flaky.attempts == [1]


def test_full_jitter_bounds_and_retry_after() -> None:
    retry.set_testing(False)
    policy = RetryPolicy(initial_wait=0.5, max_wait=4.0)
    for failed in range(1, 8):
        ceiling = min(4.0, 0.5 * 2 ** (failed - 1))
        waits = [policy.delay(ConnectError("x"), failed) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jitter spreads over the whole range
    assert policy.delay(RateLimited("429", retry_after=3.0), 1) >= 3.0
    # a Retry-After beyond the longest wait is clamped to it
    assert policy.delay(RateLimited("429", retry_after=7.0), 1) == 4.0


def test_testing_switch_zeroes_waits() -> None:
    assert RetryPolicy().delay(RateLimited("429", retry_after=30.0), 3) == 0.0


@pytest.mark.looptime
async def test_deadline_stops_retrying() -> None:
    retry.set_testing(False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    flaky = Flaky(*(RateLimited("429", retry_after=10.0) for _ in range(100)))
    with pytest.raises(RateLimited):
        await RetryPolicy(max_attempts=100, deadline=35.0).call(flaky)
    assert 3 <= len(flaky.attempts) <= 6
    assert loop.time() - start < 60


@pytest.mark.parametrize(
    ("retry_after", "clamped"),
    [
        (None, None),
        (math.nan, None),
        (-5.0, 0.0),
        (0.0, 0.0),
        (2.5, 2.5),
        (4.0, 4.0),
        (999999999.0, 4.0),
        (math.inf, 4.0),
    ],
)
def test_retry_after_is_clamped_to_the_longest_wait(
    retry_after: float | None, clamped: float | None
) -> None:
    policy = RetryPolicy(max_wait=4.0)
    assert policy.clamp(retry_after) == clamped
    retry.set_testing(False)
    wait = policy.delay(RateLimited("429", retry_after=retry_after), 1)
    assert 0 <= wait <= 4.0
    if clamped:
        assert wait >= clamped


def test_the_backoff_of_a_late_attempt_does_not_overflow() -> None:
    retry.set_testing(False)
    policy = RetryPolicy(max_wait=7.0)
    for failed in (60, 1100, 10**6):
        assert 0 <= policy.delay(ConnectError("x"), failed) <= 7.0


@pytest.mark.looptime
@pytest.mark.parametrize("retry_after", [999999999.0, math.inf, 1e300])
async def test_a_huge_retry_after_delays_the_retry_by_the_longest_wait_at_most(
    retry_after: float,
) -> None:
    retry.set_testing(False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    flaky = Flaky(RateLimited("429", retry_after=retry_after))
    assert await RetryPolicy(max_wait=3.0).call(flaky) == "ok"
    assert flaky.attempts == [1, 2]
    assert loop.time() - start == pytest.approx(3.0)


# --- a halted or expiring job stops its retries (issue 14) ---------------------------


@pytest.mark.looptime
async def test_a_retry_whose_wait_would_end_after_the_expiry_stops_at_once() -> None:
    from dispatcher.models import Status
    from dispatcher.retry import Interrupted

    retry.set_testing(False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    flaky = Flaky(RateLimited("429", retry_after=10.0))
    with pytest.raises(Interrupted) as caught:
        await RetryPolicy(max_wait=30.0).call(flaky, expires=start + 5.0)
    assert caught.value.status == Status.EXPIRED_UNSENT
    assert isinstance(caught.value.error, RateLimited)
    assert flaky.attempts == [1]
    assert loop.time() == start  # stopped at once, not at the expiry


@pytest.mark.looptime
async def test_a_retry_that_ends_before_the_expiry_goes_ahead() -> None:
    retry.set_testing(False)
    start = asyncio.get_running_loop().time()
    flaky = Flaky(RateLimited("429", retry_after=2.0), RateLimited("429", retry_after=2.0))
    assert await RetryPolicy(max_wait=30.0).call(flaky, expires=start + 100.0) == "ok"
    assert flaky.attempts == [1, 2, 3]


@pytest.mark.looptime
async def test_a_later_retry_whose_wait_passes_the_expiry_stops_too() -> None:
    from dispatcher.retry import Interrupted

    retry.set_testing(False)
    start = asyncio.get_running_loop().time()
    errors = [RateLimited("429", retry_after=3.0) for _ in range(5)]
    flaky = Flaky(*errors)
    with pytest.raises(Interrupted):  # waits of 3 s: the third would end after 7 s
        await RetryPolicy(max_attempts=10, max_wait=30.0).call(flaky, expires=start + 7.0)
    assert flaky.attempts == [1, 2, 3]
    assert asyncio.get_running_loop().time() - start == pytest.approx(6.0)


@pytest.mark.looptime
async def test_a_halt_during_the_wait_stops_the_retry_at_once() -> None:
    from dispatcher.halt import Halt
    from dispatcher.models import Status
    from dispatcher.retry import Interrupted

    retry.set_testing(False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    halt = Halt()
    loop.call_later(1.0, halt.set, Status.CANCELLED, "cancelled by dispatcher ctl")
    flaky = Flaky(Unavailable("503", retry_after=20.0))
    with pytest.raises(Interrupted) as caught:
        await RetryPolicy(max_wait=30.0).call(flaky, halt=halt)
    assert (caught.value.status, caught.value.reason) == (
        Status.CANCELLED,
        "cancelled by dispatcher ctl",
    )
    assert flaky.attempts == [1]
    assert loop.time() - start == pytest.approx(1.0)


async def test_a_halted_job_makes_no_further_attempt() -> None:
    from dispatcher.halt import Halt
    from dispatcher.models import Status
    from dispatcher.retry import Interrupted

    halt = Halt()
    halt.set(Status.EXPIRED_UNSENT, "expired")
    flaky = Flaky(ConnectError("refused"))
    with pytest.raises(Interrupted):
        await RetryPolicy().call(flaky, halt=halt)
    assert flaky.attempts == [1]
