"""The quota's arithmetic (`take`, the model of the Lua script) on a simulated clock:
the window bound and the sustained rate with any number of processes asking."""

from __future__ import annotations

import heapq
import math
import random

import pytest
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
    max_ahead: float = 1e6,
) -> tuple[list[tuple[float, float, int]], int]:
    """Processes that always have work book batches as `SharedQuota` does (a first ask
    reaches max_ahead / 2; a refused one asks again when the waiting line says, with the
    full reach). Returns (slot in s, units, process) of each grant, and the asks made."""
    burst = RateLimits(rates={"C": rate}, kind_rates={}).capacity("C")
    bucket = Bucket(interval=1e6 / rate, burst=burst)
    rng = random.Random(seed)
    asks = [(rng.uniform(0, 50_000), p, False) for p in range(processes)]  # µs
    heapq.heapify(asks)
    sends: list[tuple[float, float, int]] = []
    count = 0
    while asks:
        now, p, again = heapq.heappop(asks)
        if now > seconds * 1e6:
            continue
        count += 1
        n = burst
        if oversize and rng.random() < 0.3:
            n = min(rate, burst * rng.choice([2, 3]))
        reach = max_ahead if again else max_ahead / 2
        decision = take([bucket], n, now, ahead=reach, recover=0.0)
        # the process acts one round trip (0.1–2 ms) after the answer's time
        if decision.granted:
            slot = now + decision.wait
            sends.append((slot / 1e6, n, p))
            heapq.heappush(asks, (slot + rng.uniform(100, 2000), p, False))
        else:
            heapq.heappush(asks, (now + decision.wait + rng.uniform(100, 2000), p, True))
    return sends, count


def windows(sends: list[tuple[float, float, int]]) -> float:
    return max_window([(t, n) for t, n, _ in sends])


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from(RATES),
    processes=st.integers(1, 12),
    oversize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_no_window_over_the_bound(rate: float, processes: int, oversize: bool, seed: int) -> None:
    sends, _ = simulate(rate, processes, 5.0, seed=seed, oversize=oversize)
    burst = RateLimits(rates={"C": rate}, kind_rates={}).capacity("C")
    assert windows(sends) <= min(bound(rate), rate + burst) + 1e-9
    assert sum(n for t, n, _ in sends if t < 1.0) <= bound(rate)  # the first second too


@settings(max_examples=30, deadline=None)
@given(rate=st.sampled_from(RATES), processes=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_sustained_rate_with_work_waiting(rate: float, processes: int, seed: int) -> None:
    seconds = max(5.0, 20 / rate)
    sends, _ = simulate(rate, processes, seconds, seed=seed)
    first = min(t for t, _, _ in sends)
    carried = sum(n for _, n, _ in sends)
    assert carried >= 0.95 * rate * (seconds - first)


@pytest.mark.parametrize(("rate", "processes"), [(10.0, 12), (100.0, 30), (1000.0, 40)])
def test_refused_processes_get_their_turn(rate: float, processes: int) -> None:
    """More processes than the reach holds: the waiting line shares the code fairly,
    without a herd of asks, and without losing rate."""
    seconds = 20.0
    sends, asks = simulate(rate, processes, seconds, seed=1)
    shares = [sum(n for _, n, p in sends if p == process) for process in range(processes)]
    mean = sum(shares) / processes
    assert min(shares) >= 0.8 * mean
    assert asks <= 2.5 * len(sends)
    assert windows(sends) <= bound(rate)
    assert sum(shares) >= 0.95 * rate * seconds


def test_a_late_first_batch_is_not_a_start_burst() -> None:
    bucket = Bucket(interval=1e4, burst=5)
    assert take([bucket], 5, 1e6, ahead=math.inf, recover=0.0).wait == 0
    assert take([bucket], 5, 1e6, ahead=math.inf, recover=0.0).wait == 50_000
    # idle for a minute: no credit piles up
    assert take([bucket], 5, 61e6, ahead=math.inf, recover=0.0).wait == 0
    assert take([bucket], 5, 61e6, ahead=math.inf, recover=0.0).wait == 50_000
