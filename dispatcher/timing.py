"""Times a user types, the wall clock a run reads, and send windows as written.

Issue 14's options share these: ``--start-at`` and ``--expire-at`` take a `moment`
(ISO 8601 with an offset, ``now``, ``now+2h``, or a bare duration ``30m`` meaning that
long from now); ``--ttl`` a `duration`; ``--window`` a `WeeklyWindow`; ``--now`` sets
the `WallClock` a rehearsal reads. Waits run on the event loop's clock; windows and
expiry on the wall clock, which `WallClock` gives (the real one, or the real one moved
to start at ``--now``).

Nothing here knows time zones of numbers (`dispatcher.windows`), or what a run does
when a window is closed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: Longest duration accepted anywhere: a year (beyond, a typo is likelier).
MAX_DURATION = 366 * 86_400.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(\S+))?")

DURATION_HELP = "a duration such as 90s, 30m, 2h, 1d or 1h30m"
MOMENT_HELP = (
    "ISO 8601 with an offset (2026-12-24T18:00:00+01:00, or Z), now+DURATION, "
    "or a bare DURATION from now (30m)"
)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``, ``250ms``.

    Raises ValueError with what is accepted.
    """
    compact = text.strip().lower().replace(" ", "")
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(compact))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than a year")
    return seconds


def parse_moment(text: str, *, now: datetime) -> datetime:
    """The moment ``text`` names, aware and in UTC; relative forms count from ``now``.

    ISO 8601 must carry its offset (``Z`` or ``+01:00``): a bare local time would mean
    a different moment on every host. Raises ValueError with what is accepted.
    """
    stripped = text.strip()
    relative = _RELATIVE.fullmatch(stripped.lower())
    if relative is not None:
        sign, amount = relative.groups()
        if sign is None:
            return now.astimezone(UTC)
        seconds = parse_duration(amount)
        return (now + timedelta(seconds=seconds if sign == "+" else -seconds)).astimezone(UTC)
    if _DURATION.fullmatch(stripped.lower().replace(" ", "")):
        return (now + timedelta(seconds=parse_duration(stripped))).astimezone(UTC)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give {MOMENT_HELP}") from None
    if moment.tzinfo is None:
        raise ValueError(
            f"{text!r} has no UTC offset: add one (Z for UTC, +01:00, …) so that it names "
            "one moment whatever the host's time zone"
        )
    return moment.astimezone(UTC)


class WallClock:
    """The wall clock a run reads: the real one, or — for a rehearsal (``--now``) — one
    that reads ``start`` when created and then advances with the monotonic clock."""

    def __init__(
        self,
        start: datetime | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        real: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._real = real
        self.rehearsal = start is not None
        if start is None:
            self._offset = 0.0
        else:
            self._offset = start.timestamp() - real()

    def timestamp(self) -> float:
        """Seconds since the epoch, as this clock reads them."""
        return self._real() + self._offset

    def now(self) -> datetime:
        """The time, aware, in UTC."""
        return datetime.fromtimestamp(self.timestamp(), UTC)

    def until(self, moment: datetime) -> float:
        """Seconds from now to ``moment`` (negative once it has passed)."""
        return moment.timestamp() - self.timestamp()


# --- send windows as written -----------------------------------------------------------

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
WINDOW_HELP = "HH:MM-HH:MM in the recipient's local time (may cross midnight: 21:00-07:00)"


@dataclass(frozen=True, slots=True)
class Span:
    """One day's window in minutes after local midnight: ``open`` ≤ t < ``close``;
    ``close`` ≤ ``open`` crosses midnight into the next day (``21:00-07:00``);
    ``00:00-24:00`` is the whole day."""

    open: int
    close: int

    @property
    def crosses_midnight(self) -> bool:
        return self.close <= self.open

    def __str__(self) -> str:
        return f"{_hhmm(self.open)}-{_hhmm(self.close)}"


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """A window for each weekday (Monday first); None: closed all that day. A span
    that crosses midnight belongs to the day it opens."""

    days: tuple[Span | None, ...]

    def __str__(self) -> str:
        spans = set(self.days)
        if len(spans) == 1:
            only = self.days[0]
            return str(only) if only is not None else "closed"
        named = zip(DAYS, self.days, strict=True)
        return ", ".join(f"{day} {span if span else 'closed'}" for day, span in named)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_span(text: str) -> Span | None:
    """``09:00-20:00`` → a `Span`; ``closed`` → None. Raises ValueError."""
    stripped = text.strip().lower()
    if stripped == "closed":
        return None
    match = _SPAN.fullmatch(stripped)
    if match is None:
        raise ValueError(f"{text!r} is not a window: give {WINDOW_HELP}, or closed")
    oh, om, ch, cm = (int(g) for g in match.groups())
    if oh > 23 or om > 59 or cm > 59 or ch > 24 or (ch == 24 and cm):
        raise ValueError(f"{text!r} is not a window: hours 00-23 (24:00 to close), minutes 00-59")
    span = Span(oh * 60 + om, ch * 60 + cm)
    if span.open == span.close:
        raise ValueError(f"{text!r} opens and closes at once: give 00:00-24:00 for all day")
    return span


def parse_window(value: str | Mapping[str, Any]) -> WeeklyWindow:
    """``"09:00-20:00"`` (every day) or a table by weekday (``mon`` … ``sun``, and
    ``default`` for the days not named; a day not named without a default is closed).
    Raises ValueError naming the day."""
    if isinstance(value, str):
        span = parse_span(value)
        if span is None:
            raise ValueError("a window closed every day sends nothing: give HH:MM-HH:MM")
        return WeeklyWindow((span,) * 7)
    unknown = sorted(set(map(str, value)) - {*DAYS, "default"})
    if unknown:
        raise ValueError(
            f"unknown day {', '.join(unknown)}: the days are {', '.join(DAYS)} (and default)"
        )
    spans: dict[str, Span | None] = {}
    for day, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f'{day} must be a string such as "09:00-20:00" or "closed"')
        try:
            spans[str(day)] = parse_span(text)
        except ValueError as exc:
            raise ValueError(f"{day}: {exc}") from None
    default = spans.get("default")
    days = tuple(spans.get(day, default) for day in DAYS)
    if all(span is None for span in days):
        raise ValueError("the window is closed every day: it would send nothing")
    return WeeklyWindow(days)


def wall_clock(now: str | None) -> WallClock:
    """The run's wall clock: the real one, or one reading ``now`` (``--now``) at start."""
    if now is None:
        return WallClock()
    return WallClock(parse_moment(now, now=datetime.now(UTC)))
