"""What the send windows did, as the summary JSON, the table on stderr and the progress
line show it (issue 14)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from dispatcher.progress import OPENINGS_SHOWN, Progress, summary_table
from dispatcher.summary import Summary


def report(**changes: Any) -> dict[str, Any]:
    return {
        "window": "09:00-20:00",
        "outside_window": "wait",
        "default_tz": "UTC",
        "waited": 3,
        "skipped": 0,
        "never_open": 2,
        "default_zone": 1,
        "openings": [
            {"zones": "America/New_York", "opens": "2026-12-02T14:00:00Z", "lines": 3},
        ],
        "openings_not_listed": 0,
    } | changes


def table(windows: dict[str, Any], *, dry_run: bool = False) -> str:
    summary = Summary()
    summary.windows = windows
    if dry_run:
        summary.estimate = {"seconds": 0.0, "per_code": {}}
    summary.finish()
    document = summary.as_dict()
    assert document["windows"] == windows
    return summary_table(document)


def test_the_table_says_what_waited_and_when_each_zone_opens() -> None:
    text = table(report())
    assert "window 09:00-20:00 (wait)" in text
    assert "3 waited, 0 skipped, 2 never open in all their zones, 1 in the default zone UTC" in (
        text
    )
    assert "opens 2026-12-02 14:00Z  America/New_York: 3 lines" in text


def test_a_dry_run_says_what_would_wait_and_counts_openings_not_shown() -> None:
    openings = [
        {"zones": f"Zone/{n}", "opens": f"2026-12-02T{n:02d}:00:00Z", "lines": 1}
        for n in range(OPENINGS_SHOWN + 2)
    ]
    text = table(report(openings=openings, openings_not_listed=5), dry_run=True)
    assert "3 would wait" in text
    assert "7 more openings" in text
    assert "Zone/9" not in text


def test_a_summary_without_windows_says_nothing_of_them() -> None:
    summary = Summary()
    summary.finish()
    assert "windows" not in summary.as_dict()
    assert "window" not in summary_table(summary.as_dict())


def test_the_progress_line_shows_the_lines_waiting_and_the_next_opening() -> None:
    stream = io.StringIO()
    progress = Progress(100, stream=stream)
    opening = datetime(2026, 12, 2, 14, tzinfo=UTC)
    progress.update(
        bytes_read=100, total_bytes=100, lines=1, sent=1, failed=0, rate=1.0,
        waiting=1234, next_opening=opening,
    )  # fmt: skip
    progress.close()
    assert "waiting=1,234 next window 2026-12-02 14:00:00Z" in stream.getvalue()
