"""Send windows: zones of numbers, the most restrictive window, midnight, DST, and the
held lines' spill and release (issue 14). Clocks are injected: nothing here sleeps."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import timezone as pn_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

from dispatcher.batcher import Batcher
from dispatcher.config import Config
from dispatcher.halt import Halt
from dispatcher.models import BigInt, Entry, Group, Status
from dispatcher.policy import Caps
from dispatcher.prepare import Preparer
from dispatcher.timing import Span, WallClock, WeeklyWindow, parse_window
from dispatcher.windows import Held, Windows, Zones, ZoneSet, spill_prefix

NINE_TO_EIGHT = parse_window("09:00-20:00")


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Clock(WallClock):
    """A wall clock that reads what the test says."""

    def __init__(self, now: float) -> None:
        super().__init__()
        self.now_ = now

    def timestamp(self) -> float:
        return self.now_


class Sink:
    def __init__(self) -> None:
        self.locals: list[tuple[int, Status, str]] = []

    def local(self, line: int, to: str | None, status: Status, error: str, **_: Any) -> None:
        self.locals.append((line, status, error))


def entry(line: int, to: str, params: list[Any] | None = None, ref: Any = None) -> Entry:
    return Entry(line, to, params or ["x"], ref, 1, "GSM7", None)


# --- zones of numbers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def zones() -> Zones:
    return Zones("Europe/Madrid")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+12125550100", ("America/New_York",)),
        ("+14155550100", ("America/Los_Angeles",)),
        ("+18085550100", ("Pacific/Honolulu",)),
        ("+34915550100", ("Europe/Madrid",)),
        ("+70000000001", TIMEZONE_DATA["7"]),  # sixteen zones
    ],
)
def test_a_number_has_the_zones_of_its_longest_prefix(
    zones: Zones, number: str, expected: tuple[str, ...]
) -> None:
    found = zones.of(number)
    assert found.zones == expected
    assert not found.default


def test_a_number_without_a_known_zone_uses_the_default(zones: Zones) -> None:
    found = zones.of("+99912345678")  # no such country code
    assert found.default
    assert found.zones == ("Europe/Madrid",)


def test_numbers_with_the_same_zones_share_one_answer(zones: Zones) -> None:
    assert zones.of("+12125550100") is zones.of("+17185550100")  # both New York


def _examples() -> list[phonenumbers.PhoneNumber]:
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number_for_type(
            region, phonenumbers.PhoneNumberType.FIXED_LINE
        )
        if example is not None:
            found.append(example)
    return found


def test_geographical_numbers_get_the_zones_libphonenumber_gives_them(zones: Zones) -> None:
    """Differential: for every region's example fixed-line number, our prefix look-up
    agrees with libphonenumber's own for geographical numbers."""
    checked = 0
    for number in _examples():
        expected = tuple(pn_timezone.time_zones_for_geographical_number(number))
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        found = zones.of(e164)
        if expected == ("Etc/Unknown",):
            assert found.default, e164
        else:
            assert found.zones == expected, e164
        checked += 1
    assert checked > 200


# --- the window of a zone set -----------------------------------------------------------


def state(zones: tuple[str, ...], now: float, window: WeeklyWindow = NINE_TO_EIGHT) -> ZoneSet:
    found = ZoneSet(zones)
    found.update(now, window)
    return found


def test_one_zone_open_and_closed_in_local_time() -> None:
    inside = state(("America/New_York",), at("2026-12-02T14:00:00-05:00"))
    assert inside.is_open
    assert inside.until == at("2026-12-02T20:00:00-05:00")
    before = state(("America/New_York",), at("2026-12-02T03:00:00-05:00"))
    assert not before.is_open
    assert before.opens == at("2026-12-02T09:00:00-05:00")
    assert "it opens 2026-12-02 09:00 EST, 2026-12-02 14:00 UTC;" in before.reason
    assert "2026-12-02 14:00 UTC" in before.reason
    after = state(("America/New_York",), at("2026-12-02T20:00:00-05:00"))
    assert not after.is_open
    assert after.opens == at("2026-12-03T09:00:00-05:00")


def test_several_zones_use_the_latest_opening_and_the_earliest_closing() -> None:
    both = ("America/New_York", "America/Los_Angeles")
    # 09:00 in New York: Los Angeles is still at 06:00.
    early = state(both, at("2026-12-02T09:00:00-05:00"))
    assert not early.is_open
    assert early.opens == at("2026-12-02T09:00:00-08:00")  # Los Angeles opens last
    assert "09:00 PST in America/Los_Angeles, 2026-12-02 17:00 UTC" in early.reason
    # Open from 09:00 in Los Angeles until 20:00 in New York.
    midday = state(both, at("2026-12-02T11:00:00-08:00"))
    assert midday.is_open
    assert midday.until == at("2026-12-02T20:00:00-05:00")


