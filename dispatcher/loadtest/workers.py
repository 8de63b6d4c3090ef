"""``loadtest --workers N``: N processes drive one schedule and make one report.

The parent starts the embedded emulator once (or takes ``--base-url``), then N workers
(``python -m dispatcher.loadtest.workers``). Worker ``i`` (0-based) drives requests
``i, i + N, i + 2N…`` of the test's schedule — rate / N, offset by i / rate — so that
together they drive exactly the schedule one process would (`run.Share`), with the
in-flight cap split between them (the remainder to the first). Each worker sets up
(workload, connections, the shared quota), says ``ready`` on its stdout, and starts
when the parent writes ``go T``: request 0 is due at ``T`` on the machine's monotonic
clock (``perf_counter``), which every process reads alike.

A worker ends by writing its report, whose ``part`` holds its numbers in a form that
adds up exactly: outcome counts, the encoded HDR histograms of latency and start lag,
and each second's counts and histogram (`stats.export`). The parent adds them
(`stats.merged`) and builds one report from them, thresholds evaluated on the merged
numbers: the histogram a single process would have recorded, not an average of
percentiles.

Signals, spawning and metrics are `send --workers`'s (`dispatcher.workers`): the
workers run in their own session and the parent passes SIGINT/SIGTERM on once; with
``--metrics-port`` each worker pushes its numbers down a pipe and the parent serves
one endpoint for the test.

The settings travel on the worker's stdin as JSON; the API key and the Redis password
in its environment (``DISPATCHER_API_KEY``, ``DISPATCHER_REDIS_PASSWORD``), never on a
command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from dispatcher._version import __version__
from dispatcher.config import API_KEY_ENV, REDIS_PASSWORD_ENV, find_api_key, find_redis_password
from dispatcher.errors import ConfigError, FatalError
from dispatcher.loadtest.report import build_loadtest_report
from dispatcher.loadtest.run import LEAD, Share, announce, run_loadtest, target
from dispatcher.loadtest.settings import LoadTest
from dispatcher.loadtest.stats import merged

if TYPE_CHECKING:
    from dispatcher.cli._common import Signals
    from dispatcher.metrics import WorkerMetrics

MODULE = "dispatcher.loadtest.workers"
#: What a worker's report may weigh (its seconds' histograms: a few hundred bytes each).
_REPORT_LIMIT = 1 << 28
#: Settings the parent keeps: the target, the verdict, the metrics endpoint, the faults
#: of the emulator it runs, the secrets (in the environment instead).
_PARENTS = frozenset(
    {"base_url", "api_key", "redis_password", "faults", "thresholds", "metrics_port"}
    | {"metrics_host", "workers"}
)


class WorkerFailed(FatalError):
    """A worker ended without its report: the test has no complete numbers."""


async def run_workers(
    test: LoadTest,
    *,
    signals: Signals,
    live: TextIO | None = sys.stderr,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run ``test`` in ``test.workers`` processes and return the one report.

    Raises `ConfigError` for a metrics port that cannot be served or a worker that
    refuses its settings, `QuotaUnavailable` when the shared quota's Redis cannot be
    reached (before any worker starts), `WorkerFailed` when a worker ends without its
    report.
    """
    began = clock()
    if test.quota_url is not None:
        await _check_quota(test)
    async with _metrics(test) as gathered, target(test) as (base_url, api_key):
        if live is not None:
            announce(test, base_url, test.batch_size == 1, live)
        reports = await _drive(test, base_url, api_key, signals, gathered, clock)
    parts = [report["part"] for report in reports]
    quotas = [report["quota"] for report in reports if report["quota"]]
    quota = None
    if quotas:
        quota = {
            **quotas[0],
            "late_starts": sum(q["late_starts"] for q in quotas),
            "wait_s": round(sum(q["wait_s"] for q in quotas), 3),
        }
    aborted = [report["aborted"] for report in reports if report["aborted"]]
    return build_loadtest_report(
        test,
        merged(parts),
        target_url=base_url,
        window=max(report["duration_s"] for report in reports),
        elapsed=clock() - began,
        late_starts=sum(report["late_starts"] for report in reports),
        aborted=aborted[0] if aborted else None,
        interrupted=signals.stop.is_set() or any(r["interrupted"] for r in reports),
        version=__version__,
        quota=quota,
        workers=test.workers,
    )


async def _check_quota(test: LoadTest) -> None:
    """`QuotaUnavailable` now, before any worker starts, when Redis cannot be reached."""
    from dispatcher.limiter import RateLimits
    from dispatcher.quota import open_quota

    assert test.quota_url is not None
    quota = await open_quota(
        test.quota_url,
        limits=RateLimits(rates={}, kind_rates={}),
        namespace=test.quota_namespace or "check",
        password=test.redis_password,
    )
    await quota.aclose()


@contextlib.asynccontextmanager
async def _metrics(test: LoadTest) -> AsyncIterator[WorkerMetrics | None]:
    """With ``--metrics-port``: one endpoint serving every worker's numbers, merged."""
    if test.metrics_port is None:
        yield None
        return
    from dispatcher.metrics import WorkerMetrics, serving

    gathered = WorkerMetrics()
    async with serving(test.metrics_host, test.metrics_port, gathered.snapshot) as url:
        print(f"loadtest: metrics on {url} (every worker's)", file=sys.stderr, flush=True)
        yield gathered
        await gathered.wait()


