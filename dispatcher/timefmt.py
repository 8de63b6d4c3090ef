"""The one way times are written: ISO 8601 in UTC, ending in ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Timespec = Literal["seconds", "milliseconds", "microseconds"]


def iso_utc(epoch_seconds: float, timespec: Timespec = "milliseconds") -> str:
    """``2024-05-01T12:00:00.123Z``; ``timespec`` as in `datetime.isoformat`.

    Raises OverflowError, OSError or ValueError for a time the platform cannot show.
    """
    moment = datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec=timespec)
    return moment[:-6] + "Z"  # "+00:00" -> "Z"
