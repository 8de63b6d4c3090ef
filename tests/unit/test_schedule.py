"""A job's schedule: resolved once at its first run, recorded in the journal header,
kept by a resume — and a resume that names another schedule refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import Config, validate
from dispatcher.errors import ConfigError
from dispatcher.journal import JournalFile, journal_path
from dispatcher.resume import open_job
from dispatcher.schedule import Schedule, countdown, relative
from dispatcher.timing import WallClock

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def config(**values: Any) -> Config:
    return validate(Config(sender="12345", text="Hi", **values))


def at(moment: datetime) -> WallClock:
    return WallClock(moment)


@pytest.mark.parametrize(
    ("text", "is_relative"),
    [("now+2h", True), ("30m", True), ("now", True), ("2026-12-24T18:00:00+01:00", False)],
)
def test_relative_forms_count_from_now(text: str, is_relative: bool) -> None:
    assert relative(text) is is_relative


def test_resolve_counts_relative_forms_from_the_runs_wall_clock() -> None:
    schedule = Schedule.resolve(config(start_at="now+10m", ttl=3600.0), at(T0))
    assert abs((schedule.started - T0).total_seconds()) < 1
    assert schedule.start_at is not None
    assert abs((schedule.start_at - T0 - timedelta(minutes=10)).total_seconds()) < 1
    assert schedule.expire_at is not None
    assert schedule.expire_at - schedule.started == timedelta(hours=1)  # from the start
    assert schedule.absolute == {"expire_at"}  # a ttl names one moment once started


def test_the_record_round_trips() -> None:
    schedule = Schedule(T0, T0 + timedelta(minutes=5), T0 + timedelta(hours=6))
    record = schedule.record()
    assert record == {
        "started": "2026-12-01T10:00:00.000Z",
        "start_at": "2026-12-01T10:05:00.000Z",
        "expire_at": "2026-12-01T16:00:00.000Z",
    }
    assert Schedule.from_record(record) == schedule
    assert Schedule.from_record({"started": record["started"]}) == Schedule(T0)


RECORDED = Schedule(T0, T0 + timedelta(minutes=5), T0 + timedelta(hours=6))
LATER = at(T0 + timedelta(days=1))


@pytest.mark.parametrize(
    "values",
    [
        {},  # nothing typed: the recorded schedule
        {"expire_at": "now+6h", "start_at": "5m"},  # relative: counted from the first run
        {"expire_at": "2026-12-01T16:00:00Z"},  # the same moment, written otherwise
        {"expire_at": "2026-12-01T17:00:00+01:00"},
        {"ttl": 6 * 3600.0},  # from the first start: the same moment
        {"start_at": "2026-12-01T10:05:00Z"},
    ],
)
def test_a_resume_keeps_the_recorded_schedule(values: dict[str, Any]) -> None:
    cfg = config(resume=True, **values)
    kept = Schedule.resolve(cfg, LATER).resumed(RECORDED, cfg, "j")
    assert kept == RECORDED


@pytest.mark.parametrize(
    ("values", "option"),
    [
        ({"expire_at": "2026-12-02T16:00:00Z"}, "--expire-at"),  # later: refused
        ({"expire_at": "2026-12-01T12:00:00Z"}, "--expire-at"),  # sooner: refused too
        ({"ttl": 7 * 3600.0}, "--expire-at / --ttl"),
        ({"start_at": "2026-12-01T11:00:00Z"}, "--start-at"),
    ],
)
def test_a_resume_naming_another_schedule_is_refused(values: dict[str, Any], option: str) -> None:
    cfg = config(resume=True, **values)
    with pytest.raises(ConfigError, match="a resume keeps the schedule") as caught:
        Schedule.resolve(cfg, LATER).resumed(RECORDED, cfg, "j")
    assert option in str(caught.value)


@pytest.mark.parametrize("values", [{"expire_at": "now+1h"}, {"ttl": 60.0}, {"start_at": "5m"}])
def test_a_resume_cannot_add_a_schedule_the_job_did_not_have(values: dict[str, Any]) -> None:
    cfg = config(resume=True, **values)
    with pytest.raises(ConfigError, match=r"\(none\)"):
        Schedule.resolve(cfg, LATER).resumed(Schedule(T0), cfg, "j")
    with pytest.raises(ConfigError):  # a journal from before schedules were recorded
        Schedule.resolve(cfg, LATER).resumed(None, cfg, "j")


def test_the_journal_header_records_the_schedule_and_a_resume_reads_it(tmp_path: Path) -> None:
    results = str(tmp_path / "results.ndjson")
    first = config(results=results, expire_at="now+6h", start_at="now+5m")
    schedule = Schedule.resolve(first, at(T0))
    journal, state = open_job(first, "in.ndjson", schedule)
    journal.close()
    assert state is None
    (_, header), *_ = JournalFile(journal_path(results)).records()
    assert header["schedule"] == schedule.record()
    (tmp_path / "results.ndjson").write_bytes(b"")
    again = config(results=results, resume=True, expire_at="now+6h")
    _, state = open_job(again, "in.ndjson", Schedule.resolve(again, LATER))
    assert state is not None
    assert state.schedule == Schedule.from_record(schedule.record())


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.2, "0s"), (12, "12s"), (245, "4m05s"), (3723, "1h02m03s")]
)
def test_countdown(seconds: float, shown: str) -> None:
    assert countdown(seconds) == shown
