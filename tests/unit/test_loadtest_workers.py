"""``loadtest --workers``: the pieces that make N processes one test — the schedule's
shares add up to the whole schedule, and the workers' numbers merge exactly (HDR
histograms add). The processes themselves: tests/e2e/test_loadtest_scale.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dispatcher.errors import ConfigError
from dispatcher.histogram import LatencyHistogram
from dispatcher.loadtest import LoadTest
from dispatcher.loadtest.schedule import Schedule
from dispatcher.loadtest.stats import Recorder, RequestOutcome, export, merged


def _feed(recorder: Recorder, events: list[tuple[float, float, RequestOutcome]]) -> None:
    """Each request's start (on time) and end, in the order of time, as a run has them."""
    timeline = [(due, 0, due, None) for due, _, _ in events]
    timeline += [(done, 1, due, outcome) for due, done, outcome in events]
    for at, _, due, outcome in sorted(timeline, key=lambda event: event[:2]):
        if outcome is None:
            recorder.started(due, at)
        else:
            recorder.add(due, at, outcome)
    recorder.finish(4.0, 3.0)


def _events(seed: int, count: int) -> list[tuple[float, float, RequestOutcome]]:
    rng = random.Random(seed)
    kinds = [RequestOutcome.OK] * 8 + [RequestOutcome.SERVER_ERROR, RequestOutcome.TIMEOUT]
    events = []
    for k in range(count):
        due = 3.0 * k / count
        events.append((due, due + rng.expovariate(1 / 0.02), rng.choice(kinds)))
    return events


def test_the_workers_numbers_merge_into_what_one_process_records() -> None:
    a, b = _events(1, 300), _events(2, 200)
    parts = []
    for events in (a, b):
        worker = Recorder(start=0.0, keep_seconds=True)
        _feed(worker, events)
        parts.append(export(worker))
    one = Recorder(start=0.0)
    _feed(one, sorted(a + b))
    together = merged(parts)

    assert together.requests == one.requests == 500
    assert together.latency.count == together.requests  # one latency per request
    assert together.outcomes == one.outcomes
    assert together.sent == one.sent
    for percentile in (0, 50, 90, 99, 99.9, 100):
        assert together.latency.percentile_ms(percentile) == one.latency.percentile_ms(percentile)
    assert together.latency.min_ms() == one.latency.min_ms()
    assert together.latency.max_ms() == one.latency.max_ms()
    assert together.latency.total_seconds == pytest.approx(one.latency.total_seconds)
    assert together.lag.count == one.lag.count
    # the seconds add by index: counts, rates and each second's percentiles
    assert together.series == one.series


def test_a_histogram_added_into_an_empty_one_keeps_its_minimum() -> None:
    filled = LatencyHistogram()
    filled.record_counts({1500: 2, 80_000: 1})
    empty = LatencyHistogram()
    empty.add(filled)
    assert empty.count == 3
    assert empty.min_ms() == 1.5
    assert empty.max_ms() == filled.max_ms()
    decoded = LatencyHistogram.decode(filled.encode(), filled.total_seconds)
    assert decoded.percentiles_ms([50, 100]) == filled.percentiles_ms([50, 100])
    assert decoded.total_seconds == filled.total_seconds
    with pytest.raises(ValueError, match="not an encoded histogram"):
        LatencyHistogram.decode("not base64 at all!")


def test_merging_what_is_not_an_export_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a load test's numbers"):
        merged([{"outcomes": {}}])


@given(
    rate=st.floats(min_value=0.5, max_value=5000),
    workers=st.integers(min_value=1, max_value=8),
    duration=st.floats(min_value=0.1, max_value=30),
    start=st.floats(min_value=0, max_value=1e6),
)
@example(rate=1588.0, workers=5, duration=4.0, start=0.0)  # rounding: 6353 against 6352
def test_the_workers_shares_of_the_schedule_add_up_to_the_whole(
    rate: float, workers: int, duration: float, start: float
) -> None:
    whole = Schedule(rate, slots=1, clock=lambda: 0.0)
    end = start + duration
    shares = [
        Schedule(rate, slots=1, clock=lambda: 0.0, share=(i, workers)) for i in range(workers)
    ]
    counts = [share.count(start, end) for share in shares]
    assert sum(counts) == whole.count(start, end)
    assert max(counts) - min(counts) <= 1  # an equal split
    # Exactly the whole's due times, each once (a share's own rate rounded differently).
    dues = sorted(
        share.due(k, start) for share, n in zip(shares, counts, strict=True) for k in range(n)
    )
    assert dues == [whole.due(j, start) for j in range(whole.count(start, end))]


def test_workers_need_a_slot_each_and_an_input_file_they_can_each_read() -> None:
    with pytest.raises(ConfigError, match="--concurrency"):
        LoadTest(workers=4, concurrency=3)
    with pytest.raises(ConfigError, match="not -"):
        LoadTest(workers=2, input="-")
    assert LoadTest(workers=2, concurrency=2).workers == 2
