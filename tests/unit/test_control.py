"""The control channel of a running job: the protocol over a real Unix socket, its
permissions, its pointer file, and what each action does to the run's state."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.control import (
    ControlError,
    Controls,
    ControlServer,
    control_path,
    controlled,
    request,
    socket_directory,
    toggle_pause,
)
from dispatcher.limiter import RateLimits
from dispatcher.models import Status
from dispatcher.schedule import Schedule
from dispatcher.summary import Summary
from dispatcher.timing import WallClock

KINDS = {"longcode": 1.0, "shortcode": 100.0, "alphanumeric": 100.0}


@pytest.fixture(autouse=True)
def _runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets in the test's own runtime directory, not the user's."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Controls, str]]:
    results = str(tmp_path / "results.ndjson")
    summary = Summary()
    limits = RateLimits(rates={"12345": 50.0}, kind_rates=KINDS)
    schedule = Schedule(datetime.now(UTC))
    async with controlled(
        limits=limits,
        summary=summary,
        job="abc123",
        schedule=schedule,
        clock=WallClock(),
        results=results,
    ) as controls:
        yield controls, results


def unserved(schedule: Schedule, clock: WallClock) -> Any:
    """The controls of a run with ``schedule`` and no control socket."""
    return controlled(
        limits=RateLimits(rates={}, kind_rates=KINDS),
        summary=Summary(),
        job="j",
        schedule=schedule,
        clock=clock,
        results=None,
    )


async def ask(results: str, **message: Any) -> dict[str, Any]:
    """The client as ``ctl`` runs it (blocking), off the loop that serves."""
    return await asyncio.to_thread(request, results, message)


async def test_status_answers_json_with_counts_rates_and_state(
    served: tuple[Controls, str],
) -> None:
    controls, results = served
    controls.summary.statuses[Status.QUEUE] += 7
    controls.summary.sent("12345", 7, 7, controls.summary.started)
    answer = await ask(results, action="status")
    assert answer["ok"] is True
    status = answer["status"]
    assert status["job"] == "abc123"
    assert status["pid"] == os.getpid()
    assert status["state"] == "sending"
    assert status["paused"] is False
    assert status["halted"] is None
    assert status["statuses"] == {"QUEUE": 7}
    assert status["codes"]["12345"]["limit"] == 50.0
    assert status["codes"]["12345"]["sent"] == 7
    assert status["waiting_for_window"] == 0


async def test_pause_resume_and_their_counts(served: tuple[Controls, str]) -> None:
    controls, results = served
    assert (await ask(results, action="pause"))["ok"]
    assert controls.pause.paused
    assert "already paused" in (await ask(results, action="pause"))["message"]
    assert (await ask(results, action="status"))["status"]["state"] == "paused"
    gate = asyncio.create_task(controls.pause.wait())
    await asyncio.sleep(0.01)
    assert not gate.done()
    assert (await ask(results, action="resume"))["ok"]
    await asyncio.wait_for(gate, 1.0)
    assert not controls.pause.paused
    assert dict(controls.summary.controls) == {"pause": 2, "resume": 1}


async def test_cancel_halts_the_job_and_opens_a_paused_gate(served: tuple[Controls, str]) -> None:
    controls, results = served
    await ask(results, action="pause")
    gate = asyncio.create_task(controls.pause.wait())
    answer = await ask(results, action="cancel")
    assert answer["ok"]
    assert "CANCELLED" in answer["message"]
    assert controls.halt.status is Status.CANCELLED
    await asyncio.wait_for(gate, 1.0)  # a lane parked by the pause goes on to account
    assert "already CANCELLED" in (await ask(results, action="cancel"))["message"]
    assert "nothing more is sent" in (await ask(results, action="resume"))["message"]
    status = (await ask(results, action="status"))["status"]
    assert (status["state"], status["halted"]) == ("cancelled", "CANCELLED")
    assert controls.summary.as_dict()["controls"]["cancel"] == 2


async def test_rate_changes_the_limit_live(served: tuple[Controls, str]) -> None:
    controls, results = served
    answer = await ask(results, action="rate", code="12345", rate=5)
    assert answer == {"ok": True, "message": "code 12345: rate 5/s"}
    assert controls.limits.rate("12345") == 5.0
    await ask(results, action="rate", code="COMPANY", rate=None)
    assert controls.limits.rate("COMPANY") == math.inf
    codes = (await ask(results, action="status"))["status"]["codes"]
    assert codes["12345"]["limit"] == 5.0
    assert codes["COMPANY"]["limit"] is None


@pytest.mark.parametrize(
    "message",
    [
        {"action": "explode"},
        {"action": "rate", "code": "12345", "rate": -1},
        {"action": "rate", "code": "12345", "rate": "fast"},
        {"action": "rate", "code": "12345", "rate": True},
        {"action": "rate", "rate": 5},
        {"what": "status"},
    ],
)
async def test_bad_requests_are_refused_and_change_nothing(
    served: tuple[Controls, str], message: dict[str, Any]
) -> None:
    controls, results = served
    answer = await ask(results, **message)
    assert answer["ok"] is False
    assert answer["error"]
    assert controls.limits.rate("12345") == 50.0
    assert not controls.summary.controls


async def test_a_request_that_is_not_json_gets_an_error_line(
    served: tuple[Controls, str],
) -> None:
    _, results = served
    path = orjson.loads(Path(control_path(results)).read_bytes())["socket"]

    def raw() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"pause please\n")
            return sock.recv(4096)

    answer = orjson.loads(await asyncio.to_thread(raw))
    assert answer["ok"] is False


async def test_socket_and_pointer_are_owner_only_and_removed_at_the_end(
    tmp_path: Path,
) -> None:
    # A deep job directory: the socket path stays short, the pointer names it.
    deep = tmp_path.joinpath(*(["d" * 40] * 4))
    deep.mkdir(parents=True)
    results = str(deep / "results.ndjson")
    assert len(results) > 150
    controls = Controls(limits=RateLimits(rates={}, kind_rates=KINDS), summary=Summary())
    server = ControlServer(controls, results)
    await server.start()
    try:
        pointer = control_path(results)
        assert stat.S_IMODE(os.stat(pointer).st_mode) == 0o600
        path = orjson.loads(Path(pointer).read_bytes())["socket"]
        assert len(path.encode()) <= 100
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert (await ask(results, action="status"))["ok"]
    finally:
        await server.close()
    assert not os.path.exists(pointer)
    assert not os.path.exists(path)


def test_a_socket_directory_that_others_can_enter_is_made_private(tmp_path: Path) -> None:
    directory = Path(socket_directory())
    directory.chmod(0o755)
    assert socket_directory() == str(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_no_pointer_means_no_running_job(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no running job"):
        request(str(tmp_path / "results.ndjson"), {"action": "status"})


async def test_a_stale_pointer_is_reported_as_such(tmp_path: Path) -> None:
    results = str(tmp_path / "results.ndjson")
    controls = Controls(limits=RateLimits(rates={}, kind_rates=KINDS), summary=Summary())
    server = ControlServer(controls, results)
    await server.start()
    kept = Path(control_path(results)).read_bytes()
    await server.close()
    Path(control_path(results)).write_bytes(kept)  # as a kill -9 leaves it
    with pytest.raises(ControlError, match="stale"):
        await ask(results, action="status")


async def test_sigusr1_toggles_the_pause_of_the_running_job(served: tuple[Controls, str]) -> None:
    controls, _ = served
    toggle_pause()
    assert controls.pause.paused
    toggle_pause()
    assert not controls.pause.paused
    assert dict(controls.summary.controls) == {"pause": 1, "resume": 1}


async def test_an_expiry_already_past_halts_before_anything_runs(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    schedule = Schedule(now, expire_at=now - timedelta(minutes=1))
    async with unserved(schedule, WallClock()) as controls:
        assert controls.halt.status is Status.EXPIRED_UNSENT
    assert not os.path.exists(control_path(str(tmp_path / "results.ndjson")))


@pytest.mark.looptime
async def test_the_expiry_halts_the_job_at_its_moment_on_the_loop_clock() -> None:
    loop = asyncio.get_running_loop()
    clock = WallClock(datetime(2026, 12, 1, 10, 0, tzinfo=UTC), monotonic=loop.time)
    schedule = Schedule(clock.now(), expire_at=clock.now() + timedelta(seconds=90))
    start = loop.time()
    async with unserved(schedule, clock) as controls:
        assert not controls.halt.halted
        await controls.halt.wait()
        assert loop.time() - start == pytest.approx(90.0, abs=0.1)
        assert controls.halt.status is Status.EXPIRED_UNSENT
        assert "2026-12-01T10:01:30" in controls.halt.reason


@pytest.mark.looptime
async def test_the_scheduled_start_waits_and_a_stop_ends_the_wait() -> None:
    loop = asyncio.get_running_loop()
    clock = WallClock(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    schedule = Schedule(clock.now(), start_at=clock.now() + timedelta(minutes=5))
    async with unserved(schedule, clock) as controls:
        start = loop.time()
        stop = asyncio.Event()
        loop.call_later(30.0, stop.set)
        assert await controls.started(stop.wait) is False
        assert loop.time() - start == pytest.approx(30.0, abs=0.1)
        assert controls.status()["state"] == "waiting to start"
        assert await controls.started(asyncio.Event().wait) is True
        assert loop.time() - start == pytest.approx(300.0, abs=0.5)


@pytest.mark.looptime
async def test_a_cancel_during_the_start_wait_ends_it_and_the_lines_are_accounted() -> None:
    loop = asyncio.get_running_loop()
    clock = WallClock(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    schedule = Schedule(clock.now(), start_at=clock.now() + timedelta(hours=2))
    async with unserved(schedule, clock) as controls:
        start = loop.time()
        loop.call_later(90.0, lambda: controls.cancel(source="test"))
        assert await controls.started(asyncio.Event().wait) is True  # go on: to account
        assert loop.time() - start == pytest.approx(90.0, abs=0.1)
        assert controls.halt.status is Status.CANCELLED


async def test_a_dry_run_does_not_wait_for_the_start(caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(UTC)
    schedule = Schedule(now, start_at=now + timedelta(hours=1))
    async with controlled(
        limits=RateLimits(rates={}, kind_rates=KINDS),
        summary=Summary(),
        job="j",
        schedule=schedule,
        clock=WallClock(),
        results=None,
        dry_run=True,
    ) as controls:
        with caplog.at_level("INFO", logger="dispatcher.control"):
            assert await controls.started(asyncio.Event().wait) is True
    assert "dry run: the job starts at" in caplog.text