async def _drive(
    test: LoadTest,
    base_url: str,
    api_key: Any,
    signals: Signals,
    gathered: WorkerMetrics | None,
    clock: Callable[[], float],
) -> list[dict[str, Any]]:
    """Start the workers, start them together, and collect their reports."""
    from dispatcher.workers import kill_all, pass_signals, spawn

    env = dict(os.environ)
    env.pop(API_KEY_ENV, None)
    env.pop(REDIS_PASSWORD_ENV, None)
    if api_key is not None:
        env[API_KEY_ENV] = api_key.reveal()
    if test.redis_password is not None:
        env[REDIS_PASSWORD_ENV] = test.redis_password.reveal()
    n = test.workers
    procs: list[asyncio.subprocess.Process] = []
    try:
        for index in range(n):
            proc = await spawn(
                ["-m", MODULE],
                env=env,
                metrics=gathered,
                k=index + 1,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=_REPORT_LIMIT,
            )
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(orjson.dumps(_spec(test, base_url, index)) + b"\n")
        for index, proc in enumerate(procs):
            assert proc.stdout is not None
            if await proc.stdout.readline() != b"ready\n":
                await _failed(procs, index, "before it started")
        # Ready: their signal handling is in place. A signal that came before stops them
        # as soon as they start.
        pass_signals(signals, procs)
        if signals.received is not None:
            for proc in procs:
                proc.send_signal(signals.received)
        first = clock() + LEAD
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {first!r}\n".encode())
            await proc.stdin.drain()
            proc.stdin.close()
        outputs = await asyncio.gather(*(_output(proc) for proc in procs))
        reports = []
        for index, output in enumerate(outputs):
            try:
                report = orjson.loads(output)
                report["part"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                await _failed(procs, index, "without its report")
            reports.append(report)
        return reports
    finally:
        kill_all(procs)
        await asyncio.gather(*(proc.wait() for proc in procs))


async def _output(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None
    output = await proc.stdout.read()
    await proc.wait()
    return output


async def _failed(procs: list[asyncio.subprocess.Process], index: int, when: str) -> None:
    """Worker ``index`` ended ``when``: stop the others and say so."""
    proc = procs[index]
    code = await proc.wait()
    how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    message = f"loadtest worker {index + 1} of {len(procs)} ended {when} ({how})"
    if code == 2:
        raise ConfigError(message)
    raise WorkerFailed(message + ": the test has no complete numbers")


def _spec(test: LoadTest, base_url: str, index: int) -> dict[str, Any]:
    """Worker ``index``'s settings: the test's own, its share of the in-flight cap."""
    n = test.workers
    spec = {
        field.name: getattr(test, field.name)
        for field in dataclasses.fields(test)
        if field.name not in _PARENTS
    }
    spec["concurrency"] = test.concurrency // n + (index < test.concurrency % n)
    if test.quota_url is not None and test.quota_namespace is None:
        from dispatcher.quota import namespace_for

        spec["quota_namespace"] = namespace_for(base_url)  # every worker's, and ours
    return {"settings": spec, "base_url": base_url, "index": index, "count": n}


# --- in the worker ----------------------------------------------------------------------


def main() -> int:
    """A worker: its settings from stdin, its report on stdout; 2 for settings it
    refuses, 3 when it cannot run (the shared quota's Redis unreachable)."""
    from dispatcher import logs
    from dispatcher.cli._common import ExitCode, Signals
    from dispatcher.cli.loadtest import tune_gc
    from dispatcher.metrics import PUSH_FD_ENV

    logs.configure("warning")
    try:
        spec = orjson.loads(sys.stdin.buffer.readline())
        test = LoadTest(
            **spec["settings"],
            base_url=spec["base_url"],
            api_key=find_api_key(None),
            redis_password=find_redis_password(None, os.environ),
        )
        fd = os.environ.get(PUSH_FD_ENV)
        share = Share(spec["index"], spec["count"], _ready, metrics_fd=int(fd) if fd else None)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        print(f"dispatcher loadtest worker: bad settings: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if test.api_key is not None:
        logs.register_secret(test.api_key.reveal())
    tune_gc()
    signals = Signals()
    try:
        report = signals.run(run_loadtest(test, stop=signals.stop, live=None, share=share))
    except ConfigError as exc:
        print(f"dispatcher loadtest worker: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except FatalError as exc:
        print(f"dispatcher loadtest worker: {exc}", file=sys.stderr)
        return ExitCode.ABORTED
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()
    return ExitCode.OK


async def _ready() -> float:
    """Say so to the parent, and wait for when request 0 is due."""
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.buffer.readline)
    words = line.split()
    if len(words) != 2 or words[0] != b"go":
        raise WorkerFailed("the parent of this loadtest worker went away")
    return float(words[1])


if __name__ == "__main__":
    sys.exit(main())
