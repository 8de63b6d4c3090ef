"""Prometheus metrics of a send (``--metrics-port``), served while the job runs.

The numbers are the run's own account, read when Prometheus scrapes: the summary
already counts every result by status, every request, retry and latency; the reader
its lines and bytes; the sender its requests in flight. So the metrics cost the hot
path almost nothing — a counter per batch for its sender code (`Summary.by_code`) and
two clock readings per rate-limit acquisition (`Recorder.timed`) — and without
``--metrics-port`` nothing at all: `serve_metrics` yields a recorder that records
nothing, and ``prometheus_client`` is never imported.

The endpoint is served on the event loop (by aiohttp's web server, imported only with
``--metrics-port``), not in prometheus_client's own thread: a scrape reads the account between two
steps of the pipeline, never half-way through a batch's update, and the hot path
takes no lock. prometheus_client builds the families and the exposition format.

Several processes, one endpoint
-------------------------------
``send --workers N`` runs the pipeline in N processes and serves one endpoint for
the job. A `Snapshot` is one process's numbers as plain data that add up: `merge`
sums counters, in-flight requests and histogram buckets, and takes the least of the
lines and bytes read (every worker reads the whole input). A worker — a process whose
environment names a pipe in ``DISPATCHER_METRICS_FD`` — serves nothing, whatever its
``--metrics-port``: it writes its snapshot down the pipe as a JSON line every second
and once more at its end (`pushing`). The parent opens one pipe per worker
(`WorkerMetrics.pipe`) and serves the merge of the last snapshot each sent
(`serving` with ``WorkerMetrics.snapshot`` as the source). A worker's counters only
grow, so keeping its last snapshot after it ends keeps the job's counters monotonic.
This is preferred to prometheus_client's multiprocess mode, which needs an
environment variable set before the library is imported in each process, a
directory of memory-mapped files to clean per job, and cannot aggregate custom
collectors — which are what lets the metrics read the account instead of counting it
a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import orjson

from dispatcher.errors import ConfigError
from dispatcher.limiter import RateLimits

if TYPE_CHECKING:
    from dispatcher.config import Config
    from dispatcher.histogram import LatencyHistogram
    from dispatcher.loadtest.schedule import Schedule
    from dispatcher.loadtest.stats import Recorder as LoadRecorder
    from dispatcher.quota.shared import SharedQuota
    from dispatcher.summary import Summary

log = logging.getLogger("dispatcher.metrics")

#: Upper bounds (seconds) of the request latency histogram's buckets: Prometheus's
#: defaults, and the gateway's default timeout (30 s) and beyond.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY = "dispatcher_request_duration_seconds"
LATENCY_HELP = "Duration of each request to the gateway, every attempt, whatever its outcome."

Labels = tuple[str, ...]

#: Set by a ``--workers`` parent in each worker's environment: the file descriptor of
#: the pipe the worker writes its snapshots to, instead of serving an endpoint.
PUSH_FD_ENV = "DISPATCHER_METRICS_FD"
#: Seconds between a worker's snapshots (and one more when it ends).
PUSH_INTERVAL = 1.0
#: What a worker holds unsent before it skips snapshots (a parent that stopped reading).
_PUSH_BACKLOG = 1 << 20


@dataclass(frozen=True, slots=True)
class Metric:
    """One counter or gauge of the endpoint: its name, help, labels, and how the
    values of several processes combine (``sum``; ``min`` for what every worker
    counts whole, such as the input it reads)."""

    name: str
    kind: str
    help: str
    labels: Labels = ()
    merge: str = "sum"


METRICS = (
    Metric(
        "dispatcher_recipients_total",
        "counter",
        "Result lines written, by status and sender code (code is empty for lines "
        "decided before any request: rejected, invalid numbers, policies).",
        ("status", "code"),
    ),
    Metric(
        "dispatcher_segments_total",
        "counter",
        "Billable segments of the messages the gateway accepted, by encoding.",
        ("encoding",),
    ),
    Metric(
        "dispatcher_requests_total", "counter", "Requests made to the gateway, retries included."
    ),
    Metric(
        "dispatcher_retries_total",
        "counter",
        "Requests retried, by cause (429, 503, 5xx, timeout, disconnect, connect, 413-split…).",
        ("cause",),
    ),
    Metric(
        "dispatcher_requests_in_flight",
        "gauge",
        "Batches holding an in-flight slot (a request, or a retry waiting its turn).",
    ),
    Metric(
        "dispatcher_quota_wait_seconds_total",
        "counter",
        "Seconds batches waited for their sender code's rate limit, by code and by "
        "limiter (local: this process's; shared: the Redis quota).",
        ("code", "quota"),
    ),
    Metric(
        "dispatcher_lines_read_total",
        "counter",
        "Input lines read (blank ones included).",
        merge="min",
    ),
    Metric(
        "dispatcher_input_read_bytes_total",
        "counter",
        "Input bytes read (of the file as stored: compressed for .gz).",
        merge="min",
    ),
    Metric(
        "dispatcher_input_size_bytes",
        "gauge",
        "Size of the input file (absent for stdin and pipes).",
        merge="max",
    ),
    Metric(
        "dispatcher_loadtest_requests_total",
        "counter",
        "Load test: measured requests by outcome (ok, 429, 5xx, timeout, dropped…).",
        ("outcome",),
    ),
    Metric(
        "dispatcher_loadtest_late_starts_total",
        "counter",
        "Load test: measured requests that started late, waiting for a free slot.",
    ),
)
_BY_NAME = {metric.name: metric for metric in METRICS}


@dataclass(slots=True)
class Snapshot:
    """One process's numbers at one moment, as plain data that adds up across
    processes (`merge`) and travels as JSON (`as_dict`, `from_dict`)."""

    #: metric name → label values → value
    values: dict[str, dict[Labels, float]] = field(default_factory=dict)
    #: cumulative request counts at each of `LATENCY_BUCKETS`, then all of them (+Inf)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def set(self, name: str, value: float, labels: Labels = ()) -> None:
        """Set one value (``name`` must be one of `METRICS`)."""
        assert len(labels) == len(_BY_NAME[name].labels), name
        self.values.setdefault(name, {})[labels] = value

    def set_latency(self, histogram: LatencyHistogram) -> None:
        """The request latency histogram, read off ``histogram``."""
        self.latency = [*histogram.counts_up_to(LATENCY_BUCKETS), histogram.count]
        self.latency_sum = histogram.total_seconds

    def get(self, name: str, labels: Labels = ()) -> float | None:
        """One value, or None when the snapshot has none."""
        return self.values.get(name, {}).get(labels)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what a worker would send its parent."""
        return {
            "values": {
                name: [[*labels, value] for labels, value in series.items()]
                for name, series in self.values.items()
            },
            "latency": list(self.latency),
            "latency_sum": self.latency_sum,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """The inverse of `as_dict` (metrics this version does not know are dropped)."""
        values: dict[str, dict[Labels, float]] = {}
        for name, rows in data["values"].items():
            if name in _BY_NAME:
                values[name] = {tuple(row[:-1]): row[-1] for row in rows}
        return cls(values, list(data["latency"]), float(data["latency_sum"]))


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The numbers of a job whose processes took these snapshots."""
    merged = Snapshot()
    for snapshot in snapshots:
        for name, series in snapshot.values.items():
            rule = _BY_NAME[name].merge
            into = merged.values.setdefault(name, {})
            for labels, value in series.items():
                old = into.get(labels)
                if old is None:
                    into[labels] = value
                elif rule == "sum":
                    into[labels] = old + value
                elif rule == "min":
                    into[labels] = min(old, value)
                else:
                    into[labels] = max(old, value)
        merged.latency = [a + b for a, b in zip(merged.latency, snapshot.latency, strict=True)]
        merged.latency_sum += snapshot.latency_sum
    return merged


class _Reader(Protocol):
    @property
    def lines(self) -> int: ...

    bytes_read: int
    total_bytes: int | None


Limits = TypeVar("Limits", bound="RateLimits | SharedQuota")


class Recorder:
    """The live account one process's endpoint reads (`snapshot`); disabled (no
    ``--metrics-port``), it reads nothing and times nothing."""

    def __init__(
        self,
        *,
        enabled: bool,
        dry_run: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.enabled = enabled
        self._dry_run = dry_run
        #: where the metrics are served (set by `serve_metrics`)
        self.url: str | None = None
        self._clock = clock
        #: seconds waited for the rate limits, by (code, "local" | "shared")
        self.waits: dict[tuple[str, str], float] = {}
        self._reader: _Reader | None = None
        self._summary: Summary | None = None
        self._stage: object = None
        #: what the summary held before this run (a resumed job's earlier results)
        self._baseline: tuple[Counter[str], Counter[str]] = (Counter(), Counter())

    def timed(self, limits: Limits) -> Limits:
        """``limits`` (the local limiter or the shared quota) with the time each
        acquisition waits counted per code — itself when disabled, or in a dry run
        (which waits for nothing)."""
        if not self.enabled or self._dry_run:
            return limits
        kind = "local" if isinstance(limits, RateLimits) else "shared"
        return cast("Limits", _Timed(limits, kind, self.waits, self._clock))

    def watch(self, reader: _Reader, summary: Summary, stage: object) -> None:
        """Read the run's numbers from these: the input's reader, the account, and the
        sending stage (its ``in_flight``)."""
        if not self.enabled:
            return
        self._reader, self._summary, self._stage = reader, summary, stage
        self._baseline = (Counter(summary.statuses), Counter(summary.segments))

    def snapshot(self) -> Snapshot:
        """This process's numbers now (this run's: a resumed job's earlier results are
        not counted again)."""
        snapshot = Snapshot()
        if self._summary is not None:
            _account(snapshot, self._summary, *self._baseline)
        reader = self._reader
        if reader is not None:
            snapshot.set("dispatcher_lines_read_total", reader.lines)
            snapshot.set("dispatcher_input_read_bytes_total", reader.bytes_read)
            if reader.total_bytes is not None:
                snapshot.set("dispatcher_input_size_bytes", reader.total_bytes)
        in_flight = getattr(self._stage, "in_flight", 0)
        snapshot.set("dispatcher_requests_in_flight", in_flight)
        for labels, seconds in self.waits.items():
            snapshot.set("dispatcher_quota_wait_seconds_total", seconds, labels)
        return snapshot


def _account(
    snapshot: Snapshot, summary: Summary, statuses: Counter[str], segments: Counter[str]
) -> None:
    """The summary's counts into ``snapshot``, less what it held before the run."""
    local = summary.statuses - statuses  # keeps positive counts only
    for (status, code), count in summary.by_code.items():
        if count:
            snapshot.set("dispatcher_recipients_total", count, (str(status), code))
            local[status] -= count
    for status, count in local.items():
        if count > 0:
            snapshot.set("dispatcher_recipients_total", count, (str(status), ""))
    for encoding, count in (summary.segments - segments).items():
        snapshot.set("dispatcher_segments_total", count, (str(encoding),))
    snapshot.set("dispatcher_requests_total", summary.requests)
    for cause, count in summary.retries.items():
        snapshot.set("dispatcher_retries_total", count, (str(cause),))
    snapshot.set_latency(summary.latency)


