"""``send --quota-url``: the shared quota (issue 15) through the real CLI.

A real Redis (or Valkey) server on loopback (`tests.support.redis_server`: no fake, no
skip) and the emulator with its own rate limiting off, so that only the senders keep
the rate: what the assertions read is the emulator's ledger (the fullest sliding
1-second window per code), never the test's clock.

SLOW (about 6 s by construction): three jobs share one code at 50/s.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from tests.support.cli import CODE, KEY, by_line, dispatcher, env, send_args, write_lines
from tests.support.emulators import EmulatorFactory
from tests.support.redis_server import RedisServer, free_port, started
from tests.unit.quota import conftest as quota_fixtures

#: A real Redis (or Valkey) on loopback, as the quota's own tests start it.
redis_server = quota_fixtures.redis_server

RATE = 50
JOBS = 3
LINES = 100  # JOBS x LINES at RATE: about six seconds of sending


def _job(tmp_path: Path, n: int) -> Path:
    """Job ``n``'s own directory and input: distinct recipients across the jobs."""
    job = tmp_path / f"job{n}"
    job.mkdir()
    lines = [{"to": f"+5255{n:02d}{k:06d}", "params": [k, n]} for k in range(1, LINES + 1)]
    write_lines(job / "in.ndjson", lines)
    return job


async def test_three_jobs_on_one_code_stay_within_its_rate_together(
    emulator_factory: EmulatorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    jobs = [_job(tmp_path, n) for n in range(1, JOBS + 1)]
    runs = await asyncio.gather(
        *(
            dispatcher(
                *send_args(emulator.base_url, job / "in.ndjson", "--rate", f"{CODE}={RATE}"),
                "--quota-url",
                redis_server.url,
                "--results",
                job / "results.ndjson",
                "--summary",
                job / "summary.json",
                cwd=job,
            )
            for job in jobs
        )
    )
    for run in runs:
        assert run.code == 0, run.stderr
    for job in jobs:
        results = [orjson.loads(line) for line in (job / "results.ndjson").read_bytes().split()]
        assert {r["status"] for r in by_line(results).values()} == {"QUEUE"}
        assert len(results) == LINES

    stats = await emulator.stats()
    ledger = stats["codes"][CODE]
    assert ledger["accepted"] == JOBS * LINES
    # Together, never more than the code's bound of SPEC §4 in any 1-second window
    # (each job alone keeps 50/s: without the shared quota the three reach ~150).
    assert ledger["max_window"] <= 1.1 * RATE, ledger
    assert stats["responses"].get("429", 0) == 0


async def test_a_redis_that_cannot_be_reached_stops_the_run_before_sending(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    job = _job(tmp_path, 1)
    closed = f"redis://127.0.0.1:{free_port()}/0"
    run = await dispatcher(
        *send_args(emulator.base_url, job / "in.ndjson", "--rate", f"{CODE}={RATE}"),
        "--quota-url",
        closed,
        "--results",
        job / "results.ndjson",
        cwd=job,
    )
    assert run.code == 3, run.stderr
    assert "cannot reach the shared quota's Redis" in run.stderr
    assert "Traceback" not in run.stderr
    stats = await emulator.stats()
    assert stats["codes"] == {}  # nothing sent
    assert stats["accepted"] == 0
    assert sum(stats["requests"].values()) == 0
    # no journal left behind: the job never started, a plain rerun starts it afresh
    assert not (job / "results.ndjson.journal").exists()


async def test_a_quota_url_with_a_password_is_refused_without_echoing_it(
    tmp_path: Path,
) -> None:
    job = _job(tmp_path, 1)
    secret = "s3cret-Redis-Pw-7781"
    for where in ("flag", "env"):
        args = [*send_args("http://127.0.0.1:9/", job / "in.ndjson")]
        environ = env()
        url = f"redis://:{secret}@127.0.0.1:6379/0"
        if where == "flag":
            args += ["--quota-url", url]
        else:
            environ["DISPATCHER_QUOTA_URL"] = url
        run = await dispatcher(*args, cwd=job, environ=environ)
        assert run.code == 2, run.stderr
        assert "must not carry a password" in run.stderr
        assert "DISPATCHER_REDIS_PASSWORD" in run.stderr  # the hint
        assert secret not in run.stderr
        assert secret.encode() not in run.stdout
        assert "Traceback" not in run.stderr


async def test_the_redis_password_comes_from_its_file_or_env_and_is_never_shown(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    password = "Redis-Pw-5e1d-Q93"
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = started(workdir, password=password)
    try:
        job = _job(tmp_path, 1)
        (job / "redis.password").write_text(password + "\n")
        args = [
            *send_args(emulator.base_url, job / "in.ndjson", "--rate", f"{CODE}={RATE}"),
            "--quota-url",
            server.url,
            "--log-level",
            "debug",
        ]
        ok = await dispatcher(
            *args, "--redis-password-file", "redis.password", "--results", "a.ndjson", cwd=job
        )
        assert ok.code == 0, ok.stderr
        assert len((job / "a.ndjson").read_bytes().splitlines()) == LINES
        wrong = f"{password}-wrong"
        refused = await dispatcher(
            *args,
            "--results",
            "b.ndjson",
            cwd=job,
            environ=env(DISPATCHER_REDIS_PASSWORD=wrong),
        )
        assert refused.code == 3, refused.stderr
        assert "refused the credentials" in refused.stderr
        assert not (job / "b.ndjson.journal").exists()
        for run in (ok, refused):
            assert password not in run.stderr
            assert password.encode() not in run.stdout
    finally:
        server.stop()


async def test_redis_stopped_mid_run_pauses_the_send_and_it_finishes_when_back(
    emulator_factory: EmulatorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Issue 15: Redis going away mid-run pauses sending (never exceeds, never falls back
    silently), and the same run finishes every line exactly once when it comes back."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    job = _job(tmp_path, 1)
    rate = 40
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher",
        *map(str, send_args(emulator.base_url, job / "in.ndjson", "--rate", f"{CODE}={rate}")),
        "--quota-url", redis_server.url,
        "--results", str(job / "results.ndjson"),
        cwd=job, env=env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    communicate = asyncio.ensure_future(proc.communicate())
    try:
        async with asyncio.timeout(60):
            while len(emulator.messages()) < 20:  # under way
                assert not communicate.done(), "the run ended before Redis was stopped"
                await asyncio.sleep(0.02)
        await asyncio.to_thread(redis_server.stop)
        # Bookings reach at most max_ahead (1 s) beyond now: after 2 s nothing is booked.
        await asyncio.sleep(2.0)
        paused_at = len(emulator.messages())
        await asyncio.sleep(1.5)
        still = len(emulator.messages())
        assert still - paused_at <= 2, (paused_at, still)  # a booked batch late at most
        assert still < LINES
        await asyncio.to_thread(redis_server.start)
        async with asyncio.timeout(60):
            _, err = await communicate
    finally:
        if proc.returncode is None:
            proc.kill()
            await communicate
    assert proc.returncode == 0, err.decode()
    assert "Redis is unreachable" in err.decode()
    results = [orjson.loads(line) for line in (job / "results.ndjson").read_bytes().split()]
    assert len(results) == LINES
    assert {r["status"] for r in by_line(results).values()} == {"QUEUE"}
    stats = await emulator.stats()
    assert stats["codes"][CODE]["accepted"] == LINES  # none lost, none twice
    assert stats["codes"][CODE]["max_window"] <= 1.1 * rate
