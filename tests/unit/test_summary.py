"""Summary: exit codes by status, and the summary JSON of SPEC §6 on an injected clock."""

from __future__ import annotations

import math

import orjson
import pytest

from dispatcher.models import Status
from dispatcher.summary import ACCEPTED, INVALID_INPUT, UNSUCCESSFUL, Summary


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("statuses", "plain", "strict"),
    [
        ({}, 0, 0),
        ({Status.QUEUE: 5}, 0, 0),
        ({Status.DRY_RUN: 5}, 0, 0),
        ({Status.QUEUE: 5, Status.INVALID_NUMBER: 1}, 0, 1),
        ({Status.QUEUE: 5, Status.REJECTED: 1}, 0, 1),
        ({Status.SEGMENTS_EXCEEDED: 1}, 0, 1),
        ({Status.QUEUE: 5, Status.FAILED: 1}, 1, 1),
        ({Status.AMBIGUOUS: 1}, 1, 1),
        ({Status.FAILED: 1, Status.REJECTED: 1}, 1, 1),
    ],
)
def test_exit_codes(statuses: dict[Status, int], plain: int, strict: bool) -> None:
    summary = Summary(clock=Clock())
    summary.statuses.update(statuses)
    assert summary.exit_code() == plain
    assert summary.exit_code(strict=True) == strict


def test_every_status_has_a_place() -> None:
    """Each status is billed (accepted), a failure, bad input, or explicitly neither."""
    classified = ACCEPTED | UNSUCCESSFUL | INVALID_INPUT
    assert not ACCEPTED & UNSUCCESSFUL
    assert not ACCEPTED & INVALID_INPUT
    assert not UNSUCCESSFUL & INVALID_INPUT
    neither = set(Status) - classified
    assert Status.DRY_RUN in neither
    assert Status.QUEUE in ACCEPTED


def test_as_dict_schema_and_values() -> None:
    clock = Clock(1000.0)
    summary = Summary(clock=clock)
    summary.statuses.update({Status.QUEUE: 8, Status.INVALID_NUMBER: 2, Status.AMBIGUOUS: 1})
    summary.segments.update({"GSM7": 7, "UCS2": 4})
    summary.ambiguous_segments = 3
    for ms in range(1, 101):  # 100 requests of 1..100 ms
        summary.request(ms / 1000)
    summary.retry("429")
    summary.retry("429")
    summary.retry("timeout")
    clock.now = 1001.0
    summary.sent("12345", 5, 6, started=1000.5)
    clock.now = 1003.0
    summary.sent("12345", 3, 3, started=1002.0)
    summary.codes["12345"].rate = 20.0
    clock.now = 1005.0
    summary.price_per_segment = 0.5
    summary.finish()
    clock.now = 2000.0  # after finish, the clock no longer matters

    document = summary.as_dict()
    orjson.dumps(document)  # JSON-serialisable as is
    assert document["lines"] == 11
    assert document["statuses"] == {"AMBIGUOUS": 1, "INVALID_NUMBER": 2, "QUEUE": 8}
    assert document["segments"] == {
        "billable": 11,
        "by_encoding": {"GSM7": 7, "UCS2": 4},
        "ambiguous": 3,
    }
    assert document["requests"] == 100
    assert document["retries"] == {"total": 3, "429": 2, "timeout": 1}
    assert document["elapsed_s"] == 5.0
    assert document["recipients_per_s"] == 2.2
    latency = document["latency_ms"]
    assert latency["p50"] == pytest.approx(50, rel=0.01)
    assert latency["p90"] == pytest.approx(90, rel=0.01)
    assert latency["p99"] == pytest.approx(99, rel=0.01)
    assert latency["max"] == pytest.approx(100, rel=0.01)
    assert document["codes"] == {
        "12345": {
            "messages": 8,
            "segments": 9,
            "achieved_rate": 3.2,  # 8 messages from 1000.5 to 1003.0
            "configured_rate": 20.0,
        }
    }
    assert document["exit_reason"] == "completed"
    assert document["cost"] == 5.5
    assert "estimate" not in document
    assert document["resumed_lines"] == 0


def test_an_empty_run_is_well_formed() -> None:
    summary = Summary(clock=Clock())
    summary.finish()
    document = summary.as_dict()
    assert document["lines"] == 0
    assert document["latency_ms"] == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    assert document["codes"] == {}
    assert document["retries"] == {"total": 0}
    assert document["segments"]["billable"] == 0
    assert not math.isnan(document["recipients_per_s"])
    assert "cost" not in document


def test_finish_with_a_reason_and_the_resumed_lines() -> None:
    clock = Clock(0.0)
    summary = Summary(clock=clock)
    summary.absorb({"QUEUE": 90, "REJECTED": 10}, {"GSM7": 90})
    summary.statuses[Status.QUEUE] += 20
    clock.now = 2.0
    summary.finish("interrupted by SIGINT")
    document = summary.as_dict()
    assert document["lines"] == 120
    assert document["resumed_lines"] == 100
    assert document["recipients_per_s"] == 10.0  # only this run's 20 lines count
    assert document["segments"]["billable"] == 90
    assert document["exit_reason"] == "interrupted by SIGINT"


def test_a_single_accepted_request_has_no_rate_yet() -> None:
    clock = Clock(5.0)
    summary = Summary(clock=clock)
    summary.sent("ACME", 1, 1, started=5.0)
    assert summary.as_dict()["codes"]["ACME"]["achieved_rate"] is None
