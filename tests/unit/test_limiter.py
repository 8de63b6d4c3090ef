"""Rate limits per sender code, checked with a fast-forwarded event-loop clock."""

import asyncio
import logging
import math
from collections import deque

import pytest

from dispatcher.limiter import BATCHES_PER_SECOND, RateLimits, Throttle, code_kind

KINDS = {"longcode": 1.0, "shortcode": 100.0, "alphanumeric": 100.0}


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("1", "shortcode"),
        ("123456", "shortcode"),
        ("1234567", "longcode"),
        ("COMPANY", "alphanumeric"),
        ("12A45", "alphanumeric"),
        ("١٢٣", "alphanumeric"),
    ],
)
def test_code_kind(code: str, kind: str) -> None:
    assert code_kind(code) == kind


def test_rates_by_code_then_kind() -> None:
    limits = RateLimits(rates={"12345": 7.0, "FREE": math.inf}, kind_rates=KINDS)
    assert limits.rate("12345") == 7.0
    assert limits.rate("54321") == 100.0
    assert limits.rate("5551234567") == 1.0
    assert limits.rate("FREE") == math.inf
    assert limits.capacity("FREE") == math.inf
    assert limits.capacity("12345") == 1  # below 20/s a batch is one unit
    assert limits.capacity("54321") == 100 / BATCHES_PER_SECOND
    assert limits.seconds_for("12345", 70) == 10.0


def max_window(times: list[float], amounts: list[float], width: float = 1.0) -> float:
    """The most units in any window [t, t + width) ending at a send."""
    window: deque[tuple[float, float]] = deque()
    total = best = 0.0
    for t, n in zip(times, amounts, strict=True):
        window.append((t, n))
        total += n
        while window[0][0] <= t - width:
            total -= window.popleft()[1]
        best = max(best, total)
    return best


