"""`SharedQuota`: the per-process client of the shared quota (design in the package
docstring). One per process; per code one booker task, so one booking at a time, which
carries the batches waiting first come first served (several small ones together, up
to one capacity); one background probe while Redis is down."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher import logs
from dispatcher.config import Secret
from dispatcher.limiter import BATCHES_PER_SECOND, RateLimits
from dispatcher.quota import PASSWORD_HINT, QuotaError, QuotaUnavailable
from dispatcher.quota.gcra import SLOW, TAKE, Bucket, Decision, fmt, slow, take

log = logging.getLogger("dispatcher.quota")

#: The slow-down: a cut halves the factor, at most once per HOLD, never below FLOOR;
#: the factor then grows back by RECOVERY per second.
HOLD = 1.0
FLOOR = 1 / 16
RECOVERY = 0.05
#: How long a bucket outlives its last booking: long enough for the factor to recover.
KEEP = 60.0 + (1 - FLOOR) / RECOVERY
#: The probe's backoff while Redis is down (seconds, doubling, with jitter).
PROBE_FIRST = 0.05
PROBE_MAX = 1.0
#: Warn again while Redis stays down, every this many seconds.
WARN_EVERY = 30.0
#: A rate set live (`SharedQuota.share_rate`, ``ctl JOB rate``) holds in Redis this long
#: after it was last set; every process looks for one this often (seconds).
RATE_KEEP = 86_400
RATE_POLL = 0.5
#: Errors that mean "Redis is not there right now" (as opposed to "Redis says no").
OUTAGE: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # refused, reset, auth refused after a restart, LOADING
    RedisTimeoutError,
    ReadOnlyError,  # a failover demoted our primary
    ClusterDownError,
    TryAgainError,
    OSError,
    TimeoutError,
)
#: Anything that can go wrong talking to Redis.
FAILURE: tuple[type[BaseException], ...] = (RedisError, *OUTAGE)


@dataclass(slots=True)
class QuotaStats:
    """What the quota did, for the summary, metrics and benchmarks."""

    #: commands sent to Redis (bookings, slow-downs, probes)
    calls: int = 0
    #: bookings Redis granted (one per batch, or per group of small batches)
    grants: int = 0
    #: bookings refused as too far ahead (each asked again when the line said)
    refusals: int = 0
    #: bookings the local fallback granted while Redis was down
    local_grants: int = 0
    outages: int = 0
    #: seconds spent in `SharedQuota.acquire`, summed over acquisitions
    waited: float = 0.0


class Script:
    """A Lua script called by SHA, sent whole only when Redis does not know it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, client: aioredis.Redis, stats: QuotaStats, keys: list[str], args: list[str]
    ) -> list[int]:
        return [int(x) for x in await self.raw(client, stats, keys, args)]

    async def raw(
        self, client: aioredis.Redis, stats: QuotaStats, keys: list[str], args: list[str]
    ) -> list[Any]:
        """The script's reply as Redis sent it (strings stay bytes)."""
        stats.calls += 1
        try:
            reply = await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted Redis, or SCRIPT FLUSH
            stats.calls += 1
            reply = await client.eval(self.source, len(keys), *keys, *args)
        return list(reply)


_TAKE = Script(TAKE)
_SLOW = Script(SLOW)


@dataclass(slots=True)
class _Code:
    """One code's keys and script arguments, its waiting batches and its booker."""

    keys: list[str]
    args: list[str]
    #: the most units one booking carries (the batches of one booking go together)
    capacity: float
    #: the fallback's buckets: the code's (when it has a rate), then the account's
    local: list[Bucket]
    local_code: Bucket | None
    #: batches waiting for a booking, first come first served: (units, their future)
    waiting: deque[tuple[float, asyncio.Future[float | None]]] = field(default_factory=deque)
    booker: asyncio.Task[None] | None = None


