"""The quota's arithmetic (`take`, the model of the Lua script) on a simulated clock:
the window bound and the sustained rate with any number of processes asking."""

from __future__ import annotations

import heapq
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.limiter import RateLimits
from dispatcher.quota.gcra import Bucket, take
from tests.unit.quota.helpers import bound, max_window

RATES = [1.0, 5.0, 9.0, 10.0, 15.0, 20.0, 100.0, 1000.0, 20000.0]


def simulate(
    rate: float,
    processes: int,
    seconds: float,
    *,
    seed: int,
    oversize: bool = False,
    ahead: float = 0.5e6,
) -> list[tuple[float, float]]:
    """Processes that always have work ask for batches; (slot in s, units) of each grant."""
    burst = RateLimits(rates={"C": rate}, kind_rates={}).capacity("C")
    bucket = Bucket(interval=1e6 / rate, burst=burst)
    rng = random.Random(seed)
    asks = [(rng.uniform(0, 50_000), p) for p in range(processes)]  # µs
    heapq.heapify(asks)
    sends: list[tuple[float, float]] = []
    while asks:
        now, p = heapq.heappop(asks)
        if now > seconds * 1e6:
            continue
        n = burst
        if oversize and rng.random() < 0.3:
            n = min(rate, burst * rng.choice([2, 3]))
        decision = take([bucket], n, now, ahead=ahead, recover=0.0)
        if decision.granted:
            slot = now + decision.wait
            sends.append((slot / 1e6, n))
            # the next ask comes one round trip (0.1–2 ms) after this slot begins
            heapq.heappush(asks, (slot + rng.uniform(100, 2000), p))
        else:
            heapq.heappush(asks, (now + decision.wait * rng.uniform(1.0, 1.1) + 1000, p))
    return sends


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from(RATES),
    processes=st.integers(1, 12),
    oversize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_no_window_over_the_bound(rate: float, processes: int, oversize: bool, seed: int) -> None:
    sends = simulate(rate, processes, 5.0, seed=seed, oversize=oversize)
    burst = RateLimits(rates={"C": rate}, kind_rates={}).capacity("C")
    assert max_window(sends) <= min(bound(rate), rate + burst) + 1e-9
    assert sum(n for t, n in sends if t < 1.0) <= bound(rate)  # the first second too


@settings(max_examples=30, deadline=None)
@given(rate=st.sampled_from(RATES), processes=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_sustained_rate_with_work_waiting(rate: float, processes: int, seed: int) -> None:
    seconds = max(5.0, 20 / rate)
    sends = simulate(rate, processes, seconds, seed=seed)
    first = min(t for t, _ in sends)
    carried = sum(n for _, n in sends)
    assert carried >= 0.95 * rate * (seconds - first)


def test_many_processes_are_refused_without_losing_rate() -> None:
    """30 processes on a 100/s code: the booking window holds 10, the rest ask again."""
    sends = simulate(100.0, 30, 5.0, seed=1)
    assert max_window(sends) <= 105
    assert sum(n for _, n in sends) >= 0.95 * 100 * 5


def test_a_late_first_batch_is_not_a_start_burst() -> None:
    bucket = Bucket(interval=1e4, burst=5)
    assert take([bucket], 5, 1e6, ahead=math.inf, recover=0.0).wait == 0
    assert take([bucket], 5, 1e6, ahead=math.inf, recover=0.0).wait == 50_000
    # idle for a minute: no credit piles up
    assert take([bucket], 5, 61e6, ahead=math.inf, recover=0.0).wait == 0
    assert take([bucket], 5, 61e6, ahead=math.inf, recover=0.0).wait == 50_000
