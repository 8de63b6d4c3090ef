"""Driving the gateway: schedule, send, record, drain, report.

The target is the URL given, or an emulator started in this process on 127.0.0.1 on a
free port; nothing else is ever contacted. The run ends by itself: nothing starts after
warm-up + duration, and requests still in flight get at most the drain time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from dispatcher import api
from dispatcher._version import __version__
from dispatcher.config import Secret
from dispatcher.emulator import EmulatorSettings, FaultSettings, running_emulator
from dispatcher.errors import AuthError, GatewayError
from dispatcher.loadtest import workload
from dispatcher.loadtest.http import Pool, Reply
from dispatcher.loadtest.report import build_loadtest_report, live_line
from dispatcher.loadtest.schedule import Schedule
from dispatcher.loadtest.settings import LoadTest
from dispatcher.loadtest.stats import Recorder, RequestOutcome, classify
from dispatcher.logs import register_secret, scrub_answer

if TYPE_CHECKING:
    from dispatcher.metrics import Snapshot

#: The first request is due this long after set-up, so it is not late by construction.
LEAD = 0.05


async def run_loadtest(
    test: LoadTest,
    *,
    stop: asyncio.Event | None = None,
    live: TextIO | None = sys.stderr,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run the test and return its report (see the README for the schema).

    ``stop`` ends it early (the report says ``interrupted``); ``live`` receives one line
    per second (None: silent). ``clock`` is the monotonic clock of the schedule and of
    every latency: perf_counter by default, because uvloop's ``loop.time()`` only moves
    in whole milliseconds.

    Raises `ConfigError` when the input has no usable recipient, or when the metrics
    port (``test.metrics_port``) cannot be served — before anything is sent.
    """
    drivers: list[_Driver] = []
    async with _metrics(test, drivers):  # a port that cannot be served: ConfigError
        return await _run(test, stop, live, clock, drivers)


async def _run(
    test: LoadTest,
    stop: asyncio.Event | None,
    live: TextIO | None,
    clock: Callable[[], float],
    drivers: list[_Driver],
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
    async with _target(test) as (base_url, api_key):
        if live is not None:
            where = "the embedded emulator at " if test.embedded else ""
            print(
                f"loadtest: {test.request_rate:g} requests/s for {test.duration:g}s"
                f"{f' after {test.warmup:g}s warm-up' if test.warmup else ''} against "
                f"{where}{base_url}, {'single' if bodies.single else 'batch'} endpoint, "
                f"batch {test.batch_size}, concurrency {test.concurrency}",
                file=live,
                flush=True,
            )
        endpoint = "/v2/messages" if bodies.single else "/v3/messages/batch"
        pool = Pool(
            base_url.rstrip("/") + endpoint,
            _headers(api_key),
            timeout=test.timeout,
            connect_timeout=min(test.timeout, 10.0),
        )
        try:
            driver = _Driver(test, pool, bodies, clock, live)
            drivers.append(driver)
            return await driver.run(stop, base_url)
        finally:
            pool.close()  # after an error: the run itself leaves nothing open


def _headers(api_key: Secret | None) -> dict[str, str]:
    """The headers of `dispatcher.gateway.GatewayClient`, without an Idempotency-Key."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"sms-dispatcher/{__version__}",
    }
    if api_key is not None:
        register_secret(api_key.reveal())
        headers["Authorization"] = f"Bearer {api_key.reveal()}"
    return headers


@contextlib.asynccontextmanager
async def _metrics(test: LoadTest, drivers: list[_Driver]) -> AsyncIterator[None]:
    """``--metrics-port``: the running driver's numbers on a Prometheus endpoint."""
    if test.metrics_port is None:
        yield
        return
    from dispatcher.metrics import loadtest_snapshot, serving

    def source() -> Snapshot:
        driver = drivers[-1] if drivers else None
        return loadtest_snapshot(
            driver.recorder if driver else None, driver.schedule if driver else None
        )

    async with serving(test.metrics_host, test.metrics_port, source) as url:
        print(f"loadtest: metrics on {url}", file=sys.stderr, flush=True)
        yield


@contextlib.asynccontextmanager
async def _target(test: LoadTest) -> AsyncIterator[tuple[str, Secret | None]]:
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
    ) -> None:
        self.test = test
        self.pool = pool
        self.clock = clock
        self.live = live
        #: Each body as the whole request, built once: request k sends requests[k % n].
        self.requests = [pool.request(body) for body in bodies.bodies]
        self.single = bodies.single
        self.parse = api.parse_single if bodies.single else api.parse_batch
        self.aborted: AuthError | None = None
        self.began = clock()
        self.first = self.began + LEAD
        self.measured = self.first + test.warmup
        self.end = self.measured + test.duration
        self.schedule = Schedule(
            test.request_rate, slots=test.concurrency, clock=clock, count_from=self.measured
        )
        self.recorder = Recorder(start=self.measured, on_second=self._show)

    async def run(self, stop: asyncio.Event | None, base_url: str) -> dict[str, Any]:
        test, clock, schedule, recorder = self.test, self.clock, self.schedule, self.recorder
        first, measured, end = self.first, self.measured, self.end
        watchers = [asyncio.create_task(self._tick(recorder, measured))]
        if stop is not None:
            watchers.append(asyncio.create_task(_halt_on(stop, schedule)))
        try:
            await schedule.run_calls(self._start, start=first, end=end)
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
        return build_loadtest_report(
            test,
            recorder,
            target_url=base_url,
            window=window,
            elapsed=clock() - self.began,
            late_starts=schedule.late_starts,
            aborted=None if self.aborted is None else str(self.aborted),
            interrupted=stop is not None and stop.is_set(),
            version=__version__,
        )

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
            return classify(exc)
        return RequestOutcome.OK

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