async def connect(url: str, *, password: Secret | None, io_timeout: float) -> aioredis.Redis:
    """A client for ``url`` (no retries of its own: outages are the quota's to handle),
    checked with PING and the scripts loaded; `QuotaUnavailable` otherwise."""
    if password is not None:
        logs.register_secret(password.reveal())
    client = aioredis.Redis.from_url(
        url,
        password=password.reveal() if password is not None else None,
        socket_timeout=io_timeout,
        socket_connect_timeout=io_timeout,
        retry=Retry(NoBackoff(), 0),
        client_name="sms-dispatcher",
    )
    where = _where(url)
    try:
        await client.ping()
        for script in (_TAKE, _SLOW):
            await client.script_load(script.source)
    except AuthenticationError as exc:
        await client.aclose()
        raise QuotaUnavailable(
            f"the shared quota's Redis at {where} refused the credentials ({exc}); {PASSWORD_HINT}"
        ) from None
    except ResponseError as exc:  # NOAUTH, NOPERM, scripting disabled
        await client.aclose()
        raise QuotaUnavailable(
            f"the shared quota's Redis at {where} refused us: {exc} "
            f"(a password is needed? {PASSWORD_HINT}); nothing was sent"
        ) from None
    except FAILURE as exc:
        await client.aclose()
        raise QuotaUnavailable(
            f"cannot reach the shared quota's Redis at {where}: {_describe(exc)}; "
            "nothing was sent (start Redis, check --quota-url, or run without it)"
        ) from None
    return client


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _where(url: str) -> str:
    # the URL never holds a password (check_url refused it), but keep only what locates
    return url.split("?", 1)[0]


