"""A job's schedule: when it may start sending (``--start-at``) and when what is left
expires (``--expire-at``/``--ttl``), resolved once, at the job's first run, and kept.

The first run resolves every time a user typed against its wall clock (`WallClock`:
``--now`` moves it for rehearsals) and records the moments in the journal header
(`Schedule.record`). A ``--resume`` keeps them (`Schedule.resumed`): typing a relative
form again (``now+2h``, ``30m``) changes nothing — it counted from the first run's
start — and a moment given again in absolute form (ISO 8601, or ``--ttl``, which counts
from the first start) must name the recorded one; any other schedule is refused (exit 2),
as a changed message option is: a resume never makes a job expire later, nor sooner.

Waits run on the event loop's clock: the moments are turned into loop times once, at
start (`Timeline`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dispatcher.errors import ConfigError
from dispatcher.timing import WallClock, parse_moment

if TYPE_CHECKING:
    from dispatcher.config import Config

log = logging.getLogger("dispatcher")

#: How often the countdown to a scheduled start is logged (seconds).
COUNTDOWN_EVERY = 60.0
_FIELDS = ("start_at", "expire_at")
_OPTION = {"start_at": "--start-at", "expire_at": "--expire-at / --ttl"}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def relative(text: str) -> bool:
    """Whether a typed time counts from now (``now+2h``, ``30m``) rather than naming one
    moment (ISO 8601 with an offset)."""
    a, b = datetime(2000, 1, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC)
    return parse_moment(text, now=a) != parse_moment(text, now=b)


@dataclass(frozen=True, slots=True)
class Schedule:
    """The job's first start and, when set, its scheduled start and its expiry (UTC)."""

    started: datetime
    start_at: datetime | None = None
    expire_at: datetime | None = None
    #: the fields this run was given in absolute form (a resume checks them)
    absolute: frozenset[str] = frozenset()

    @classmethod
    def resolve(cls, config: Config, clock: WallClock) -> Schedule:
        """The schedule ``config`` asks for, the relative forms counted from now."""
        now = clock.now()
        absolute = set()
        start_at = expire_at = None
        if config.start_at is not None:
            start_at = parse_moment(config.start_at, now=now)
            absolute |= set() if relative(config.start_at) else {"start_at"}
        if config.expire_at is not None:
            expire_at = parse_moment(config.expire_at, now=now)
            absolute |= set() if relative(config.expire_at) else {"expire_at"}
        elif config.ttl is not None:
            expire_at = now + timedelta(seconds=config.ttl)
            absolute.add("expire_at")
        return cls(now, start_at, expire_at, frozenset(absolute))

    def record(self) -> dict[str, str]:
        """The schedule as the journal header records it."""
        record = {"started": _iso(self.started)}
        for name in _FIELDS:
            if (moment := getattr(self, name)) is not None:
                record[name] = _iso(moment)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Schedule:
        """A schedule read back from a journal header (`record`)."""
        start_at, expire_at = (
            datetime.fromisoformat(record[k]) if k in record else None for k in _FIELDS
        )
        return cls(datetime.fromisoformat(record["started"]), start_at, expire_at)

    def resumed(self, recorded: Schedule | None, config: Config, journal: str) -> Schedule:
        """The schedule of a resumed run: the ``recorded`` one (None: a journal from
        before schedules were recorded, i.e. none), after checking that what this run was
        given in absolute form names the same moments (`ConfigError` otherwise)."""
        kept = recorded or Schedule(self.started)
        typed: dict[str, datetime | None] = {}  # field → the moment named (None: relative)
        if config.start_at is not None:
            typed["start_at"] = self.start_at if "start_at" in self.absolute else None
        if config.ttl is not None:  # counts from the job's first start
            typed["expire_at"] = kept.started + timedelta(seconds=config.ttl)
        elif config.expire_at is not None:
            typed["expire_at"] = self.expire_at if "expire_at" in self.absolute else None
        for name, moment in typed.items():
            was = getattr(kept, name)
            if was is not None and (moment is None or abs((was - moment).total_seconds()) < 1e-3):
                continue
            shown = "none" if was is None else _iso(was)
            raise ConfigError(
                f"--resume: {_OPTION[name]} differs from the job's schedule recorded in "
                f"{journal} at its first run ({shown}); a resume keeps the schedule: leave "
                "the option out (or give it as then), or use --force to start over"
            )
        return kept

    def describe(self) -> str:
        """One line for the log: what the schedule is."""
        parts = []
        if self.start_at is not None:
            parts.append(f"starts at {_iso(self.start_at)}")
        if self.expire_at is not None:
            parts.append(f"expires at {_iso(self.expire_at)}")
        return ", ".join(parts)


class Timeline:
    """A schedule on the event loop's clock: the moments turned into loop times once."""

    def __init__(self, schedule: Schedule, clock: WallClock) -> None:
        loop = asyncio.get_running_loop()
        self.schedule = schedule
        self.clock = clock
        now = loop.time()
        self.start = None if schedule.start_at is None else now + clock.until(schedule.start_at)
        self.expires = None if schedule.expire_at is None else now + clock.until(schedule.expire_at)

    def until_start(self) -> float:
        """Seconds until the scheduled start (0 when there is none or it has passed)."""
        if self.start is None:
            return 0.0
        return max(0.0, self.start - asyncio.get_running_loop().time())

    def expired(self) -> bool:
        """Whether the expiry has passed."""
        return self.expires is not None and asyncio.get_running_loop().time() >= self.expires


def countdown(seconds: float) -> str:
    """``1h02m03s``, ``4m05s``, ``12s``: a wait as the log shows it."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
