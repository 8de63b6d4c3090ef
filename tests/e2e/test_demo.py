"""``dispatcher demo`` in a subprocess: the README's first command, end to end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from tests.support.cli import by_line, dispatcher, env, ndjson

COUNT = 5000


async def test_demo_sends_everything_once_and_says_so(tmp_path: Path) -> None:
    run = await dispatcher(
        "demo", "--count", str(COUNT), "--out", "out", cwd=tmp_path, environ=env(api_key=None)
    )
    assert run.code == 0, run.stderr
    assert run.stdout == b""
    assert "nothing sent twice" in run.stderr
    assert "PROBLEM" not in run.stderr
    out = tmp_path / "out"
    for name in ("results.ndjson", "invalid.ndjson", "summary.json", "emulator-stats.json"):
        assert (out / name).is_file(), name

    results = ndjson(out / "results.ndjson")
    recipients = (out / "recipients.ndjson").read_bytes().splitlines()
    non_blank = {n for n, line in enumerate(recipients, 1) if line.strip()}
    assert set(by_line(results)) == non_blank
    statuses = Counter(r["status"] for r in results)
    assert set(statuses) <= {"QUEUE", "INVALID_NUMBER", "REJECTED", "SEGMENTS_EXCEEDED"}

    ledger = orjson.loads((out / "emulator-stats.json").read_bytes())
    assert ledger["duplicates"] == 0
    assert ledger["accepted"] == statuses["QUEUE"]
    ids = [r["id"] for r in results if r["status"] == "QUEUE"]
    assert len(set(ids)) == len(ids)
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["statuses"] == dict(statuses)
    assert summary["exit_code"] == 0
    invalid = ndjson(out / "invalid.ndjson")
    assert len(invalid) == statuses["INVALID_NUMBER"]


async def test_demo_runs_twice_in_the_same_directory(tmp_path: Path) -> None:
    """A demo starts afresh: the journal of the previous one is no obstacle."""
    for _ in range(2):
        run = await dispatcher(
            "demo", "--count", "50", "--out", "out", cwd=tmp_path, environ=env(api_key=None)
        )
        assert run.code == 0, run.stderr
    assert len(ndjson(tmp_path / "out" / "results.ndjson")) == 50
