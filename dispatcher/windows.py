"""Send windows in each recipient's local time (``--window``, issue 14).

A number's time zones come from libphonenumber's time-zone data: the zones of the
number's longest prefix in that table — what ``phonenumbers.timezone`` does for a
geographical number. We do not ask ``time_zones_for_number`` per line: it parses and
classifies every number (tens of µs), and for a number it does not call geographical
(most mobiles) it answers the zones of the whole country code — all 42 of ``+1`` for a
Jamaican mobile — where the table's prefix says ``America/Jamaica``. A number no prefix
matches uses ``--default-tz`` (counted in the summary).

A number with several zones uses the most restrictive window: the times when the window
is open in every one of its zones at once, in absolute time (so the latest opening and
the earliest closing). Where those never meet in the coming week, the line is
``OUTSIDE_WINDOW`` with that reason, never held for ever.

Each distinct zone set is a `ZoneSet` (shared by every prefix with those zones) that
keeps its answer — open, or closed until an instant — until the next instant at which
it changes; so the per-line work is a few dict look-ups and two comparisons.

`Windows` is the policy (`dispatcher.policy.Policy`) between the duplicate check (and
the halt) and the caps. A line whose window is open passes. With ``--outside-window
skip`` a closed one is ``OUTSIDE_WINDOW`` (resumable). With ``wait`` it goes to `Held`:
spilled to an owner-only directory beside the journal, one file per opening instant,
so memory stays O(distinct instants) however many lines wait. When an instant arrives
(`Held.release`: the wall clock says when, the event loop's clock does the waiting) its
lines re-enter the pipeline at this policy (`Preparer.readmit`): their window is
checked again — a line released after it closed again (a saturated sender kept it back
that long) waits for the next opening — then come the caps and the batcher. A held line
has no result and no journal record until it is released, so a crash loses nothing:
``--resume`` reads it from the input again.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import pickle
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from dispatcher.models import Batch, Entry, Group, Status
from dispatcher.policy import refuse
from dispatcher.timing import WallClock, WeeklyWindow

if TYPE_CHECKING:
    from dispatcher.config import Config
    from dispatcher.halt import Halt
    from dispatcher.policy import Sink
    from dispatcher.resume import Resume

log = logging.getLogger("dispatcher.windows")

#: How far ahead an opening is looked for: a week, and a day for a window that crosses
#: midnight (beyond, the weekly pattern repeats: no overlap then means none ever).
HORIZON_DAYS = 8
#: The longest a `ZoneSet` keeps an answer before it looks again (DST rules change).
RECHECK = 6 * 3600.0
#: Openings listed in the summary (the rest are counted).
OPENINGS_LISTED = 50
#: Longest single sleep while lines wait: the wall clock may be stepped meanwhile.
MAX_SLEEP = 60.0

UNKNOWN_ZONE = "Etc/Unknown"
#: Digits of a number that pick the prefix lengths to try (`Zones.of`).
HEAD = 3


# --- which zones, and when their window is open ---------------------------------------


class ZoneSet:
    """The time zones of a set of numbers, and their window's state, kept until it
    changes: open until `until`, or closed until `until` = `opens` (None: the zones'
    windows never overlap)."""

    __slots__ = ("default", "infos", "is_open", "label", "opens", "reason", "until", "zones")

    def __init__(self, zones: tuple[str, ...], *, default: bool = False) -> None:
        self.zones = zones
        self.infos = tuple(ZoneInfo(zone) for zone in zones)
        #: the numbers had no known zone: this is ``--default-tz``
        self.default = default
        self.label = _label(zones)
        self.until = -1.0  # no answer yet
        self.is_open = False
        self.opens: float | None = None
        #: a closed window's ``error`` for the results
        self.reason = ""

    def update(self, now: float, window: WeeklyWindow) -> None:
        """Work out the answer at ``now`` (seconds since the epoch)."""
        spans = None
        for info in self.infos:
            own = windows_of(info, window, now)
            spans = own if spans is None else intersect(spans, own)
        current = next((span for span in spans or () if span[1] > now), None)
        if current is None:
            self.is_open, self.opens, self.until = False, None, now + RECHECK
            self.reason = (
                f"the send window {window} is never open in all of the number's time "
                f"zones at once ({self.label}) in the coming week: not sent; --resume "
                "with a wider --window sends it"
            )
            return
        start, end = current
        if start <= now:
            self.is_open, self.opens, self.until = True, None, min(end, now + RECHECK)
            return
        self.is_open, self.opens, self.until = False, start, min(start, now + RECHECK)
        self.reason = (
            f"outside the send window {window} ({self.label}): it opens "
            f"{self.local(start, window)}, {_utc(start)}; --resume then sends it"
        )

    def local(self, instant: float, window: WeeklyWindow) -> str:
        """``instant`` in local time: of the zone whose window opens then (the most
        restrictive one), named when there are several."""
        chosen = self.infos[0]
        for info in self.infos:
            moment = datetime.fromtimestamp(instant, info)
            span = window.days[moment.weekday()]
            if span is not None and moment.hour * 60 + moment.minute == span.open:
                chosen = info
                break
        moment = datetime.fromtimestamp(instant, chosen)
        local = f"{moment:%Y-%m-%d %H:%M} {moment.tzname()}"
        return local if len(self.infos) == 1 else f"{local} in {chosen.key}"


def _label(zones: tuple[str, ...]) -> str:
    if len(zones) <= 3:
        return ", ".join(zones)
    return f"{zones[0]} and {len(zones) - 1} more zones"


def _utc(instant: float) -> str:
    return f"{datetime.fromtimestamp(instant, UTC):%Y-%m-%d %H:%M} UTC"


def _instant(day: date, minutes: int, zone: ZoneInfo) -> float:
    """``minutes`` after local midnight of ``day`` in ``zone``, as seconds since the
    epoch. Wall-clock arithmetic: 09:00 is 09:00 local on a DST day too; a time in a
    spring-forward gap reads with the offset before it (02:30 → 03:30 DST), one that
    happens twice in the autumn is its first occurrence."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    return (midnight + timedelta(minutes=minutes)).timestamp()


