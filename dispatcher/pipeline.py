"""The map of the system: recipients in, one result per line out.

    Reader ─chunks─▶ Share ─▶ Resume ─▶ Preparer ─▶ policies ─▶ Batcher ─▶ Sender ─▶ GatewayClient
       │        (--shard,      │           │          │                      │
       │        --workers)     │           │          │                      └─ ids / FAILED /
       └─ REJECTED             │           │          │                         AMBIGUOUS
                               │           │          └─ DUPLICATE, CANCELLED/EXPIRED_UNSENT
                               │           │             (Halt), OUTSIDE_WINDOW or held until
                               │           │             the window opens, NOT_SENT (caps)
                               │           └─ INVALID_NUMBER, SUPPRESSED, SEGMENTS_EXCEEDED
                               └─ (--resume only) finished lines dropped, in-flight batches rebuilt
                                   all results ─▶ Outputs (+ Summary) ─▶ Journal "done"

    beside: Controls (ctl socket, SIGUSR1: pause, rate, cancel; --start-at, expiry),
            the shared quota (Redis) or the local limits, the metrics endpoint

The reader yields whole chunks; preparing and batching a chunk is plain code; only
handing a batch to the sender awaits, and it waits while the sender is saturated, so
reading pauses when sending cannot keep up. While reading, a linger task sends the
batches a slow producer left unfilled; all run long, a flusher pushes results to the
OS and only then marks their batches done in the journal.

Task lifetimes: the feeder runs inside one `asyncio.TaskGroup` with the watchers —
the shutdown request, the sender's fatal errors, the flusher and the progress line.
Whatever fails first (a stop request, the API key refused, an unreachable gateway, an
unwritable output, a bug) cancels the rest and comes out of the group as an exception;
the stage is then abandoned: in-flight requests get the grace period, everything is
written, and the journal keeps the rest resumable. An input that breaks is not such a
failure: what was read before the break is still sent.

Shutdown has two stages (`Shutdown`): the first request stops reading and gives
in-flight requests a grace period; the CLI turns a second one into an immediate exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from dispatcher import api
from dispatcher.batcher import Batcher
from dispatcher.config import Config, callback_secrets
from dispatcher.control import Controls, job_controls
from dispatcher.errors import FatalError, InputError
from dispatcher.gateway import GatewayClient
from dispatcher.halt import Halt
from dispatcher.job import Source, places
from dispatcher.journal import Journal
from dispatcher.limiter import RateLimits
from dispatcher.lock import JobLock
from dispatcher.logs import register_secret
from dispatcher.metrics import Recorder, serve_metrics
from dispatcher.models import Batch, Status
from dispatcher.paths import Place, check_distinct, check_writable
from dispatcher.policy import Caps, opt_out_lists, policies_for
from dispatcher.prepare import Preparer
from dispatcher.pricing import Pricing
from dispatcher.progress import Progress
from dispatcher.quota import close_quietly, open_configured
from dispatcher.quota.caps import capped
from dispatcher.reader import Reader
from dispatcher.resume import Resume, ResumeState, compact, job_results, open_job
from dispatcher.retry import RetryPolicy
from dispatcher.schedule import Schedule
from dispatcher.sender import DryRun, Sender
from dispatcher.shares import Share
from dispatcher.summary import ACCEPTED, Summary
from dispatcher.timing import WallClock, wall_clock
from dispatcher.writers import NdjsonSink, Outputs

if TYPE_CHECKING:
    from dispatcher.quota.shared import SharedQuota

if TYPE_CHECKING:
    from dispatcher.preview import Explainer
    from dispatcher.windows import Held, Windows

log = logging.getLogger("dispatcher")

#: Seconds between pushes of the results to the OS (and done records to the journal).
FLUSH_INTERVAL = 0.1


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

    async def submit(self, batch: Batch) -> None: ...
    async def close(self) -> None: ...
    async def abandon(self, grace: float) -> bool: ...
    async def watch(self) -> None: ...


class _Stopped(Exception):
    """A stop was requested (raised inside the task group, never out of `run`)."""


@dataclass(slots=True, frozen=True)
class _Job:
    """One run's parts, once the job is open: what the stages share."""

    source: Source
    config: Config
    shutdown: Shutdown
    outputs: Outputs
    journal: Journal
    #: what an earlier run of the job left (``--resume``), else None
    resume: Resume | None
    #: the rate limits the lanes and the batches' capacity follow: local, or shared
    sending: RateLimits | SharedQuota
    metrics: Recorder
    #: set by a cancel or the expiry: nothing more is sent
    halt: Halt
    windows: Windows | None


