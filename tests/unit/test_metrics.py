"""Prometheus metrics (``--metrics-port``): served over real HTTP on 127.0.0.1 while
`pipeline.run` sends to a real emulator, and checked against the results file; the
recorder and the snapshots in process, on injected clocks."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import pipeline
from dispatcher.config import load
from dispatcher.errors import ConfigError
from dispatcher.histogram import LatencyHistogram
from dispatcher.journal import journal_path
from dispatcher.limiter import RateLimits
from dispatcher.metrics import (
    LATENCY,
    LATENCY_BUCKETS,
    METRICS,
    PUSH_FD_ENV,
    Recorder,
    Snapshot,
    merge,
    serve_metrics,
)
from dispatcher.summary import Summary
from tests.support.emulators import EmulatorFactory
from tests.support.exactly_once import read_results, send_config
from tests.support.held import HeldInput, held_gateway
from tests.support.redis_server import started

GATEWAY_INVALID = "+525599000000"  # the emulator is told to list it as invalid


class RawInput(HeldInput):
    """A held input that takes its pieces as bytes."""

    def raw(self, data: bytes) -> None:
        self._pieces.put(data)


Scraped = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def scrape(http: aiohttp.ClientSession, url: str) -> tuple[Scraped, str]:
    """Every sample of the endpoint, by name and sorted labels; and the raw text."""
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Scraped = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples, text


def recipients(samples: Scraped) -> Counter[tuple[str, str]]:
    return Counter(
        {
            (dict(labels)["status"], dict(labels)["code"]): int(value)
            for labels, value in samples.get("dispatcher_recipients_total", {}).items()
        }
    )


async def metrics_url(caplog: pytest.LogCaptureFixture, task: asyncio.Task[Any]) -> str:
    """The URL `serve_metrics` logged (port 0: the one it got)."""
    while True:
        for record in caplog.records:
            if found := re.search(r"metrics on (http://\S+)", record.getMessage()):
                return found.group(1)
        if task.done():
            task.result()
            pytest.fail("the run ended without serving metrics")
        await asyncio.sleep(0.01)


def input_lines() -> tuple[bytes, dict[int, str]]:
    """A mix of outcomes over two sender codes, and the code of each line that has one."""
    lines, codes = [], {}
    for n in range(1, 121):
        if n % 11 == 0:
            lines.append(b"{not json")  # REJECTED, before any code is known
            continue
        record: dict[str, Any] = {"to": f"+5255{n:08d}", "params": [f"p{n}", n]}
        if n % 7 == 0:
            record["to"] = f"bad-{n}"  # INVALID_NUMBER, decided here
        elif n % 13 == 0:
            record["to"] = GATEWAY_INVALID  # INVALID_NUMBER, decided by the gateway
        if n % 3 == 0:
            record["from"] = "ACME"
        lines.append(orjson.dumps(record))
        codes[n] = record.get("from", "12345")
    return b"\n".join(lines) + b"\n", codes


async def test_the_endpoint_counts_what_the_results_file_holds(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = await emulator_factory(rate_limit=False, invalid_prefixes=(GATEWAY_INVALID[1:],))
    caplog.set_level(logging.INFO, "dispatcher.metrics")
    source = RawInput()
    config = send_config(
        tmp_path,
        emulator.base_url,
        metrics_port=0,
        batch_size=7,
        dedupe="off",
        rates={"12345": math.inf, "ACME": 500.0},
    )
    run = asyncio.create_task(pipeline.run(source, config))
    url = await metrics_url(caplog, run)
    data, codes = input_lines()
    source.raw(data)
    results_path = tmp_path / "results.ndjson"
    total = len(codes) + 120 // 11
    # The input stays open: the run (and its endpoint) lives until every line has its
    # result in the file and on the endpoint. No clock: the test's timeout bounds it.
    while True:
        samples, text = await scrape(http, url)
        written = read_results(results_path) if results_path.exists() else []
        if len(written) == total and recipients(samples).total() == total:
            break
        await asyncio.sleep(0.02)
    expected = Counter((r["status"], codes[r["line"]] if "attempts" in r else "") for r in written)
    assert recipients(samples) == expected
    # every kind of line is there: gateway outcomes by code, local ones without
    assert {("QUEUE", "12345"), ("QUEUE", "ACME"), ("INVALID_NUMBER", "12345")} <= set(expected)
    assert {("INVALID_NUMBER", ""), ("REJECTED", "")} <= set(expected)
    segments: Counter[str] = Counter()
    for r in written:
        if r["status"] == "QUEUE":
            segments[r["encoding"]] += r["segments"]
    assert {
        dict(labels)["encoding"]: value
        for labels, value in samples["dispatcher_segments_total"].items()
    } == segments
    gateway_requests = sum((await emulator.stats())["requests"].values())
    assert samples["dispatcher_requests_total"][()] == gateway_requests
    assert samples["dispatcher_request_duration_seconds_count"][()] == gateway_requests
    buckets = samples["dispatcher_request_duration_seconds_bucket"]
    assert buckets[(("le", "+Inf"),)] == gateway_requests
    assert samples["dispatcher_lines_read_total"][()] == 120
    assert samples["dispatcher_input_read_bytes_total"][()] == len(data)
    assert samples["dispatcher_requests_in_flight"][()] == 0
    assert samples["dispatcher_request_duration_seconds_sum"][()] > 0
    waits = samples["dispatcher_quota_wait_seconds_total"]
    assert {dict(labels)["code"] for labels in waits} == {"12345", "ACME"}
    assert {dict(labels)["quota"] for labels in waits} == {"local"}
    assert "test-key" not in text
    source.end()
    summary = await run
    assert summary.fatal is None
    with pytest.raises(aiohttp.ClientConnectionError):  # served only while the job runs
        await scrape(http, url)


async def test_requests_in_flight_while_the_gateway_holds_them(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dispatcher.metrics")
    async with held_gateway() as gateway:
        source = HeldInput()
        config = send_config(
            tmp_path, gateway.base_url, metrics_port=0, batch_size=5, concurrency=3
        )
        run = asyncio.create_task(pipeline.run(source, config))
        url = await metrics_url(caplog, run)
        source.give(range(1, 21))  # four batches: three in flight, one waiting
        while len(gateway.bodies) < 3:
            await asyncio.sleep(0.01)
        samples, _ = await scrape(http, url)
        assert samples["dispatcher_requests_in_flight"][()] == 3
        assert recipients(samples).total() == 0
        gateway.release.set()
        source.end()
        summary = await run
    assert summary.statuses["QUEUE"] == 20


def test_a_busy_port_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        source = tmp_path / "in.ndjson"
        source.write_text('{"to": "+525512345678"}\n')
        # a gateway nobody listens on: anything sent would fail the run differently
        config = send_config(tmp_path, "http://127.0.0.1:9/raven", metrics_port=port)
        with pytest.raises(ConfigError, match=rf"--metrics-port {port} .*cannot serve"):
            asyncio.run(pipeline.run(source, config))
    results = tmp_path / "results.ndjson"
    assert not results.exists()
    assert not Path(journal_path(str(results))).exists()


def test_an_address_this_host_does_not_have_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_text('{"to": "+525512345678"}\n')
    config = send_config(
        tmp_path, "http://127.0.0.1:9/raven", metrics_port=0, metrics_host="192.0.2.1"
    )
    with pytest.raises(ConfigError, match=r"--metrics-host 192\.0\.2\.1: cannot serve"):
        asyncio.run(pipeline.run(source, config))


def test_metrics_settings_from_flags_env_and_file(tmp_path: Path) -> None:
    assert load(env={}).metrics_port is None
    assert load(env={}).metrics_host == "127.0.0.1"
    assert load(env={"DISPATCHER_METRICS_PORT": "9464"}).metrics_port == 9464
    toml = tmp_path / "c.toml"
    toml.write_text('[metrics]\nmetrics_port = 0\nmetrics_host = "0.0.0.0"\n')
    config = load(config_file=toml, env={}, flags={"metrics_port": "9100"})
    assert (config.metrics_port, config.metrics_host) == (9100, "0.0.0.0")
    for bad in ("65536", "-1", "x", "1.5"):
        with pytest.raises(ConfigError, match="--metrics-port must be a whole number from 0"):
            load(env={}, flags={"metrics_port": bad})
    for host in ("", "a b", "user@host", "http://h/"):
        with pytest.raises(ConfigError, match="--metrics-host must be a host name"):
            load(env={}, flags={"metrics_host": host})


def _dry_run_code(tmp_path: Path, *flags: str) -> str:
    source = tmp_path / "in.ndjson"
    source.write_text('{"to": "+525512345678"}\n')
    extra = "".join(f", {flag}" for flag in flags)
    return (
        "import asyncio, sys\n"
        "from dispatcher import config, pipeline\n"
        f"c = config.load(flags={{'sender': '12345', 'text': 'Hi', 'dry_run': True,"
        f" 'results': {str(tmp_path / 'out.ndjson')!r}{extra}}}, env={{}})\n"
        f"summary = asyncio.run(pipeline.run({str(source)!r}, c))\n"
        "assert summary.fatal is None, summary.fatal\n"
        "print('prometheus_client' in sys.modules)\n"
    )


def test_without_a_metrics_port_prometheus_client_is_never_imported(tmp_path: Path) -> None:
    run = subprocess.run
    without = run([sys.executable, "-c", _dry_run_code(tmp_path)], capture_output=True, text=True)
    assert without.stdout.strip() == "False", without.stderr
    code = _dry_run_code(tmp_path, "'metrics_port': '0'")
    served = run([sys.executable, "-c", code], capture_output=True, text=True)
    assert served.stdout.strip() == "True", served.stderr  # the check can tell


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _SlowLocal(RateLimits):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(rates={"1": 10.0}, kind_rates={})
        self.clock = clock

    async def acquire(self, code: str, amount: float) -> None:
        self.clock.now += amount / 10  # waits as long as the rate demands


class _SlowShared:
    """Answers like the shared quota: acquire returns the slot's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def capacity(self, code: str) -> float:
        return 5.0

    async def acquire(self, code: str, amount: float) -> float:
        self.clock.now += 0.25
        return 42.0