def test_zones_whose_windows_never_meet_are_refused_not_held() -> None:
    window = parse_window("09:00-12:00")
    apart = state(("Asia/Tokyo", "America/New_York"), at("2026-12-02T10:00:00+09:00"), window)
    assert not apart.is_open
    assert apart.opens is None
    assert "never open in all of the number's time zones at once" in apart.reason


def test_a_window_that_crosses_midnight_belongs_to_the_day_it_opens() -> None:
    # Monday 21:00 to Tuesday 07:00 only (2026-11-30 is a Monday).
    window = parse_window({"mon": "21:00-07:00"})
    tuesday_night = state(("UTC",), at("2026-12-01T03:00:00+00:00"), window)
    assert tuesday_night.is_open
    assert tuesday_night.until == at("2026-12-01T07:00:00+00:00")
    tuesday_evening = state(("UTC",), at("2026-12-01T22:00:00+00:00"), window)
    assert not tuesday_evening.is_open
    assert tuesday_evening.opens == at("2026-12-07T21:00:00+00:00")  # next Monday


def test_all_day_windows_are_open_across_days() -> None:
    window = parse_window("00:00-24:00")
    found = state(("Asia/Kolkata",), at("2026-12-02T23:59:00+05:30"), window)
    assert found.is_open
    assert found.until > at("2026-12-03T00:00:00+05:30")


@pytest.mark.parametrize(
    ("day_before", "dst_day", "utc_hour_before", "utc_hour_after"),
    [
        ("2026-03-07", "2026-03-08", 14, 13),  # spring forward: EST → EDT
        ("2026-10-31", "2026-11-01", 13, 14),  # fall back: EDT → EST
    ],
)
def test_daylight_saving_moves_the_opening_in_utc(
    day_before: str, dst_day: str, utc_hour_before: int, utc_hour_after: int
) -> None:
    zone = ("America/New_York",)
    before = state(zone, datetime.fromisoformat(f"{day_before}T06:00:00+00:00").timestamp())
    after = state(zone, datetime.fromisoformat(f"{dst_day}T09:00:00+00:00").timestamp())
    assert datetime.fromtimestamp(before.opens or 0, UTC).hour == utc_hour_before
    assert datetime.fromtimestamp(after.opens or 0, UTC).hour == utc_hour_after
    for opens in (before.opens, after.opens):
        assert datetime.fromtimestamp(opens or 0, ZoneInfo(zone[0])).hour == 9


# The oracle: a window is open at t when t's local weekday and minute fall in that
# day's span, or in the previous day's span that crossed midnight. Spans keep clear of
# 01:00-04:00, where DST moves wall clocks, so wall-clock arithmetic cannot differ.
ZONES = [
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "Europe/Madrid",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
]
MINUTES = st.sampled_from([m for m in range(0, 1441, 30) if not 60 <= m <= 240])


def oracle(zone: str, window: WeeklyWindow, now: float) -> bool:
    local = datetime.fromtimestamp(now, ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    today = window.days[local.weekday()]
    yesterday = window.days[(local.weekday() - 1) % 7]
    if today is not None:
        if today.crosses_midnight and minute >= today.open:
            return True
        if not today.crosses_midnight and today.open <= minute < today.close:
            return True
    return yesterday is not None and yesterday.crosses_midnight and minute < yesterday.close


@st.composite
def windows(draw: st.DrawFn) -> WeeklyWindow:
    days: list[Span | None] = []
    for _ in range(7):
        opens, closes = draw(MINUTES), draw(MINUTES)
        if opens == closes or opens == 1440 or (draw(st.booleans()) and days):
            days.append(None)
        else:
            days.append(Span(opens, closes if closes else 1440))
    if all(d is None for d in days):
        days[0] = Span(9 * 60, 20 * 60)
    return WeeklyWindow(tuple(days))


INSTANTS = st.integers(
    int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
    int(datetime(2031, 1, 1, tzinfo=UTC).timestamp()),
).map(lambda t: float(t - t % 60))


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), window=windows(), now=INSTANTS)
def test_one_zone_agrees_with_local_time(zone: str, window: WeeklyWindow, now: float) -> None:
    found = state((zone,), now, window)
    assert found.is_open == oracle(zone, window, now)
    if found.is_open:
        assert found.until > now
        assert oracle(zone, window, found.until - 60)
    else:
        assert found.opens is not None  # every window here opens once a week
        assert found.opens > now
        assert oracle(zone, window, found.opens)
        assert not oracle(zone, window, found.opens - 60)
        for step in range(1, 40):  # and nothing opens before it
            probe = now + (found.opens - now) * step / 40
            assert not oracle(zone, window, probe - probe % 60)


