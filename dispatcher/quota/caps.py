"""Job-wide caps counted in Redis: ``--max-messages``, ``--max-segments``, ``--max-cost``
with ``--quota-url``, for a job that runs as several processes (``--shard K/N`` on
several hosts, ``--workers N``, or both).

Without a quota URL the caps are `dispatcher.policy.Caps`, counted in the process (and
split by the ``--workers`` parent). With one, every process of the job counts in one
Redis hash, so that together they never exceed a cap, however many there are and
wherever they run.

What is counted
---------------
What may have been sent: a line counts once it is *reserved*, just before its batch is
handed to the sender, whether or not the gateway then takes it. A line reserved and
then not sent — its batch dropped by a stop, refused by the gateway, a crash before
the request — stays counted: the safe direction (a cap may end a little short, never
over). Each process reserves per batch — every batch waiting, in one call: one
atomic script (`CAPS`) answers whether the whole request fits the job's totals and
adds it if it does. When it does not, the process computes from the totals it got
back how many of the lines fit, in order (`Caps._commit`, the local rule), and reserves
exactly those; the first line that does not fit *reaches* the cap: it and every later
line of that process are ``NOT_SENT`` with the cap's reason, as with the local caps.
A Redis round trip per batch (and a second one only at the edge) is nothing beside
the request the batch then makes.

Whose count: each process's share
----------------------------------
The hash holds the job's totals and each process's own part, by its share of the input
(``--shard``, the workers' shares within it: ``1/1`` for a job of one process). Every
call carries the process's *absolute* part, not an increment, and the script sets the
part to it (adjusting the totals by the difference) before it adds the request. So:

* a call whose answer was lost (a timeout after Redis acted) can be made again: it
  changes nothing more;
* a run starts its part afresh: a new job at zero, a ``--resume`` at what its results
  say earlier runs may have sent (`dispatcher.resume.ResumeState.committed`: accepted
  and AMBIGUOUS lines, exactly what the local caps count on a resume), plus the lines
  left in flight at a crash — counted at their most (max message segments at the
  highest price) until the resume has read them again, then exactly. A resume with a
  higher cap thus continues from the job's count and counts nothing twice: what an
  earlier run reserved but never sent is released by the resume, and only then;
* the first call of a run claims the share (a random token); a later call that finds
  another token answers that another process took the share (the same shard started
  twice): that run stops (exit 3) rather than count wrong. One that finds no part at
  all — Redis lost the hash: restarted without persistence — stops too: the other
  processes' parts are gone with it, and the job can no longer know what was sent.
  Run the caps' Redis with persistence (AOF) for jobs that must survive its restart.

The job's name
--------------
The hash is ``dispatcher:{NAMESPACE}:caps:NAME`` (the namespace of the quota, so a job
against an emulator never counts against production). ``--caps-key NAME`` names the job
(the same on every host); by default NAME is a digest of the job's sender code, its
text, and the input's identity — its size and its first and last MiB, the same on
every host that holds a copy of the file (stdin has none: the code and text alone).
A key lasts `KEEP` (30 days) after its last use. A later, separate send of the same
file with the same text shares the name: each process's part is set afresh when it
starts, so only the parts of processes that have not started yet still count. Give
each campaign its own ``--caps-key`` when that matters.

When Redis is down
------------------
The caps wait, as the quota's bookings do, and never fall back on a local count
(``--quota-fallback local`` is about rates only): a job-wide count cannot be kept by
one process. New batches wait for Redis; batches already reserved go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import secrets
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dispatcher.models import Batch, Entry, Group, Status
from dispatcher.policy import Caps, Sink, refuse
from dispatcher.pricing import Pricing
from dispatcher.quota import QuotaError

if TYPE_CHECKING:
    from dispatcher.quota.shared import SharedQuota

log = logging.getLogger("dispatcher.quota")

#: How long a job's counts outlive its last reservation (seconds).
KEEP = 30 * 86_400
#: Most batches one reservation carries.
MAX_BATCHES = 256
#: Batches that may wait for a reservation (the reading side waits beyond).
QUEUE = 64
#: Bytes of the input's head and of its tail in its identity.
IDENTITY_BYTES = 1 << 20

#: Reserve against a job's caps: KEYS = {the job's hash}; ARGV = share, token, claim
#: (1: the run's first call), the share's absolute part (messages, segments, cost), the
#: request (the same three), the caps ('' for none), keep (ms). Returns {status,
#: messages, segments, cost}: status 1 reserved, 0 does not fit (nothing added; the
#: totals say why), -1 the hash is gone, -2 another process holds the share; the totals
#: (after the part was set, and the request added when it fit) as strings.
CAPS = """
local key = KEYS[1]
local share, token = ARGV[1], ARGV[2]
local owner = redis.call('HGET', key, 'o:' .. share)
if ARGV[3] ~= '1' then
  if not owner then return {-1, '0', '0', '0'} end
  if owner ~= token then return {-2, '0', '0', '0'} end