async def run(
    source: Source,
    config: Config,
    *,
    shutdown: Shutdown | None = None,
    inputs: Iterable[Place] = (),
) -> Summary:
    """Send every recipient of ``source`` (a path, "-" for stdin, or an open binary
    file); the summary tells the outcome.

    ``inputs`` are the other files the run was configured from (`places`). Outputs that
    clash with an input or with each other, and configuration problems, raise
    `ConfigError`; an output that cannot be written raises `OutputError`; both before
    anything is opened for writing or sent. So does a job another process is running
    (`dispatcher.lock.JobBusy`): the job is locked for the whole run. Everything after
    that ends in the summary: ``summary.fatal`` holds an abort (auth, output, input,
    unreachable gateway), ``summary.interrupted`` the signal that stopped the run.
    """
    shutdown = shutdown or Shutdown()
    if config.api_key is not None:
        register_secret(config.api_key.reveal())
    if config.redis_password is not None:
        register_secret(config.redis_password.reveal())
    for secret in callback_secrets(config.callbacks):  # a receiver's, in --callbacks URLs
        register_secret(secret)
    inputs = list(inputs)
    # A resume refused for a changed text names the option the text came from.
    text_option = "--text-file" if any(p.option == "--text-file" for p in inputs) else "--text"
    read, written = places(source, config, inputs)
    check_distinct(read, written)
    check_writable(written)
    results = job_results(config)
    with contextlib.nullcontext() if results is None else JobLock.acquire(results):
        limits = RateLimits(rates=config.rates, kind_rates=config.kind_rates)
        # Before the journal and the outputs: a Redis that cannot be reached stops the
        # run (QuotaUnavailable, exit 3) with nothing sent and no job to resume.
        quota = await open_configured(config, limits)
        try:
            async with serve_metrics(config) as metrics:  # a port that cannot serve: exit 2
                return await _run(source, config, shutdown, limits, quota, metrics, text_option)
        finally:
            if quota is not None:
                await close_quietly(quota)


async def _run(
    source: Source,
    config: Config,
    shutdown: Shutdown,
    limits: RateLimits,
    quota: SharedQuota | None,
    metrics: Recorder,
    text_option: str = "--text",
) -> Summary:
    """`run` once the places are checked and the job is locked; the lanes and the
    batches' capacity follow the shared ``quota`` when there is one, else ``limits``."""
    clock = wall_clock(config.now)
    schedule = Schedule.resolve(config, clock)
    journal, state = open_job(config, _describe(source), schedule, text_option=text_option)
    schedule = state.schedule if state is not None and state.schedule else schedule  # the job's
    outputs = _open_outputs(config, journal, state)
    summary = outputs.summary
    summary.price_per_segment = config.price_per_segment
    if config.prices:
        summary.table = Pricing.from_config(config.price_per_segment, config.prices)
    resume = None
    if state is not None:
        resend = config.idempotency or config.retry_ambiguous
        count_segments = config.rate_unit == "segments"
        resume = Resume(state, outputs, journal, resend=resend, count_segments=count_segments)
    shutdown.on_force(lambda: _save(outputs, journal))
    sending = limits if quota is None else quota
    finished = False
    halt = Halt()  # cancel and expiry set it (`dispatcher.control`)
    windows = _windows(config, clock, halt, resume)
    try:
        async with (
            job_controls(
                config, journal, sending, summary, schedule, clock, halt, windows
            ) as controls,
            _stage(config, metrics.timed(sending), outputs, journal, resume, controls) as stage,
        ):
            if await controls.started(shutdown.wait):  # --start-at
                job = _Job(
                    source, config, shutdown, outputs, journal, resume, sending, metrics,
                    halt, windows,
                )  # fmt: skip
                await _run_stages(job, stage)
        finished = shutdown.signal is None
    except FatalError as exc:
        summary.fatal = exc
    finally:
        if windows is not None:
            windows.close()
        _close(outputs, journal, finished=finished, compact_results=_superseded(resume))
    _finish(summary, limits, shutdown)
    return summary