class _Timed:
    """Rate limits whose `acquire` adds the time it waited to ``waits``; every other
    attribute is the wrapped limiter's (so it answers like `RateLimits` and
    `SharedQuota`, whatever they grow)."""

    def __init__(
        self,
        limits: RateLimits | SharedQuota,
        kind: str,
        waits: dict[tuple[str, str], float],
        clock: Callable[[], float],
    ) -> None:
        self._limits = limits
        self._kind = kind
        self._waits = waits
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._limits, name)

    async def acquire(self, code: str, amount: float) -> Any:
        began = self._clock()
        try:
            return await self._limits.acquire(code, amount)
        finally:
            key = (code, self._kind)
            self._waits[key] = self._waits.get(key, 0.0) + self._clock() - began


def loadtest_snapshot(recorder: LoadRecorder | None, schedule: Schedule | None) -> Snapshot:
    """A load test's numbers now: its measured requests by outcome, their latency (from
    each request's due time, as the report counts it), in flight and late starts."""
    snapshot = Snapshot()
    if recorder is not None:
        snapshot.set("dispatcher_requests_total", recorder.requests)
        for outcome, count in recorder.outcomes.items():
            snapshot.set("dispatcher_loadtest_requests_total", count, (str(outcome),))
        snapshot.set_latency(recorder.latency_now())
    if schedule is not None:
        snapshot.set("dispatcher_requests_in_flight", schedule.in_flight)
        snapshot.set("dispatcher_loadtest_late_starts_total", schedule.late_starts)
    return snapshot


