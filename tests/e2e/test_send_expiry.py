"""Expiry and scheduled start with the real CLI and the real emulator on 127.0.0.1:0:
an expiry in the past sends nothing, an expiry during the run sends nothing after it, a
retry that would wait past it stops at once, a resume after it sends nothing, and
``--start-at`` (rehearsed with ``--now``) sends nothing before its time and is kept by a
resume."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.emulator import FaultSettings
from tests.support.cli import KEY, by_line, dispatcher, env, ndjson
from tests.support.emulators import EmulatorFactory
from tests.support.exactly_once import TEXT, check_exactly_once, write_input

pytestmark = pytest.mark.timeout(120)
T0 = "2026-12-01T10:00:00Z"


def send_args(base_url: str, *flags: str) -> list[str]:
    return [
        "send", "in.ndjson", "--from", "12345", "--text", TEXT, "--base-url", base_url,
        "--results", "results.ndjson", "--summary", "summary.json", "--no-progress",
        "--idempotency", *flags,
    ]  # fmt: skip


def summary(tmp_path: Path) -> dict[str, Any]:
    return orjson.loads((tmp_path / "summary.json").read_bytes())  # type: ignore[no-any-return]


def header(tmp_path: Path) -> dict[str, Any]:
    first = (tmp_path / "results.ndjson.journal").read_bytes().splitlines()[0]
    return orjson.loads(first)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "flags",
    [("--expire-at", "2020-01-01T00:00:00Z"), ("--expire-at", "now-1m"), ("--strict",)],
    ids=["iso", "relative", "strict"],
)
async def test_an_expiry_in_the_past_sends_nothing(
    emulator_factory: EmulatorFactory, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    valid = write_input(tmp_path / "in.ndjson", 50, bad_every=10)
    strict = flags == ("--strict",)
    if strict:
        flags = ("--expire-at", "2020-01-01T00:00:00+01:00", "--strict")
    run = await dispatcher(*send_args(emulator.base_url, *flags), cwd=tmp_path)
    assert run.code == (1 if strict else 0), run.stderr  # final, not resumable: not 4
    results = by_line(ndjson(tmp_path / "results.ndjson"))
    assert len(results) == 50  # one result per line, the malformed ones too
    assert {results[n]["status"] for n in valid} == {"EXPIRED_UNSENT"}
    assert {r["status"] for n, r in results.items() if n not in valid} == {"REJECTED"}
    assert "expired at" in results[1]["error"]
    assert emulator.messages() == []
    assert (await emulator.stats())["requests"]["batch"] == 0
    document = summary(tmp_path)
    assert document["statuses"]["EXPIRED_UNSENT"] == len(valid)
    assert document["exit_reason"].startswith("expired at")
    assert "expire_at" in header(tmp_path)["schedule"]


async def test_nothing_is_sent_after_an_expiry_during_the_run(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    valid = write_input(tmp_path / "in.ndjson", 400)
    run = await dispatcher(
        *send_args(emulator.base_url, "--rate", "12345=100", "--ttl", "1s"), cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    results = ndjson(tmp_path / "results.ndjson")
    counts = {s: sum(r["status"] == s for r in results) for s in ("QUEUE", "EXPIRED_UNSENT")}
    assert counts["QUEUE"] > 0
    assert counts["EXPIRED_UNSENT"] > 0
    assert sum(counts.values()) == 400
    messages = emulator.messages()
    check_exactly_once(results, valid, messages, await emulator.stats(), idempotent=True)
    sent = {m["to"] for m in messages}
    assert not sent & {r["to"] for r in results if r["status"] == "EXPIRED_UNSENT"}
    # never late: the last message reached the gateway before the expiry (1 s after the
    # start, of which the journal keeps the wall-clock moments)
    first, last = min(m["t"] for m in messages), max(m["t"] for m in messages)
    assert last - first < 1.0

    # A resume the next day sends nothing: the lines left are final.
    again = await dispatcher(*send_args(emulator.base_url, "--resume", "--ttl", "1s"), cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert len(emulator.messages()) == len(messages)


async def test_a_retry_that_would_wait_past_the_expiry_stops_at_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    # Every request is refused 429 with Retry-After 60 (a wait of 30 s, the longest
    # retry wait); the job expires in 20 s.
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, faults=FaultSettings(fail_429=1.0, retry_after_s=60)
    )
    write_input(tmp_path / "in.ndjson", 5)
    run = await dispatcher(
        *send_args(emulator.base_url, "--expire-at", "now+20s"),
        cwd=tmp_path,
        timeout=15.0,  # less than the expiry: the run does not wait for it
    )
    assert run.code == 0, run.stderr
    results = ndjson(tmp_path / "results.ndjson")
    assert {r["status"] for r in results} == {"EXPIRED_UNSENT"}
    assert {r["attempts"] for r in results} == {1}
    assert "expires before the retry" in results[0]["error"]
    assert emulator.messages() == []


async def test_a_resume_after_the_expiry_sends_nothing(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    valid = write_input(tmp_path / "in.ndjson", 20)
    # A cap leaves lines resumable; the job expires an hour after its first start.
    first = await dispatcher(
        *send_args(emulator.base_url, "--now", T0, "--ttl", "1h", "--max-messages", "5"),
        cwd=tmp_path,
    )
    assert first.code == 4, first.stderr
    assert len(emulator.messages()) == 5
    assert header(tmp_path)["schedule"]["expire_at"] == "2026-12-01T11:00:00.000Z"
    # The next day: a resume keeps the recorded expiry, and it has passed.
    later = await dispatcher(
        *send_args(emulator.base_url, "--resume", "--now", "2026-12-02T10:00:00Z", "--ttl", "1h"),
        cwd=tmp_path,
    )
    assert later.code == 0, later.stderr
    results = ndjson(tmp_path / "results.ndjson")
    assert sorted(r["status"] for r in results) == ["EXPIRED_UNSENT"] * 15 + ["QUEUE"] * 5
    check_exactly_once(results, valid, emulator.messages(), await emulator.stats(), idempotent=True)
    # A resume that names another expiry is refused, as a changed message option is.
    moved = await dispatcher(
        *send_args(emulator.base_url, "--resume", "--expire-at", "2026-12-03T00:00:00Z"),
        cwd=tmp_path,
    )
    assert moved.code == 2
    assert "a resume keeps the schedule" in moved.stderr


async def test_start_at_sends_nothing_before_its_time_and_a_resume_keeps_it(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    valid = write_input(tmp_path / "in.ndjson", 30)
    flags = ("--now", T0, "--start-at", "2026-12-01T11:00:00Z")
    proc, log = await waiting(tmp_path, send_args(emulator.base_url, *flags))
    status = await dispatcher("ctl", "results.ndjson", "status", cwd=tmp_path)
    assert orjson.loads(status.stdout)["state"] == "waiting to start"
    assert "in 1h00m00s" in log or "in 59m59s" in log
    proc.send_signal(signal.SIGINT)  # interruptible, like any run: exit 130, resumable
    assert await proc.wait() == 130
    assert emulator.messages() == []
    assert header(tmp_path)["schedule"]["start_at"] == "2026-12-01T11:00:00.000Z"

    # Resumed half an hour later, without --start-at: the job still waits for 11:00.
    flags = ("--resume", "--now", "2026-12-01T10:30:00Z")
    proc, log = await waiting(tmp_path, send_args(emulator.base_url, *flags))
    assert "starts at 2026-12-01T11:00:00.000Z, in 30m00s" in log or "in 29m59s" in log
    proc.send_signal(signal.SIGINT)
    assert await proc.wait() == 130
    assert emulator.messages() == []

    # Resumed after 11:00: it sends everything at once.
    done = await dispatcher(
        *send_args(emulator.base_url, "--resume", "--now", "2026-12-01T11:00:01Z"), cwd=tmp_path
    )
    assert done.code == 0, done.stderr
    results = ndjson(tmp_path / "results.ndjson")
    assert {r["status"] for r in results} == {"QUEUE"}
    check_exactly_once(results, valid, emulator.messages(), await emulator.stats(), idempotent=True)


async def waiting(tmp_path: Path, args: list[str]) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``dispatcher ARGS``; once it logs that it waits for its start, the process
    and its log so far (the test's timeout bounds the wait)."""
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", *args,
            cwd=tmp_path, env=env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    while "waiting: the job starts at" not in log.read_text():
        assert proc.returncode is None, log.read_text()
        await asyncio.sleep(0.02)
    return proc, log.read_text()


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        (("--start-at", "now+1h"), "DRY_RUN"),
        (("--start-at", "now+1h", "--ttl", "30m"), "EXPIRED_UNSENT"),
    ],
    ids=["starts-later", "expires-before-it-starts"],
)
async def test_a_dry_run_says_what_the_schedule_would_do_without_waiting(
    tmp_path: Path, flags: tuple[str, ...], status: str
) -> None:
    write_input(tmp_path / "in.ndjson", 10)
    run = await dispatcher(
        "send", "in.ndjson", "--from", "12345", "--text", TEXT, "--dry-run", "--no-progress",
        *flags, cwd=tmp_path, environ=env(None), timeout=30.0,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert {r["status"] for r in run.results()} == {status}
    assert "dry run: the job starts at" in run.stderr
    assert "in 1h00m00s" in run.stderr or "in 59m59s" in run.stderr


@pytest.mark.parametrize(
    ("flags", "unsent"),
    [
        (("--ttl", "10s"), {"12345": 20}),  # 30 messages at 1/s: 10 go, 20 would expire
        (("--start-at", "now+1h", "--expire-at", "now+1h10s"), {"12345": 20}),
        (("--ttl", "1h"), {}),
    ],
    ids=["ttl", "scheduled-start", "in-time"],
)
async def test_a_dry_run_says_what_the_expiry_would_leave_unsent(
    tmp_path: Path, flags: tuple[str, ...], unsent: dict[str, int]
) -> None:
    write_input(tmp_path / "in.ndjson", 30)
    run = await dispatcher(
        "send", "in.ndjson", "--from", "12345", "--text", TEXT, "--dry-run", "--no-progress",
        "--rate", "12345=1", "--summary", "summary.json", *flags,
        cwd=tmp_path, environ=env(None), timeout=30.0,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    estimate = summary(tmp_path)["estimate"]
    assert estimate["unsent_at_expiry"] == unsent
    assert estimate["expires_first"] is bool(unsent)
    assert 9 <= estimate["until_expiry"] <= 3600
    warned = "about 20 messages of code 12345 unsent at the expiry" in run.stderr
    assert warned is bool(unsent), run.stderr
