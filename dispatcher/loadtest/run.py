"""Driving the gateway: schedule, send, record, drain, report.

The target is the URL given, or an emulator started in this process on 127.0.0.1 on a
free port; nothing else is ever contacted (but the shared quota's Redis, when given).
The run ends by itself: nothing starts after warm-up + duration, and requests still in
flight get at most the drain time.

With a shared quota (``--quota-url``) a request the schedule starts first waits at the
*gate*: in order, one booking at a time carries as many waiting requests as one of the
code's capacities holds (`SharedQuota.acquire` of their recipients), and the request
goes when its booking is granted. It holds its in-flight slot while it waits, and its
latency still counts from its due time; one that the quota held more than
`QUOTA_LATE` past its due time is a late start, and one still waiting when the
window ends is dropped, as a request waiting for a slot is. Without a quota the
schedule starts requests directly: the gate costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from dispatcher import api
from dispatcher._version import __version__
from dispatcher.config import Secret
from dispatcher.emulator import EmulatorSettings, FaultSettings, running_emulator
from dispatcher.errors import AuthError, FatalError, GatewayError, RateLimited, Unavailable
from dispatcher.gateway import headers as gateway_headers
from dispatcher.http1 import Pool, Reply
from dispatcher.loadtest import workload
from dispatcher.loadtest.report import build_loadtest_report, live_line
from dispatcher.loadtest.schedule import Schedule
from dispatcher.loadtest.settings import LoadTest
from dispatcher.loadtest.stats import Recorder, RequestOutcome, classify, export
from dispatcher.logs import scrub_answer

if TYPE_CHECKING:
    from dispatcher.metrics import Snapshot
    from dispatcher.quota.shared import SharedQuota

#: The first request is due this long after set-up, so it is not late by construction.
LEAD = 0.05
#: A request the shared quota held longer than this past its due time started late
#: (a booking's round trip to a Redis nearby is a fraction of it).
QUOTA_LATE = 0.005
#: The gateway's push-backs (429/503) reach the shared quota at most once per this.
SLOW_DOWN_EVERY = 1.0


async def run_loadtest(
    test: LoadTest,
    *,
    stop: asyncio.Event | None = None,
    live: TextIO | None = sys.stderr,
    clock: Callable[[], float] = time.perf_counter,
    share: Share | None = None,
) -> dict[str, Any]:
    """Run the test and return its report (see the README for the schema).

    ``stop`` ends it early (the report says ``interrupted``); ``live`` receives one line
    per second (None: silent). ``clock`` is the monotonic clock of the schedule and of
    every latency: perf_counter by default, because uvloop's ``loop.time()`` only moves
    in whole milliseconds.

    ``share`` makes this process one worker of ``loadtest --workers``
    (`dispatcher.loadtest.workers`): it drives its share of the schedule from the time
    the parent gives, pushes its metrics to the parent, and its report carries its
    numbers in a form that adds up (``part``).

    Raises `ConfigError` when the input has no usable recipient, or when the metrics
    port (``test.metrics_port``) cannot be served — before anything is sent.
    """
    drivers: list[_Driver] = []
    async with _metrics(test, drivers, share):  # a port that cannot be served: ConfigError
        return await _run(test, stop, live, clock, drivers, share)


@dataclass(frozen=True, slots=True)
class Share:
    """Worker ``index`` (0-based) of ``count``: it drives requests ``index``,
    ``index + count``, ``index + 2 count``… of the test's schedule — rate / count,
    offset by index / rate — so the workers together drive exactly the whole schedule.
    ``ready`` is awaited once everything is set up; it answers when request 0 is due,
    on the clock every worker shares (``perf_counter``: the system's monotonic clock).
    ``metrics_fd`` is the pipe the worker pushes its metrics down (None: none)."""

    index: int
    count: int
    ready: Callable[[], Awaitable[float]]
    metrics_fd: int | None = None


async def _run(
    test: LoadTest,
    stop: asyncio.Event | None,
    live: TextIO | None,
    clock: Callable[[], float],
    drivers: list[_Driver],
    share: Share | None,
) -> dict[str, Any]:
    requests = test.request_rate * (test.warmup + test.duration)
    bodies = await workload.build(
        batch_size=test.batch_size,
        requests=max(1, int(requests)),
        sender=test.sender,
        text=test.text,
        source=test.input,
        seed=test.seed,
    )
    async with target(test) as (base_url, api_key):
        if live is not None:
            announce(test, base_url, bodies.single, live)
        endpoint = "/v2/messages" if bodies.single else "/v3/messages/batch"
        pool = Pool(
            base_url.rstrip("/") + endpoint,
            gateway_headers(api_key),  # without an Idempotency-Key
            timeout=test.timeout,
            connect_timeout=min(test.timeout, 10.0),
        )
        try:
            async with _quota(test, base_url) as quota:  # unreachable: nothing is sent
                first = None if share is None else await share.ready()
                driver = _Driver(test, pool, bodies, clock, live, quota, first, share)
                drivers.append(driver)
                return await driver.run(stop, base_url)
        finally:
            pool.close()  # after an error: the run itself leaves nothing open


def announce(test: LoadTest, base_url: str, single: bool, live: TextIO) -> None:
    """The line that says what the test is about to do."""
    where = "the embedded emulator at " if test.embedded else ""
    workers = f" in {test.workers} processes" if test.workers > 1 else ""
    print(
        f"loadtest: {test.request_rate:g} requests/s{workers} for {test.duration:g}s"
        f"{f' after {test.warmup:g}s warm-up' if test.warmup else ''} against "
        f"{where}{base_url}, {'single' if single else 'batch'} endpoint, "
        f"batch {test.batch_size}, concurrency {test.concurrency}",
        file=live,
        flush=True,
    )


@contextlib.asynccontextmanager
async def _metrics(
    test: LoadTest, drivers: list[_Driver], share: Share | None
) -> AsyncIterator[None]:
    """``--metrics-port``: the running driver's numbers on a Prometheus endpoint; for a
    worker, down its pipe to the parent, which serves the test's."""
    fd = None if share is None else share.metrics_fd
    if test.metrics_port is None and fd is None:
        yield
        return
    from dispatcher.metrics import loadtest_snapshot, pushing, serving

    def source() -> Snapshot:
        driver = drivers[-1] if drivers else None
        return loadtest_snapshot(
            driver.recorder if driver else None, driver.schedule if driver else None
        )

    if fd is not None:
        async with pushing(fd, source):
            yield
        return
    assert test.metrics_port is not None
    async with serving(test.metrics_host, test.metrics_port, source) as url:
        print(f"loadtest: metrics on {url}", file=sys.stderr, flush=True)
        yield


@contextlib.asynccontextmanager
async def _quota(test: LoadTest, base_url: str) -> AsyncIterator[SharedQuota | None]:
    """The shared quota over the sender code's limit, when ``--quota-url`` is given; its
    namespace by default the target's (`namespace_for`), so a test against an emulator
    never spends a production account's quota. `QuotaUnavailable` when Redis cannot be
    reached: before anything is sent."""
    if test.quota_url is None:
        yield None
        return
    from dispatcher.limiter import RateLimits
    from dispatcher.quota import close_quietly, namespace_for, open_quota

    quota = await open_quota(
        test.quota_url,
        limits=RateLimits(rates={test.sender: test.code_rate}, kind_rates={}),
        namespace=test.quota_namespace or namespace_for(base_url),
        password=test.redis_password,
        account_rate=math.inf if test.account_rate is None else test.account_rate,
        fallback=test.quota_fallback,
        peers=test.quota_peers,
    )
    try:
        yield quota
    finally:
        await close_quietly(quota)


@contextlib.asynccontextmanager
async def target(test: LoadTest) -> AsyncIterator[tuple[str, Secret | None]]:
    """The base URL and key to drive: ``test.base_url``'s, or those of an emulator
    started here for as long as the block runs."""
    if test.base_url is not None:
        yield test.base_url, test.api_key
        return
    settings = EmulatorSettings(
        rate_limit=False,
        ledger="counts",  # a long test at a high rate must not grow the emulator
        faults=test.faults or FaultSettings(),
        seed=test.seed,
        max_batch=max(1000, test.batch_size),
    )
    async with running_emulator(settings, host="127.0.0.1", port=0) as emulator:
        yield emulator.base_url, Secret(settings.api_key)


class _Driver:
    """One run, from now: the schedule, the recorder, and what starts a request and
    hears of its end (two plain calls: no task or coroutine per request)."""

    def __init__(
        self,
        test: LoadTest,
        pool: Pool,
        bodies: workload.Workload,
        clock: Callable[[], float],
        live: TextIO | None,
        quota: SharedQuota | None = None,
        first: float | None = None,
        share: Share | None = None,
    ) -> None:
        self.test = test
        self.pool = pool
        self.clock = clock
        self.live = live
        index, count = (0, 1) if share is None else (share.index, share.count)
        self.share = share
        #: Each body as the whole request, built once: request k sends requests[k % n]
        #: (a worker's k-th request is the test's ``index + count * k``-th).
        requests = [pool.request(body) for body in bodies.bodies]
        n = len(requests)
        self.requests = [requests[(index + count * m) % n] for m in range(n)]
        #: what request k costs in the shared quota: its recipients, or its segments
        self.units = (
            [bodies.segments[(index + count * m) % n] for m in range(n)]
            if test.quota_unit == "segments"
            else [test.batch_size] * n
        )
        self.single = bodies.single
        self.parse = api.parse_single if bodies.single else api.parse_batch
        self.aborted: AuthError | None = None
        self.began = clock()
        self.first = self.began + LEAD if first is None else first
        self.measured = self.first + test.warmup
        self.end = self.measured + test.duration
        #: When the test's first request is due (this process's is ``index`` later).
        self.start = self.first
        self.schedule = Schedule(
            test.request_rate,
            slots=test.concurrency,
            clock=clock,
            count_from=self.measured,
            share=(index, count),
        )
        self.recorder = Recorder(
            start=self.measured, on_second=self._show, keep_seconds=share is not None
        )
        self.quota = quota
        #: What ended the run other than the API key (the shared quota's Redis refusing).
        self.failure: str | None = None
        #: With a quota: the requests started by the schedule, waiting at the gate (k,
        #: due, late already), and those of the booking being made.
        self.held: deque[tuple[int, float, bool]] = deque()
        self.booking: list[tuple[int, float, bool]] = []
        self.quota_late = 0
        self.quota_wait = 0.0
        self._gate_wake = asyncio.Event()
        self._gate_idle = asyncio.Event()
        self._gate_idle.set()
        self._slowed_at = -SLOW_DOWN_EVERY

    async def run(self, stop: asyncio.Event | None, base_url: str) -> dict[str, Any]:
        test, clock, schedule, recorder = self.test, self.clock, self.schedule, self.recorder
        first, measured, end = self.start, self.measured, self.end
        watchers = [asyncio.create_task(self._tick(recorder, measured))]
        if stop is not None:
            watchers.append(asyncio.create_task(_halt_on(stop, schedule)))
        begin = self._start
        if self.quota is not None:
            begin = self._hold
            watchers.append(asyncio.create_task(self._gate(self.quota)))
        try:
            await schedule.run_calls(begin, start=first, end=end)
            if self.quota is not None:
                await self._close_gate(watchers[-1], end)
            halted = clock()
            for k in schedule.dropped:
                recorder.add(schedule.due(k, first), halted, RequestOutcome.DROPPED)
            # In-flight requests get the drain time from the end of the window (the last
            # request is due up to 1/rate before it), none after an abort.
            grace = (
                test.drain + max(0.0, end - clock()) if schedule.halted_at is None else test.drain
            )
            await schedule.drain(0.0 if self.aborted else grace)
            await self.pool.abandon()  # what is still running ends unfinished
            recorder.finish(clock(), end)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        window = test.duration
        if schedule.halted_at is not None:
            window = min(window, max(0.0, schedule.halted_at - measured))
        report = build_loadtest_report(
            test,
            recorder,
            target_url=base_url,
            window=window,
            elapsed=clock() - self.began,
            late_starts=schedule.late_starts,
            aborted=self.failure if self.aborted is None else str(self.aborted),
            interrupted=stop is not None and stop.is_set(),
            version=__version__,
            quota=self.quota_account(),
        )
        if self.share is not None:
            report["part"] = export(recorder)
        return report

    def quota_account(self) -> dict[str, Any] | None:
        """The shared quota's part of the report (None without one)."""
        if self.quota is None:
            return None
        return {
            "namespace": self.quota.namespace,
            "code_rate": self.test.code_rate,
            "unit": self.test.quota_unit,
            "account_rate": self.test.account_rate,
            "fallback": self.quota.fallback,
            "peers": self.quota.peers,
            "late_starts": self.quota_late,
            "wait_s": round(self.quota_wait, 3),
        }

    def _hold(self, k: int, due: float) -> None:
        """With a shared quota: request ``k`` waits at the gate (its slot taken)."""
        self.held.append((k, due, self.schedule.last_late))
        self._gate_idle.clear()
        self._gate_wake.set()

    async def _gate(self, quota: SharedQuota) -> None:
        """Books the held requests in order, as many at a time as one capacity of the
        code holds, and starts each booking's requests when it is granted."""
        held, clock, code = self.held, self.clock, self.test.sender
        units, n = self.units, len(self.units)
        capacity = quota.capacity(code)
        wake, idle = self._gate_wake, self._gate_idle
        while True:
            if not held:
                idle.set()
                wake.clear()
                await wake.wait()
            idle.clear()
            group = self.booking = [held.popleft()]
            amount = units[group[0][0] % n]
            while held and amount + units[held[0][0] % n] <= capacity:
                amount += units[held[0][0] % n]
                group.append(held.popleft())
            asked = clock()
            try:
                await quota.acquire(code, amount)
            except FatalError as exc:  # Redis answers an error waiting cannot cure
                self.failure = str(exc)
                self.schedule.halt()
                return
            now = clock()
            self.quota_wait += now - asked
            self.booking = []
            for k, due, late in group:
                if not late and now - due > QUOTA_LATE and self.schedule.late(due):
                    self.quota_late += 1
                self._start(k, due)

    async def _close_gate(self, gate: asyncio.Task[None], end: float) -> None:
        """The schedule is done: the gate may still start what it holds until ``end``
        (as a request waiting for a slot may); what it holds then is dropped."""
        if self.schedule.halted_at is None and not gate.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, end - self.clock())):
                    await self._gate_idle.wait()
        gate.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gate
        now = self.clock()
        for _, due, _late in (*self.booking, *self.held):
            self.recorder.add(due, now, RequestOutcome.DROPPED)
            self.schedule.finished()
        self.booking = []
        self.held.clear()

    def _start(self, k: int, due: float) -> None:
        """Send request ``k`` once; `_ended` hears how it ended."""
        self.recorder.started(due, self.clock())
        requests = self.requests
        self.pool.begin(requests[k % len(requests)], due, self._ended)

    def _ended(self, due: float, outcome: Reply | GatewayError | None) -> None:
        """Record how the request due at ``due`` ended, timed from then."""
        kind = self._outcome(outcome)
        self.recorder.add(due, self.clock(), kind)
        self.schedule.finished()

    def _outcome(self, outcome: Reply | GatewayError | None) -> RequestOutcome:
        if outcome is None:  # still running when the drain time ran out, or aborted
            return RequestOutcome.UNFINISHED
        try:
            if isinstance(outcome, GatewayError):
                raise outcome
            status, headers, payload = outcome
            if self.single and 200 <= status < 300 and accepted_single(payload):
                return RequestOutcome.OK
            if not 200 <= status < 300:  # the answers whose words the error tree carries
                payload = scrub_answer(payload)
            self.parse(api.check_answer(status, headers, payload))
        except AuthError as exc:
            if self.aborted is None:
                self.aborted = exc
                self.schedule.halt()
            return RequestOutcome.CLIENT_ERROR
        except GatewayError as exc:
            if self.quota is not None and isinstance(exc, RateLimited | Unavailable):
                self._slow_down(self.quota, exc.retry_after)
            return classify(exc)
        return RequestOutcome.OK

    def _slow_down(self, quota: SharedQuota, retry_after: float | None) -> None:
        """The gateway pushed back: every process sharing the quota slows the code down
        (at most once per `SLOW_DOWN_EVERY`; the quota halves at most once a second)."""
        now = self.clock()
        if now - self._slowed_at >= SLOW_DOWN_EVERY:
            self._slowed_at = now
            quota.slow_down(self.test.sender, min(retry_after or 0.0, 60.0))

    async def _tick(self, recorder: Recorder, measured: float) -> None:
        """Close each second on time, so the live line comes even when nothing ends."""
        second = 1
        while True:
            await asyncio.sleep(max(0.0, measured + second - self.clock()))
            recorder.tick(self.clock())
            second = int(self.clock() - measured) + 1

    def _show(self, row: dict[str, Any]) -> None:
        if self.live is None:
            return
        in_flight = self.schedule.in_flight
        print(live_line(row, self.test.request_rate, in_flight), file=self.live, flush=True)


def accepted_single(payload: bytes) -> bool:
    """Whether a 2xx answer of the single endpoint accepts its message: a JSON object
    whose ``data`` is an object with an ``id``. True only when `api.check_answer` and
    `api.parse_single` would accept it too (a test holds them to it), in a third of
    their time: the usual answer skips the error tree and the `api.Answer`; any other
    goes their way."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(document, dict):
        return False
    data = document.get("data")
    return isinstance(data, dict) and data.get("id") is not None


async def _halt_on(stop: asyncio.Event, schedule: Schedule) -> None:
    await stop.wait()
    schedule.halt()
