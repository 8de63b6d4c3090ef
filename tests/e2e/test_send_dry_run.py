"""``dispatcher send --dry-run``: validate, render, count and estimate, with no network.

The base URL points at a port nothing listens on and no API key is set: a dry run
that tried to connect, or insisted on a key, would fail.
"""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest

from tests.support.cli import ALPHA, CODE, by_line, dispatcher, env, write_lines


def closed_port() -> int:
    """A loopback port that was free a moment ago and has nothing listening now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


LINES = [
    {"to": "+525500000001", "params": ["a" * 150]},  # 153 septets: 1 segment
    {"to": "+525500000002", "params": ["a" * 158]},  # 161 septets: 2 (flat and 3gpp)
    {"to": "+525500000003", "params": ["a" * 304]},  # 307 septets: flat 2, 3gpp 3
    {"to": "+525500000004", "params": ["ж" * 132]},  # 135 UCS-2 units: flat 2, 3gpp 3
    {"to": "bogus", "params": ["x"]},
    "{oops",
    {"to": "+525500000007", "params": ["x" * 1700]},  # over ten segments
    {"to": "+525500000008", "text": "Code {0}", "from": ALPHA, "params": ["1"]},
]


@pytest.mark.parametrize(
    ("model", "segments"),
    [("flat", [1, 2, 2, 2]), ("3gpp", [1, 2, 3, 3])],
)
async def test_dry_run_counts_costs_and_estimates_without_network(
    tmp_path: Path, model: str, segments: list[int]
) -> None:
    source = write_lines(tmp_path / "in.ndjson", LINES)
    run = await dispatcher(
        "send", source,
        "--dry-run",
        "--from", CODE, "--text", "Hi {0}!",
        "--base-url", f"http://127.0.0.1:{closed_port()}/raven",
        "--segment-model", model,
        "--rate", f"{CODE}=2",
        "--price-per-segment", "0.25",
        "--results", "results.ndjson",
        "--summary", "summary.json",
        cwd=tmp_path,
        environ=env(api_key=None),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert not (tmp_path / "results.ndjson.journal").exists(), "a dry run keeps no journal"
    results = [
        orjson.loads(line) for line in (tmp_path / "results.ndjson").read_bytes().splitlines()
    ]
    got = by_line(results)
    assert set(got) == set(range(1, len(LINES) + 1))
    assert {n: r["status"] for n, r in got.items()} == {
        1: "DRY_RUN",
        2: "DRY_RUN",
        3: "DRY_RUN",
        4: "DRY_RUN",
        5: "INVALID_NUMBER",
        6: "REJECTED",
        7: "SEGMENTS_EXCEEDED",
        8: "DRY_RUN",
    }
    assert [got[n]["segments"] for n in (1, 2, 3, 4)] == segments
    assert [got[n]["encoding"] for n in (1, 2, 3, 4, 8)] == ["GSM7"] * 3 + ["UCS2", "GSM7"]
    assert all("id" not in r for r in results)

    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    billable = sum(segments) + 1  # line 8: one segment
    assert summary["segments"]["billable"] == billable
    assert summary["segments"]["by_encoding"] == {
        "GSM7": sum(segments[:3]) + 1,
        "UCS2": segments[3],
    }
    assert summary["cost"] == pytest.approx(billable * 0.25)
    estimate = summary["estimate"]
    # Four messages at 2/s for 12345; one at the alphanumeric default of 100/s.
    assert estimate["per_code"][CODE] == {"units": 4, "rate": 2.0, "seconds": 2.0}
    assert estimate["per_code"][ALPHA] == {"units": 1, "rate": 100.0, "seconds": 0.01}
    assert estimate["seconds"] == 2.0
    assert summary["statuses"]["DRY_RUN"] == 5
    assert summary["codes"] == {}  # nothing was sent
    assert summary["exit_code"] == 0


async def test_dry_run_estimate_counts_segments_when_the_rate_does(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", LINES[:4])
    run = await dispatcher(
        "send", source,
        "--dry-run", "--rate-unit", "segments",
        "--from", CODE, "--text", "Hi {0}!",
        "--base-url", f"http://127.0.0.1:{closed_port()}/raven",
        "--rate", f"{CODE}=1",
        "--summary", "summary.json",
        cwd=tmp_path,
        environ=env(api_key=None),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert [r["status"] for r in run.results()] == ["DRY_RUN"] * 4
    estimate = orjson.loads((tmp_path / "summary.json").read_bytes())["estimate"]
    assert estimate["per_code"][CODE]["units"] == 1 + 2 + 2 + 2
    assert estimate["seconds"] == 7.0