async def test_quota_waits_are_counted_per_code_and_limiter() -> None:
    clock = FakeClock()
    recorder = Recorder(enabled=True, clock=clock)
    local = recorder.timed(_SlowLocal(clock))
    await local.acquire("1", 5)
    await local.acquire("1", 10)
    shared = recorder.timed(_SlowShared(clock))  # type: ignore[type-var]
    assert await shared.acquire("ACME", 1) == 42.0  # what the quota answers, passed on
    assert shared.capacity("ACME") == 5.0  # and everything else it answers
    assert local.rate("1") == 10.0
    assert recorder.snapshot().values["dispatcher_quota_wait_seconds_total"] == {
        ("1", "local"): pytest.approx(1.5),
        ("ACME", "shared"): pytest.approx(0.25),
    }


def test_a_disabled_recorder_wraps_nothing_and_reads_nothing() -> None:
    limits = RateLimits(rates={}, kind_rates={})
    recorder = Recorder(enabled=False)
    assert recorder.timed(limits) is limits
    assert Recorder(enabled=True, dry_run=True).timed(limits) is limits
    summary = Summary()
    summary.statuses["QUEUE"] += 1
    recorder.watch(_Reader(), summary, None)
    assert "dispatcher_recipients_total" not in recorder.snapshot().values