class SharedQuota:
    """Per-code rate limits (and an account-wide one) shared through Redis.

    It answers like `RateLimits` (``rate``, ``capacity``, ``seconds_for``,
    ``acquire``), so a lane awaits ``acquire(code, units)`` before each request as it
    does today. Build it with `dispatcher.quota.open_quota`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        limits: RateLimits,
        *,
        namespace: str,
        account_rate: float = math.inf,
        max_ahead: float = 1.0,
        fallback: str = "pause",
        peers: int = 1,
    ) -> None:
        self.limits = limits
        self.namespace = namespace
        self.account_rate = account_rate
        self.max_ahead = max_ahead
        self.fallback = fallback
        self.peers = peers
        self.stats = QuotaStats()
        self._redis = client
        self._codes: dict[str, _Code | None] = {}
        #: how far ahead a first ask may book, and one that was refused before
        self._first_reach = fmt(max_ahead / 2 * 1e6)
        self._full_reach = fmt(max_ahead * 1e6)
        #: TAKE's arguments after the batch's units and reach: keep (ms), recovery
        self._take_args = [str(math.ceil(KEEP * 1000)), fmt(RECOVERY / 1e6)]
        self._account_local = (
            None
            if math.isinf(account_rate)
            else Bucket(interval=1e6 * peers / account_rate, burst=self._account_capacity())
        )
        self._up = asyncio.Event()
        self._up.set()
        self._down_at = 0.0
        self._grace_until = -math.inf
        self._probe: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._probe_key = f"dispatcher:{{{namespace}}}:probe"
        self._rates_watch: asyncio.Task[None] | None = None
        #: set by `aclose`: the background tasks end even if a cancellation is lost
        self._closing = False

    # --- what RateLimits answers -------------------------------------------------------

    def rate(self, code: str) -> float:
        """Units per second this code may send (``inf`` when unlimited)."""
        return min(self.limits.rate(code), self.account_rate)

    def capacity(self, code: str) -> float:
        """The most units one batch of this code may carry: the code's capacity, and the
        account's when that is smaller (larger batches would wait their excess first)."""
        return min(self.limits.capacity(code), self._account_capacity())

    def seconds_for(self, code: str, units: float) -> float:
        """How long sending ``units`` takes at this code's rate (for --dry-run)."""
        rate = self.rate(code)
        return 0.0 if math.isinf(rate) else units / rate

    def key(self, code: str) -> str:
        """The Redis key of a code's bucket."""
        return f"dispatcher:{{{self.namespace}}}:code:{code}"

    def rate_key(self, code: str) -> str:
        """The Redis key of a code's rate set live (`share_rate`), when there is one."""
        return f"dispatcher:{{{self.namespace}}}:rate:{code}"

    @property
    def account_key(self) -> str:
        """The Redis key of the account-wide bucket."""
        return f"dispatcher:{{{self.namespace}}}:account"

    # --- acquiring ---------------------------------------------------------------------

    async def acquire(self, code: str, amount: float) -> float | None:
        """Wait until ``code`` may send ``amount`` units; return the slot's time on the
        Redis clock (seconds), or None when no Redis booking was needed.

        Waits through Redis outages (or runs on the local fallback); raises `QuotaError`
        when Redis answers with an error that waiting cannot cure.
        """
        state = self._code(code)
        if state is None or amount <= 0:
            return None
        loop = asyncio.get_running_loop()
        began = loop.time()
        slot: asyncio.Future[float | None] = loop.create_future()
        state.waiting.append((amount, slot))
        if state.booker is None:
            state.booker = loop.create_task(self._booker(state), name=f"quota {code}")
        try:
            return await slot
        finally:
            self.stats.waited += loop.time() - began

    async def _booker(self, state: _Code) -> None:
        """Books the code's waiting batches, one booking at a time: the first in line and
        those behind it that fit in one capacity go together, at their slot."""
        loop = asyncio.get_running_loop()
        group: list[tuple[float, asyncio.Future[float | None]]] = []
        try:
            while group := self._next_group(state):
                wait, slot = await self._book(state, sum(units for units, _ in group), loop)
                if wait > 0:
                    await asyncio.sleep(wait)
                for _, future in group:
                    if not future.done():  # its caller may have given up
                        future.set_result(slot)
        except BaseException as exc:  # QuotaError, or the quota closing (cancelled)
            for _, future in (*group, *state.waiting):
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            state.waiting.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            state.booker = None

    @staticmethod
    def _next_group(state: _Code) -> list[tuple[float, asyncio.Future[float | None]]]:
        group: list[tuple[float, asyncio.Future[float | None]]] = []
        units = 0.0
        while state.waiting:
            amount, future = state.waiting[0]
            if future.done():  # cancelled while waiting
                state.waiting.popleft()
                continue
            if group and units + amount > state.capacity:
                break
            group.append(state.waiting.popleft())
            units += amount
        return group

    async def _book(
        self, state: _Code, amount: float, loop: asyncio.AbstractEventLoop
    ) -> tuple[float, float | None]:
        """(seconds to wait, slot on the Redis clock) for one booking of ``amount`` units."""
        while True:
            if self._up.is_set():
                try:
                    decision = await self._take(state, amount)
                except OUTAGE as exc:
                    self._went_down(exc, loop)
                    continue
                wait = decision.wait / 1e6
                if loop.time() < self._grace_until:  # peers may still be on their share
                    wait = max(wait, self._local(state, amount, loop))
                return wait, (decision.now + decision.wait) / 1e6
            if self.fallback == "local" and loop.time() >= self._down_at + self.max_ahead:
                self.stats.local_grants += 1
                return self._local(state, amount, loop), None
            timeout = None
            if self.fallback == "local":
                timeout = self._down_at + self.max_ahead - loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._up.wait()

    async def _take(self, state: _Code, amount: float) -> Decision:
        """Book ``amount`` units in Redis; while refused, ask again when the bucket's
        waiting line says, with the full reach (precedence over first asks)."""
        reach = self._first_reach
        while True:
            args = [fmt(amount), reach, *self._take_args, *state.args]
            try:
                granted, wait, now, factor = await _TAKE(self._redis, self.stats, state.keys, args)
            except OUTAGE:  # some are ResponseErrors too (READONLY, TRYAGAIN, CLUSTERDOWN)
                raise
            except ResponseError as exc:
                raise QuotaError(f"the shared quota's Redis refused a booking: {exc}") from exc
            if granted:
                self.stats.grants += 1
                return Decision(True, wait, now, factor / 1e6)
            self.stats.refusals += 1
            reach = self._full_reach
            await asyncio.sleep(wait / 1e6)

    def _local(self, state: _Code, amount: float, loop: asyncio.AbstractEventLoop) -> float:
        """Seconds until the local fallback's slot for ``amount`` units (booked now)."""
        now = loop.time() * 1e6
        return take(state.local, amount, now, ahead=math.inf, recover=RECOVERY / 1e6).wait / 1e6

    async def evaluate(self, script: Script, keys: list[str], args: list[str]) -> list[Any]:
        """Run ``script`` (another feature's, e.g. the job-wide caps) on the quota's Redis,
        waiting through outages as bookings do but never on the local fallback: what
        such a script counts cannot be counted by one process alone. Its reply as Redis
        sent it; `QuotaError` when Redis answers with an error waiting cannot cure.

        The script may run twice when an answer is lost (a timeout after Redis acted):
        callers pass absolute values, so that running it again changes nothing more.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._up.is_set():
                try:
                    return await script.raw(self._redis, self.stats, keys, args)
                except OUTAGE as exc:
                    self._went_down(exc, loop)
                    continue
                except ResponseError as exc:
                    raise QuotaError(f"the shared quota's Redis refused a script: {exc}") from exc
            await self._up.wait()

    # --- the shared slow-down ---------------------------------------------------------

    def slow_down(self, code: str, retry_after: float | None) -> None:
        """The gateway pushed back (429/503) on ``code``: tell every process, without
        waiting (the Redis call runs in a task the quota owns and awaits on close)."""
        task = asyncio.get_running_loop().create_task(self.push_back(code, retry_after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def push_back(self, code: str, retry_after: float | None) -> float | None:
        """`slow_down`, awaited: the code's rate factor afterwards (None for a code without
        a limit). While Redis is down it applies to the local fallback's bucket only."""
        state = self._code(code)
        if state is None:
            return None
        push = max(0.0, retry_after or 0.0) * 1e6
        if not self._up.is_set():
            if state.local_code is None:
                return None
            loop = asyncio.get_running_loop()
            _, f = slow(
                state.local_code, loop.time() * 1e6, push=push, hold=HOLD * 1e6, floor=FLOOR,
                recover=RECOVERY / 1e6,
            )  # fmt: skip
            return f
        args = [
            fmt(push),
            fmt(HOLD * 1e6),
            fmt(FLOOR),
            fmt(RECOVERY / 1e6),
            str(math.ceil(KEEP * 1000)),
        ]
        try:
            halved, factor, _ = await _SLOW(self._redis, self.stats, state.keys[:1], args)
        except OUTAGE as exc:
            self._went_down(exc, asyncio.get_running_loop())
            return None
        except ResponseError as exc:
            log.warning("shared quota: could not record a slow-down of %s: %s", code, exc)
            return None
        if halved:
            log.info(
                "shared quota: %s pushed back%s; its rate factor is now %.3g for every sender",
                code,
                f" (Retry-After {retry_after:g}s)" if retry_after else "",
                factor / 1e6,
            )
        return factor / 1e6

    # --- a rate changed live, for every process ------------------------------------------

    def share_rate(self, code: str, rate: float) -> None:
        """Change ``code``'s limit for every job sharing the quota: here at once, and in
        Redis (a task the quota owns) where the other processes pick it up within
        ``RATE_POLL``. Bookings already made stand; the next ones use the new rate (a
        bucket holds times, not rates, so there is no burst)."""
        self._apply_rate(code, rate)
        task = asyncio.get_running_loop().create_task(self._publish_rate(code, rate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_rate(self, code: str, rate: float) -> None:
        try:
            await self._redis.set(self.rate_key(code), fmt(rate), ex=RATE_KEEP)
        except FAILURE as exc:
            log.warning("shared quota: could not share the rate of %s: %s", code, _describe(exc))

    def _apply_rate(self, code: str, rate: float) -> None:
        if self.limits.rate(code) == rate:
            return
        self.limits.set_rate(code, rate)
        state = self._codes.pop(code, None)
        fresh = self._code(code)
        if state is None:
            return
        # Keep the waiting batches and their booker: only the arguments change.
        if fresh is None:  # no limit at all now: bookings carry only Retry-After
            state.keys, state.args = [self.key(code)], ["0", "0"]
            state.capacity, state.local, state.local_code = math.inf, [], None
        else:
            state.keys, state.args, state.capacity = fresh.keys, fresh.args, fresh.capacity
            state.local, state.local_code = fresh.local, fresh.local_code
        self._codes[code] = state

    async def _watch_rates(self) -> None:
        """Apply the rates other processes set live (`share_rate`) to the codes in use."""
        while not self._closing:
            await asyncio.sleep(RATE_POLL)
            codes = list(self._codes)
            if not codes or not self._up.is_set():
                continue
            try:
                values = await self._redis.mget([self.rate_key(code) for code in codes])
            except FAILURE:
                continue  # a booking notices an outage and handles it
            for code, value in zip(codes, values, strict=True):
                try:
                    rate = float(value) if value is not None else None
                except ValueError:
                    rate = None
                if rate is not None and rate > 0 and rate != self.limits.rate(code):
                    self._apply_rate(code, rate)
                    log.info("shared quota: code %s now sends at %g/s (set live)", code, rate)

    # --- outages -----------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether Redis is taking bookings now."""
        return self._up.is_set()

    def _went_down(self, exc: BaseException, loop: asyncio.AbstractEventLoop) -> None:
        if not self._up.is_set():
            return
        self._up.clear()
        self._down_at = loop.time()
        self.stats.outages += 1
        if self.fallback == "local":
            then = f"each code runs on 1/{self.peers} of its rate in {self.max_ahead:g}s"
        else:
            then = "sending pauses until it is back"
        log.warning("shared quota: Redis is unreachable (%s); %s", _describe(exc), then)
        self._probe = loop.create_task(self._wait_for_redis(loop), name="quota probe")

    async def _wait_for_redis(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = PROBE_FIRST
        warned = loop.time()
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            self.stats.calls += 1
            try:
                # a write, as bookings are: a demoted primary answers PING but not this
                await self._redis.set(self._probe_key, b"1", px=1000)
                break
            except FAILURE as exc:
                delay = min(2 * delay, PROBE_MAX)
                if loop.time() - warned >= WARN_EVERY:
                    warned = loop.time()
                    log.warning(
                        "shared quota: Redis still unreachable after %.0fs (%s)",
                        warned - self._down_at,
                        _describe(exc),
                    )
        if self._closing:
            return
        # Bookings made before the outage may still be pending (a Redis that lost them
        # would hand their slots out again): book nothing before they have all passed.
        await asyncio.sleep(max(0.0, self._down_at + self.max_ahead - loop.time()))
        if self.fallback == "local":
            self._grace_until = loop.time() + self.max_ahead + PROBE_MAX
        log.info("shared quota: Redis is back after %.1fs", loop.time() - self._down_at)
        self._up.set()

    # --- set-up and close ---------------------------------------------------------------

    def _code(self, code: str) -> _Code | None:
        try:
            return self._codes[code]
        except KeyError:
            pass
        if self._rates_watch is None:
            loop = asyncio.get_running_loop()
            self._rates_watch = loop.create_task(self._watch_rates(), name="quota rates")
        rate = self.limits.rate(code)
        state = None
        if not (math.isinf(rate) and math.isinf(self.account_rate)):
            keys = [self.key(code)]
            local: list[Bucket] = []
            own = None
            if math.isinf(rate):  # no limit of its own: its bucket only carries Retry-After
                args = ["0", "0"]
            else:
                burst = self.limits.capacity(code)
                args = [fmt(1e6 / rate), fmt(burst)]
                own = Bucket(interval=1e6 * self.peers / rate, burst=burst)
                local.append(own)
            if self._account_local is not None:
                keys.append(self.account_key)
                args += [fmt(1e6 / self.account_rate), fmt(self._account_capacity())]
                local.append(self._account_local)
            capacity = self.capacity(code)
            state = _Code(keys=keys, args=args, capacity=capacity, local=local, local_code=own)
        self._codes[code] = state
        return state

    def _account_capacity(self) -> float:
        if math.isinf(self.account_rate):
            return math.inf
        return float(max(1, math.floor(self.account_rate / BATCHES_PER_SECOND)))

    async def aclose(self) -> None:
        """Finish pending slow-downs, stop the probe and the bookers, close the connections."""
        for state in self._codes.values():
            if state is not None and state.booker is not None:
                state.booker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.booker
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        self._closing = True
        # A cancellation delivered while the Redis client awaits an answer can come back
        # as a connection error, which the loops absorb: they also stop on _closing, and
        # the wait for them is bounded, so closing never hangs.
        tasks = {t for t in (self._probe, self._rates_watch) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        await self._redis.aclose()

    async def __aenter__(self) -> SharedQuota:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
