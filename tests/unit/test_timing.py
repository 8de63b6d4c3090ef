"""Times, durations, the rehearsal clock and send windows as users write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher import config as cfg
from dispatcher.errors import ConfigError
from dispatcher.timing import (
    Span,
    WallClock,
    parse_duration,
    parse_moment,
    parse_span,
    parse_window,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 weeks", "-1h", "0s", "h", "1y", "400d"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|year"):
        parse_duration(text)


@given(st.integers(1, 23), st.integers(0, 59), st.integers(0, 59))
def test_duration_parts_add_up(h: int, m: int, s: int) -> None:
    assert parse_duration(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s


def test_moments() -> None:
    assert parse_moment("now", now=NOW) == NOW
    assert parse_moment("now+2h", now=NOW) == NOW + timedelta(hours=2)
    assert parse_moment("now - 30m", now=NOW) == NOW - timedelta(minutes=30)
    assert parse_moment("30m", now=NOW) == NOW + timedelta(minutes=30)
    madrid = parse_moment("2026-12-24T18:00:00+01:00", now=NOW)
    assert madrid == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    assert madrid.tzinfo is UTC
    assert parse_moment("2026-12-24T18:00:00Z", now=NOW).hour == 18


def test_a_moment_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_moment("2026-12-24T18:00:00", now=NOW)
    with pytest.raises(ValueError, match="not a time"):
        parse_moment("tomorrow", now=NOW)


def test_rehearsal_clock_starts_at_now_and_advances() -> None:
    real = [1000.0]
    clock = WallClock(NOW, real=lambda: real[0])
    assert clock.now() == NOW
    real[0] += 90
    assert clock.now() == NOW + timedelta(seconds=90)
    assert clock.until(NOW + timedelta(minutes=2)) == 30
    assert clock.rehearsal
    assert not WallClock().rehearsal


def test_spans() -> None:
    assert parse_span("09:00-20:00") == Span(540, 1200)
    night = parse_span("21:00-07:00")
    assert night is not None
    assert night.crosses_midnight
    assert parse_span("00:00-24:00") == Span(0, 1440)
    assert parse_span("closed") is None
    assert str(parse_span("9:05-17:30")) == "09:05-17:30"
    for bad in ("25:00-01:00", "09:60-10:00", "9-5", "10:00-10:00", "10:00-24:30"):
        with pytest.raises(ValueError, match=r"window|once"):
            parse_span(bad)


def test_weekly_windows() -> None:
    every = parse_window("09:00-20:00")
    assert set(every.days) == {Span(540, 1200)}
    assert str(every) == "09:00-20:00"
    week = parse_window({"default": "10:00-18:00", "sat": "closed", "sun": "closed"})
    assert week.days[5] is None
    assert week.days[0] == Span(600, 1080)
    only_monday = parse_window({"mon": "09:00-12:00"})
    assert only_monday.days[1:] == (None,) * 6
    with pytest.raises(ValueError, match="unknown day"):
        parse_window({"monday": "09:00-12:00"})
    with pytest.raises(ValueError, match="closed every day"):
        parse_window({"default": "closed"})
    with pytest.raises(ValueError, match="tue"):
        parse_window({"tue": "nine to five"})


def test_config_keys(tmp_path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[schedule]\nttl = "2h"\ndefault_tz = "Europe/Madrid"\noutside_window = "skip"\n'
        '[schedule.window]\nmon = "09:00-20:00"\ndefault = "10:00-18:00"\n'
    )
    config = cfg.load(config_file=toml, env={})
    assert config.ttl == 7200
    assert config.default_tz == "Europe/Madrid"
    assert config.window is not None
    assert config.window.days[0] == Span(540, 1200)
    assert config.outside_window == "skip"
    from_env = cfg.load(env={"DISPATCHER_WINDOW": "21:00-07:00", "DISPATCHER_TTL": "30m"})
    assert from_env.window is not None
    assert from_env.ttl == 1800


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"default_tz": "Mars/Base"}, "not a known time zone"),
        ({"expire_at": "2026-12-01T10:00"}, "no UTC offset"),
        ({"start_at": "tomorrow"}, "not a time"),
        ({"ttl": "1h", "expire_at": "now+2h"}, "not both"),
        ({"window": "9-5"}, "not a window"),
    ],
)
def test_bad_schedule_settings_are_refused(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg.load(flags=flags, env={})


def test_now_only_rehearses() -> None:
    real = cfg.load(flags={"now": "2026-12-01T08:00:00Z"}, env={})
    with pytest.raises(ConfigError, match="--now rehearses"):
        cfg.check_rehearsal(real)
    for ok in (
        {"dry_run": True},
        {"base_url": "http://127.0.0.1:8080"},
        {"base_url": "http://[::1]:8080"},
        {"base_url": "http://localhost:1"},
    ):
        cfg.check_rehearsal(cfg.load(flags={"now": "now", **ok}, env={}))
