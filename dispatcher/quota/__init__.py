"""The shared quota: every sender code's rate limit (and the account's) held in Redis,
so that any number of processes on any number of hosts together stay within it.

Open it with `open_quota` (the only part that needs the ``redis`` package, imported
when called) and use the `SharedQuota` it returns where `RateLimits` is used today::

    quota = await open_quota(url, limits=limits, namespace=namespace_for(base_url))
    await quota.acquire(code, batch.units)         # each lane, before each request
    quota.slow_down(code, exc.retry_after)          # beside Throttle.slow_down on 429/503
    await quota.aclose()

The same Redis also counts a job's caps across its processes when it has any
(`dispatcher.quota.caps`).

Design
------
*One bucket per code, one atomic script per batch.* Each code's limit is a GCRA bucket
(a hash ``{tat, f, cut}``, see `dispatcher.quota.gcra`) and the optional account-wide
limit a second one. One Lua script (EVALSHA; EVAL when the server answers NOSCRIPT)
books a batch in both at once and answers with its slot: one round trip per batch, so
Redis sees processes × codes × 20 batches a second, never messages. Time is
``redis.call('TIME')`` inside the script; hosts' clocks never enter the arithmetic, and
a process only ever sleeps a *duration* the script computed, measured from when the
answer arrived (so a batch can be late, never early).

*Reserve, do not reject.* The script grants the batch the first free slot and moves
the bucket's ``tat`` past it; the caller sleeps until then. Waiters are queued by the
bucket itself, not by polling. Each process has one booker per code: it books for the
batches waiting in that process, first come first served (small ones that fit in one
capacity together), and books again only when the last slot begins — so Redis sees one
booking per process, code and slot, and the queue in a bucket is one batch per
process: processes × 1/20 s.

*How far ahead.* A first ask is refused when the bucket is booked more than
``max_ahead / 2`` (0.5 s) beyond now: ten processes per code before anyone is refused.
A refused batch gets a time to ask again from the bucket's waiting line (one batch
interval after the one refused before it) and asks then with the full ``max_ahead``,
which gives it precedence over first asks. Without the line, processes that re-book
the moment their slot begins would starve the refused ones for good; with it every
process gets its turn (simulated, 40 processes on a 1000/s code for 20 s: the smallest
share within 3 % of the mean, about two round trips per batch). Bookings thus never reach
more than ``max_ahead`` (1 s) ahead, which bounds what a failover or a restart can
lose (below).

*Keys.* ``dispatcher:{NS}:code:CODE`` and ``dispatcher:{NS}:account``: every key is in
``KEYS``, and the hash tag is the namespace, so a code's bucket and the account's are in
one slot of a Redis Cluster (the script touches both atomically; a tag per code would
put them in different slots). The namespace defaults to a short hash of the gateway's
base URL (`namespace_for`), so a load test against an emulator never spends a
production account's quota. Buckets expire a minute or two after their last booking.
One namespace is thus one slot, one shard: its load is about 20 bookings a second per
code (more when batches are short), against ~20 µs of script time per booking — tens
of thousands of bookings a second on one Redis core, i.e. a thousand busy codes.

*Rates are the caller's.* Each booking carries its code's rate (µs per unit) and
burst; the bucket keeps only times. Every process sharing a namespace must therefore
be configured with the same rates: one configured faster books shorter intervals.

Why no 1-second window exceeds the bound
-----------------------------------------
Let ``R`` be the rate, ``T = 1/R``, ``step = T / f`` (``f <= 1``, the slow-down factor),
and ``burst`` the code's batch capacity from `RateLimits.capacity` (R/20, at least 1).
A batch of ``n`` units starts at ``start >= free + max(0, n - burst) * step`` and leaves
``tat = start + n * step``: in its bucket it owns the interval
``[start - max(0, n - burst) * step, start + n * step)``, at least ``n * T`` long, and
the intervals of one bucket never overlap (``tat`` only moves forward). Take any
window ``[t, t + 1 s)`` and the batches starting in it, ``k0`` first and ``k1`` last. The
batches between them own intervals inside ``[start_k0 + n_k0 * T, start_k1 - pre_k1)``,
so they carry at most ``R * (1 - n_k0 * T - pre_k1)`` units; adding ``n_k0`` and
``n_k1`` gives at most ``R + min(n_k1, burst)`` — ``R + R/20`` (``R + 1`` below 20/s),
within SPEC §4's ``1.1 R`` (``R + 1`` below 10/s). A fresh bucket starts with ``tat =
now``: the first batch goes at once and the first second obeys the same bound (no start
burst). A batch larger than ``burst`` (one long message on a slow code) waits its excess
first, which is what keeps the bound for it too.

Real sends are late by the answer's trip back and the timer (``d``, never early), which
can move batches into a window from before it: ``R * (1 + d) + burst``. The bound leaves
``0.05 R`` for that, i.e. ``d`` up to 50 ms; below 20/s single messages are ``1/R`` apart
and a window holds at most ``floor(R * (1 + d)) + 1 = R + 1`` for ``d < 1/R``.
Sustained: a process books its next slot the moment its last one begins, one round
trip (~0.1–1 ms) against 50 ms slots, so bookings stay back to back while work waits.

The shared slow-down (AIMD)
---------------------------
`slow_down` (a 429/503 seen by any process) runs a second script on the code's bucket:
``tat`` is pushed to at least ``now + Retry-After`` — every process's next batch of that
code waits — and the factor ``f`` halves (at most once a second however many requests
failed together, never below 1/16); it then grows back by 0.05 a second (from 1/2 to 1
in 10 s), computed when read. Bookings made before the 429 (one per process, within
``max_ahead``) still go; each process's own `Throttle` keeps halving its in-flight
requests as before.

When Redis fails
----------------
*At start*: `open_quota` pings and loads the scripts; failing that it raises
`QuotaUnavailable` (a `FatalError`: exit 3, nothing sent). A password in the URL is
refused (`ConfigError`) — it comes as a `Secret`, is registered with the log redactor,
and is never printed.

*Mid-run*: the first failed call (connection refused or lost, timeout, READONLY,
LOADING, CLUSTERDOWN) marks Redis down for the whole process. Acquisitions pause —
nothing is granted — while one background probe tries a small write (a demoted primary
still answers PING) with jittered backoff (50 ms doubling to 1 s). Any other error
answer (a key of another type, no permission) raises `QuotaError` from `acquire`:
waiting would not cure it. When Redis answers again, bookings resume, but never before
``detection + max_ahead``: every booking made before the outage (by any process, all
made before Redis went away) has passed by then, so even a Redis that comes back empty
(restarted without persistence) cannot hand out a slot twice.

*Failover*: replication is asynchronous, so a promoted replica may have lost the last
bookings. Clients see the old primary's connections break (or READONLY) — an outage as
above — and the same rule means the lost bookings have expired before anyone books on
the new primary. A client that does not notice (a proxy that silently re-routes its
connection) can over-send at most what was lost: the bookings made during the
replication lag, and never more than ``max_ahead`` of rate (they all lie within it).
Split brain is Redis' to prevent (``min-replicas-to-write``).

*Local fallback* (``fallback="local", peers=N``, opt-in): from ``detection + max_ahead``
each process runs the same GCRA in process at ``R / N`` (and account / N). With N peers
on it a window carries at most ``R + N * burst``; the long-run rate stays within R.
After Redis returns a process keeps its local share as well for ``max_ahead + 1 s``,
the time every peer needs to notice, so peers still on their share and peers back on
Redis never add up past that.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from dispatcher.config import Config, Secret
from dispatcher.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from dispatcher.limiter import RateLimits
    from dispatcher.quota.shared import SharedQuota

__all__ = [
    "QuotaError",
    "QuotaUnavailable",
    "check_url",
    "close_quietly",
    "namespace_for",
    "open_configured",
    "open_quota",
]

log = logging.getLogger("dispatcher")

PASSWORD_HINT = (
    "put the password in DISPATCHER_REDIS_PASSWORD or a file named by --redis-password-file"
)
_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SCHEMES = ("redis", "rediss", "unix")


class QuotaUnavailable(FatalError, OSError):
    """The shared quota's Redis cannot be reached or refused us at start: nothing was sent."""


