"""Three processes on one code through one real Redis, posting to a real emulator: no
sliding second over the bound — by the slots Redis granted, by when each process
went, and by what the gateway's ledger recorded."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from dispatcher.emulator.runner import RunningEmulator
from tests.support.redis_server import RedisServer
from tests.unit.quota.helpers import bound, max_window

RATE = 50.0
UNITS = 2  # RateLimits.capacity at 50/s
SECONDS = 3.0


async def test_three_processes_stay_within_the_bound(
    redis_server: RedisServer, emulator: RunningEmulator
) -> None:
    start = time.monotonic() + 2.0  # time for the workers to import and connect
    specs = [
        {
            "url": redis_server.url,
            "namespace": "procs",
            "code": "SHARED",
            "rate": RATE,
            "units": UNITS,
            "start": start + 0.1 * worker,  # joining at different times
            "seconds": SECONDS,
            "worker": worker,
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
        }
        for worker in range(3)
    ]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.quota_worker",
            orjson.dumps(spec).decode(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for spec in specs
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(orjson.loads(out))

    granted = [(slot, n) for r in results for _, slot, n in r["sends"]]
    went = [(t, n) for r in results for t, _, n in r["sends"]]
    assert all(len(r["sends"]) >= 10 for r in results)  # everyone got a share
    assert max_window(granted) <= RATE + UNITS  # the arithmetic, on the Redis clock
    assert max_window(went) <= bound(RATE)  # when the processes actually went
    stats = await emulator.stats()
    code = stats["codes"]["SHARED"]
    assert code["accepted"] == sum(n for _, n in went)
    assert code["max_window"] <= bound(RATE)  # at the gateway
    assert stats["rate_limited"] == 0
    assert all(
        r["stats"]["calls"] == r["stats"]["grants"] + r["stats"]["refusals"] for r in results
    )