end
local h = redis.call('HMGET', key, 'm', 's', 'c', 'm:' .. share, 's:' .. share, 'c:' .. share)
local own = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local req = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local total = {}
local fits = 1
for i = 1, 3 do
  total[i] = (tonumber(h[i]) or 0) - (tonumber(h[i + 3]) or 0) + own[i]
  local cap = ARGV[9 + i]
  if cap ~= '' and total[i] + req[i] > tonumber(cap) then fits = 0 end
end
if fits == 1 then
  for i = 1, 3 do
    total[i] = total[i] + req[i]
    own[i] = own[i] + req[i]
  end
end
local f = '%.17g'
redis.call('HSET', key, 'm', string.format(f, total[1]), 's', string.format(f, total[2]),
  'c', string.format(f, total[3]), 'm:' .. share, string.format(f, own[1]),
  's:' .. share, string.format(f, own[2]), 'c:' .. share, string.format(f, own[3]),
  'o:' .. share, token)
redis.call('PEXPIRE', key, tonumber(ARGV[13]))
return {fits, string.format(f, total[1]), string.format(f, total[2]),
  string.format(f, total[3])}
"""

Counts = tuple[int, int, float]


class Stage(Protocol):
    """What `CappedStage` stands in front of (`dispatcher.pipeline.Stage`)."""

    async def submit(self, batch: Batch) -> None: ...
    async def close(self) -> None: ...
    async def abandon(self, grace: float) -> bool: ...
    async def watch(self) -> None: ...


def job_name(sender: str | None, text: str | None, source: object) -> str:
    """The default name of a job's caps: 16 hex digits of its sender code, its text and
    its input's identity (`input_identity`)."""
    digest = hashlib.sha256()
    for part in (sender or "", text or ""):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(input_identity(source))
    return digest.hexdigest()[:16]


