"""The one time format: ISO 8601, UTC, Z; each precision as its users print it."""

import logging

import orjson
import pytest

from dispatcher.logs import RedactingFormatter
from dispatcher.timefmt import iso_utc


def test_milliseconds_by_default() -> None:
    # receiver's receivedAt, report's deliveredAt, the JSON logs' ts
    assert iso_utc(1629174340.117) == "2021-08-17T04:25:40.117Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


def test_microseconds_and_seconds() -> None:
    # the emulator's message dates and delivery reports
    assert iso_utc(1629174340.117, "microseconds") == "2021-08-17T04:25:40.117000Z"
    assert iso_utc(1629174340, "microseconds") == "2021-08-17T04:25:40.000000Z"
    assert iso_utc(1629174340.9, "seconds") == "2021-08-17T04:25:40Z"


def test_a_time_no_calendar_holds_raises() -> None:
    with pytest.raises((OverflowError, OSError, ValueError)):
        iso_utc(1e20)


def test_json_log_lines_carry_the_time_in_milliseconds() -> None:
    record = logging.LogRecord("dispatcher", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 1629174340.117
    record.msecs = 117.0
    line = orjson.loads(RedactingFormatter("json").format(record))
    assert line["ts"] == "2021-08-17T04:25:40.117Z"
