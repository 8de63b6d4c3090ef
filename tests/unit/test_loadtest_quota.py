"""``loadtest --quota-url``: the load test's requests book the shared quota first (a real
Redis or Valkey on loopback, `tests.support.redis_server`; the real emulator).

No timing assertion: what is checked is what the quota granted (the emulator's ledger
and the report's counts), which a slow machine can only make smaller.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from dispatcher.config import Secret
from dispatcher.emulator import FaultSettings
from dispatcher.errors import ConfigError
from dispatcher.loadtest import LoadTest, run_loadtest
from dispatcher.quota import QuotaUnavailable, namespace_for
from tests.support.emulators import TEST_KEY, EmulatorFactory
from tests.support.redis_server import RedisServer, free_port
from tests.unit.quota import conftest as quota_fixtures

redis_server = quota_fixtures.redis_server

CODE = "12345"


async def test_requests_wait_for_the_quota_and_count_as_late_starts(
    emulator_factory: EmulatorFactory, redis_server: RedisServer
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    # 40 requests/s asked of a code limited to 10/s: most wait for the quota.
    test = LoadTest(
        rate=40,
        duration=1.5,
        sender=CODE,
        base_url=emulator.base_url,
        api_key=Secret(TEST_KEY),
        quota_url=redis_server.url,
        quota_rate=10,
    )
    report = await run_loadtest(test, live=None)
    quota = report["quota"]
    assert quota["namespace"] == namespace_for(emulator.base_url)
    assert quota["code_rate"] == 10
    assert quota["late_starts"] > 0
    assert report["late_starts"] >= quota["late_starts"]
    assert report["requests"] == 60
    assert report["sent"] + report["dropped"] == report["requests"]
    assert report["dropped"] > 0  # still waiting for the quota when the window ended
    stats = await emulator.stats()
    ledger = stats["codes"][CODE]
    assert ledger["accepted"] == report["sent"]
    # SPEC §4's bound for 10/s (R + 1 below 10/s, 1.1 R from it): no burst at start
    assert ledger["max_window"] <= 11, ledger
    # the test's bucket is in Redis, under the target's namespace
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = await client.keys("dispatcher:*")
    finally:
        await client.aclose()
    assert f"dispatcher:{{{quota['namespace']}}}:code:{CODE}".encode() in keys


async def test_a_429_slows_the_code_down_for_everyone_sharing_the_quota(
    emulator_factory: EmulatorFactory, redis_server: RedisServer
) -> None:
    emulator = await emulator_factory(
        rate_limit=False, faults=FaultSettings(fail_429=1.0, retry_after_s=0)
    )
    test = LoadTest(
        rate=20,
        duration=0.5,
        sender=CODE,
        base_url=emulator.base_url,
        api_key=Secret(TEST_KEY),
        quota_url=redis_server.url,
        quota_namespace="shared",
        quota_rate=100,
    )
    report = await run_loadtest(test, live=None)
    assert report["outcomes"]["429"] == report["requests"] > 0
    client = aioredis.Redis.from_url(redis_server.url)
    try:  # the run closed the quota, which awaits the slow-downs it started
        factor = await client.hget(f"dispatcher:{{shared}}:code:{CODE}", "f")
    finally:
        await client.aclose()
    assert factor is not None  # without the slow-down the bucket has no factor
    assert float(factor) == 0.5  # halved (at most once a second)


async def test_without_a_quota_the_report_has_none(emulator_factory: EmulatorFactory) -> None:
    emulator = await emulator_factory(rate_limit=False)
    test = LoadTest(rate=20, duration=0.5, base_url=emulator.base_url, api_key=Secret(TEST_KEY))
    report = await run_loadtest(test, live=None)
    assert report["quota"] is None
    assert report["requests"] == 10


async def test_a_redis_that_cannot_be_reached_stops_the_test_before_any_request(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    test = LoadTest(
        rate=50,
        duration=1.0,
        base_url=emulator.base_url,
        api_key=Secret(TEST_KEY),
        quota_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    with pytest.raises(QuotaUnavailable, match="cannot reach the shared quota's Redis"):
        await run_loadtest(test, live=None)
    stats = await emulator.stats()
    assert sum(stats["requests"].values()) == 0


def test_a_quota_url_with_a_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="must not carry a password") as caught:
        LoadTest(quota_url="redis://:hunter2-Pw@127.0.0.1:6379/0")
    assert "hunter2-Pw" not in str(caught.value)


def test_quota_options_need_a_quota_url() -> None:
    with pytest.raises(ConfigError, match="need --quota-url"):
        LoadTest(quota_rate=10)
    with pytest.raises(ConfigError, match="--quota-namespace"):
        LoadTest(quota_url="redis://127.0.0.1:6379/0", quota_namespace="no spaces")


def test_the_code_rate_defaults_to_its_kind_as_send_has_it() -> None:
    assert LoadTest(sender="12345").code_rate == 100.0
    assert LoadTest(sender="5215512345678").code_rate == 1.0
    assert LoadTest(quota_url="redis://h:1/0", quota_rate=7).code_rate == 7


def test_loadtest_without_a_quota_url_never_imports_redis(tmp_path: Path) -> None:
    # A whole short load test against the embedded emulator, in a fresh interpreter.
    code = (
        "import asyncio, sys\n"
        "from dispatcher.loadtest import LoadTest, run_loadtest\n"
        "report = asyncio.run(run_loadtest(LoadTest(rate=20, duration=0.2), live=None))\n"
        "assert report['requests'] == 4, report['requests']\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
