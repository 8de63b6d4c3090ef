"""The arrival schedule and the per-second recorder, on a fast-forwarded loop clock."""

import asyncio
import math
import random
from collections.abc import Callable

import pytest

from dispatcher.histogram import LatencyHistogram
from dispatcher.loadtest.schedule import Schedule
from dispatcher.loadtest.stats import Recorder, RequestOutcome


class Fake:
    """A gateway that takes ``service`` seconds (loop time) per request."""

    def __init__(self, service: float, clock: Callable[[], float] | None = None) -> None:
        self.service = service
        self.loop = asyncio.get_running_loop()
        self.clock = clock or self.loop.time
        self.starts: list[tuple[int, float, float]] = []  # (k, due, started)
        self.done: dict[int, float] = {}
        self.cancelled: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, k: int, due: float) -> None:
        self.starts.append((k, due, self.clock()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.service)
            self.done[k] = self.loop.time()
        except asyncio.CancelledError:
            self.cancelled.append(k)
            raise
        finally:
            self.in_flight -= 1


@pytest.mark.looptime(noop_cycles=1)  # nothing but timers: travel at once
async def test_requests_start_exactly_when_due_without_drift() -> None:
    fake = Fake(service=0.003)
    loop = asyncio.get_running_loop()
    schedule = Schedule(1000.0, slots=64, clock=loop.time)
    start = loop.time() + 1.0
    await schedule.run(fake.send, start=start, end=start + 6.0)
    await schedule.drain(1.0)
    assert [k for k, _, _ in fake.starts] == list(range(6_000))
    for k, due, started in fake.starts:
        assert due == start + k / 1000.0
        assert abs(started - due) < 1e-6
    assert schedule.started == 6_000
    assert schedule.late_starts == 0
    assert len(schedule.dropped) == 0
    assert len(fake.done) == 6_000


@pytest.mark.looptime(noop_cycles=1)
async def test_after_a_stall_the_schedule_catches_up_instead_of_shifting() -> None:
    # The clock jumps 30 ms at 1.0005 s, as if the loop had been blocked: what became
    # due meanwhile starts at once (late), and everything after stays on the grid.
    fake = Fake(service=0.001)
    loop = asyncio.get_running_loop()
    stalled = [0.0]
    schedule = Schedule(1000.0, slots=64, clock=lambda: loop.time() + stalled[0])
    start = loop.time()
    loop.call_at(start + 1.0005, stalled.__setitem__, 0, 0.030)
    await schedule.run(fake.send, start=start, end=start + 3.0)
    await schedule.drain(1.0)
    assert schedule.started == 3000
    for k, due, started in fake.starts:
        assert due == start + k / 1000.0
        started += stalled[0] if started >= start + 1.0005 else 0.0
        if 1001 <= k <= 1031:
            assert started == pytest.approx(start + 1.031, abs=1e-6)
        else:
            assert started == pytest.approx(due, abs=1e-6)


@pytest.mark.looptime(noop_cycles=1)
async def test_a_timer_that_fires_early_never_starts_a_request_early() -> None:
    # uvloop's timers count whole milliseconds and can fire before the due time on the
    # schedule's finer clock; here the clock runs 10 % slow against the loop's timers,
    # so every nap ends early. A request started early would look faster than it was.
    loop = asyncio.get_running_loop()
    clock = lambda: 0.9 * loop.time()  # noqa: E731
    fake = Fake(service=0.001, clock=clock)
    schedule = Schedule(100.0, slots=8, clock=clock)
    start = clock()
    await schedule.run(fake.send, start=start, end=start + 2.0)
    await schedule.drain(1.0)
    assert schedule.started == 200
    for _, due, started in fake.starts:
        assert due - 1e-6 <= started <= due + 1e-5


@pytest.mark.looptime
async def test_a_slow_gateway_makes_requests_late_not_rarer() -> None:
    # One slot, 50 ms per request, one request due every 10 ms: request k cannot start
    # before k * 50 ms, so its latency from the due time is 50 + 40 k ms.
    fake = Fake(service=0.05)
    loop = asyncio.get_running_loop()
    schedule = Schedule(100.0, slots=1, clock=loop.time)
    start = loop.time()
    await schedule.run(fake.send, start=start, end=start + 1.0)
    await schedule.drain(1.0)
    assert fake.most_in_flight == 1
    started = len(fake.starts)
    assert started == 20  # the 21st would start at 1.0 s, when the schedule ends
    for k, due, _ in fake.starts:
        latency = fake.done[k] - due
        assert latency == pytest.approx(0.05 + 0.04 * k, abs=1e-6)
    assert schedule.late_starts == 19  # every one after the first waited for the slot
    assert schedule.dropped == range(20, 100)


@pytest.mark.looptime
async def test_slots_cap_the_requests_in_flight() -> None:
    fake = Fake(service=0.5)
    loop = asyncio.get_running_loop()
    schedule = Schedule(100.0, slots=8, clock=loop.time)
    start = loop.time()
    await schedule.run(fake.send, start=start, end=start + 2.0)
    assert fake.most_in_flight == 8
    assert schedule.in_flight == 8
    await schedule.drain(1.0)
    assert schedule.in_flight == 0
    # Four rounds of eight fit in two seconds; everything else due in them is dropped.
    assert schedule.started == 32
    assert len(schedule.dropped) == 200 - 32


@pytest.mark.looptime
async def test_drain_cancels_what_is_still_running_after_the_grace() -> None:
    fake = Fake(service=10.0)
    loop = asyncio.get_running_loop()
    schedule = Schedule(10.0, slots=100, clock=loop.time)
    start = loop.time()
    await schedule.run(fake.send, start=start, end=start + 1.0)
    before = loop.time()
    pending = await schedule.drain(2.0)
    assert loop.time() - before == pytest.approx(2.0)
    assert len(pending) == 10
    assert sorted(fake.cancelled) == list(range(10))


@pytest.mark.looptime
async def test_halt_stops_the_schedule_and_drops_what_was_waiting() -> None:
    fake = Fake(service=1.0)
    loop = asyncio.get_running_loop()
    schedule = Schedule(10.0, slots=2, clock=loop.time)
    start = loop.time()
    loop.call_at(start + 2.55, schedule.halt)
    await schedule.run(fake.send, start=start, end=start + 60.0)
    assert loop.time() == pytest.approx(start + 2.55)
    assert schedule.halted_at == pytest.approx(start + 2.55)
    # Two slots, one second each: six started by 2.55 s; 26 were due by then.
    assert schedule.started == 6
    assert schedule.dropped == range(6, 26)
    await schedule.drain(5.0)


class Calls:
    """The same gateway for `Schedule.run_calls`: a request is a timer that reports its
    end with `Schedule.finished`; no task."""

    def __init__(self, schedule: Schedule, service: float) -> None:
        self.schedule = schedule
        self.service = service
        self.loop = asyncio.get_running_loop()
        self.starts: list[tuple[int, float, float]] = []
        self.done: dict[int, float] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.started_by_finished = 0

    def begin(self, k: int, due: float) -> None:
        self.starts.append((k, due, self.loop.time()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.loop.call_later(self.service, self.end, k)

    def end(self, k: int) -> None:
        self.done[k] = self.loop.time()
        self.in_flight -= 1
        before = len(self.starts)
        self.schedule.finished()
        self.started_by_finished += len(self.starts) - before


@pytest.mark.looptime(noop_cycles=1)
async def test_calls_start_exactly_when_due_within_the_cap() -> None:
    loop = asyncio.get_running_loop()
    schedule = Schedule(1000.0, slots=4, clock=loop.time)
    calls = Calls(schedule, service=0.0035)  # 3.5 in flight on average, 4 at times
    start = loop.time() + 1.0
    await schedule.run_calls(calls.begin, start=start, end=start + 2.0)
    await schedule.drain(1.0)
    assert [k for k, _, _ in calls.starts] == list(range(2000))
    for k, due, started in calls.starts:
        assert due == start + k / 1000.0
        assert abs(started - due) < 1e-6
    assert calls.most_in_flight == 4
    assert calls.started_by_finished == 0  # none was waiting
    assert (schedule.started, schedule.late_starts, len(schedule.dropped)) == (2000, 0, 0)
    assert len(calls.done) == 2000
    assert schedule.in_flight == 0


@pytest.mark.looptime
async def test_a_freed_slot_starts_the_waiting_request_at_once() -> None:
    # One slot, 50 ms per request, one due every 10 ms: request k starts the moment
    # request k - 1 ends, at k × 50 ms, counted late; the rest are dropped. (The window
    # ends at 0.99 s: the 21st would start at 1.0 s, at a float's width from the end.)
    loop = asyncio.get_running_loop()
    schedule = Schedule(100.0, slots=1, clock=loop.time)
    calls = Calls(schedule, service=0.05)
    start = loop.time()
    await schedule.run_calls(calls.begin, start=start, end=start + 0.99)
    await schedule.drain(1.0)
    assert calls.most_in_flight == 1
    assert len(calls.starts) == 20
    for k, due, started in calls.starts:
        assert started == pytest.approx(start + 0.05 * k, abs=1e-6)
        assert calls.done[k] - due == pytest.approx(0.05 + 0.04 * k, abs=1e-6)
    assert calls.started_by_finished == 19  # within `finished`, not a turn of the loop later
    assert schedule.late_starts == 19
    assert schedule.dropped == range(20, 99)


@pytest.mark.looptime
async def test_calls_drain_waits_for_the_grace_and_leaves_the_rest_to_the_caller() -> None:
    loop = asyncio.get_running_loop()
    schedule = Schedule(10.0, slots=100, clock=loop.time)
    calls = Calls(schedule, service=10.0)
    start = loop.time()
    await schedule.run_calls(calls.begin, start=start, end=start + 1.0)
    before = loop.time()
    assert await schedule.drain(2.0) == []
    assert loop.time() - before == pytest.approx(2.0)
    assert schedule.in_flight == 10
    quick = Schedule(10.0, slots=100, clock=loop.time)
    calls = Calls(quick, service=0.3)
    start = loop.time()
    await quick.run_calls(calls.begin, start=start, end=start + 1.0)
    before = loop.time()
    await quick.drain(5.0)
    assert loop.time() - before == pytest.approx(0.3)  # the last one's answer, not 5 s
    assert quick.in_flight == 0


@pytest.mark.parametrize(
    ("rate", "seconds", "expected"),
    [(3.0, 1.0, 3), (0.5, 3.0, 2), (1000.0, 0.0015, 2), (7.0, 10.0, 70), (0.1, 1.0, 1)],
)
def test_count_is_the_requests_due_in_window(rate: float, seconds: float, expected: int) -> None:
    schedule = Schedule(rate, slots=1, clock=lambda: 0.0)
    assert schedule.count(5.0, 5.0 + seconds) == expected


def test_recorder_rows_per_second_and_warmup() -> None:
    seconds: list[dict[str, object]] = []
    recorder = Recorder(start=10.0, on_second=seconds.append)
    recorder.add(9.5, 10.2, RequestOutcome.OK)  # due during the warm-up: not measured
    for i in range(10):
        due = 10.0 + i / 10
        recorder.started(due, due + 0.001)
        latency = 0.150 if i == 9 else 0.020
        outcome = RequestOutcome.OK if i % 5 else RequestOutcome.SERVER_ERROR
        recorder.add(due, due + latency, outcome)
    recorder.tick(11.5)  # the first second closes once time has passed it
    assert len(seconds) == 1
    assert seconds[0]["requests"] == 9  # the last ends at 11.05 s, in the second second
    assert seconds[0]["errors"] == 2
    recorder.finish(11.6, end=12.0)
    assert [row["t"] for row in recorder.series] == [0, 1]
    assert recorder.series[1]["requests"] == 1
    assert recorder.series[1]["rate"] == 1.0  # the window ran on: a whole second
    assert recorder.warmup == 1
    assert recorder.requests == 10
    assert recorder.outcomes[RequestOutcome.SERVER_ERROR] == 2
    p50 = recorder.series[0]["p50_ms"]
    assert isinstance(p50, float)
    assert math.isclose(p50, 20.0, rel_tol=0.01)


def test_recorder_histograms_hold_what_recording_each_value_would() -> None:
    # The recorder keeps a second's latencies as integers and records each distinct
    # value once, merging values the histogram cannot tell apart: the figures must be
    # those of recording every request on its own (here 30 000 latencies from 0 to 3 s,
    # over 2 048 distinct values a second, and lags alike).
    rng = random.Random(5)
    recorder = Recorder(start=0.0)
    latency, lag = LatencyHistogram(), LatencyHistogram()
    per_second = [LatencyHistogram() for _ in range(3)]
    events: list[tuple[float, bool, float]] = []  # (when, whether it is the end, due)
    for i in range(30_000):
        due = i / 10_000
        started = due + rng.choice([0.0, 1e-6, rng.uniform(0, 0.5)])
        done = started + rng.expovariate(1 / 0.2) % 3.0
        events += [(started, False, due), (done, True, due)]
        lag.record(started - due)
        latency.record(done - due)
        if done < 3:
            per_second[int(done)].record(done - due)
    for when, end, due in sorted(events):  # as they happen
        if end:
            recorder.add(due, when, RequestOutcome.OK)
        else:
            recorder.started(due, when)
    recorder.finish(7.0, end=3.0)
    wanted = [0, 1, 50, 90, 99, 99.9, 100]
    for mine, theirs in ((recorder.latency, latency), (recorder.lag, lag)):
        assert mine.count == theirs.count == 30_000
        assert mine.percentiles_ms(wanted) == theirs.percentiles_ms(wanted)
        assert (mine.min_ms(), mine.max_ms(), mine.mean_ms()) == (
            theirs.min_ms(),
            theirs.max_ms(),
            theirs.mean_ms(),
        )
    for row, histogram in zip(recorder.series, per_second, strict=False):
        assert (row["p50_ms"], row["p99_ms"]) == (
            histogram.percentile_ms(50),
            histogram.percentile_ms(99),
        )
