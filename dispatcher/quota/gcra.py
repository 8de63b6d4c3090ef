"""The quota's arithmetic: a GCRA that reserves, in Lua for Redis and in Python beside it.

A bucket is a hash ``{tat, ln, f, cut}``: ``tat`` the theoretical arrival time (µs on
the Redis clock) from which the bucket is free again, ``ln`` the end of its waiting
line (below), ``f`` the rate factor of the shared slow-down as it was right after its
last cut, ``cut`` when that was. Times are microseconds from ``redis.call('TIME')``
inside the scripts, never a host's clock.

`TAKE` reserves one batch of ``n`` units in every bucket it is given (a code's, then
the account's) in one atomic call. With ``T`` a bucket's µs per unit at full rate and
``f`` its current factor (``step = T / f``)::

    free  = max(tat, now)                       # the bucket is busy until then
    start = max over buckets of free + max(0, n - burst) * step
    tat'  = ceil(start + n * step)              # for each bucket

The batch goes at ``start``. It is refused when a bucket is booked more than ``ahead``
µs beyond now (the caller's reach), which caps how far ahead one batch may reserve.
A refused batch is not sent away empty-handed: it is given a time to ask again in the
bucket's waiting line, ``at = max(ln, free - ahead)``, and the line moves on by the
batch's own interval (``ln' = at + n * step``). Refused batches thus come back one by
one, in the order they were refused, each when the bookings have moved on by one
batch — no herd, and no process starved by others that re-book the moment their slot
begins (the caller also asks again with a longer reach, which gives the waiting line
precedence over first asks).

`take` below is the same arithmetic in Python, operation for operation (the floats
agree bit for bit): the local fallback runs it on the loop clock, and the tests check
the script against it.

`SLOW` is the shared slow-down after a 429/503: it pushes ``tat`` to at least
``now + retry_after`` and halves ``f`` (at most once per ``hold``, never below
``floor``); ``f`` then grows back by ``recover`` per µs on its own, computed when read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Reserve a slot for a batch: KEYS = buckets; ARGV = n, ahead µs, keep ms, recover per µs,
#: then µs-per-unit and burst for each key. Returns {granted, wait µs, now µs, factor ppm}:
#: the wait is until the slot when granted, until the time to ask again when refused.
TAKE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local ahead = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local recover = tonumber(ARGV[4])
local ready, start, factor, binding = now, now, 1, 1
local steps, lines = {}, {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 + 2 * i])
  local burst = tonumber(ARGV[4 + 2 * i])
  local h = redis.call('HMGET', key, 'tat', 'f', 'cut', 'ln')
  local f = 1
  if h[2] then f = math.min(1, tonumber(h[2]) + (now - tonumber(h[3])) * recover) end
  if i == 1 then factor = f end
  local step = interval / f
  local free = math.max(tonumber(h[1]) or now, now)
  if free > ready then ready, binding = free, i end
  start = math.max(start, free + math.max(0, n - burst) * step)
  steps[i] = step
  lines[i] = tonumber(h[4]) or now
end
local granted, wait = 1, 0
if ready - now > ahead then
  local at = math.max(lines[binding], ready - ahead)
  local ln = math.ceil(at + n * steps[binding])
  local key = KEYS[binding]
  redis.call('HSET', key, 'ln', string.format('%d', ln))
  redis.call('PEXPIRE', key, math.ceil((math.max(ln, ready) - now) / 1000) + keep)
  granted, wait = 0, math.ceil(at - now)
else
  for i, key in ipairs(KEYS) do
    local tat = math.ceil(start + n * steps[i])
    redis.call('HSET', key, 'tat', string.format('%d', tat))
    redis.call('PEXPIRE', key, math.ceil((math.max(tat, lines[i]) - now) / 1000) + keep)
  end
  wait = math.ceil(start - now)
end
return {granted, wait, now, math.floor(factor * 1000000)}
"""

#: The gateway pushed back: KEYS = {code bucket}; ARGV = push µs, hold µs, floor,
#: recover per µs, keep ms. Returns {halved, factor ppm, now µs}.
SLOW = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local push = tonumber(ARGV[1])
local hold = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local recover = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local key = KEYS[1]
local h = redis.call('HMGET', key, 'tat', 'f', 'cut')
local f = 1
if h[2] then f = math.min(1, tonumber(h[2]) + (now - tonumber(h[3])) * recover) end
local halved = 0
if not h[3] or now - tonumber(h[3]) >= hold then
  f = math.max(floor, f / 2)
  redis.call('HSET', key, 'f', string.format('%.17g', f), 'cut', string.format('%d', now))
  halved = 1
end
local tat = math.ceil(math.max(tonumber(h[1]) or now, now + push))
redis.call('HSET', key, 'tat', string.format('%d', tat))
redis.call('PEXPIRE', key, math.ceil(math.max(0, tat - now) / 1000) + keep)
return {halved, math.floor(f * 1000000), now}
"""


@dataclass(slots=True)
class Bucket:
    """One bucket's state and settings (µs), as the scripts keep it in Redis."""

    #: µs per unit at full rate (0: unlimited, the bucket only carries Retry-After)
    interval: float
    #: units a batch may carry without waiting first (see the package docstring)
    burst: float
    tat: float | None = None
    f: float | None = None
    cut: float | None = None
    #: the end of the waiting line of refused batches
    line: float | None = None

    def factor(self, now: float, recover: float) -> float:
        """The slow-down's rate factor now (1 when there has been no cut)."""
        if self.f is None or self.cut is None:
            return 1.0
        return min(1.0, self.f + (now - self.cut) * recover)


@dataclass(frozen=True, slots=True)
class Decision:
    """What `take` (or the TAKE script) answered, in µs."""

    granted: bool
    #: until the slot (granted) or until asking again makes sense (refused)
    wait: float
    now: float
    #: the first bucket's rate factor
    factor: float


def take(
    buckets: Sequence[Bucket], n: float, now: float, *, ahead: float, recover: float
) -> Decision:
    """The TAKE script in Python, on ``now`` from any clock (µs)."""
    ready = start = now
    factor = 1.0
    binding = 0
    steps: list[float] = []
    for i, bucket in enumerate(buckets):
        f = bucket.factor(now, recover)
        if i == 0:
            factor = f
        step = bucket.interval / f
        free = max(bucket.tat if bucket.tat is not None else now, now)
        if free > ready:
            ready, binding = free, i
        start = max(start, free + max(0, n - bucket.burst) * step)
        steps.append(step)
    if ready - now > ahead:
        bucket = buckets[binding]
        at = max(bucket.line if bucket.line is not None else now, ready - ahead)
        bucket.line = math.ceil(at + n * steps[binding])
        return Decision(False, math.ceil(at - now), now, factor)
    for bucket, step in zip(buckets, steps, strict=True):
        bucket.tat = math.ceil(start + n * step)
    return Decision(True, math.ceil(start - now), now, factor)


def slow(
    bucket: Bucket, now: float, *, push: float, hold: float, floor: float, recover: float
) -> tuple[bool, float]:
    """The SLOW script in Python: (whether the factor was cut, the factor after)."""
    f = bucket.factor(now, recover)
    halved = bucket.cut is None or now - bucket.cut >= hold
    if halved:
        f = max(floor, f / 2)
        bucket.f, bucket.cut = f, now
    bucket.tat = math.ceil(max(bucket.tat if bucket.tat is not None else now, now + push))
    return halved, f


def fmt(value: float) -> str:
    """A float as an ARGV string that Lua's ``tonumber`` reads back to the same double."""
    return repr(float(value))
