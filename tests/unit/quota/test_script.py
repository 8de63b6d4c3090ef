"""The Lua scripts' decisions on a real server, checked against the Python model."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from dispatcher.quota.gcra import SLOW, TAKE, Bucket, fmt, slow, take
from dispatcher.quota.shared import FLOOR, HOLD, RECOVERY
from tests.support.redis_server import RedisServer

KEEP_MS = 60_000
RECOVER = RECOVERY / 1e6
CODE = "dispatcher:{t}:code:C"
OTHER = "dispatcher:{t}:code:D"
ACCOUNT = "dispatcher:{t}:account"


def take_args(n: float, buckets: list[Bucket], ahead: float = 10e6) -> list[str]:
    args = [fmt(n), fmt(ahead), str(KEEP_MS), fmt(RECOVER)]
    for bucket in buckets:
        args += [fmt(bucket.interval), fmt(bucket.burst)]
    return args


async def book(
    client: aioredis.Redis, keys: list[str], n: float, buckets: list[Bucket], ahead: float = 10e6
) -> tuple[int, int, int, int]:
    granted, wait, now, factor = await client.eval(
        TAKE, len(keys), *keys, *take_args(n, buckets, ahead)
    )
    return int(granted), int(wait), int(now), int(factor)


async def cut(client: aioredis.Redis, key: str, push_us: float) -> tuple[int, int, int]:
    args = [fmt(push_us), fmt(HOLD * 1e6), fmt(FLOOR), fmt(RECOVER), str(KEEP_MS)]
    halved, factor, now = await client.eval(SLOW, 1, key, *args)
    return int(halved), int(factor), int(now)


def bucket(rate: float, burst: float) -> Bucket:
    return Bucket(interval=1e6 / rate, burst=burst)


async def test_first_batch_goes_at_once_then_back_to_back(raw: aioredis.Redis) -> None:
    b = bucket(100, 5)  # 10 ms a unit
    granted, wait, now0, factor = await book(raw, [CODE], 5, [b])
    assert (granted, wait, factor) == (1, 0, 1_000_000)
    granted, wait, now1, _ = await book(raw, [CODE], 5, [b])
    assert granted == 1
    assert now1 + wait == now0 + 50_000  # the next slot starts where the first one ended
    assert int(await raw.hget(CODE, "tat")) == now0 + 100_000


async def test_the_script_matches_the_model(raw: aioredis.Redis) -> None:
    """Random batches, slow-downs and pauses: the script and `take`/`slow` agree exactly."""
    rng = random.Random(7)
    model = {CODE: bucket(50, 2), ACCOUNT: bucket(80, 4)}
    decisions = {True: 0, False: 0}
    for _ in range(60):
        op = rng.random()
        if op < 0.15:
            push = rng.choice([0.0, 30_000.0])
            halved, factor, now = await cut(raw, CODE, push)
            cut_expected, f = slow(
                model[CODE], now, push=push, hold=HOLD * 1e6, floor=FLOOR, recover=RECOVER
            )
            assert (bool(halved), factor) == (cut_expected, int(f * 1e6))
            assert int(await raw.hget(CODE, "tat")) == model[CODE].tat
            continue
        keys = [CODE, ACCOUNT] if op < 0.6 else [CODE]
        n = rng.choice([1, 2, 3, 5])
        ahead = rng.choice([0.05e6, 10e6])
        buckets = [model[k] for k in keys]
        granted, wait, now, factor = await book(raw, keys, n, buckets, ahead)
        expect = take(buckets, n, now, ahead=ahead, recover=RECOVER)
        decisions[bool(granted)] += 1
        assert (bool(granted), wait, factor) == (
            expect.granted,
            expect.wait,
            int(expect.factor * 1e6),
        )
        for key in keys:
            for field, value in (("tat", model[key].tat), ("ln", model[key].line)):
                stored = await raw.hget(key, field)
                assert (None if stored is None else int(stored)) == value
        if rng.random() < 0.2:
            await asyncio.sleep(0.02)
    assert decisions[True] > 10
    assert decisions[False] > 10


async def test_concurrent_clients_get_disjoint_back_to_back_slots(
    redis_server: RedisServer,
) -> None:
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(4)]
    b = bucket(1000, 50)  # 1 ms a unit
    try:

        async def client_books(client: aioredis.Redis, n: int) -> list[tuple[int, int]]:
            slots = []
            for _ in range(25):
                granted, wait, now, _ = await book(client, [CODE], n, [b])
                assert granted
                slots.append((now + wait, n))
            return slots

        per_client = await asyncio.gather(
            *(client_books(c, n) for c, n in zip(clients, [5, 10, 20, 50], strict=True))
        )
    finally:
        for client in clients:
            await client.aclose()
    slots = sorted(s for slots in per_client for s in slots)
    for (start, n), (following, _) in itertools.pairwise(slots):
        # never overlapping; back to back unless the bucket ran idle (then later)
        assert following >= start + n * 1000
    assert sum(n for _, n in slots) == 25 * (5 + 10 + 20 + 50)


async def test_refused_batches_are_lined_up_to_ask_again(raw: aioredis.Redis) -> None:
    b = bucket(10, 1)  # 100 ms a unit
    waits = [(await book(raw, [CODE], 1, [b], ahead=250_000))[:2] for _ in range(3)]
    assert [granted for granted, _ in waits] == [1, 1, 1]
    tat = int(await raw.hget(CODE, "tat"))  # booked 300 ms ahead
    asks = []
    for _ in range(3):
        granted, wait, now, _ = await book(raw, [CODE], 1, [b], ahead=250_000)
        assert granted == 0
        asks.append(now + wait)
    assert int(await raw.hget(CODE, "tat")) == tat  # refusals book nothing
    # the first asks again when the booking is within reach, the others one unit apart
    assert asks == [tat - 250_000, tat - 150_000, tat - 50_000]
    assert int(await raw.hget(CODE, "ln")) == tat + 50_000


async def test_a_batch_over_the_burst_waits_its_excess_first(raw: aioredis.Redis) -> None:
    b = bucket(10, 1)
    granted, wait, now, _ = await book(raw, [CODE], 3, [b])
    assert (granted, wait) == (1, 200_000)  # (3 - 1) units of 100 ms before it goes
    assert int(await raw.hget(CODE, "tat")) == now + 500_000


async def test_the_account_bucket_limits_every_code(raw: aioredis.Redis) -> None:
    account = bucket(20, 1)  # 50 ms a unit, shared
    slots = []
    for key in [CODE, OTHER, CODE, OTHER]:
        granted, wait, now, _ = await book(raw, [key, ACCOUNT], 1, [bucket(100, 5), account])
        assert granted
        slots.append(now + wait)
    assert all(b - a >= 50_000 for a, b in itertools.pairwise(slots))


async def test_slow_down_pushes_every_sender_back_and_halves_once_per_hold(
    raw: aioredis.Redis,
) -> None:
    b = bucket(100, 5)
    await book(raw, [CODE], 5, [b])
    halved, factor, now = await cut(raw, CODE, 300_000)
    assert (halved, factor) == (1, 500_000)
    assert int(await raw.hget(CODE, "tat")) == now + 300_000
    halved, factor, _ = await cut(raw, CODE, 0)  # the same storm: no second cut
    assert halved == 0
    assert 500_000 <= factor < 510_000
    granted, wait, now2, factor = await book(raw, [CODE], 5, [b])
    assert granted
    assert now2 + wait == now + 300_000
    assert 500_000 <= factor < 510_000
    # at half the rate, the batch owns twice the time
    assert int(await raw.hget(CODE, "tat")) == pytest.approx(
        now + 300_000 + 5 * 10_000 / 0.5, abs=2_000
    )


async def test_the_factor_recovers_additively(raw: aioredis.Redis) -> None:
    await raw.hset(CODE, mapping={"f": "0.5", "cut": "0"})  # cut long ago: fully recovered
    _, _, _, factor = await book(raw, [CODE], 1, [bucket(100, 5)])
    assert factor == 1_000_000
    t = await raw.time()
    now = t[0] * 1_000_000 + t[1]
    await raw.hset(CODE, mapping={"f": "0.5", "cut": str(now - 2_000_000)})  # 2 s ago
    _, _, _, factor = await book(raw, [CODE], 1, [bucket(100, 5)])
    assert factor == pytest.approx(600_000, abs=2_000)  # 0.5 + 2 s x 0.05/s


async def test_keys_expire_and_share_one_cluster_slot(raw: aioredis.Redis) -> None:
    await book(raw, [CODE, ACCOUNT], 1, [bucket(100, 5), bucket(100, 5)])
    for key in (CODE, ACCOUNT):
        ttl = await raw.pttl(key)
        assert 0 < ttl <= 10 + KEEP_MS
    assert key_slot(CODE.encode()) == key_slot(ACCOUNT.encode()) == key_slot(OTHER.encode())