@settings(max_examples=200, deadline=None)
@given(
    pair=st.lists(st.sampled_from(ZONES), min_size=2, max_size=3, unique=True),
    window=windows(),
    now=INSTANTS,
)
def test_several_zones_are_open_only_when_each_is(
    pair: list[str], window: WeeklyWindow, now: float
) -> None:
    found = state(tuple(pair), now, window)
    each = all(oracle(zone, window, now) for zone in pair)
    assert found.is_open == each
    if found.opens is not None:
        assert all(oracle(zone, window, found.opens) for zone in pair)


# --- the policy -------------------------------------------------------------------------

GROUP_KEY = ("12345", "Hi {0}", None, None, None)


def group() -> Group:
    from dispatcher.renderer import compile_template

    return Group(
        GROUP_KEY, sender="12345", template=compile_template("Hi {0}"), options={}, capacity=100
    )


def policy(now: float, **kwargs: Any) -> Windows:
    return Windows(NINE_TO_EIGHT, Zones("UTC"), Clock(now), **kwargs)


NEW_YORK = "+1212555010"
MADRID = "+3491555010"


def test_lines_inside_their_window_pass_and_the_others_are_skipped() -> None:
    windows = policy(at("2026-12-02T12:00:00+00:00"), skip=True)  # 07:00 NY, 13:00 Madrid
    sink = Sink()
    entries = [entry(1, NEW_YORK + "1"), entry(2, MADRID + "2"), entry(3, "+99912345678")]
    keep = windows.check(group(), entries, None, sink)
    assert keep == [1, 2]
    assert [(line, status) for line, status, _ in sink.locals] == [(1, Status.OUTSIDE_WINDOW)]
    assert "(America/New_York): it opens 2026-12-02 09:00 EST" in sink.locals[0][2]
    assert windows.skipped == 1
    assert windows.default_zone == 1


def test_all_open_costs_no_list() -> None:
    windows = policy(at("2026-12-02T16:00:00+00:00"))
    assert windows.check(group(), [entry(1, NEW_YORK + "1")], None, Sink()) is None


def test_a_dry_run_counts_what_would_wait_and_lets_it_pass() -> None:
    windows = policy(at("2026-12-02T12:00:00+00:00"))  # held None: a dry run
    sink = Sink()
    keep = windows.check(group(), [entry(1, NEW_YORK + "1"), entry(2, NEW_YORK + "2")], None, sink)
    assert keep == [0, 1]
    assert sink.locals == []
    report = windows.report()
    assert report["waited"] == 2
    assert report["openings"] == [
        {"zones": "America/New_York", "opens": "2026-12-02T14:00:00Z", "lines": 2}
    ]


def test_lines_of_a_batch_in_flight_at_a_crash_pass_whatever_the_time() -> None:
    windows = policy(at("2026-12-02T12:00:00+00:00"), skip=True, in_flight=frozenset({2}))
    sink = Sink()
    keep = windows.check(group(), [entry(1, NEW_YORK + "1"), entry(2, NEW_YORK + "2")], None, sink)
    assert keep == [1]
    assert [line for line, _, _ in sink.locals] == [1]


def test_zones_that_never_meet_are_outside_the_window_even_when_waiting(tmp_path: Path) -> None:
    window = parse_window("09:00-12:00")
    halt = Halt()
    clock = Clock(at("2026-12-02T12:00:00+00:00"))
    held = Held(str(tmp_path / "out.ndjson"), halt, clock)
    windows = Windows(window, Zones("UTC"), clock, held=held)
    sink = Sink()
    # +7 alone is Russia and Kazakhstan: sixteen zones, from UTC+2 to UTC+12.
    keep = windows.check(group(), [entry(1, "+70000000001")], None, sink)
    assert keep == []
    assert held.waiting == 0
    assert sink.locals[0][1] == Status.OUTSIDE_WINDOW
    assert "never open" in sink.locals[0][2]
    assert windows.never_open == 1