def input_identity(source: object) -> bytes:
    """A file's size and digests of its first and last `IDENTITY_BYTES` (the same for
    every copy of it, and cheap however large it is); nothing for stdin or a stream."""
    if not isinstance(source, str | os.PathLike) or os.fspath(source) == "-":
        return b""
    try:
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(IDENTITY_BYTES)
            f.seek(max(0, size - IDENTITY_BYTES))
            tail = f.read(IDENTITY_BYTES)
    except OSError:  # the reader says what is wrong with it, with its own exit code
        return b""
    return b"%d:%s:%s" % (size, _sha(head), _sha(tail))


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def _fmt(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class SharedCaps(Caps):
    """The job's caps, counted in Redis by every process of the job (module docstring).

    It is the caps policy of the process (`check`: once this process reached a cap,
    every later line is NOT_SENT at once) and the reserver behind `CappedStage`, which
    reserves every batch before the sender gets it (`reserve`).
    """

    def __init__(
        self,
        quota: SharedQuota,
        *,
        name: str,
        share: str,
        max_messages: int | None = None,
        max_segments: int | None = None,
        max_cost: float | None = None,
        pricing: Pricing | None = None,
        committed: Counts = (0, 0, 0.0),
        pinned: Collection[int] = (),
        max_message_segments: int = 10,
    ) -> None:
        super().__init__(
            max_messages=max_messages,
            max_segments=max_segments,
            max_cost=max_cost,
            pricing=pricing,
        )
        self.quota = quota
        self.name = name
        self.share = share
        self.key = f"dispatcher:{{{quota.namespace}}}:caps:{name}"
        self._token = secrets.token_hex(8)
        self._claimed = False
        #: lines a crash left in flight: counted at their most until read again
        self._pinned = set(pinned)
        prices = [pricing.default, *pricing.prices.values()] if pricing is not None else [0.0]
        self._bound: Counts = (1, max_message_segments, max(prices) * max_message_segments)
        n = len(self._pinned)
        #: this process's part of the job's counts (absolute: see the module docstring)
        self.own: Counts = (
            committed[0] + n * self._bound[0],
            committed[1] + n * self._bound[1],
            committed[2] + n * self._bound[2],
        )
        self._caps = [
            "" if max_messages is None else str(max_messages),
            "" if max_segments is None else str(max_segments),
            "" if max_cost is None else repr(self.max_cost),
        ]
        from dispatcher.quota.shared import Script

        self._script = Script(CAPS)

    # --- the policy ----------------------------------------------------------------------

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None:
        """Pass the run on to be reserved with its batch; once this process reached a
        cap, the run is NOT_SENT. Lines a crash left in flight (a resume rebuilding
        their batches) always pass: they may have been sent; their count becomes exact."""
        if self._pinned and entries[0].line in self._pinned:
            self._recount(entries)
            return None
        if self.reached is None:
            return None
        for entry in entries:
            refuse(sink, entry, Status.NOT_SENT, self.error())
        return []

    def _recount(self, entries: list[Entry]) -> None:
        messages, segments, cost = self.own
        bound = self._bound
        for entry in entries:
            if entry.line in self._pinned:
                self._pinned.discard(entry.line)
                messages += 1 - bound[0]
                segments += entry.segments - bound[1]
                cost += self._price(entry) - bound[2]
        self.own = (messages, segments, cost)

    def _price(self, entry: Entry) -> float:
        return self.pricing.cost(entry.to, entry.segments) if self.pricing is not None else 0.0

    def error(self) -> str:
        """The reason a line beyond the reached cap gets (as the local caps give it)."""
        assert self.reached is not None
        cap, line = self.reached
        return (
            f"{cap} {self._limits[cap]:g} reached at line {line} (counted job-wide in "
            "Redis): not sent; --resume with a higher cap sends it"
        )

    # --- reserving ---------------------------------------------------------------------

    async def reserve(self, batches: list[Batch], sink: Sink) -> list[Batch]:
        """Reserve ``batches`` (in order) against the job's caps: the batches to send, cut
        where a cap is reached; every line beyond is written ``NOT_SENT`` to ``sink``."""
        entries = [entry for batch in batches for entry in batch.entries]
        if self.reached is None:
            request = self._sums(entries)
            fits, totals = await self._call(request)
            if fits:
                self._add(request)
                return batches
            while True:  # the request does not fit whole: reserve what does
                self.messages, self.segments, self.cost = totals
                self.reached = None
                fit = self._commit(entries)
                request = self._sums(entries[:fit])
                fits, totals = await self._call(request)
                if fits:  # else the totals moved meanwhile: count again from them
                    self._add(request)
                    break
        else:
            fit = 0
        return self._cut(batches, fit, sink)

    def _sums(self, entries: list[Entry]) -> Counts:
        segments = sum(entry.segments for entry in entries)
        if self.pricing is None:
            return len(entries), segments, 0.0
        cost = self.pricing.cost
        return len(entries), segments, math.fsum(cost(e.to, e.segments) for e in entries)

    def _add(self, request: Counts) -> None:
        own = self.own
        self.own = (own[0] + request[0], own[1] + request[1], own[2] + request[2])

    def _cut(self, batches: list[Batch], fit: int, sink: Sink) -> list[Batch]:
        """The first ``fit`` entries of ``batches``, in batches; the rest NOT_SENT."""
        kept: list[Batch] = []
        for batch in batches:
            if fit >= len(batch.entries):
                kept.append(batch)
                fit -= len(batch.entries)
                continue
            error = self.error()
            for entry in batch.entries[fit:]:
                refuse(sink, entry, Status.NOT_SENT, error)
            if fit:
                part = Batch(batch.group, batch.created, count_segments=batch.count_segments)
                part.entries = batch.entries[:fit]
                part.units = sum(e.segments for e in part.entries) if part.count_segments else fit
                part.close(batch.job)
                kept.append(part)
            fit = 0
        return kept

    async def settle(self) -> None:
        """Bring this process's part in Redis up to date (the in-flight lines a resume
        read again, counted exactly) without reserving anything."""
        if self._claimed:
            await self._call((0, 0, 0.0))

    async def _call(self, request: Counts) -> tuple[bool, Counts]:
        args = [
            self.share,
            self._token,
            "0" if self._claimed else "1",
            *map(_fmt, self.own),
            *map(_fmt, request),
            *self._caps,
            str(KEEP * 1000),
        ]
        reply = await self.quota.evaluate(self._script, [self.key], args)
        status = int(reply[0])
        if status == -1:
            raise QuotaError(
                f"the job's caps are gone from Redis ({self.key}): Redis lost them (restarted "
                "without persistence?), and with them what the job's other processes sent. "
                "Stopped rather than risk exceeding a cap; --resume recounts this process's "
                "part from its results"
            )
        if status == -2:
            raise QuotaError(
                f"another process took share {self.share} of the job's caps ({self.key}): is "
                "the same shard running twice? Stopped rather than count wrong"
            )
        self._claimed = True
        return status == 1, (int(float(reply[1])), int(float(reply[2])), float(reply[3]))


class CappedStage:
    """The sending stage behind the job-wide caps: each batch is reserved before the
    sender gets it (`SharedCaps.reserve`), every batch waiting in one call. Batches a
    resume rebuilt (``rebuilt``: their keys) are counted already and pass."""

    def __init__(
        self, inner: Stage, caps: SharedCaps, sink: Sink, rebuilt: Collection[str] = ()
    ) -> None:
        self.inner = inner
        self.caps = caps
        self._sink = sink
        self._rebuilt = set(rebuilt)
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._failed = asyncio.Event()
        self._error: BaseException | None = None

    async def submit(self, batch: Batch) -> None:
        """Queue the batch to be reserved; waits while many wait already."""
        if self._error is not None:
            raise self._error
        if self._task is None:
            self._task = asyncio.create_task(self._reserve(), name="caps")
        await self._queue.put(batch)

    async def _reserve(self) -> None:
        """Reserve what waits, in order, and hand what fits to the sender."""
        try:
            while (batch := await self._queue.get()) is not None:
                batches = [batch]
                closing = False
                while len(batches) < MAX_BATCHES and not self._queue.empty():
                    more = self._queue.get_nowait()
                    if more is None:
                        closing = True
                        break
                    batches.append(more)
                for sent in await self._reserve_many(batches):
                    await self.inner.submit(sent)
                if closing:
                    break
            await self.caps.settle()
        except Exception as exc:  # QuotaError; the stage's watch raises it
            self._error = exc
            self._failed.set()
            while not self._queue.empty():  # a submit waiting for room goes on, then raises
                self._queue.get_nowait()
            raise

    async def _reserve_many(self, batches: list[Batch]) -> list[Batch]:
        if not self._rebuilt:
            return await self.caps.reserve(batches, self._sink)
        out: list[Batch] = []
        fresh: list[Batch] = []
        for batch in batches:  # in order: a rebuilt batch is counted, and goes as it is
            if batch.key in self._rebuilt:
                out += await self.caps.reserve(fresh, self._sink) if fresh else []
                fresh = []
                out.append(batch)
            else:
                fresh.append(batch)
        if fresh:
            out += await self.caps.reserve(fresh, self._sink)
        return out

    async def close(self) -> None:
        """Reserve and hand over what waits, then close the sender."""
        if self._task is not None:
            if self._error is None:
                await self._queue.put(None)
            with contextlib.suppress(Exception):
                await self._task
            if self._error is not None:
                raise self._error
        await self.inner.close()

    async def abandon(self, grace: float) -> bool:
        """Drop what waits for a reservation (it was not reserved, or it stays counted:
        the safe direction), then abandon the sender."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        return await self.inner.abandon(grace)

    async def watch(self) -> None:
        """Raise the sender's fatal error, or the caps' (`QuotaError`), as it happens."""
        inner = asyncio.ensure_future(self.inner.watch())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({inner, failed}, return_when=asyncio.FIRST_COMPLETED)
            if inner.done():
                inner.result()
            assert self._error is not None
            raise self._error
        finally:
            inner.cancel()
            failed.cancel()


def capped(policies: Sequence[Any], stage: Stage, sink: Sink, rebuilt: Collection[str]) -> Stage:
    """``stage`` behind the job-wide caps when the policies count them in Redis."""
    for policy in policies:
        if isinstance(policy, SharedCaps):
            return CappedStage(stage, policy, sink, rebuilt)
    return stage