class _Reader:
    lines = 7
    bytes_read = 70
    total_bytes: int | None = None


def test_a_resumed_run_counts_only_its_own_results() -> None:
    summary = Summary()
    summary.absorb({"QUEUE": 5, "INVALID_NUMBER": 2}, {"GSM7": 5})  # the earlier run's
    recorder = Recorder(enabled=True)
    recorder.watch(_Reader(), summary, None)
    summary.statuses.update({"QUEUE": 3, "INVALID_NUMBER": 1, "REJECTED": 1})
    summary.by_code.update({("QUEUE", "12345"): 2, ("QUEUE", "ACME"): 1})
    summary.segments.update({"GSM7": 3})
    values = recorder.snapshot().values
    assert values["dispatcher_recipients_total"] == {
        ("QUEUE", "12345"): 2,
        ("QUEUE", "ACME"): 1,
        ("INVALID_NUMBER", ""): 1,
        ("REJECTED", ""): 1,
    }
    assert values["dispatcher_segments_total"] == {("GSM7",): 3}
    assert values["dispatcher_lines_read_total"] == {(): 7}
    assert "dispatcher_input_size_bytes" not in values  # stdin: no size


def _snapshot(lines: int, queued: int, in_flight: int, latency: list[int]) -> Snapshot:
    snapshot = Snapshot()
    snapshot.set("dispatcher_recipients_total", queued, ("QUEUE", "12345"))
    snapshot.set("dispatcher_lines_read_total", lines)
    snapshot.set("dispatcher_input_size_bytes", 1000)
    snapshot.set("dispatcher_requests_in_flight", in_flight)
    snapshot.latency = latency
    snapshot.latency_sum = sum(latency) / 10
    return snapshot