def families(snapshot: Snapshot) -> Iterator[Any]:
    """``snapshot`` as prometheus_client metric families, in `METRICS` order."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    for metric in METRICS:
        family: Any
        if metric.kind == "counter":
            name = metric.name.removesuffix("_total")
            family = CounterMetricFamily(name, metric.help, labels=metric.labels)
        else:
            family = GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)
        series = snapshot.values.get(metric.name)
        if not series:
            continue  # not this command's (loadtest or send), or nothing yet
        for labels, value in sorted(series.items()):
            family.add_metric(list(labels), value)
        yield family
    bounds = [*(_le(bound) for bound in LATENCY_BUCKETS), "+Inf"]
    yield HistogramMetricFamily(
        LATENCY,
        LATENCY_HELP,
        buckets=list(zip(bounds, snapshot.latency, strict=True)),
        sum_value=snapshot.latency_sum,
    )


def _le(bound: float) -> str:
    return repr(float(bound))


class _Collector:
    """A prometheus_client collector over a snapshot source."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        yield from families(self._source())


def exposition(source: Callable[[], Snapshot]) -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(source))
    return generate_latest(registry), CONTENT_TYPE_LATEST


@contextlib.asynccontextmanager
async def serve_metrics(
    config: Config,
    *,
    source: Callable[[], Snapshot] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> AsyncIterator[Recorder]:
    """Serve ``GET /metrics`` on ``config.metrics_host:metrics_port`` for as long as the
    block runs, and yield the `Recorder` it reads (``source``, when given, replaces the
    recorder's own snapshot).

    Without a metrics port, serves nothing and yields a disabled recorder. A port that
    cannot be served (busy, privileged, a host with no such address) raises
    `ConfigError` (exit 2) before anything is sent. A worker of a ``--workers`` job
    (``DISPATCHER_METRICS_FD`` in ``environ``) serves nothing either: it pushes its
    numbers to its parent, which serves the job's.
    """
    push = environ.get(PUSH_FD_ENV)
    recorder = Recorder(
        enabled=config.metrics_port is not None or bool(push), dry_run=config.dry_run
    )
    if push:
        async with pushing(_descriptor(push), recorder.snapshot):
            yield recorder
        return
    if config.metrics_port is None:
        yield recorder
        return
    source = source or recorder.snapshot
    async with serving(config.metrics_host, config.metrics_port, source) as url:
        recorder.url = url
        log.info("metrics on %s", url)
        yield recorder


def _descriptor(value: str) -> int:
    if not value.isdigit():
        raise ConfigError(f"environment {PUSH_FD_ENV} must be a file descriptor, got {value!r}")
    return int(value)


class _Closed(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@contextlib.asynccontextmanager
async def pushing(
    fd: int, source: Callable[[], Snapshot], *, interval: float = PUSH_INTERVAL
) -> AsyncIterator[None]:
    """Write ``source``'s snapshot down ``fd`` (a pipe to a ``--workers`` parent) as a
    JSON line every ``interval`` seconds while the block runs, and once more at its end.
    Never blocks the loop: a parent that stops reading only makes snapshots be skipped."""
    loop = asyncio.get_running_loop()
    pipe = None
    try:
        pipe = os.fdopen(fd, "wb", 0)
        transport, protocol = await loop.connect_write_pipe(_Closed, pipe)
    except (OSError, ValueError) as exc:
        if pipe is not None:
            pipe.close()
        raise ConfigError(
            f"environment {PUSH_FD_ENV}={fd}: not a pipe to write to ({exc})"
        ) from None

    def push() -> None:
        if not transport.is_closing() and transport.get_write_buffer_size() < _PUSH_BACKLOG:
            transport.write(orjson.dumps(source().as_dict(), option=orjson.OPT_APPEND_NEWLINE))

    async def every() -> None:
        while True:
            await asyncio.sleep(interval)
            push()

    task = loop.create_task(every(), name="metrics push")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        push()
        transport.close()  # after what is buffered is written (or the parent is gone)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.closed), 5.0)


class WorkerMetrics:
    """A ``--workers`` parent's view of its workers' numbers: the last snapshot each
    sent down its pipe, merged by `snapshot` (the source to `serving`)."""

    def __init__(self) -> None:
        self._last: dict[int, Snapshot] = {}
        self._readers: list[asyncio.Task[None]] = []

    async def pipe(self, worker: int) -> int:
        """A pipe for ``worker``, read from now on; returns its write end, which the
        worker gets (``pass_fds`` and ``DISPATCHER_METRICS_FD``) and the parent then
        closes."""
        read, write = os.pipe()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        protocol = asyncio.StreamReaderProtocol(reader)
        await loop.connect_read_pipe(lambda: protocol, os.fdopen(read, "rb", 0))
        self._readers.append(loop.create_task(self._follow(worker, reader)))
        return write

    async def _follow(self, worker: int, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                self._last[worker] = Snapshot.from_dict(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.warning(
                    "metrics of worker %d: a snapshot that cannot be read (%s)", worker, exc
                )

    def snapshot(self) -> Snapshot:
        """The job's numbers: every worker's last snapshot, merged."""
        return merge(self._last.values())

    async def wait(self) -> None:
        """Return once every worker's pipe is closed (each sent its last snapshot)."""
        await asyncio.gather(*self._readers)


@contextlib.asynccontextmanager
async def serving(host: str, port: int, source: Callable[[], Snapshot]) -> AsyncIterator[str]:
    """Serve ``source``'s snapshot at ``/metrics`` on ``host:port`` (0: any free port)
    for as long as the block runs; yields the URL. `ConfigError` when it cannot."""
    from aiohttp import web

    exposition(source)  # loads prometheus_client now, not at the first scrape

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = exposition(source)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"--metrics-port {port} on --metrics-host {host}: cannot serve metrics "
                f"there ({reason}); choose a free port, or 0 for any"
            ) from None
        address = runner.addresses[0]
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        yield f"http://{shown}:{address[1]}/metrics"
    finally:
        await runner.cleanup()
