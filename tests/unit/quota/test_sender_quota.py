"""The Sender over a real `SharedQuota` (a real Redis, the real emulator): a 429 slows
the code down for every process sharing the quota, and an error Redis answers stops
the run as its fatal error, with nothing sent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from dispatcher.emulator import FaultSettings
from dispatcher.quota import QuotaError
from tests.support.emulators import EmulatorFactory
from tests.unit.quota.conftest import QuotaFactory
from tests.unit.test_sender import NO_HANG, make_batch, running_sender


async def test_a_429_slows_the_code_down_in_the_shared_quota(
    emulator_factory: EmulatorFactory,
    quota_factory: QuotaFactory,
    raw: aioredis.Redis,
    tmp_path: Path,
) -> None:
    emu = await emulator_factory(
        rate_limit=False, faults=FaultSettings(fail_429=1.0, retry_after_s=0)
    )
    quota = await quota_factory({"12345": 1000})
    async with running_sender(tmp_path, emu.base_url, max_attempts=2, limits=quota) as run:
        await run.send(make_batch(range(1, 4)))
    assert {r["status"] for r in run.results().values()} == {"FAILED"}
    await quota.aclose()  # awaits the slow-downs the retry callback started
    assert float(await raw.hget(quota.key("12345"), "f")) == 0.5


async def test_an_error_from_redis_stops_the_run_with_nothing_sent(
    emulator_factory: EmulatorFactory,
    quota_factory: QuotaFactory,
    raw: aioredis.Redis,
    tmp_path: Path,
) -> None:
    emu = await emulator_factory(rate_limit=False)
    quota = await quota_factory({"12345": 1000})
    await raw.set(quota.key("12345"), b"not a bucket")  # WRONGTYPE for the script
    async with running_sender(tmp_path, emu.base_url, limits=quota) as run:
        await run.sender.submit(make_batch(range(1, 4)))
        with pytest.raises(QuotaError):
            await asyncio.wait_for(run.sender.watch(), NO_HANG)
        await run.sender.submit(make_batch(range(4, 7)))  # taken, never started
        with pytest.raises(QuotaError):
            await asyncio.wait_for(run.sender.close(), NO_HANG)
        run.journal.commit()
        assert run.records() == []  # every line stays resumable
    assert run.results() == {}
    assert sum((await emu.stats())["requests"].values()) == 0


def test_send_without_a_quota_url_never_imports_redis(tmp_path: Path) -> None:
    # A dry run through the whole pipeline, in a fresh interpreter.
    source = tmp_path / "in.ndjson"
    source.write_text('{"to": "+525512345678"}\n')
    code = (
        "import asyncio, sys\n"
        "from dispatcher import config, pipeline\n"
        f"c = config.load(flags={{'sender': '12345', 'text': 'Hi', 'dry_run': True,"
        f" 'results': {str(tmp_path / 'out.ndjson')!r}}}, env={{}})\n"
        f"summary = asyncio.run(pipeline.run({str(source)!r}, c))\n"
        "assert summary.fatal is None, summary.fatal\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