def test_worker_snapshots_add_up_to_the_job_and_travel_as_json() -> None:
    buckets = len(LATENCY_BUCKETS) + 1
    a = _snapshot(lines=100, queued=40, in_flight=3, latency=[1] * buckets)
    b = _snapshot(lines=80, queued=30, in_flight=2, latency=[2] * buckets)
    b.set("dispatcher_retries_total", 4, ("429",))
    wire = [Snapshot.from_dict(orjson.loads(orjson.dumps(s.as_dict()))) for s in (a, b)]
    assert wire == [a, b]
    job = merge(wire)
    assert job.get("dispatcher_recipients_total", ("QUEUE", "12345")) == 70
    assert job.get("dispatcher_requests_in_flight") == 5
    assert job.get("dispatcher_retries_total", ("429",)) == 4
    assert job.get("dispatcher_lines_read_total") == 80  # every worker reads the input
    assert job.get("dispatcher_input_size_bytes") == 1000
    assert job.latency == [3] * buckets
    assert job.latency_sum == pytest.approx(a.latency_sum + b.latency_sum)
    assert merge([]) == Snapshot()


def _durations() -> Iterator[float]:
    rng = random.Random(15)
    for _ in range(20_000):
        yield rng.expovariate(1 / 0.05)
    yield from LATENCY_BUCKETS  # exactly on the bounds
    yield 7200.0  # beyond the histogram's hour


def test_histogram_buckets_agree_with_exact_counts_within_the_precision() -> None:
    histogram = LatencyHistogram()
    durations = list(_durations())
    for seconds in durations:
        histogram.record(seconds)
    got = histogram.counts_up_to(LATENCY_BUCKETS)
    for bound, count in zip(LATENCY_BUCKETS, got, strict=True):
        at_most = sum(d <= bound for d in durations)
        # a duration within the histogram's 0.1 % (and the µs rounding) of the bound
        # may count as at most it; nothing further
        within = sum(d <= bound * 1.001 + 1e-6 for d in durations)
        assert at_most <= count <= within, bound
    assert got == sorted(got)
    assert histogram.total_seconds == pytest.approx(math.fsum(durations))
    assert LatencyHistogram().counts_up_to(LATENCY_BUCKETS) == [0] * len(LATENCY_BUCKETS)


def test_the_sample_dashboard_asks_only_for_metrics_the_endpoint_serves() -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / "grafana-dashboard.json"
    dashboard = orjson.loads(path.read_bytes())
    served = {metric.name for metric in METRICS}
    served |= {f"{LATENCY}_{part}" for part in ("bucket", "sum", "count")}
    asked = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            asked |= set(re.findall(r"dispatcher_\w+", target["expr"]))
    assert asked, "no expression found"
    assert asked <= served
    labels = {label for metric in METRICS for label in metric.labels} | {"le", "instance"}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for by in re.findall(r"by \(([^)]*)\)", target["expr"]):
                assert {name.strip() for name in by.split(",")} <= labels, target["expr"]


async def test_a_send_on_the_shared_quota_counts_its_waits_as_shared(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    caplog.set_level(logging.INFO, "dispatcher.metrics")
    server = started(tmp_path)
    try:
        source = HeldInput()
        config = send_config(
            tmp_path,
            emulator.base_url,
            metrics_port=0,
            quota_url=server.url,
            rates={"12345": 400.0},
        )
        run = asyncio.create_task(pipeline.run(source, config))
        url = await metrics_url(caplog, run)
        source.give(range(1, 41))
        while recipients(samples := (await scrape(http, url))[0]).total() < 40:
            await asyncio.sleep(0.02)
        source.end()
        summary = await run
    finally:
        server.stop()
    assert summary.statuses["QUEUE"] == 40
    waits = samples["dispatcher_quota_wait_seconds_total"]
    assert set(waits) == {(("code", "12345"), ("quota", "shared"))}


def test_the_timed_limits_answer_as_the_limits_they_wrap() -> None:
    local = Recorder(enabled=True).timed(RateLimits(rates={"1": 40.0}, kind_rates={}))
    assert local.capacity("1") == 2.0
    # the sender asks for slow_down only of the shared quota
    assert getattr(local, "slow_down", None) is None


async def test_a_push_descriptor_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    config = send_config(tmp_path, "http://127.0.0.1:9/raven")
    with pytest.raises(ConfigError, match="DISPATCHER_METRICS_FD must be a file descriptor"):
        async with serve_metrics(config, environ={PUSH_FD_ENV: "x"}):
            pass
    plain = os.open(tmp_path / "plain", os.O_WRONLY | os.O_CREAT)  # a file, not a pipe
    with pytest.raises(ConfigError, match=r"DISPATCHER_METRICS_FD=\d+: not a pipe"):
        async with serve_metrics(config, environ={PUSH_FD_ENV: str(plain)}):
            pass
