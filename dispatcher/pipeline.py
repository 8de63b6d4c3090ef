"""The map of the system: recipients in, one result per line out.

    Reader ─chunks─▶ Preparer ─entries─▶ Batcher ─batches─▶ Sender ─▶ GatewayClient
       │                 │                                    │
       └─ REJECTED       └─ INVALID_NUMBER, SEGMENTS_EXCEEDED └─ ids / FAILED / AMBIGUOUS
                                   all results ─▶ Outputs (+ Summary) ─▶ Journal "done"

The reader yields whole chunks; preparing and batching a chunk is plain code; only
handing a batch to the sender awaits, and it waits while the sender is saturated, so
reading pauses when sending cannot keep up. While reading, a linger task sends the
batches a slow producer left unfilled; all run long, a flusher pushes results to the
OS and only then marks their batches done in the journal.

Shutdown has two stages (`Shutdown`): the first request stops reading and gives
in-flight requests a grace period; the CLI turns a second one into an immediate exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO, Protocol

from dispatcher.batcher import Batch, Batcher
from dispatcher.config import Config
from dispatcher.errors import FatalError, InputError
from dispatcher.gateway import GatewayClient, open_session
from dispatcher.journal import Journal, ResumeState
from dispatcher.limiter import RateLimits
from dispatcher.logs import register_secret
from dispatcher.models import Status
from dispatcher.prepare import Preparer, batch_size, single_endpoint
from dispatcher.progress import Progress
from dispatcher.reader import Reader
from dispatcher.retry import RetryPolicy
from dispatcher.sender import Sender
from dispatcher.summary import ACCEPTED, Summary
from dispatcher.writers import NdjsonSink, Outputs, prune

log = logging.getLogger("dispatcher")

#: Seconds between pushes of the results to the OS (and done records to the journal).
FLUSH_INTERVAL = 0.1
IN_FLIGHT_AT_CRASH = (
    "in flight when an earlier run stopped: the gateway may have sent it, and it does not "
    "honour idempotency keys, so it was not sent again"
)


#: What can be read: a path, "-" for stdin, or an open binary file.
Source = str | os.PathLike[str] | BinaryIO


class Shutdown:
    """A two-stage stop request, fed by signal handlers or by a test."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._event = asyncio.Event()
        self._last_words: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def request(self, signum: int = signal.SIGINT) -> None:
        """Stop reading; let in-flight requests finish within the grace period."""
        if self.signal is None:
            self.signal = signum
        self._event.set()

    async def wait(self) -> None:
        """Return once a stop has been requested."""
        await self._event.wait()

    def on_force(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (quick, synchronous) before an immediate exit."""
        self._last_words.append(hook)

    def force(self) -> None:
        """The second request: write what can be written in an instant, then the caller
        exits at once. The journal already holds everything a resume needs."""
        for hook in self._last_words:
            with contextlib.suppress(Exception):
                hook()


class Stage(Protocol):
    """What the reading side hands batches to: the real sender or the dry run."""

    fatal: FatalError | None

    async def submit(self, batch: Batch) -> None: ...
    async def close(self) -> None: ...
    async def abandon(self, grace: float) -> bool: ...


async def run(source: Source, config: Config, *, shutdown: Shutdown | None = None) -> Summary:
    """Send every recipient of ``source`` (a path, "-" for stdin, or an open binary
    file); the summary tells the outcome.

    Configuration problems raise `ConfigError`, and outputs that cannot even be opened
    raise `OutputError`, before anything is sent. Everything after that ends in the
    summary: ``summary.fatal`` holds an abort (auth, output, input, unreachable
    gateway), ``summary.interrupted`` the signal that stopped the run.
    """
    shutdown = shutdown or Shutdown()
    if config.api_key is not None:
        register_secret(config.api_key.reveal())
    journal, resume = Journal.start(config, _describe(source))
    try:
        outputs = _open_outputs(config, resume)
    except FatalError:
        if resume is None:
            journal.discard()
        else:
            journal.close()
        raise
    summary = outputs.summary
    summary.price_per_segment = config.price_per_segment
    if resume is not None:
        summary.absorb(resume.statuses, resume.segments)
    shutdown.on_force(lambda: _save(outputs, journal))
    try:
        async with _stage(config, outputs, journal) as stage:
            await _run_stages(source, config, stage, outputs, journal, resume, shutdown)
    except FatalError as exc:
        summary.fatal = exc
    finally:
        try:
            _save(outputs, journal)
            outputs.close()
        except FatalError as exc:
            summary.fatal = summary.fatal or exc
        if summary.fatal is None and shutdown.signal is None:
            journal.complete()
        journal.close()
    if summary.fatal is not None:
        summary.finish(f"aborted: {summary.fatal}")
    elif shutdown.signal is not None:
        summary.interrupted = shutdown.signal
        summary.finish(f"interrupted by {signal.Signals(shutdown.signal).name}")
    else:
        summary.finish()
    return summary


def _describe(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _save(outputs: Outputs, journal: Journal) -> None:
    """Results to the OS first; only then may the journal call their batches done."""
    outputs.flush()
    journal.commit()


async def _run_stages(
    source: Source,
    config: Config,
    stage: Stage,
    outputs: Outputs,
    journal: Journal,
    resume: ResumeState | None,
    shutdown: Shutdown,
) -> None:
    """Feed the stage, then let it finish — or abandon it when a stop is requested or
    the run cannot go on."""
    reader = Reader(source, max_line_bytes=config.max_line_bytes)
    feeding = asyncio.create_task(_feed(reader, config, stage, outputs, journal, resume))
    stopping = asyncio.create_task(shutdown.wait())
    flushing = asyncio.create_task(_flush_every(FLUSH_INTERVAL, stage, outputs, journal))
    show = config.progress if config.progress is not None else sys.stderr.isatty()
    progress = asyncio.create_task(_progress(reader, outputs.summary)) if show else None
    error: BaseException | None = None
    try:
        await asyncio.wait({feeding, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not feeding.done():  # a stop was requested: read no more
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
            await _abandon(stage, config.grace_period)
        elif (error := feeding.exception()) is not None and not isinstance(error, InputError):
            await _abandon(stage, config.grace_period)  # e.g. results cannot be written
        else:  # the input ended (or broke: what came before it still goes out)
            closing = asyncio.create_task(stage.close())
            await asyncio.wait({closing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if closing.done():
                closing.result()
            else:
                closing.cancel()
                await _abandon(stage, config.grace_period)
    finally:
        stopping.cancel()
        feeding.cancel()
        flushing.cancel()
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
    if error is not None:
        raise error
    if stage.fatal is not None:
        raise stage.fatal


async def _abandon(stage: Stage, grace: float) -> None:
    if not await stage.abandon(grace):
        log.warning("in-flight requests abandoned after the %.0f s grace period", grace)


async def _feed(
    reader: Reader,
    config: Config,
    stage: Stage,
    outputs: Outputs,
    journal: Journal,
    resume: ResumeState | None,
) -> None:
    """Read, prepare, batch and submit until the input ends (or the run must stop)."""
    loop = asyncio.get_running_loop()
    limits = RateLimits(rates=config.rates, kind_rates=config.kind_rates, unit=config.rate_unit)
    preparer = Preparer(config, capacity=limits.capacity)
    batcher = Batcher(
        batch_size=batch_size(config),
        linger=config.linger_ms / 1000,
        max_buffered=config.max_buffered,
        count_segments=config.rate_unit == "segments",
        clock=loop.time,
    )
    resend = config.idempotency or config.retry_ambiguous
    if resume is not None:
        for lines in resume.in_flight.values():
            batcher.pin(lines, skip=resume.done)

    async def submit(batches: list[Batch]) -> None:
        for batch in batches:
            if batch.skip is not None and not resend:
                outputs.unsent(batch, Status.AMBIGUOUS, IN_FLIGHT_AT_CRASH, attempts=0)
                journal.done(journal.key(batch.lines))
            else:
                await stage.submit(batch)

    read_all = asyncio.Event()
    lingering = asyncio.create_task(_linger(batcher, submit, config.linger_ms, read_all))
    broken: InputError | None = None
    try:
        try:
            async for chunk in reader:
                if resume is not None:
                    chunk = batcher.unfinished(chunk, resume.done)
                preparer.feed(chunk, batcher, outputs)
                await submit(batcher.take())
                if stage.fatal is not None:
                    return
        except InputError as exc:
            broken = exc  # everything read before the break is still sent
        read_all.set()
        await lingering  # it may hold a batch it closed: let it hand that over first
        batcher.drain()
        await submit(batcher.take())
        if broken is not None:
            raise broken
    finally:
        lingering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lingering


async def _linger(
    batcher: Batcher,
    submit: Callable[[list[Batch]], Awaitable[None]],
    linger_ms: float,
    read_all: asyncio.Event,
) -> None:
    """While input is read, send the batches that waited ``linger`` without filling,
    so a slow producer never holds a partial batch back. Stops only between
    hand-overs: a batch it closed is always submitted."""
    interval = min(0.1, max(0.005, linger_ms / 2000))
    while not read_all.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read_all.wait(), interval)
        if read_all.is_set():
            return
        batcher.expire()
        await submit(batcher.take())


async def _flush_every(interval: float, stage: Stage, outputs: Outputs, journal: Journal) -> None:
    """Push results to the OS and mark their batches done, all run long."""
    while True:
        await asyncio.sleep(interval)
        try:
            _save(outputs, journal)
        except FatalError as exc:
            stage.fatal = stage.fatal or exc
            return


async def _progress(reader: Reader, summary: Summary) -> None:
    """Refresh the progress line four times a second until cancelled (run's end)."""
    progress = Progress(reader.total_bytes)
    try:
        while True:
            _show(progress, reader, summary)
            await asyncio.sleep(0.25)
    finally:
        _show(progress, reader, summary)
        progress.close()


def _show(progress: Progress, reader: Reader, summary: Summary) -> None:
    statuses = summary.statuses
    progress.update(
        bytes_read=reader.bytes_read,
        total_bytes=reader.total_bytes,
        lines=summary.lines,
        sent=sum(statuses[s] for s in ACCEPTED),
        failed=statuses[Status.FAILED] + statuses[Status.AMBIGUOUS],
        rate=(summary.lines - summary.resumed_lines) / summary.elapsed,
    )


def _open_outputs(config: Config, resume: ResumeState | None) -> Outputs:
    append = resume is not None
    results = NdjsonSink.open(config.results, append=append, fsync=config.fsync)
    invalid = rejects = None
    try:
        if config.invalid:
            if resume is not None:
                prune(config.invalid, keep=resume.done)
            invalid = NdjsonSink.open(config.invalid, append=append)
        if config.rejects:
            if resume is not None:
                prune(config.rejects, keep=resume.done)
            rejects = NdjsonSink.open(config.rejects, append=append)
    except FatalError:
        results.close()
        if invalid is not None:
            invalid.close()
        raise
    return Outputs(results, Summary(), invalid=invalid, rejects=rejects)


@contextlib.asynccontextmanager
async def _stage(config: Config, outputs: Outputs, journal: Journal) -> AsyncIterator[Stage]:
    """The sending stage: a real `Sender` over one shared session, or the dry run."""
    limits = RateLimits(rates=config.rates, kind_rates=config.kind_rates, unit=config.rate_unit)
    if config.dry_run:
        yield DryRun(outputs, limits)
        return
    loop = asyncio.get_running_loop()
    policy = RetryPolicy(
        max_attempts=config.max_attempts,
        max_wait=config.retry_max_wait,
        deadline=config.retry_deadline,
        retry_ambiguous=config.idempotency or config.retry_ambiguous,
    )
    async with open_session(
        concurrency=config.concurrency,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
    ) as session:
        gateway = GatewayClient(
            session,
            config.base_url,
            config.api_key,
            idempotency_header=config.idempotency_header or None,
        )
        sender = Sender(
            gateway=gateway,
            limits=limits,
            policy=policy,
            outputs=outputs,
            journal=journal,
            concurrency=config.concurrency,
            single=single_endpoint(config),
            clock=loop.time,
            batch_size=batch_size(config),
        )
        try:
            yield sender
        finally:
            for code in outputs.summary.codes:
                outputs.summary.codes[code].rate = _finite(limits.rate(code))


class DryRun:
    """Stands in for the sender: results say DRY_RUN, the summary says what it would cost."""

    def __init__(self, outputs: Outputs, limits: RateLimits) -> None:
        self.fatal: FatalError | None = None
        self._outputs = outputs
        self._limits = limits
        self._units: dict[str, float] = {}

    async def submit(self, batch: Batch) -> None:
        """Account for the batch as if it had been sent."""
        self._outputs.dry_run(batch)
        code = batch.group.sender
        self._units[code] = self._units.get(code, 0) + batch.units
        self._outputs.summary.requests += 1

    async def close(self) -> None:
        """Put the estimate in the summary: codes send in parallel, each at its rate."""
        seconds = {
            code: self._limits.seconds_for(code, units) for code, units in self._units.items()
        }
        self._outputs.summary.estimate = {
            "seconds": round(max(seconds.values(), default=0.0), 3),
            "per_code": {
                code: {
                    "units": units,
                    "rate": _finite(self._limits.rate(code)),
                    "seconds": round(seconds[code], 3),
                }
                for code, units in sorted(self._units.items())
            },
        }

    async def abandon(self, grace: float) -> bool:
        """Nothing is in flight in a dry run."""
        return True


def _finite(rate: float) -> float | None:
    return None if math.isinf(rate) else rate
