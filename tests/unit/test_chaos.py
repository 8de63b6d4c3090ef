"""Exactly once under faults: the real pipeline against the emulator's fault flags,
and against small real servers that misbehave in ways the emulator does not.

Every run checks the invariants of SPEC §5 with the emulator's ledger
(`tests.support.exactly_once.check_exactly_once`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from dispatcher import pipeline
from dispatcher.config import Config, Secret
from dispatcher.emulator import FaultSettings, RunningEmulator
from dispatcher.errors import AuthError, GatewayUnreachable
from dispatcher.journal import journal_path
from tests.support.emulators import TEST_KEY, EmulatorFactory
from tests.support.exactly_once import (
    Account,
    check_exactly_once,
    read_results,
    send_config,
    write_input,
)

pytestmark = pytest.mark.chaos

CHAOS = FaultSettings(
    fail_429=0.05,
    fail_500_before=0.05,
    fail_500_after=0.05,
    drop_after=0.02,
    drop_before=0.02,
    latency_ms=1.0,
    jitter_ms=1.0,
    retry_after_s=0,
)


def make_config(tmp_path: Path, base_url: str, **changes: Any) -> Config:
    chaos = {"batch_size": 100, "concurrency": 8, "max_attempts": 8, "timeout": 5.0}
    return send_config(
        tmp_path, base_url, invalid=str(tmp_path / "invalid.ndjson"), **{**chaos, **changes}
    )


async def ledger_check(
    emu: RunningEmulator, tmp_path: Path, lines: set[int], *, idempotent: bool
) -> Account:
    """The run's results against the emulator's ledger (`check_exactly_once`)."""
    results = read_results(tmp_path / "results.ndjson")
    return check_exactly_once(
        results, lines, emu.messages(), await emu.stats(), idempotent=idempotent
    )


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
async def test_chaos_50k_exactly_once(
    emulator_factory: EmulatorFactory, tmp_path: Path, idempotent: bool
) -> None:
    emu = await emulator_factory(rate_limit=False, faults=CHAOS, seed=7)
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 50_000)
    config = make_config(tmp_path, emu.base_url, idempotency=idempotent)
    summary = await pipeline.run(str(source), config)
    stats = await emu.stats()
    account = check_exactly_once(
        read_results(tmp_path / "results.ndjson"),
        lines,
        emu.messages(),
        stats,
        idempotent=idempotent,
    )
    faults = stats["faults"]
    assert all(faults[kind] > 0 for kind in ("429", "500_before", "500_after", "drop_after"))
    assert summary.fatal is None
    if idempotent:
        assert account.by_status == {"QUEUE": 50_000}
        assert stats["replays"] > 0  # lost answers were recovered by replaying the key
        assert summary.exit_code() == 0
    else:
        assert account.by_status["AMBIGUOUS"] > 0
        assert account.by_status["QUEUE"] + account.by_status["AMBIGUOUS"] + account.by_status[
            "FAILED"
        ] == len(lines)
        assert summary.exit_code() == 1
    assert summary.retries.total() > 0  # type: ignore[attr-defined]


async def test_413_splits_until_batches_fit(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, max_batch=30)
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 1000)
    summary = await pipeline.run(str(source), make_config(tmp_path, emu.base_url))
    account = await ledger_check(emu, tmp_path, lines, idempotent=True)
    assert account.by_status == {"QUEUE": 1000}
    assert summary.retries["413-split"] > 0


async def test_429_storm_slows_the_whole_code(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(
        rate_limit=False, faults=FaultSettings(fail_429=0.5, retry_after_s=0), seed=3
    )
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 3000)
    summary = await pipeline.run(str(source), make_config(tmp_path, emu.base_url, max_attempts=12))
    account = await ledger_check(emu, tmp_path, lines, idempotent=True)
    assert account.by_status == {"QUEUE": 3000}
    assert summary.retries["429"] > 0


async def test_auth_failure_aborts_then_resume_finishes(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False)
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 500)
    wrong = make_config(tmp_path, emu.base_url, api_key=Secret("expired-key-123"))
    summary = await pipeline.run(str(source), wrong)
    assert isinstance(summary.fatal, AuthError)
    assert "expired or revoked" in str(summary.fatal)
    assert emu.messages() == []
    assert read_results(tmp_path / "results.ndjson") == []  # nothing to report yet: resumable
    resumed = await pipeline.run(str(source), make_config(tmp_path, emu.base_url, resume=True))
    assert resumed.fatal is None
    account = await ledger_check(emu, tmp_path, lines, idempotent=False)
    assert account.by_status == {"QUEUE": 500}


async def test_unreachable_gateway_aborts_quickly_and_resumably(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    write_input(source, 300)
    config = make_config(tmp_path, "http://127.0.0.1:9/raven", max_attempts=3)
    summary = await pipeline.run(str(source), config)
    assert isinstance(summary.fatal, GatewayUnreachable)
    assert "cannot connect" in str(summary.fatal)
    assert read_results(tmp_path / "results.ndjson") == []
    journal = Path(journal_path(config.results)).read_bytes()
    assert b'"unsent"' in journal


# --- a gateway that answers garbage -------------------------------------------------

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def html_502(request: web.Request) -> web.StreamResponse:
    return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>")


async def truncated_json(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200, body=b'{"meta": {"transactionId": "t"}, "data": {"ids": [{"id"')


async def wrong_id_count(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    ids = [{"id": f"x{n}", "mobile": r["to"]} for n, r in enumerate(body["to"][:-1])]
    return web.json_response({"meta": {}, "data": {"ids": ids, "status": "QUEUE"}})


async def too_slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(2)
    return web.json_response({})


async def reset(request: web.Request) -> web.StreamResponse:
    await request.read()
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


async def always_503(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"meta": {"explain": "maintenance"}}, status=503, headers={"Retry-After": "0"}
    )


async def echo_key_400(request: web.Request) -> web.StreamResponse:
    explain = f"bad request from {request.headers.get('Authorization')}"
    return web.json_response({"meta": {"explain": explain}}, status=400)


@pytest.fixture
async def bad_gateway() -> AsyncIterator[Callable[[Behaviour], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(behaviour: Behaviour) -> str:
        app = web.Application()
        app.router.add_route("POST", "/raven/{tail:.*}", behaviour)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/raven"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("behaviour", "status", "error"),
    [
        (html_502, "AMBIGUOUS", "HTTP 502"),
        (truncated_json, "AMBIGUOUS", "not a JSON object"),
        (wrong_id_count, "AMBIGUOUS", "for a batch of"),
        (too_slow, "AMBIGUOUS", "no answer"),
        (reset, "AMBIGUOUS", "closed the connection"),
        (always_503, "FAILED", "HTTP 503"),
        (echo_key_400, "FAILED", "HTTP 400"),
    ],
)
async def test_garbage_gateway_never_crashes_or_hangs(
    bad_gateway: Callable[[Behaviour], Awaitable[str]],
    tmp_path: Path,
    behaviour: Behaviour,
    status: str,
    error: str,
) -> None:
    base_url = await bad_gateway(behaviour)
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 250, bad_every=50)
    config = make_config(
        tmp_path, base_url, timeout=0.3, max_attempts=3, rejects=str(tmp_path / "rej")
    )
    summary = await asyncio.wait_for(pipeline.run(str(source), config), 30)
    results = read_results(tmp_path / "results.ndjson")
    assert sorted(r["line"] for r in results) == list(range(1, 251))
    sent = [r for r in results if r["line"] in lines]
    assert {r["status"] for r in sent} == {status}
    assert all(error in r["error"] for r in sent), sent[0]["error"]
    assert all(TEST_KEY not in r["error"] for r in sent)  # the key is masked even when echoed
    assert summary.fatal is None
    assert summary.exit_code() == 1


async def test_truncated_gzip_sends_what_came_before(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    import gzip

    emu = await emulator_factory(rate_limit=False)
    plain = tmp_path / "in.ndjson"
    write_input(plain, 2000)
    packed = gzip.compress(plain.read_bytes())
    source = tmp_path / "in.ndjson.gz"
    source.write_bytes(packed[: len(packed) // 2])
    summary = await pipeline.run(str(source), make_config(tmp_path, emu.base_url))
    assert summary.fatal is not None
    assert "in.ndjson.gz" in str(summary.fatal)
    results = read_results(tmp_path / "results.ndjson")
    assert results, "lines before the break must still be sent"
    assert {r["status"] for r in results} == {"QUEUE"}
    assert sorted(r["line"] for r in results) == list(range(1, len(results) + 1))
    assert len(emu.messages()) == len(results)


async def test_unwritable_results_path(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    from dispatcher.errors import OutputError

    emu = await emulator_factory(rate_limit=False)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the results directory should be")
    source = tmp_path / "in.ndjson"
    write_input(source, 10)
    with pytest.raises(OutputError, match="cannot write"):
        await pipeline.run(str(source), make_config(blocker, emu.base_url))
    assert emu.messages() == []  # nothing is sent when the results cannot be written