def windows_of(zone: ZoneInfo, window: WeeklyWindow, now: float) -> list[tuple[float, float]]:
    """The window's open spans in ``zone`` from the day before ``now`` to
    `HORIZON_DAYS` after, in absolute time, sorted, overlapping ones merged."""
    first = datetime.fromtimestamp(now, zone).date() - timedelta(days=1)
    spans: list[tuple[float, float]] = []
    for offset in range(HORIZON_DAYS + 2):
        day = first + timedelta(days=offset)
        span = window.days[day.weekday()]
        if span is None:
            continue
        closes_on = day + timedelta(days=1) if span.crosses_midnight else day
        start, end = _instant(day, span.open, zone), _instant(closes_on, span.close, zone)
        if end <= start:  # a window inside a DST gap: no such local times that day
            continue
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


def intersect(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The times in both of two sorted lists of disjoint spans."""
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


class Zones:
    """Number → `ZoneSet`, from libphonenumber's table of time zones by prefix.

    Every prefix of the table maps to the one `ZoneSet` of its zones (3240 prefixes,
    about 300 sets, built at start: a few ms), so a number costs at most `longest`
    slices and dict look-ups, and the answers are shared by every number with the
    same zones.
    """

    def __init__(self, default_tz: str) -> None:
        from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

        self.longest: int = TIMEZONE_LONGEST_PREFIX
        #: the zone set of numbers no prefix matches
        self.default = ZoneSet((default_tz,), default=True)
        by_zones: dict[tuple[str, ...], ZoneSet] = {}
        self._by_prefix: dict[str, ZoneSet] = {
            prefix: self._zone_set(tuple(zones), by_zones)
            for prefix, zones in TIMEZONE_DATA.items()
        }
        #: the distinct zone sets
        self.sets = len(by_zones)
        # A number's first three digits → the lengths (3 and more, longest first) of the
        # table's prefixes that start with them: most numbers then cost one or two
        # look-ups instead of one per possible length.
        lengths: dict[str, set[int]] = {}
        for prefix in TIMEZONE_DATA:
            if len(prefix) >= HEAD:
                lengths.setdefault(prefix[:HEAD], set()).add(len(prefix))
        self._lengths = {head: sorted(found, reverse=True) for head, found in lengths.items()}

    def of(self, number: str) -> ZoneSet:
        """The zones of ``number`` (normalised E.164: ``+`` and digits)."""
        get = self._by_prefix.get
        for length in self._lengths.get(number[1 : HEAD + 1], ()):
            found = get(number[1 : length + 1])
            if found is not None:
                return found
        for length in range(HEAD - 1, 0, -1):
            found = get(number[1 : length + 1])
            if found is not None:
                return found
        return self.default

    def _zone_set(
        self, zones: tuple[str, ...], by_zones: dict[tuple[str, ...], ZoneSet]
    ) -> ZoneSet:
        found = by_zones.get(zones)
        if found is None:
            usable = tuple(zone for zone in zones if zone != UNKNOWN_ZONE and _known(zone))
            found = ZoneSet(usable) if usable else self.default
            by_zones[zones] = found
        return found


def _known(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
        log.warning("time zone %s (from libphonenumber) is not known here: ignored", zone)
        return False
    return True


# --- the policy -------------------------------------------------------------------------


class Windows:
    """``--window``: a line passes while its window is open; otherwise it waits
    (`Held`) or is ``OUTSIDE_WINDOW`` (``skip``, or zones whose windows never meet).

    ``held`` None with ``wait``: a dry run, which counts what would wait and lets it
    pass. Lines of a batch in flight when an earlier run stopped (``in_flight``) pass
    whatever the time: they left inside their window, and a resume sends them again
    under their key to finish that send.
    """

    def __init__(
        self,
        window: WeeklyWindow,
        zones: Zones,
        clock: WallClock,
        *,
        skip: bool = False,
        held: Held | None = None,
        in_flight: Collection[int] = (),
    ) -> None:
        self.window = window
        self.zones = zones
        self.clock = clock
        self.skip = skip
        self.held = held
        self._in_flight = in_flight
        #: lines that waited (or in a dry run would), OUTSIDE_WINDOW by skip, by zones
        #: that never meet, and lines whose number had no known zone
        self.waited = 0
        self.skipped = 0
        self.never_open = 0
        self.default_zone = 0
        #: (zone set label, opening instant) → lines that waited for it
        self.openings: Counter[tuple[str, float]] = Counter()
        #: checking released lines again (counted once already)
        self._again = False

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None:
        """Keep the lines whose window is open; hold or skip the others."""
        now = self.clock.timestamp()
        window, of = self.window, self.zones.of
        keep: list[int] = []
        closed: list[tuple[int, Entry, ZoneSet]] = []
        defaults = 0
        for position, entry in enumerate(entries):
            zones = of(entry.to)
            if zones.default:
                defaults += 1
            if zones.until <= now:
                zones.update(now, window)
            if zones.is_open:
                keep.append(position)
            else:
                closed.append((position, entry, zones))
        if not self._again:
            self.default_zone += defaults
        if not closed:
            return None
        passing = self._closed(group, closed, sink)
        return sorted(keep + passing) if passing else keep

    def _closed(
        self, group: Group, closed: list[tuple[int, Entry, ZoneSet]], sink: Sink
    ) -> list[int]:
        """Skip, hold or let pass the lines whose window is closed; the positions of
        those that pass (in flight at a crash; in a dry run, those that would wait)."""
        waiting: dict[float, list[Entry]] = {}
        passing = []
        counts: dict[ZoneSet, int] = {}  # lines that wait, by zone set (one opening each)
        in_flight, dry_run = self._in_flight, self.held is None
        for position, entry, zones in closed:
            if entry.line in in_flight:
                passing.append(position)
                continue
            if zones.opens is None or self.skip:
                if zones.opens is None:
                    self.never_open += 1
                else:
                    self.skipped += 1
                refuse(sink, entry, Status.OUTSIDE_WINDOW, zones.reason)
                continue
            counts[zones] = counts.get(zones, 0) + 1
            if dry_run:
                passing.append(position)
            else:
                waiting.setdefault(zones.opens, []).append(entry)
        for zones, lines in counts.items():
            self.openings[(zones.label, zones.opens or 0.0)] += lines
            if not self._again:
                self.waited += lines
        if waiting:
            assert self.held is not None
            self.held.add(group.key, waiting, sink)
        return passing

    def report(self) -> dict[str, Any]:
        """What the windows did (or, in a dry run, would do), for the summary."""
        openings = sorted(self.openings.items(), key=lambda item: (item[0][1], item[0][0]))
        listed = [
            {
                "zones": label,
                "opens": datetime.fromtimestamp(instant, UTC).isoformat().replace("+00:00", "Z"),
                "lines": lines,
            }
            for (label, instant), lines in openings[:OPENINGS_LISTED]
        ]
        return {
            "window": str(self.window),
            "outside_window": "skip" if self.skip else "wait",
            "default_tz": self.zones.default.zones[0],
            "waited": self.waited,
            "skipped": self.skipped,
            "never_open": self.never_open,
            "default_zone": self.default_zone,
            "openings": listed,
            "openings_not_listed": max(0, len(openings) - OPENINGS_LISTED),
        }

    async def release(
        self,
        preparer: Readmitting,
        batcher: Batches,
        submit: Callable[[Batch], Awaitable[None]],
        sink: Sink,
        read_all: asyncio.Event,
    ) -> None:
        """Release the waiting lines as their windows open (`Held.release`): through
        this policy again — a line released after its window closed again (the sender
        was saturated for that long) waits for the next opening — then the policies
        after it. Returns once the input is read and none wait."""
        if self.held is None:
            return

        def readmit(key: Hashable, entries: list[Entry]) -> None:
            self._again = True
            try:
                preparer.readmit(self, key, entries, batcher, sink)
            finally:
                self._again = False

        await self.held.release(readmit, batcher, submit, sink, read_all)

    def close(self) -> None:
        """Remove the spill files (the held lines have results, or will be re-read)."""
        if self.held is not None:
            self.held.close()


# --- lines that wait --------------------------------------------------------------------


Readmit = Callable[[Hashable, list[Entry]], None]


class Batches(Protocol):
    """What `Held.release` needs of `dispatcher.batcher.Batcher`."""

    def add_many(self, group: Group, entries: list[Entry]) -> None: ...
    def drain(self) -> None: ...
    def take(self) -> list[Batch]: ...


class Readmitting(Protocol):
    """What `Windows.release` needs of `dispatcher.prepare.Preparer`."""

    def readmit(
        self, start: Any, key: Hashable, entries: list[Entry], batcher: Batches, sink: Sink
    ) -> None: ...


class _Bucket:
    __slots__ = ("lines", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0


class Held:
    """Lines waiting for their window, spilled to files by opening instant.

    Memory is one small record per distinct opening instant. The files live in a
    directory made owner-only (``mkdtemp``) beside the journal — or, when results go
    to stdout and there is no journal, in the system's temporary directory — created
    when the first line waits and removed at the end. Each write is one pickle of a
    run's entries for one instant with its group key; ints of any size and `BigInt`
    params come back exactly, and so does each entry's smart-encoding saving
    (`Entry.saved`), which the summary counts if the gateway accepts the line once sent.
    The files are this process's own, read back only by it.
    """

    def __init__(self, place: str | None, halt: Halt, clock: WallClock) -> None:
        #: where the spill directory goes: beside this results path (None: temp dir)
        self._place = place
        self._halt = halt
        self._clock = clock
        self._directory: str | None = None
        self._buckets: dict[float, _Bucket] = {}
        self._wake = asyncio.Event()
        self._files = 0
        if place is not None:
            _remove_stale(place)
        #: lines waiting now (for the progress line and ``ctl status``)
        self.waiting = 0

    @property
    def next_opening(self) -> datetime | None:
        """When the next lines are released (UTC), or None when none wait."""
        if not self._buckets:
            return None
        return datetime.fromtimestamp(min(self._buckets), UTC)

    def add(self, key: Hashable, waiting: dict[float, list[Entry]], sink: Sink) -> None:
        """Spill a run's lines of one group (``key``), by the instant each waits for."""
        if self._halt.halted:  # nothing waits for a window once the job is halted
            for entries in waiting.values():
                self._halt.account(entries, sink)
            return
        earliest = min(self._buckets, default=None)
        for instant, entries in waiting.items():
            bucket = self._buckets.get(instant)
            if bucket is None:
                bucket = self._buckets[instant] = _Bucket(self._new_file())
            with open(bucket.path, "ab") as f:
                f.write(pickle.dumps((key, [tuple(e) for e in entries]), protocol=5))
            bucket.lines += len(entries)
            self.waiting += len(entries)
        if earliest is None or min(waiting) < earliest:
            self._wake.set()

    def _new_file(self) -> str:
        if self._directory is None:
            self._directory = _spill_directory(self._place)
        self._files += 1
        return os.path.join(self._directory, f"{self._files}.held")

    async def release(
        self,
        readmit: Readmit,
        batcher: Batches,
        submit: Callable[[Batch], Awaitable[None]],
        sink: Sink,
        read_all: asyncio.Event,
    ) -> None:
        """Release each instant's lines when it arrives, until the input is read and
        nothing waits; once the job is halted, account every waiting line at once."""
        halted = asyncio.ensure_future(self._halt.wait())
        halted.add_done_callback(lambda _: self._wake.set())
        ended = asyncio.ensure_future(read_all.wait())
        ended.add_done_callback(lambda _: self._wake.set())
        drained = False
        try:
            while True:
                if self._halt.halted:
                    self._account_all(sink)
                    return
                if read_all.is_set() and not drained:
                    # The linger task has ended: the input's last batches go now, not
                    # when the first window opens.
                    drained = True
                    await _flush(batcher, submit)
                if not self._buckets:
                    if read_all.is_set():
                        return
                    await self._sleep(None)
                    continue
                instant = min(self._buckets)
                delay = self._clock.until(datetime.fromtimestamp(instant, UTC))
                if delay > 0:
                    await self._sleep(min(delay, MAX_SLEEP))
                    continue
                await self._release(self._buckets.pop(instant), readmit, batcher, submit)
        finally:
            halted.cancel()
            ended.cancel()

    async def _sleep(self, seconds: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _release(
        self,
        bucket: _Bucket,
        readmit: Readmit,
        batcher: Batches,
        submit: Callable[[Batch], Awaitable[None]],
    ) -> None:
        log.info("send window open: %d waiting lines released", bucket.lines)
        for key, entries in _read(bucket.path):
            self.waiting -= len(entries)
            readmit(key, entries)
            for batch in batcher.take():
                await submit(batch)  # waits while the sender is saturated
        await _flush(batcher, submit)
        _unlink(bucket.path)

    def _account_all(self, sink: Sink) -> None:
        for instant in sorted(self._buckets):
            bucket = self._buckets.pop(instant)
            for _, entries in _read(bucket.path):
                self.waiting -= len(entries)
                self._halt.account(entries, sink)
            _unlink(bucket.path)

    def close(self) -> None:
        """Remove the spill directory and whatever it still holds."""
        self._buckets.clear()
        self.waiting = 0
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


_new_entry = tuple.__new__


async def _flush(batcher: Batches, submit: Callable[[Batch], Awaitable[None]]) -> None:
    batcher.drain()
    for batch in batcher.take():
        await submit(batch)


def _read(path: str) -> Iterator[tuple[Hashable, list[Entry]]]:
    with open(path, "rb") as f:
        while True:
            try:
                key, rows = pickle.load(f)
            except EOFError:
                return
            yield key, [_new_entry(Entry, row) for row in rows]


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def spill_prefix(results: str) -> str:
    """The spill directories of the job of ``results`` start with this."""
    directory, name = os.path.split(os.path.abspath(results))
    return os.path.join(directory, f".{name}.held-")


def _remove_stale(results: str) -> None:
    """Remove the spill directories an earlier run of the job left (a crash): their
    lines have no result, so they are read from the input again. The caller holds the
    job's lock."""
    for stale in glob.glob(glob.escape(spill_prefix(results)) + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def _spill_directory(results: str | None) -> str:
    """A new owner-only directory (``mkdtemp``: mode 0700) for the spill files: beside
    the results, or in the temporary directory."""
    if results is None:
        return tempfile.mkdtemp(prefix="dispatcher-held-")
    directory, name = os.path.split(spill_prefix(results))
    return tempfile.mkdtemp(prefix=name, dir=directory)


# --- a job's windows --------------------------------------------------------------------


def windows_for(config: Config, clock: WallClock, halt: Halt, resume: Resume | None) -> Windows:
    """The windows policy of a job with ``--window``: its spill files go beside the
    job's results (`job_results`; in the temporary directory for results on stdout);
    a dry run holds nothing."""
    from dispatcher.resume import job_results

    assert config.window is not None
    skip = config.outside_window == "skip"
    held = None if skip or config.dry_run else Held(job_results(config), halt, clock)
    in_flight = frozenset(
        line for lines in (resume.state.in_flight.values() if resume else ()) for line in lines
    )
    return Windows(
        config.window,
        Zones(config.default_tz),
        clock,
        skip=skip,
        held=held,
        in_flight=in_flight,
    )