class QuotaError(FatalError):
    """Redis answered with an error the quota cannot work around (permissions, a key of
    another type, scripting disabled): the run stops."""


def namespace_for(base_url: str) -> str:
    """The default namespace: ``sms-`` and 10 hex digits of the gateway's base URL."""
    parts = urlsplit(base_url.strip())
    canonical = f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
    return "sms-" + hashlib.sha256(canonical.encode()).hexdigest()[:10]


def check_url(url: str) -> str:
    """``url`` if it names a Redis without a password; else a `ConfigError` with a hint.

    The error never repeats the URL when it carries a password.
    """
    try:
        parts = urlsplit(url)
        has_password = bool(parts.password) or "password" in parse_qs(parts.query)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ConfigError(f"the quota URL is not a URL: {exc}") from None
    if has_password:
        raise ConfigError(f"the quota URL must not carry a password; {PASSWORD_HINT}")
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"the quota URL must start with redis://, rediss:// or unix://, got {url!r}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"the quota URL names no host: {url!r} (e.g. redis://HOST:6379/0)")
    return url


async def open_quota(
    url: str,
    *,
    limits: RateLimits,
    namespace: str,
    password: Secret | None = None,
    account_rate: float = math.inf,
    max_ahead: float = 1.0,
    fallback: str = "pause",
    peers: int = 1,
    io_timeout: float = 2.0,
) -> SharedQuota:
    """Connect to the Redis at ``url`` and return the shared quota over ``limits``.

    ``io_timeout`` bounds each connection attempt and each answer; a slower Redis counts
    as down. Raises `ConfigError` for a bad URL or setting (or without the ``redis``
    package), and `QuotaUnavailable` when Redis cannot be reached or refuses us.
    """
    check_url(url)
    if not _NAMESPACE.fullmatch(namespace):
        raise ConfigError(
            f"the quota namespace must be 1-64 letters, digits or _.:- , got {namespace!r}"
        )
    if fallback not in ("pause", "local"):
        raise ConfigError(f"the quota fallback must be 'pause' or 'local', got {fallback!r}")
    if peers < 1:
        raise ConfigError(f"the quota's peers must be at least 1, got {peers!r}")
    if not account_rate > 0:
        raise ConfigError(f"the account rate must be positive or inf, got {account_rate!r}")
    if not 0 < max_ahead <= 10:
        raise ConfigError(f"max_ahead must be between 0 and 10 s, got {max_ahead!r}")
    try:
        from dispatcher.quota.shared import SharedQuota, connect
    except ImportError as exc:
        raise ConfigError(
            f"the shared quota needs the redis package ({exc}): pip install 'sms-dispatcher[redis]'"
        ) from None
    redis = await connect(url, password=password, io_timeout=io_timeout)
    return SharedQuota(
        redis,
        limits,
        namespace=namespace,
        account_rate=account_rate,
        max_ahead=max_ahead,
        fallback=fallback,
        peers=peers,
    )


async def open_configured(config: Config, limits: RateLimits) -> SharedQuota | None:
    """The shared quota over ``limits`` when ``--quota-url`` is set (not in a dry run),
    else None. Raises `QuotaUnavailable` when its Redis cannot be reached."""
    if config.quota_url is None or config.dry_run:
        return None
    namespace = config.quota_namespace or namespace_for(config.base_url)
    quota = await open_quota(
        config.quota_url,
        limits=limits,
        namespace=namespace,
        password=config.redis_password,
        account_rate=config.account_rate,
        fallback=config.quota_fallback,
        peers=config.quota_peers,
    )
    log.info("shared quota: Redis %s, namespace %s", config.quota_url, namespace)
    return quota


async def close_quietly(quota: SharedQuota) -> None:
    try:
        await quota.aclose()
    except Exception as exc:  # the run is over: its summary matters more than this
        log.warning("shared quota: closing the Redis connection failed: %s", exc)
