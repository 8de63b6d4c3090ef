"""``dispatcher ctl`` against a real ``send`` in a subprocess and the real emulator on
127.0.0.1:0: pause stops the ledger from growing until resume, ``rate`` changes the rate
the emulator measures, cancel then ``--resume`` accounts for every line exactly once,
SIGUSR1 toggles pause, and ``ctl`` on a job that is not running exits 1.

No wall-clock assertions: the tests poll (bounded by the test's timeout) and compare
ratios of what the emulator's ledger recorded. The measurements are printed (``-s``)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.emulator import FaultSettings
from tests.support.cli import KEY, dispatcher, env, ndjson, write_lines
from tests.support.emulators import EmulatorFactory
from tests.support.exactly_once import TEXT, check_exactly_once, write_input
from tests.support.redis_server import RedisServer
from tests.unit.quota import conftest as quota_fixtures

#: A real Redis (or Valkey) on loopback, as the quota's own tests start it.
redis_server = quota_fixtures.redis_server

pytestmark = pytest.mark.timeout(120)


async def start_send(
    tmp_path: Path, base_url: str, lines: int | list[str], *flags: str
) -> tuple[asyncio.subprocess.Process, set[int]]:
    """``dispatcher send`` of ``lines`` recipients (or of these numbers), results in
    tmp_path/results.ndjson."""
    if isinstance(lines, int):
        valid = write_input(tmp_path / "in.ndjson", lines)
    else:
        recipients = [{"to": n, "params": ["Ana", k]} for k, n in enumerate(lines)]
        write_lines(tmp_path / "in.ndjson", recipients)
        valid = set(range(1, len(lines) + 1))
    with (tmp_path / "stderr.txt").open("wb") as stderr:  # the child keeps its own copy
        proc = await asyncio.create_subprocess_exec(
            *send_command(tmp_path, base_url, *flags),
            cwd=tmp_path,
            env=env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    return proc, valid


def send_command(tmp_path: Path, base_url: str, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "dispatcher", "send", "in.ndjson", "--from", "12345",
        "--text", TEXT, "--base-url", base_url, "--results", "results.ndjson",
        "--summary", "summary.json", "--no-progress", "--idempotency", *flags,
    ]  # fmt: skip


async def wait_for(proc: asyncio.subprocess.Process, ready: Callable[[], bool], what: str) -> None:
    """Poll until ``ready()`` while the send runs; fail if it ends first (the test's
    timeout bounds the wait)."""
    while not ready():
        if proc.returncode is not None:
            pytest.fail(f"the send ended (exit {proc.returncode}) before {what}")
        await asyncio.sleep(0.02)


async def ctl(tmp_path: Path, *args: str) -> Any:
    return await dispatcher("ctl", "results.ndjson", *args, cwd=tmp_path, environ=env(None))


async def settled_count(emulator: Any) -> int:
    """The ledger's size once it has not grown for 0.5 s (the in-flight requests have
    landed)."""
    count, still = len(emulator.messages()), 0
    while still < 25:
        await asyncio.sleep(0.02)
        now = len(emulator.messages())
        count, still = now, (still + 1 if now == count else 0)
    return count


def summary(tmp_path: Path) -> dict[str, Any]:
    return orjson.loads((tmp_path / "summary.json").read_bytes())  # type: ignore[no-any-return]


async def test_pause_stops_the_ledger_until_resume(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    proc, valid = await start_send(tmp_path, emulator.base_url, 300, "--rate", "12345=60")
    await wait_for(proc, lambda: len(emulator.messages()) >= 30, "it sent 30 messages")
    asked = asyncio.get_running_loop().time()
    paused = await ctl(tmp_path, "pause")
    answered = asyncio.get_running_loop().time()
    assert paused.code == 0, paused.stderr
    assert "paused" in paused.stdout.decode()
    before = await settled_count(emulator)
    status = await ctl(tmp_path, "status")
    assert status.code == 0, status.stderr
    state = orjson.loads(status.stdout)
    assert (state["paused"], state["state"]) == (True, "paused")
    for _ in range(50):  # a full second more: nothing new reaches the gateway
        await asyncio.sleep(0.02)
        assert len(emulator.messages()) == before
    late = [m["t"] for m in emulator.messages() if m["t"] > asked]
    print(
        f"\npause: ctl answered in {answered - asked:.3f}s; {len(late)} messages landed "
        f"after it was asked, the last {max(late, default=asked) - asked:.3f}s after"
    )
    assert (await ctl(tmp_path, "resume")).code == 0
    await wait_for(proc, lambda: len(emulator.messages()) > before, "it sent again")
    assert await proc.wait() == 0
    results = ndjson(tmp_path / "results.ndjson")
    messages, stats = emulator.messages(), await emulator.stats()
    check_exactly_once(results, valid, messages, stats, idempotent=True)
    assert summary(tmp_path)["controls"] == {"pause": 1, "resume": 1}
    logged = (tmp_path / "stderr.txt").read_text()
    assert "control (ctl): pause" in logged
    assert "pause 1, resume 1" in logged  # the summary table on stderr
    assert KEY not in logged


async def test_sigusr1_toggles_pause(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    proc, _ = await start_send(tmp_path, emulator.base_url, 200, "--rate", "12345=40")
    await wait_for(proc, lambda: (tmp_path / "results.ndjson.ctl").exists(), "it listened")
    await wait_for(proc, lambda: len(emulator.messages()) >= 10, "it sent 10 messages")
    proc.send_signal(signal.SIGUSR1)
    await wait_for(
        proc,
        lambda: "control (SIGUSR1): pause" in (tmp_path / "stderr.txt").read_text(),
        "it paused",
    )
    assert orjson.loads((await ctl(tmp_path, "status")).stdout)["paused"] is True
    proc.send_signal(signal.SIGUSR1)
    assert await proc.wait() == 0
    assert summary(tmp_path)["controls"] == {"pause": 1, "resume": 1}


async def test_sigusr1_to_a_workers_job_pauses_every_worker(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    flags = ("--rate", "12345=40", "--workers", "2")
    proc, _ = await start_send(tmp_path, emulator.base_url, 200, *flags)
    pointers = [tmp_path / f"results.ndjson.w{k}of2.ctl" for k in (1, 2)]
    await wait_for(proc, lambda: all(p.exists() for p in pointers), "the workers listened")
    await wait_for(proc, lambda: len(emulator.messages()) > 0, "it sent")
    proc.send_signal(signal.SIGUSR1)
    log = tmp_path / "stderr.txt"
    await wait_for(
        proc, lambda: log.read_text().count("control (SIGUSR1): pause") == 2, "both paused"
    )
    proc.send_signal(signal.SIGUSR1)
    assert await proc.wait() == 0, log.read_text()[-2000:]
    assert summary(tmp_path)["controls"] == {"pause": 2, "resume": 2}


async def test_rate_changes_the_rate_measured_at_the_emulator(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    proc, _ = await start_send(tmp_path, emulator.base_url, 2000, "--rate", "12345=20")
    await wait_for(proc, lambda: len(emulator.messages()) >= 40, "it sent 40 messages")
    changed = await ctl(tmp_path, "rate", "12345=80")
    assert changed.code == 0, changed.stderr
    assert "code 12345: rate 80/s" in changed.stdout.decode()
    at = asyncio.get_running_loop().time()
    count = len(emulator.messages())
    await wait_for(proc, lambda: len(emulator.messages()) >= count + 240, "240 more messages")
    status = orjson.loads((await ctl(tmp_path, "status")).stdout)
    assert status["codes"]["12345"]["limit"] == 80.0
    assert (await ctl(tmp_path, "cancel")).code == 0
    assert await proc.wait() == 4
    times = sorted(m["t"] for m in emulator.messages())
    before = [t for t in times if t < at]
    after = [t for t in times if t >= at + 1.0]  # the new rate holds within a second
    rate_before = (len(before) - 1) / (before[-1] - before[0])
    rate_after = (len(after) - 1) / (after[-1] - after[0])
    settle = _settle(times, at, 80.0)
    print(
        f"\nrate: {rate_before:.1f}/s before, {rate_after:.1f}/s after "
        f"(ratio {rate_after / rate_before:.2f}); settled {settle:.3f}s after the change; "
        f"busiest second after it: {_busiest(times, at)} messages"
    )
    assert 2.5 <= rate_after / rate_before <= 5.0  # 4 × configured, generous bounds
    assert _busiest(times, at) <= 1.5 * 80  # no burst at the change
    assert summary(tmp_path)["controls"] == {"cancel": 1, "rate": 1}


def _busiest(times: list[float], since: float) -> int:
    """The most messages in any 1-second window starting at or after ``since``."""
    later = [t for t in times if t >= since]
    best = start = 0
    for end, t in enumerate(later):
        while later[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def _settle(times: list[float], at: float, rate: float) -> float:
    """Seconds after ``at`` until a 0.5 s window first carries 80 % of ``rate``."""
    later = [t for t in times if t >= at]
    start = 0
    for end, t in enumerate(later):
        while later[start] <= t - 0.5:
            start += 1
        if end - start + 1 >= 0.8 * rate * 0.5:
            return t - at
    return float("nan")


async def test_cancel_then_resume_accounts_for_every_line_exactly_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, faults=FaultSettings(latency_ms=20.0)
    )
    proc, valid = await start_send(
        tmp_path, emulator.base_url, 600, "--rate", "12345=100", "--batch-size", "5"
    )
    await wait_for(proc, lambda: len(emulator.messages()) >= 50, "it sent 50 messages")
    cancelled = await ctl(tmp_path, "cancel")
    assert cancelled.code == 0, cancelled.stderr
    assert await proc.wait() == 4
    results = ndjson(tmp_path / "results.ndjson")
    statuses = {r["status"] for r in results}
    assert statuses == {"QUEUE", "CANCELLED"}
    check_exactly_once(results, valid, emulator.messages(), await emulator.stats(), idempotent=True)
    first = summary(tmp_path)
    assert (first["exit_code"], first["exit_reason"]) == (4, "cancelled")
    assert first["controls"] == {"cancel": 1}
    assert first["policy"]["resumable"] == first["statuses"]["CANCELLED"] > 0
    assert not (tmp_path / "results.ndjson.ctl").exists()  # the pointer went with the run

    resumed = await dispatcher(
        *send_command(tmp_path, emulator.base_url, "--resume")[3:], cwd=tmp_path
    )
    assert resumed.code == 0, resumed.stderr
    results = ndjson(tmp_path / "results.ndjson")
    assert {r["status"] for r in results} == {"QUEUE"}
    check_exactly_once(results, valid, emulator.messages(), await emulator.stats(), idempotent=True)


async def test_ctl_exits_1_when_no_job_answers(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    never = await ctl(tmp_path, "status")
    assert never.code == 1
    assert "no running job" in never.stderr
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    proc, _ = await start_send(tmp_path, emulator.base_url, 300, "--rate", "12345=20")
    await wait_for(proc, lambda: (tmp_path / "results.ndjson.ctl").exists(), "it listened")
    proc.kill()  # kill -9: the pointer stays, nobody answers behind it
    await proc.wait()
    stale = await ctl(tmp_path, "pause")
    assert stale.code == 1
    assert "stale" in stale.stderr
    assert "Traceback" not in stale.stderr


@pytest.mark.parametrize(
    "args", [["rate"], ["rate", "12345"], ["rate", "12345=-1"], ["pause", "now"], ["explode"]]
)
async def test_ctl_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    run = await ctl(tmp_path, *args)
    assert run.code == 2
    assert "dispatcher ctl" in run.stderr  # ctl's own usage error, not an unknown command
    assert "Traceback" not in run.stderr


async def test_rate_on_a_shared_quota_changes_it_for_every_job(
    emulator_factory: EmulatorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    jobs = [tmp_path / "job1", tmp_path / "job2"]
    procs = []
    for job in jobs:
        job.mkdir()
        quota = ("--quota-url", redis_server.url, "--rate", "12345=20")
        procs.append((await start_send(job, emulator.base_url, 400, *quota))[0])
    for job, proc in zip(jobs, procs, strict=True):
        await wait_for(proc, lambda job=job: (job / "results.ndjson.ctl").exists(), "it listened")
    changed = await ctl(jobs[0], "rate", "12345=100")
    assert changed.code == 0, changed.stderr
    assert "for every job sharing the quota" in changed.stdout.decode()

    while (await _limit(jobs[1])) != 100.0:  # within half a second; the timeout bounds it
        assert procs[1].returncode is None
        await asyncio.sleep(0.05)
    for job, proc in zip(jobs, procs, strict=True):
        assert (await ctl(job, "cancel")).code == 0
        assert await proc.wait() == 4


async def _limit(job: Path) -> float | None:
    status = orjson.loads((await ctl(job, "status")).stdout)
    return status["codes"].get("12345", {}).get("limit")  # type: ignore[no-any-return]


async def test_status_counts_lines_waiting_for_a_window_and_cancel_ends_their_wait(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    new_york = [f"+1212555{n:04d}" for n in range(1, 4)]
    # 03:00 in New York: the window opens at 09:00 EST, 14:00 UTC — the lines wait.
    flags = ("--window", "09:00-20:00", "--now", "2026-12-02T03:00:00-05:00")
    proc, _ = await start_send(tmp_path, emulator.base_url, new_york, *flags)
    await wait_for(proc, lambda: (tmp_path / "results.ndjson.ctl").exists(), "it listened")
    while (status := orjson.loads((await ctl(tmp_path, "status")).stdout))[
        "waiting_for_window"
    ] < 3:
        assert proc.returncode is None
        await asyncio.sleep(0.05)
    assert status["next_window_opens"] == "2026-12-02T14:00:00Z"
    assert (await ctl(tmp_path, "cancel")).code == 0
    assert await proc.wait() == 4
    results = ndjson(tmp_path / "results.ndjson")
    assert sorted(r["status"] for r in results) == ["CANCELLED"] * 3
    assert emulator.messages() == []


async def test_ctl_on_a_workers_job_speaks_to_every_worker(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Issue 15: the parent of ``--workers`` holds the job's control channel and relays
    it: pause holds every worker, status adds them up, cancel then --resume finishes
    the job exactly once."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    proc, valid = await start_send(
        tmp_path, emulator.base_url, 400, "--rate", "12345=60", "--workers", "2"
    )
    await wait_for(proc, lambda: (tmp_path / "results.ndjson.ctl").exists(), "it listened")
    await wait_for(proc, lambda: len(emulator.messages()) >= 20, "it sent 20 messages")
    paused = await ctl(tmp_path, "pause")
    assert paused.code == 0, paused.stderr
    before = await settled_count(emulator)
    for _ in range(50):  # a full second: no worker sends
        await asyncio.sleep(0.02)
        assert len(emulator.messages()) == before
    status = orjson.loads((await ctl(tmp_path, "status")).stdout)
    assert status["workers"] == 2
    assert status["paused"] is True
    assert set(status["by_worker"]) == {"1/2", "2/2"}
    assert status["codes"]["12345"]["limit"] == 60  # 30/s each, the job's rate
    assert sum(status["statuses"].values()) == status["lines"]
    cancelled = await ctl(tmp_path, "cancel")
    assert cancelled.code == 0, cancelled.stderr
    assert await proc.wait() == 4  # resumable lines remain
    assert not (tmp_path / "results.ndjson.ctl").exists()
    done = await dispatcher(
        *send_command(tmp_path, emulator.base_url, "--rate", "12345=inf")[3:],
        "--workers", "2", "--resume", cwd=tmp_path, environ=env(),
    )  # fmt: skip
    assert done.code == 0, done.stderr
    results = ndjson(tmp_path / "results.ndjson")
    check_exactly_once(results, valid, emulator.messages(), await emulator.stats(), idempotent=True)