# --- held lines: spill, release, halt ---------------------------------------------------

HUGE = [2**200, -(2**70), BigInt("9" * 5000), 1.5, "x", True]


def test_held_lines_spill_by_opening_and_come_back_exactly(tmp_path: Path) -> None:
    results = str(tmp_path / "out.ndjson")
    halt = Halt()
    clock = Clock(at("2026-12-02T12:00:00+00:00"))
    held = Held(results, halt, clock)
    windows = Windows(NINE_TO_EIGHT, Zones("UTC"), clock, held=held)
    entries = [
        entry(1, NEW_YORK + "1", HUGE, ref={"crm": 2**80}),
        entry(2, "+14155550102", ["y"]),  # Los Angeles: opens later
        entry(3, NEW_YORK + "3", ["z"]),
    ]
    assert windows.check(group(), entries, None, Sink()) == []
    assert held.waiting == 3
    assert held.next_opening == datetime(2026, 12, 2, 14, tzinfo=UTC)
    (directory,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.ndjson.held-")]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert str(directory).startswith(spill_prefix(results))

    released: list[tuple[Any, list[Entry]]] = []
    batches: list[Any] = []

    async def go() -> None:
        read_all = asyncio.Event()
        read_all.set()
        clock.now_ = at("2026-12-02T18:00:00+00:00")  # both windows are open now
        batcher = Batcher(
            batch_size=10,
            linger=1,
            max_buffered=100,
            count_segments=False,
            clock=lambda: 0,
            job="j",
        )

        async def submit(batch: Any) -> None:
            batches.append(batch)

        await held.release(
            lambda key, got: released.append((key, got)), batcher, submit, Sink(), read_all
        )

    asyncio.run(go())
    assert [key for key, _ in released] == [GROUP_KEY, GROUP_KEY]
    assert [e.line for _, got in released for e in got] == [1, 3, 2]  # New York first
    first = released[0][1][0]
    assert first == entries[0]
    assert type(first) is Entry
    assert first.params[0] == 2**200
    assert first.params[2] == BigInt("9" * 5000)
    assert first.ref == {"crm": 2**80}
    assert held.waiting == 0
    assert held.next_opening is None
    held.close()
    assert not directory.exists()


def test_a_halt_accounts_every_held_line_at_once(tmp_path: Path) -> None:
    halt = Halt()
    clock = Clock(at("2026-12-02T12:00:00+00:00"))
    held = Held(str(tmp_path / "out.ndjson"), halt, clock)
    sink = Sink()

    async def go() -> None:
        held.add(GROUP_KEY, {at("2026-12-02T14:00:00+00:00"): [entry(1, NEW_YORK + "1")]}, sink)
        held.add(GROUP_KEY, {at("2026-12-03T14:00:00+00:00"): [entry(2, NEW_YORK + "2")]}, sink)
        read_all = asyncio.Event()
        releasing = asyncio.create_task(
            held.release(
                lambda *_: pytest.fail("released"), _NoBatches(), _no_submit, sink, read_all
            )
        )
        await asyncio.sleep(0)
        halt.set(Status.CANCELLED, "cancelled by ctl")
        await asyncio.wait_for(releasing, 5)
        # a line that would wait after the halt is accounted at once
        held.add(GROUP_KEY, {at("2026-12-02T14:00:00+00:00"): [entry(3, NEW_YORK + "3")]}, sink)

    asyncio.run(go())
    assert sorted(line for line, _, _ in sink.locals) == [1, 2, 3]
    assert {status for _, status, _ in sink.locals} == {Status.CANCELLED}
    assert held.waiting == 0


class _NoBatches:
    def add_many(self, group: Group, entries: list[Entry]) -> None:
        pass

    def drain(self) -> None:
        pass

    def take(self) -> list[Any]:
        return []


async def _no_submit(batch: Any) -> None:
    pytest.fail("submitted")


def test_a_new_run_removes_the_spill_a_crash_left(tmp_path: Path) -> None:
    results = str(tmp_path / "out.ndjson")
    stale = Path(spill_prefix(results) + "crashed")
    stale.mkdir()
    (stale / "1.held").write_bytes(b"left")
    other = tmp_path / ".other.ndjson.held-x"  # another job's: left alone
    other.mkdir()
    Held(results, Halt(), Clock(0.0))
    assert not stale.exists()
    assert other.exists()


def test_released_lines_go_through_the_windows_again_and_the_policies_after() -> None:
    config = Config(sender="12345", text="Hi {0}")
    windows = policy(0.0)
    caps = Caps(max_messages=1)
    preparer = Preparer(config, capacity=lambda code: 100.0, policies=[windows, caps])
    batcher = Batcher(
        batch_size=10, linger=1, max_buffered=100, count_segments=False, clock=lambda: 0, job="j"
    )
    sink = Sink()
    preparer.readmit(
        windows, GROUP_KEY, [entry(1, NEW_YORK + "1"), entry(2, NEW_YORK + "2")], batcher, sink
    )
    batcher.drain()
    (batch,) = batcher.take()
    assert batch.lines == [1]
    assert batch.group.key == GROUP_KEY
    assert [(line, status) for line, status, _ in sink.locals] == [(2, Status.NOT_SENT)]


def test_results_on_stdout_spill_to_the_temporary_directory(tmp_path: Path) -> None:
    held = Held(None, Halt(), Clock(0.0))
    held.add(GROUP_KEY, {at("2026-12-02T14:00:00+00:00"): [entry(1, NEW_YORK + "1")]}, Sink())
    directory = held._directory
    assert directory is not None
    assert os.path.isdir(directory)
    assert os.path.basename(directory).startswith("dispatcher-held-")
    held.close()
    assert not os.path.exists(directory)


def test_timedelta_sanity() -> None:
    # the horizon covers a week whatever the weekday
    window = parse_window({"sun": "09:00-10:00"})
    found = state(("UTC",), at("2026-11-30T10:00:00+00:00"), window)  # a Monday
    assert found.opens == at("2026-12-06T09:00:00+00:00")
    assert (found.opens or 0) - at("2026-11-30T10:00:00+00:00") < timedelta(days=7).total_seconds()


def _longest_prefix(number: str) -> tuple[str, ...] | None:
    """The careful look-up: every length from the longest down."""
    for end in range(min(9, len(number) - 1) + 1, 1, -1):
        found = TIMEZONE_DATA.get(number[1:end])
        if found is not None:
            return tuple(found)
    return None


PREFIXES = sorted(TIMEZONE_DATA)


@settings(max_examples=500, deadline=None)
@given(
    prefix=st.sampled_from(PREFIXES),
    rest=st.text("0123456789", min_size=0, max_size=12),
    cut=st.integers(8, 15),
)
def test_the_fast_look_up_agrees_with_trying_every_length(
    zones: Zones, prefix: str, rest: str, cut: int
) -> None:
    number = "+" + (prefix + rest)[:cut]
    if len(number) < 9:
        number += "0" * (9 - len(number))
    expected = _longest_prefix(number)
    found = zones.of(number)
    if expected is None:
        assert found.default
    else:
        assert found.zones == tuple(z for z in expected if z != "Etc/Unknown")


def test_a_send_without_windows_loads_neither_them_nor_the_zone_table() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dispatcher.pipeline, dispatcher.cli.send; "
        "print(sorted(m for m in ('dispatcher.windows', 'phonenumbers.tzdata') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_line_released_after_its_window_closed_again_waits_for_the_next(
    tmp_path: Path,
) -> None:
    config = Config(sender="12345", text="Hi {0}")
    halt = Halt()
    clock = Clock(at("2026-12-02T12:00:00+00:00"))  # 07:00 in New York
    held = Held(str(tmp_path / "out.ndjson"), halt, clock)
    windows = Windows(NINE_TO_EIGHT, Zones("UTC"), clock, held=held)
    preparer = Preparer(config, capacity=lambda code: 100.0, policies=[windows])
    sink = Sink()
    assert windows.check(group(), [entry(1, NEW_YORK + "1")], None, sink) == []
    # The release comes late: 21:00 in New York, closed again until tomorrow 09:00.
    clock.now_ = at("2026-12-03T02:00:00+00:00")
    read_all = asyncio.Event()
    read_all.set()
    releasing = asyncio.create_task(
        windows.release(preparer, _NoBatches(), _no_submit, sink, read_all)
    )
    while held.next_opening != datetime(2026, 12, 3, 14, tzinfo=UTC):
        await asyncio.sleep(0)
    assert held.waiting == 1
    halt.set(Status.CANCELLED, "cancelled")
    await releasing
    assert [(line, status) for line, status, _ in sink.locals] == [(1, Status.CANCELLED)]
    report = windows.report()
    assert report["waited"] == 1  # one line, held twice
    assert [o["opens"] for o in report["openings"]] == [
        "2026-12-02T14:00:00Z",
        "2026-12-03T14:00:00Z",
    ]
    held.close()
