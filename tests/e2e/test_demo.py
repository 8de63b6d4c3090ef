"""``dispatcher demo`` in a subprocess: the README's first command, end to end, and its
two-stage Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.support.cli import by_line, dispatcher, env, ndjson, wait_while_running

COUNT = 5000
DEMO = [sys.executable, "-m", "dispatcher", "demo"]


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


def start_demo(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    """``dispatcher demo`` of 200 000 recipients in the background, once its send is
    under way: more than the in-flight slots, the lanes and the batcher hold, so that
    reading is still held back by in-flight requests when a test signals."""
    proc = subprocess.Popen(
        [*DEMO, "--out", "out", "--count", "200000", "--no-faults", *args],
        cwd=cwd,
        env=env(api_key=None),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    journal = cwd / "out" / "results.ndjson.journal"
    wait_while_running(proc, journal.exists, "the demo started sending")
    time.sleep(0.5)  # the first sixteen batches leave within milliseconds of the journal
    return proc


def test_a_second_ctrl_c_exits_at_once_with_130(tmp_path: Path) -> None:
    """Requests that take ten minutes: the first SIGINT waits for them (up to the 10 s
    grace period), the second must not."""
    proc = start_demo(tmp_path, "--latency-ms", "600000")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=5)  # far less than the grace period
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert b"stopping: finishing in-flight requests" in stderr
    assert b"Traceback" not in stderr
    assert not (tmp_path / "out" / "summary.json").exists()  # it did not wait to write it


def test_one_ctrl_c_lets_in_flight_requests_finish_and_exits_130(tmp_path: Path) -> None:
    proc = start_demo(tmp_path, "--latency-ms", "2000")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert b"stopping: finishing in-flight requests" in stderr
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["exit_code"] == 130
    assert "interrupted by SIGINT" in summary["exit_reason"]
    queued = [r for r in ndjson(tmp_path / "out" / "results.ndjson") if r["status"] == "QUEUE"]
    assert queued, "the requests in flight at the signal finished within the grace period"