async def send_for(
    limits: RateLimits, code: str, seconds: float, batch: float
) -> tuple[list[float], list[float]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    times: list[float] = []
    amounts: list[float] = []
    while loop.time() - start < seconds:
        await limits.acquire(code, batch)
        times.append(loop.time() - start)
        amounts.append(batch)
    return times, amounts


@pytest.mark.looptime
@pytest.mark.parametrize("rate", [1.0, 5.0, 10.0, 20.0, 100.0, 1000.0, 20000.0])
async def test_windows_and_sustained_rate(rate: float) -> None:
    limits = RateLimits(rates={"C": rate}, kind_rates=KINDS)
    capacity = limits.capacity("C")
    times, amounts = await send_for(limits, "C", 30.0, capacity)
    allowed = rate + 1 if rate < 10 else 1.1 * rate
    assert max_window(times, amounts) <= allowed
    first_second = sum(n for t, n in zip(times, amounts, strict=True) if t < 1.0)
    assert first_second <= allowed
    sustained = sum(amounts) / 30.0
    assert sustained >= 0.95 * rate


@pytest.mark.looptime
async def test_an_amount_above_capacity_waits_for_its_size() -> None:
    limits = RateLimits(rates={"C": 1.0}, kind_rates=KINDS)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await limits.acquire("C", 1)  # the bucket's one free unit
    await limits.acquire("C", 3)  # a three-segment message at one segment per second
    assert loop.time() - start == pytest.approx(3.0, abs=0.01)


@pytest.mark.looptime
async def test_unlimited_code_never_waits() -> None:
    limits = RateLimits(rates={}, kind_rates={**KINDS, "alphanumeric": math.inf})
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(1000):
        await limits.acquire("COMPANY", 1000)
    assert loop.time() == start


@pytest.mark.looptime
async def test_throttle_halves_on_pushback_and_recovers() -> None:
    throttle = Throttle(8)
    for _ in range(8):
        await throttle.enter()
    throttle.slow_down(None)
    assert throttle.limit == 4
    for _ in range(8):
        throttle.leave(ok=True)
    assert 4 < throttle.limit < 8  # additive increase, not a jump back
    for _ in range(200):
        await throttle.enter()
        throttle.leave(ok=True)
    assert throttle.limit == 8


@pytest.mark.looptime
async def test_throttle_blocks_above_the_limit_and_wakes_on_leave() -> None:
    throttle = Throttle(4)
    throttle.slow_down(None)
    throttle.slow_down(None)
    assert throttle.limit == 1
    await throttle.enter()
    waiter = asyncio.create_task(throttle.enter())
    await asyncio.sleep(1)
    assert not waiter.done()
    throttle.leave(ok=True)
    await asyncio.wait_for(waiter, 1)
    assert throttle.in_flight == 1


@pytest.mark.looptime
async def test_throttle_honours_retry_after_for_every_batch_of_the_code() -> None:
    loop = asyncio.get_running_loop()
    throttle = Throttle(4)
    start = loop.time()
    throttle.slow_down(2.5)
    await throttle.enter()
    assert loop.time() - start == pytest.approx(2.5)


@pytest.mark.looptime
async def test_cancelled_waiter_does_not_leak() -> None:
    throttle = Throttle(1)
    await throttle.enter()
    waiter = asyncio.create_task(throttle.enter())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    throttle.leave(ok=True)
    await asyncio.wait_for(throttle.enter(), 1)
    assert throttle.in_flight == 1


@pytest.mark.looptime
async def test_throttle_waiters_enter_in_arrival_order_and_newcomers_queue() -> None:
    throttle = Throttle(2)
    throttle.slow_down(None)  # limit 1
    await throttle.enter()
    order: list[int] = []

    async def batch(n: int) -> None:
        await throttle.enter()
        order.append(n)

    first = [asyncio.create_task(batch(n)) for n in range(3)]
    await asyncio.sleep(0.1)
    throttle.leave(ok=False)  # room for one: the first waiter, not a newcomer
    late = asyncio.create_task(batch(3))
    await asyncio.sleep(0.1)
    assert order == [0]
    for _ in range(3):
        throttle.leave(ok=False)
        await asyncio.sleep(0.1)
    await asyncio.gather(*first, late)
    assert order == [0, 1, 2, 3]
    assert throttle.in_flight == 1


@pytest.mark.looptime
async def test_throttle_wakes_as_many_waiters_as_the_grown_limit_allows() -> None:
    throttle = Throttle(4)
    for _ in range(4):
        await throttle.enter()
    throttle.slow_down(None)  # limit 2, four in flight
    waiters = [asyncio.create_task(throttle.enter()) for _ in range(3)]
    await asyncio.sleep(0.1)
    for _ in range(4):
        throttle.leave(ok=True)  # 0 in flight, limit grown back towards 4
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert throttle.in_flight == 3


@pytest.mark.looptime
@pytest.mark.parametrize("retry_after", [999999999.0, math.inf, 1e300])
async def test_a_huge_retry_after_pauses_the_code_for_the_longest_wait_at_most(
    retry_after: float, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    throttle = Throttle(4, code="12345", max_pause=30.0)
    start = loop.time()
    with caplog.at_level(logging.INFO, logger="dispatcher.limiter"):
        assert throttle.slow_down(retry_after) == 30.0
    await asyncio.wait_for(throttle.enter(), 31)
    assert loop.time() - start == pytest.approx(30.0)
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("code 12345 paused 30 s after 429 (Retry-After ")
    assert record.getMessage().endswith(" clamped to 30 s)")


@pytest.mark.looptime
@pytest.mark.parametrize("retry_after", [None, 0.0, -5.0, math.nan])
async def test_no_pause_without_a_positive_retry_after(retry_after: float | None) -> None:
    loop = asyncio.get_running_loop()
    throttle = Throttle(4, max_pause=30.0)
    assert throttle.slow_down(retry_after) == 0.0
    start = loop.time()
    await throttle.enter()
    assert loop.time() == start


@pytest.mark.looptime
async def test_no_pause_when_the_longest_wait_is_zero(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    throttle = Throttle(4, max_pause=0.0)
    with caplog.at_level(logging.INFO, logger="dispatcher.limiter"):
        assert throttle.slow_down(5.0) == 0.0
    start = loop.time()
    await throttle.enter()
    assert loop.time() == start
    assert caplog.records == []


@pytest.mark.looptime
async def test_each_pause_is_logged_once_not_each_extension(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = Throttle(4, code="COMPANY", max_pause=30.0)
    with caplog.at_level(logging.INFO, logger="dispatcher.limiter"):
        throttle.slow_down(2.0, cause="503")
        throttle.slow_down(3.0)  # extends the pause in progress: not news
        throttle.slow_down(1.0)  # within it: nothing changes
        await asyncio.sleep(10)
        throttle.slow_down(2.0)  # a new pause
    assert [r.getMessage() for r in caplog.records] == [
        "code COMPANY paused 2 s after 503",
        "code COMPANY paused 2 s after 429",
    ]


# --- a rate changed while the job runs (dispatcher ctl JOB rate CODE=N) ----------------


async def send_until(
    limits: RateLimits, code: str, until: float, times: list[float], amounts: list[float]
) -> None:
    """Acquire one capacity at a time until the loop clock reads ``until``."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        batch = limits.capacity(code)
        await limits.acquire(code, batch)
        times.append(loop.time())
        amounts.append(batch)


@pytest.mark.looptime
@pytest.mark.parametrize(("before", "after"), [(100.0, 20.0), (20.0, 200.0), (5.0, 50.0)])
async def test_a_live_rate_change_holds_within_a_second_without_a_burst(
    before: float, after: float
) -> None:
    limits = RateLimits(rates={"C": before}, kind_rates=KINDS)
    loop = asyncio.get_running_loop()
    start = loop.time()
    times: list[float] = []
    amounts: list[float] = []
    await send_until(limits, "C", start + 10.0, times, amounts)
    changed, split = loop.time(), len(times)
    limits.set_rate("C", after)
    await send_until(limits, "C", changed + 20.0, times, amounts)
    assert limits.rate("C") == after
    # No 1-second window after the change carries more than the new bound, nor any
    # window across it more than the larger rate's.
    later = list(zip(times[split:], amounts[split:], strict=True))
    bound = after + 1 if after < 10 else 1.1 * after
    assert max_window([t for t, _ in later], [n for _, n in later]) <= bound
    assert max_window(times, amounts) <= max(before, after) * 1.1 + 1
    # From one second after the change on, the new rate holds.
    settled = sum(n for t, n in later if t >= changed + 1.0) / 19.0
    assert settled == pytest.approx(after, rel=0.05)


@pytest.mark.looptime
async def test_a_lane_waiting_on_a_slow_rate_follows_a_faster_one_at_once() -> None:
    limits = RateLimits(rates={"C": 0.1}, kind_rates=KINDS)  # one message per 10 s
    loop = asyncio.get_running_loop()
    await limits.acquire("C", 1)  # the free one
    start = loop.time()
    waiting = asyncio.create_task(limits.acquire("C", 1))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    limits.set_rate("C", 100.0)
    await waiting
    assert loop.time() - start <= 1.0 + 1 / BATCHES_PER_SECOND + 1e-6


@pytest.mark.looptime
async def test_a_rate_lowered_live_does_not_let_a_waiting_piece_through_early() -> None:
    limits = RateLimits(rates={"C": 1000.0}, kind_rates=KINDS)
    loop = asyncio.get_running_loop()
    await limits.acquire("C", 50)  # the bucket is full now
    limits.set_rate("C", 1.0)
    start = loop.time()
    await limits.acquire("C", 3)  # a batch built for the old capacity: 3 s at 1/s
    assert loop.time() - start >= 3.0 - 1e-6


@pytest.mark.looptime
async def test_a_code_set_to_no_limit_stops_waiting_and_back() -> None:
    limits = RateLimits(rates={"C": 0.1}, kind_rates=KINDS)
    loop = asyncio.get_running_loop()
    await limits.acquire("C", 1)
    waiting = asyncio.create_task(limits.acquire("C", 1))
    await asyncio.sleep(0.5)
    limits.set_rate("C", math.inf)
    await waiting
    start = loop.time()
    for _ in range(100):
        await limits.acquire("C", 100)
    assert loop.time() == start
    limits.set_rate("C", 10.0)
    assert limits.capacity("C") == 1
    assert "C" in limits.codes
    with pytest.raises(ValueError, match="positive"):
        limits.set_rate("C", 0)


@pytest.mark.looptime
async def test_a_halt_ends_a_throttle_pause_at_once() -> None:
    from dispatcher.halt import Halt
    from dispatcher.models import Status

    halt = Halt()
    throttle = Throttle(4, max_pause=30.0, halt=halt)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert throttle.slow_down(30.0) == 30.0
    loop.call_later(2.0, halt.set, Status.CANCELLED, "cancelled")
    await throttle.enter()  # let in at the halt, for its lane to account, not send
    assert loop.time() - start == pytest.approx(2.0, abs=0.01)
    throttle.leave(ok=False)