def _finish(summary: Summary, limits: RateLimits, shutdown: Shutdown) -> None:
    for code, stats in summary.codes.items():
        stats.rate = limits.reported_rate(code)
    if summary.fatal is not None:
        summary.finish(f"aborted: {summary.fatal}")
    elif shutdown.signal is not None:
        summary.interrupted = shutdown.signal
        summary.finish(f"interrupted by {signal.Signals(shutdown.signal).name}")
    else:
        summary.finish()


def _describe(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _save(outputs: Outputs, journal: Journal) -> None:
    """Results to the OS first; only then may the journal call their batches done."""
    outputs.flush()
    journal.commit()


def _superseded(resume: Resume | None) -> bool:
    return resume is not None and resume.state.superseded > 0


def _close(
    outputs: Outputs, journal: Journal, *, finished: bool, compact_results: bool = False
) -> None:
    """Write everything; after a resumed run that gave lines newer outcomes, compact
    the results to one line per input line; mark the journal complete when the job is."""
    try:
        _save(outputs, journal)
        outputs.close()
        if finished and compact_results:
            outputs.summary.superseded = compact(outputs.results.name, journal)
            log.info(
                "results compacted: %d superseded outcomes dropped", outputs.summary.superseded
            )
    except FatalError as exc:
        outputs.summary.fatal = outputs.summary.fatal or exc
        finished = False
    if finished:
        journal.complete()
    journal.close()


async def _run_stages(job: _Job, stage: Stage) -> None:
    """Feed the stage and let it finish, the watchers beside; on a stop request or a
    fatal error, abandon it (in-flight requests get the grace period)."""
    config, outputs, journal, windows = job.config, job.outputs, job.journal, job.windows
    reader = Reader(job.source, max_line_bytes=config.max_line_bytes)
    job.metrics.watch(reader, outputs.summary, stage)
    preparer = Preparer(
        config,
        capacity=job.sending.capacity,
        optout=opt_out_lists(config.suppress),
        policies=policies_for(
            config, job.resume, job.halt, windows, quota=_shared(job.sending), source=job.source
        ),
    )
    rebuilt = job.resume.state.in_flight if job.resume is not None else ()
    stage = capped(preparer.policies, stage, outputs, rebuilt)  # job-wide caps (Redis)
    batcher = Batcher(
        batch_size=config.request_size,
        linger=config.linger_ms / 1000,
        max_buffered=config.max_buffered,
        count_segments=config.rate_unit == "segments",
        clock=asyncio.get_running_loop().time,
        job=journal.job,
        # packed as they close, for the batch endpoint's own sender (not a dry run, and
        # not past the job-wide caps, which look at the entries)
        seal=api.pack if type(stage) is Sender and not config.single else None,
    )
    show = config.progress if config.progress is not None else sys.stderr.isatty()
    # --explain's preview waits for the end when the progress line would scribble over it
    explained: TextIO = io.StringIO() if show else sys.stderr
    broken: InputError | None = None
    stopped = False
    error: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            watchers = [
                tasks.create_task(_raise_on_stop(job.shutdown)),
                tasks.create_task(stage.watch()),
                tasks.create_task(_flush_every(FLUSH_INTERVAL, outputs, journal)),
            ]
            if show:
                held = windows.held if windows is not None else None
                watchers.append(tasks.create_task(_progress(reader, outputs.summary, held)))
            explainer = _explainer(config, explained)
            broken = await _feed(job, reader, preparer, batcher, stage, explainer)
            await stage.close()
            for task in watchers:
                task.cancel()
    except* _Stopped:
        stopped = True
    except* Exception as group:
        error = _first(group)
    _account_policies(preparer, outputs.summary)
    if isinstance(explained, io.StringIO):
        sys.stderr.write(explained.getvalue())
    if stopped or error is not None:
        await _abandon(stage, config.grace_period)
    if error is not None:
        raise error
    if broken is not None:
        raise broken


def _shared(sending: RateLimits | SharedQuota) -> SharedQuota | None:
    return None if isinstance(sending, RateLimits) else sending


def _first(error: BaseException) -> BaseException:
    """The first error of a (possibly nested) exception group."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _abandon(stage: Stage, grace: float) -> None:
    if not await stage.abandon(grace):
        log.warning("in-flight requests abandoned after the %.0f s grace period", grace)


async def _raise_on_stop(shutdown: Shutdown) -> None:
    await shutdown.wait()
    raise _Stopped


async def _feed(
    job: _Job,
    reader: Reader,
    preparer: Preparer,
    batcher: Batcher,
    stage: Stage,
    explainer: Explainer | None = None,
) -> InputError | None:
    """Read, prepare, batch and submit until the input ends — and, with send windows,
    until no line waits for its window. An input that breaks ends it too, and is
    returned: everything read before the break is still sent."""
    config, outputs, resume, windows = job.config, job.outputs, job.resume, job.windows
    share = Share.parse(config.shard) if config.shard else None  # --shard, --workers
    broken: InputError | None = None
    read_all = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_linger(batcher, stage, config.linger_ms, read_all))
        if windows is not None:  # releases the lines that wait, as their windows open
            tasks.create_task(windows.release(preparer, batcher, stage.submit, outputs, read_all))
        try:
            async for chunk in reader:
                if share is not None:
                    chunk = share.keep(chunk)
                if explainer is not None and not explainer.done:
                    explainer.feed(chunk)
                if resume is not None:
                    chunk = await resume.divert(chunk, preparer, stage.submit)
                preparer.feed(chunk, batcher, outputs)
                await _submit(stage, batcher.take())
        except InputError as exc:
            broken = exc
        else:
            if resume is not None:
                resume.finish(reader.lines)
        read_all.set()  # the linger task hands over any batch it closed, then ends
    batcher.drain()
    await _submit(stage, batcher.take())
    if explainer is not None:
        explainer.finish()
    return broken


def _windows(config: Config, clock: WallClock, halt: Halt, resume: Resume | None) -> Windows | None:
    """The send windows of the job (``--window``), or None."""
    if config.window is None:
        return None
    from dispatcher.windows import windows_for

    return windows_for(config, clock, halt, resume)


def _account_policies(preparer: Preparer, summary: Summary) -> None:
    for policy in preparer.policies:
        if isinstance(policy, Caps) and policy.reached is not None:
            summary.cap_reached = policy.reached
        elif report := getattr(policy, "report", None):  # `Windows`
            summary.windows = report()


def _explainer(config: Config, out: TextIO) -> Explainer | None:
    """``--dry-run --explain``: the preview of the first lines, written to ``out``."""
    if not (config.dry_run and config.explain):
        return None
    from dispatcher.cli.preview import previewer_for
    from dispatcher.preview import Explainer

    width = shutil.get_terminal_size((120, 24)).columns
    return Explainer(previewer_for(config), out, width=width)


async def _submit(stage: Stage, batches: list[Batch]) -> None:
    for batch in batches:
        await stage.submit(batch)


async def _linger(
    batcher: Batcher, stage: Stage, linger_ms: float, read_all: asyncio.Event
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
        await _submit(stage, batcher.take())


async def _flush_every(interval: float, outputs: Outputs, journal: Journal) -> None:
    """Push results to the OS and mark their batches done, all run long; an output that
    cannot be written raises (and stops the run)."""
    while True:
        await asyncio.sleep(interval)
        _save(outputs, journal)


async def _progress(reader: Reader, summary: Summary, held: Held | None = None) -> None:
    """Refresh the progress line four times a second until cancelled (run's end)."""
    progress = Progress(reader.total_bytes)
    try:
        while True:
            _show(progress, reader, summary, held)
            await asyncio.sleep(0.25)
    finally:
        _show(progress, reader, summary, held)
        progress.close()


def _show(progress: Progress, reader: Reader, summary: Summary, held: Held | None) -> None:
    statuses = summary.statuses
    progress.update(
        bytes_read=reader.bytes_read,
        total_bytes=reader.total_bytes,
        lines=summary.lines,
        sent=sum(statuses[s] for s in ACCEPTED),
        failed=statuses[Status.FAILED] + statuses[Status.AMBIGUOUS],
        rate=(summary.lines - summary.resumed_lines) / summary.elapsed,
        waiting=held.waiting if held is not None else 0,
        next_opening=held.next_opening if held is not None else None,
    )


def _open_outputs(config: Config, journal: Journal, state: ResumeState | None) -> Outputs:
    """The result sinks, appending to a resumed job's; when they cannot be opened, a
    journal this run created goes (it would only block the next run)."""
    append = state is not None
    sinks: dict[str, NdjsonSink] = {}
    try:
        sinks["results"] = NdjsonSink.open(config.results, append=append, fsync=config.fsync)
        for name, path in (("invalid", config.invalid), ("rejects", config.rejects)):
            if path:
                if state is not None:
                    state.keep_finished(path)
                sinks[name] = NdjsonSink.open(path, append=append)
    except FatalError:
        for sink in sinks.values():
            sink.close()
        if state is None:
            journal.discard()
        else:
            journal.close()
        raise
    invalid, rejects = sinks.get("invalid"), sinks.get("rejects")
    return Outputs(sinks["results"], Summary(), invalid=invalid, rejects=rejects)


def _until_expiry(controls: Controls | None) -> float | None:
    """Seconds the job would have to send, from its (scheduled) start to its expiry."""
    timeline = controls.timeline if controls is not None else None
    if timeline is None or timeline.expires is None:
        return None
    return timeline.expires - max(timeline.start or 0.0, asyncio.get_running_loop().time())


@contextlib.asynccontextmanager
async def _stage(
    config: Config,
    limits: RateLimits | SharedQuota,
    outputs: Outputs,
    journal: Journal,
    resume: Resume | None,
    controls: Controls | None = None,
) -> AsyncIterator[Stage]:
    """The sending stage: a real `Sender` over one gateway client, or the dry run."""
    if config.dry_run:
        assert isinstance(limits, RateLimits)  # a dry run opens no shared quota
        yield DryRun(outputs, limits, until_expiry=_until_expiry(controls), unit=config.rate_unit)
        return
    policy = RetryPolicy(
        max_attempts=config.max_attempts,
        max_wait=config.retry_max_wait,
        deadline=config.retry_deadline,
        retry_ambiguous=config.idempotency or config.retry_ambiguous,
    )
    async with GatewayClient(
        config.base_url,
        config.api_key,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        idempotency_header=config.idempotency_header or None,
    ) as gateway:  # one connection per request in flight: ≤ concurrency (the slots)
        yield Sender(
            gateway=gateway,
            limits=limits,
            policy=policy,
            outputs=outputs if resume is None else resume.results,
            journal=journal,
            concurrency=config.concurrency,
            single=config.single,
            # Latency needs a clock that moves during a loop iteration: uvloop's
            # loop.time() is libuv's cached millisecond, so a 0.4 ms request read 0.
            clock=time.perf_counter,
            batch_size=config.request_size,
            controls=controls,
            rebuilt=() if resume is None else set(resume.state.in_flight),
        )
