"""Batches → requests: per-code lanes, rate limits, bounded concurrency, retries, results.

Each sender code has a *lane*: a small queue and a task that takes its batches in
order, waits for the code's shared slow-down (`Throttle`) and rate limit, then for a
global in-flight slot — acquired *before* the request task is created, so tasks
never outnumber the concurrency limit — and starts the request. A slow code never
holds up a fast one, and a full lane queue pauses the reader: backpressure end to end.

A request's fate is decided in `_send`: journaled before it leaves, retried by the one
policy, and turned into exactly one result per line — ids, or FAILED when the gateway
certainly did not act, or AMBIGUOUS when it may have. What stops the whole run (the API
key refused, a gateway that cannot be reached, a bug) starts no further request and is
raised by `Sender.watch` at once, and by `Sender.close`.

The run's `Controls` (`dispatcher.control`) reach every lane: a paused job starts no
request (those in flight finish); a halted one (cancelled, or expired) sends nothing
more — a batch not sent yet gets the halt's status, a batch waiting to retry too when
the gateway cannot have acted on it, else AMBIGUOUS — and no retry waits past the job's
expiry. A batch an earlier run left in flight (``rebuilt``) may have been sent then: it
is never called EXPIRED_UNSENT, but AMBIGUOUS.

`DryRun` stands in for the sender under ``--dry-run``: same face, no network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from dispatcher import api
from dispatcher.errors import (
    AuthError,
    BatchTooLarge,
    ConnectError,
    FatalError,
    GatewayUnreachable,
    RateLimited,
    RequestRejected,
    RetryableError,
    Unavailable,
)
from dispatcher.gateway import GatewayClient
from dispatcher.journal import Journal
from dispatcher.limiter import RateLimits, Throttle
from dispatcher.models import Batch, Status
from dispatcher.retry import Interrupted, RetryPolicy
from dispatcher.summary import Summary
from dispatcher.writers import Outputs

if TYPE_CHECKING:
    from dispatcher.control import Controls
    from dispatcher.quota.shared import SharedQuota

log = logging.getLogger("dispatcher.sender")

#: Batches a lane may hold waiting: enough that small batches do not hand over one
#: at a time (at batch 1, a queue of 2 measured 6.5 k messages/s, 32+ gave 7.8 k),
#: few enough that big ones do not pile up memory.
LANE_MESSAGES = 2048
NOT_RETRIED = (
    "not retried because the gateway is not known to honour idempotency keys "
    "(set idempotency = true for a gateway that does, or --retry-ambiguous to accept "
    "the risk of a duplicate)"
)
EXPIRED_IN_FLIGHT = (
    "in flight when an earlier run stopped, and the job expired before it could be sent "
    "again: the gateway may have sent it"
)


class Results(Protocol):
    """Where the results of batches go (`dispatcher.writers.Outputs`, or on a resumed
    run `dispatcher.resume.Unwritten` in front of it)."""

    @property
    def summary(self) -> Summary: ...

    def accepted(
        self,
        batch: Batch,
        ids: list[str | None],
        *,
        status: str,
        attempts: int,
        transaction_id: str | None,
        started: float,
    ) -> None: ...

    def unsent(
        self, batch: Batch, status: str, error: str, *, attempts: int, invalid: bool = False
    ) -> None: ...


@dataclass(slots=True)
class _Attempts:
    """What the attempts at one batch have shown so far."""

    count: int = 0
    #: an attempt failed in a way after which the gateway may have acted
    ambiguous: bool = False


class Sender:
    """Sends batches under the rate limits and the concurrency limit, writes results."""

    def __init__(
        self,
        *,
        gateway: GatewayClient,
        limits: RateLimits | SharedQuota,
        policy: RetryPolicy,
        outputs: Results,
        journal: Journal,
        concurrency: int,
        single: bool,
        clock: Callable[[], float],
        batch_size: int = 1000,
        controls: Controls | None = None,
        rebuilt: Collection[str] = (),
    ) -> None:
        self._gateway = gateway
        self._limits = limits
        self._policy = policy
        self._outputs = outputs
        self._journal = journal
        self._concurrency = concurrency
        self._single = single
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._lane_queue = max(2, min(64, LANE_MESSAGES // batch_size))
        self._lanes: dict[str, tuple[asyncio.Queue[Batch | None], asyncio.Task[None]]] = {}
        self._throttles: dict[str, Throttle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: the first fatal error (auth, unreachable gateway, a bug): no batch starts after it
        self._fatal: FatalError | None = None
        self._failed = asyncio.Event()
        self._stopping = False
        if controls is None:
            from dispatcher.control import Controls

            controls = Controls(limits=limits, summary=outputs.summary)
        self._halt = controls.halt
        self._pause = controls.pause
        self._expires = controls.expires
        #: keys of batches an earlier run left in flight (`dispatcher.resume`)
        self._rebuilt = rebuilt

    @property
    def in_flight(self) -> int:
        """Batches holding an in-flight slot: a request, or a retry waiting its turn."""
        return len(self._tasks)

    async def submit(self, batch: Batch) -> None:
        """Queue a batch on its code's lane; waits while the lane is full."""
        code = batch.group.sender
        lane = self._lanes.get(code)
        if lane is None:
            queue: asyncio.Queue[Batch | None] = asyncio.Queue(self._lane_queue)
            throttle = self._throttles[code] = Throttle(
                self._concurrency, code=code, max_pause=self._policy.max_wait, halt=self._halt
            )
            task = asyncio.create_task(self._lane(code, queue, throttle), name=f"lane {code}")
            lane = self._lanes[code] = (queue, task)
        await lane[0].put(batch)

    async def close(self) -> None:
        """Wait until every submitted batch has its results; raise the fatal error that
        stopped sending, if one did."""
        for queue, task in self._lanes.values():
            if not task.done():
                await queue.put(None)
        await asyncio.gather(*(task for _, task in self._lanes.values()))
        while self._tasks:
            # wait, not gather: a stop while closing must not cancel requests in flight
            # (abandon gives them the grace period)
            await asyncio.wait(set(self._tasks))
        if self._fatal is not None:
            raise self._fatal

    async def watch(self) -> None:
        """Raise the first fatal error of any request (the API key refused, the gateway
        unreachable, a bug) as soon as it happens; never returns otherwise."""
        await self._failed.wait()
        assert self._fatal is not None
        raise self._fatal

    async def abandon(self, grace: float) -> bool:
        """Stop: drop queued batches, give in-flight requests ``grace`` seconds, then
        cancel them (the journal keeps them resumable). True if all finished in time."""
        self._stopping = True
        for _, task in self._lanes.values():
            task.cancel()
        await asyncio.gather(*(task for _, task in self._lanes.values()), return_exceptions=True)
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return not pending

    async def _lane(
        self, code: str, queue: asyncio.Queue[Batch | None], throttle: Throttle
    ) -> None:
        while True:
            batch = await queue.get()
            if batch is None:
                return
            for piece in self._pieces(code, batch):
                await self._start(code, piece, throttle)

    def _pieces(self, code: str, batch: Batch) -> list[Batch]:
        """The batch, or its halves when it outgrew a rate lowered live (`set_rate`)."""
        if batch.units <= self._limits.capacity(code) or len(batch) == 1:
            return [batch]
        if batch.key in self._rebuilt:  # sent before under its key: sent as it was
            return [batch]
        return [piece for half in batch.split() for piece in self._pieces(code, half)]

    async def _start(self, code: str, batch: Batch, throttle: Throttle) -> None:
        """Wait for the code's turn, its rate and the pause gate; start the request."""
        if self._stopping or self._fatal is not None:
            return  # never journaled, so a resumed run sends these lines afresh
        if self._halt.halted:
            self._halted(batch)
            return
        await throttle.enter()
        try:
            await self._limits.acquire(code, batch.units)
        except FatalError as exc:  # the shared quota's Redis answers an error
            throttle.leave(ok=False)
            self._abort(exc)
            return
        if self._pause.paused:
            await self._pause.wait()
        if self._halt.status is not None or self._stopping:  # halted while waiting
            throttle.leave(ok=False)
            if self._halt.status is not None:
                self._halted(batch)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._send(batch, throttle))
        self._tasks.add(task)
        task.add_done_callback(partial(self._finished, throttle))

    def _halted(self, batch: Batch) -> None:
        """A batch the halted job will not send: the halt's status (never journaled)."""
        status, reason = self._halt.status, self._halt.reason
        assert status is not None
        if batch.key in self._rebuilt and status is Status.EXPIRED_UNSENT:
            status, reason = Status.AMBIGUOUS, EXPIRED_IN_FLIGHT
        # CANCELLED stays resumable: a rebuilt batch goes again under its key later
        self._outputs.unsent(batch, status, reason, attempts=0)

    def _finished(self, throttle: Throttle, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        throttle.leave(ok=not task.cancelled() and task.exception() is None)
        # _send turns every expected failure into results; anything else is a bug or an
        # output error, and must stop the run rather than vanish.
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._abort(exc if isinstance(exc, FatalError) else _Unexpected(exc))

    async def _send(self, batch: Batch, throttle: Throttle) -> None:
        if self._halt.status is not None:  # halted while it waited for a slot
            self._halted(batch)
            return
        key = batch.key
        self._journal.sent(key, batch.lines)
        body = api.body(batch, single=self._single)
        attempts = _Attempts()
        started = self._clock()
        try:
            answer, ids = await self._policy.call(
                partial(self._attempt, batch, body, key, attempts),
                on_retry=partial(self._on_retry, throttle),
                halt=self._halt,
                expires=self._expires,
            )
        except BatchTooLarge:
            self._journal.unsent(key)
            await self._split(batch, throttle)
            return
        except AuthError as exc:
            self._journal.unsent(key)
            self._abort(exc)
            return
        except ConnectError as exc:
            # never reached the gateway, attempt after attempt: it is down or the
            # URL is wrong; stop now rather than mark every line FAILED
            self._journal.unsent(key)
            self._abort(GatewayUnreachable(f"{exc} (after {attempts.count} attempts)"))
            return
        except Interrupted as exc:
            if self._interrupted(batch, exc, attempts):
                return
        except RequestRejected as exc:
            self._rejected(batch, exc, attempts)
        except RetryableError as exc:
            self._gave_up(batch, exc, attempts)
        else:
            self._outputs.accepted(
                batch,
                ids,
                status=answer.status,
                attempts=attempts.count,
                transaction_id=answer.transaction_id,
                started=started,
            )
        self._journal.done(key)

    def _abort(self, exc: FatalError) -> None:
        if self._fatal is None:
            self._fatal = exc
            self._failed.set()
            log.error("stopping: %s", exc)

    async def _attempt(
        self, batch: Batch, body: bytes, key: str, attempts: _Attempts, number: int
    ) -> tuple[api.Answer, list[str | None]]:
        attempts.count = number
        started = self._clock()
        try:
            if self._single:
                answer = await self._gateway.send_single(body, key=key)
            else:
                answer = await self._gateway.send_batch(body, key=key, sent=batch.sent)
            return answer, api.match_ids(batch.numbers, answer)
        except RetryableError as exc:
            attempts.ambiguous |= not exc.safe
            raise
        finally:
            self._outputs.summary.request(self._clock() - started)

    def _on_retry(self, throttle: Throttle, exc: RetryableError, failed: int) -> None:
        self._outputs.summary.retry(exc.cause)
        if isinstance(exc, RateLimited | Unavailable):
            throttle.slow_down(exc.retry_after, cause=exc.cause)
            slow_down = getattr(self._limits, "slow_down", None)
            if slow_down is not None:  # the shared quota: every process slows down too
                slow_down(throttle.code, self._policy.clamp(exc.retry_after))
        log.debug("retrying after attempt %d: %s", failed, exc)

    async def _split(self, batch: Batch, throttle: Throttle) -> None:
        if len(batch) == 1:
            self._journal.sent(batch.key, batch.lines)
            self._outputs.unsent(
                batch,
                Status.FAILED,
                "the gateway refuses even one message as too large (413)",
                attempts=1,
            )
            self._journal.done(batch.key)
            return
        self._outputs.summary.retry("413-split")
        for half in batch.split():
            await self._send(half, throttle)

    def _interrupted(self, batch: Batch, exc: Interrupted, attempts: _Attempts) -> bool:
        """A retry the halt or the expiry stopped. The halt's status when the gateway
        cannot have acted (the batch recorded unsent, so a resume sends a CANCELLED line
        afresh; True: no done record); else AMBIGUOUS."""
        count = attempts.count
        if attempts.ambiguous or batch.key in self._rebuilt:
            error = f"{exc.reason}; an earlier attempt may have been accepted: {exc.error}"
            self._outputs.unsent(batch, Status.AMBIGUOUS, error, attempts=count)
            return False
        error = f"{exc.reason} (after {count} attempt{'s' * (count > 1)}: {exc.error})"
        self._outputs.unsent(batch, exc.status, error, attempts=count)
        self._journal.unsent(batch.key)
        return True

    def _rejected(self, batch: Batch, exc: RequestRejected, attempts: _Attempts) -> None:
        if attempts.ambiguous:
            error = f"{exc}; an earlier attempt may have been accepted"
            self._outputs.unsent(batch, Status.AMBIGUOUS, error, attempts=attempts.count)
            return
        status = Status.FAILED
        if exc.gateway_status is not None and exc.gateway_status in Status.__members__:
            status = Status(exc.gateway_status)
        if self._single and exc.invalid:
            status = Status.INVALID_NUMBER
        self._outputs.unsent(
            batch,
            status,
            str(exc),
            attempts=attempts.count,
            invalid=status == Status.INVALID_NUMBER,
        )

    def _gave_up(self, batch: Batch, exc: RetryableError, attempts: _Attempts) -> None:
        if not attempts.ambiguous:
            error = f"{exc} (after {attempts.count} attempt{'s' * (attempts.count > 1)})"
            self._outputs.unsent(batch, Status.FAILED, error, attempts=attempts.count)
        elif exc.safe or self._policy.retry_ambiguous:
            error = (
                f"{exc}; an earlier attempt may have been accepted "
                f"(after {attempts.count} attempts)"
            )
            self._outputs.unsent(batch, Status.AMBIGUOUS, error, attempts=attempts.count)
        else:
            error = f"the gateway may have sent this message: {exc}; {NOT_RETRIED}"
            self._outputs.unsent(batch, Status.AMBIGUOUS, error, attempts=attempts.count)


class DryRun:
    """Stands in for the sender: results say DRY_RUN, the summary says what it would cost."""

    def __init__(
        self,
        outputs: Outputs,
        limits: RateLimits,
        *,
        until_expiry: float | None = None,
        unit: str = "messages",
    ) -> None:
        self._outputs = outputs
        self._unit = unit
        self._limits = limits
        self._units: dict[str, float] = {}
        #: seconds from the (scheduled) start to the expiry: the time the send would have
        self._until_expiry = until_expiry

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
                    "rate": self._limits.reported_rate(code),
                    "seconds": round(seconds[code], 3),
                }
                for code, units in sorted(self._units.items())
            },
        }
        if self._until_expiry is not None:
            self._outputs.summary.estimate.update(self._expiry(seconds))

    def _expiry(self, seconds: dict[str, float]) -> dict[str, Any]:
        """Whether the send would end before the job expires, and if not, about how many
        units of each code (messages, or segments) would be EXPIRED_UNSENT: what a code
        sends at its rate in the time there is, and not the rest."""
        available = max(0.0, self._until_expiry or 0.0)
        short = {
            code: round(self._units[code] * (1 - available / needed))
            for code, needed in seconds.items()
            if needed > available
        }
        if short:
            log.warning(
                "at the rates given the send needs %.0f s but the job expires %.0f s after "
                "it starts: about %s unsent at the expiry (raise the rates or the expiry)",
                max(seconds.values()),
                available,
                ", ".join(f"{n:,} {self._unit} of code {code}" for code, n in short.items()),
            )
        return {
            "until_expiry": round(available, 3),
            "expires_first": bool(short),
            "unsent_at_expiry": short,
        }

    async def abandon(self, grace: float) -> bool:
        """Nothing is in flight in a dry run."""
        return True

    async def watch(self) -> None:
        """Nothing fails in a dry run: wait until cancelled."""
        await asyncio.Event().wait()


class _Unexpected(FatalError):
    """A bug surfaced while sending: stop the run, keep everything resumable."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"unexpected error while sending: {exc!r}")
        self.__cause__ = exc
