"""A rate changed live (``dispatcher ctl JOB rate CODE=N``) on the shared quota: every
process sharing it follows, with no burst, against a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import math

import redis.asyncio as aioredis

from dispatcher.control import Controls
from dispatcher.summary import Summary
from tests.unit.quota.conftest import QuotaFactory
from tests.unit.quota.helpers import bound, max_window


async def test_a_rate_set_live_reaches_every_process_without_a_burst(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    one = await quota_factory({"C": 100})
    two = await quota_factory({"C": 100})
    await one.acquire("C", 5)
    await two.acquire("C", 5)
    answer = Controls(limits=one, summary=Summary()).set_rate("C", 10.0, source="test")
    assert answer == "code C: rate 10/s, for every job sharing the quota"
    assert one.limits.rate("C") == 10.0
    assert one.capacity("C") == 1
    while two.limits.rate("C") != 10.0:  # within RATE_POLL; the test's timeout bounds it
        await asyncio.sleep(0.02)
    assert two.capacity("C") == 1
    assert float(await raw.get(one.rate_key("C"))) == 10.0

    async def run(quota: object, out: list[tuple[float, float]]) -> None:
        for _ in range(6):
            slot = await quota.acquire("C", 1)  # type: ignore[attr-defined]
            assert slot is not None
            out.append((slot, 1.0))

    sends: list[tuple[float, float]] = []
    await asyncio.gather(run(one, sends), run(two, sends))
    slots = sorted(t for t, _ in sends)
    assert all(b - a >= 0.1 - 1e-6 for a, b in itertools.pairwise(slots))
    assert max_window(sends) <= bound(10)


async def test_a_later_job_on_the_quota_takes_the_live_rate(quota_factory: QuotaFactory) -> None:
    one = await quota_factory({"C": 100})
    await one.acquire("C", 1)
    one.share_rate("C", math.inf)
    await asyncio.sleep(0)
    later = await quota_factory({"C": 100})
    await later.acquire("C", 1)
    while later.limits.rate("C") != math.inf:
        await asyncio.sleep(0.02)
    assert await later.acquire("C", 1000) is not None  # its bookings carry no limit now
