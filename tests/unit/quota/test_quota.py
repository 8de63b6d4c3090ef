"""`SharedQuota` on a real server: bookings, sharing, the slow-down, start-up errors,
credentials, and a Redis that goes away mid-run."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from dispatcher.config import Secret
from dispatcher.errors import ConfigError, FatalError
from dispatcher.limiter import RateLimits
from dispatcher.quota import QuotaError, QuotaUnavailable, check_url, namespace_for, open_quota
from dispatcher.quota.shared import SharedQuota
from tests.support.redis_server import RedisServer, free_port, started
from tests.unit.quota.conftest import QuotaFactory
from tests.unit.quota.helpers import bound, max_window

LIMITS = RateLimits(rates={"C": 100}, kind_rates={})


async def redis_time(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1e6


async def test_batches_book_slots_within_the_bound(quota_factory: QuotaFactory) -> None:
    quota = await quota_factory({"C": 40})
    assert quota.capacity("C") == 2
    slots = [await quota.acquire("C", 2) for _ in range(30)]
    assert all(slot is not None for slot in slots)
    sends = [(slot, 2.0) for slot in slots if slot is not None]
    assert max_window(sends) <= bound(40)
    assert quota.stats.grants == 30
    assert quota.stats.calls == 30  # one round trip per batch


async def test_a_process_shares_its_code_first_come_first_served(
    quota_factory: QuotaFactory,
) -> None:
    quota = await quota_factory({"C": 100})
    order: list[int] = []

    async def batch(i: int) -> None:
        await quota.acquire("C", 5)
        order.append(i)

    await asyncio.gather(*(batch(i) for i in range(8)))
    assert order == list(range(8))


async def test_small_batches_waiting_together_share_one_booking(
    quota_factory: QuotaFactory,
) -> None:
    quota = await quota_factory({"C": 100})  # capacity 5
    slots = await asyncio.gather(*(quota.acquire("C", 1) for _ in range(12)))
    assert quota.stats.calls == 3  # 12 units waiting: bookings of 5, 5 and 2
    assert len(set(slots)) == 3
    assert slots == sorted(slots)  # first come, first served


async def test_a_caller_that_gives_up_loses_nothing_for_the_others(
    quota_factory: QuotaFactory,
) -> None:
    quota = await quota_factory({"C": 10})  # 1 unit a batch, 100 ms apart
    first = asyncio.create_task(quota.acquire("C", 1))
    second = asyncio.create_task(quota.acquire("C", 1))
    third = asyncio.create_task(quota.acquire("C", 1))
    await first
    second.cancel()
    assert await third is not None
    assert second.cancelled()


async def test_codes_without_a_limit_never_ask_redis(quota_factory: QuotaFactory) -> None:
    quota = await quota_factory({"FREE": math.inf})
    assert await quota.acquire("FREE", 1000) is None
    assert await quota.acquire("C", 0) is None
    assert quota.stats.calls == 0
    assert quota.rate("FREE") == math.inf


async def test_the_account_rate_caps_every_code(quota_factory: QuotaFactory) -> None:
    quota = await quota_factory({"A": 100, "B": 100}, account_rate=20)
    assert quota.capacity("A") == 1  # the account's capacity is the smaller
    assert quota.rate("A") == 20
    slots = [await quota.acquire(code, 1) for code in "ABABAB"]
    sends = [(slot, 1.0) for slot in slots if slot is not None]
    assert all(b - a >= 0.05 - 1e-6 for (a, _), (b, _) in itertools.pairwise(sends))


async def test_two_processes_share_one_bucket(quota_factory: QuotaFactory) -> None:
    one = await quota_factory({"C": 40})
    two = await quota_factory({"C": 40})

    async def run(quota: SharedQuota, out: list[tuple[float, float]]) -> None:
        for _ in range(15):
            slot = await quota.acquire("C", 2)
            assert slot is not None
            out.append((slot, 2.0))

    sends: list[tuple[float, float]] = []
    await asyncio.gather(run(one, sends), run(two, sends))
    slots = sorted(t for t, _ in sends)
    assert all(b - a >= 0.05 - 1e-6 for a, b in itertools.pairwise(slots))
    assert max_window(sends) <= bound(40)


async def test_namespaces_do_not_share(quota_factory: QuotaFactory) -> None:
    prod = await quota_factory({"C": 10}, namespace="prod")
    test = await quota_factory({"C": 10}, namespace="loadtest")
    assert prod.key("C") != test.key("C")
    first, second = await prod.acquire("C", 1), await test.acquire("C", 1)
    assert first is not None
    assert second is not None
    assert abs(second - first) < 0.05  # both went at once: separate buckets


async def test_a_slow_down_reaches_every_process(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    one = await quota_factory({"C": 100})
    two = await quota_factory({"C": 100})
    await one.acquire("C", 5)
    pushed_at = await redis_time(raw)
    assert await one.push_back("C", 0.3) == 0.5
    assert await one.push_back("C", 0.3) == pytest.approx(0.5, abs=0.01)  # once per storm
    slot = await two.acquire("C", 5)
    assert slot is not None
    assert slot >= pushed_at + 0.3


async def test_slow_down_from_a_callback_is_awaited_on_close(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    quota = await quota_factory({"C": 100})
    quota.slow_down("C", 2.0)  # sync, as Throttle.slow_down is called from _on_retry
    await quota.aclose()
    assert float(await raw.hget(quota.key("C"), "f")) == 0.5


async def test_a_flushed_script_is_sent_again(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    quota = await quota_factory({"C": 100})
    await quota.acquire("C", 5)
    await raw.script_flush()
    await quota.acquire("C", 5)
    assert quota.stats.calls == 3  # EVALSHA, then EVALSHA (NOSCRIPT) + EVAL
    assert quota.stats.grants == 2


# --- start-up and credentials ---------------------------------------------------------


async def test_unreachable_redis_at_start_is_fatal_with_a_clear_message() -> None:
    port = free_port()
    with pytest.raises(QuotaUnavailable) as caught:
        await open_quota(f"redis://127.0.0.1:{port}/0", limits=LIMITS, namespace="t")
    assert isinstance(caught.value, FatalError)
    assert caught.value.exit_code == 3
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "nothing was sent" in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2secret@127.0.0.1:6379/0",
        "rediss://user:hunter2secret@redis.example:6380/1",
        "redis://127.0.0.1:6379/0?password=hunter2secret",
    ],
)
def test_a_password_in_the_url_is_refused_with_a_hint(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    message = str(caught.value)
    assert "hunter2secret" not in message
    assert "DISPATCHER_REDIS_PASSWORD" in message


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://user@redis.example:6380/1", "unix:///r.sock"]
)
def test_urls_without_a_password_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://", "not a url", "redis://h:x/0"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        check_url(url)


async def test_rediss_makes_a_tls_client() -> None:
    from dispatcher.quota.shared import connect

    port = free_port()
    with pytest.raises(QuotaUnavailable):
        await connect(f"rediss://127.0.0.1:{port}/0", password=None, io_timeout=1.0)
    client = aioredis.Redis.from_url(f"rediss://127.0.0.1:{port}/0")
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    await client.aclose()


async def test_the_password_is_a_secret_never_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = started(tmp_path, password="s3cret-pass")
    try:
        with pytest.raises(QuotaUnavailable) as caught:
            await open_quota(server.url, limits=LIMITS, namespace="t")
        assert "DISPATCHER_REDIS_PASSWORD" in str(caught.value)
        with pytest.raises(QuotaUnavailable) as caught:
            await open_quota(
                server.url, limits=LIMITS, namespace="t", password=Secret("wrong-pass")
            )
        assert "wrong-pass" not in str(caught.value)
        assert "credentials" in str(caught.value)
        quota = await open_quota(
            server.url, limits=LIMITS, namespace="t", password=Secret("s3cret-pass")
        )
        async with quota:
            assert await quota.acquire("C", 5) is not None
    finally:
        server.stop()
    assert "s3cret-pass" not in caplog.text


async def test_bad_settings_are_config_errors(redis_server: RedisServer) -> None:
    for options in (
        {"fallback": "open"},
        {"peers": 0},
        {"namespace": "{x}"},
        {"account_rate": 0.0},
        {"max_ahead": 0.0},
    ):
        kwargs: dict[str, object] = {"namespace": "t", **options}
        with pytest.raises(ConfigError):
            await open_quota(redis_server.url, limits=LIMITS, **kwargs)  # type: ignore[arg-type]


def test_the_namespace_comes_from_the_gateway_url() -> None:
    prod = namespace_for("https://elastic.messangi.me/raven")
    assert prod == namespace_for("HTTPS://Elastic.Messangi.me/raven/")
    assert prod != namespace_for("http://127.0.0.1:8080/raven")
    assert prod.startswith("sms-")
    assert len(prod) == 14


def test_the_tool_runs_without_the_redis_package() -> None:
    """Importing the quota needs no redis; opening it without redis is a ConfigError."""
    code = (
        "import sys, asyncio; sys.modules['redis'] = None\n"
        "import dispatcher.quota as q, dispatcher.cli\n"
        "from dispatcher.limiter import RateLimits\n"
        "from dispatcher.errors import ConfigError\n"
        "try:\n"
        "    asyncio.run(q.open_quota('redis://127.0.0.1:1/0', namespace='t',\n"
        "                limits=RateLimits(rates={}, kind_rates={})))\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'sms-dispatcher[redis]'" in done.stdout


# --- Redis going away mid-run -----------------------------------------------------------


async def _send_continuously(
    quota: SharedQuota, code: str, units: float, out: list[tuple[float, float | None]]
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        slot = await quota.acquire(code, units)
        out.append((loop.time(), slot))


async def test_an_outage_pauses_then_resumes_without_exceeding(
    quota_factory: QuotaFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatcher.quota")
    quota = await quota_factory({"C": 40}, max_ahead=0.2)
    loop = asyncio.get_running_loop()
    grants: list[tuple[float, float | None]] = []
    sender = asyncio.create_task(_send_continuously(quota, "C", 2, grants))
    try:
        await asyncio.sleep(0.4)
        await asyncio.to_thread(redis_server.stop)
        stopped = loop.time()
        await asyncio.sleep(1.0)
        assert not quota.available
        # bookings made before the stop (at most max_ahead of them) may still go; nothing else
        assert not [t for t, _ in grants if t > stopped + 0.2 + 0.05]
        await asyncio.to_thread(redis_server.start)
        restarted = loop.time()
        for _ in range(60):
            await asyncio.sleep(0.05)
            if any(t > restarted for t, _ in grants):
                break
        assert any(t > restarted for t, _ in grants), "acquisitions did not resume"
        await asyncio.sleep(0.3)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert quota.stats.outages == 1
    assert max_window([(t, 2.0) for t, _ in grants]) <= bound(40)
    assert await quota.push_back("C", None) == 0.5  # Redis's bucket, fresh after the restart
    assert "Redis is unreachable" in caplog.text
    assert "Redis is back" in caplog.text


async def test_the_local_fallback_runs_at_a_share_while_redis_is_down(
    quota_factory: QuotaFactory, redis_server: RedisServer
) -> None:
    quota = await quota_factory({"C": 40}, max_ahead=0.2, fallback="local", peers=2)
    loop = asyncio.get_running_loop()
    grants: list[tuple[float, float | None]] = []
    sender = asyncio.create_task(_send_continuously(quota, "C", 2, grants))
    try:
        await asyncio.sleep(0.3)
        stopping = loop.time()  # Redis may be gone before stop() returns
        await asyncio.to_thread(redis_server.stop)
        stopped = loop.time()
        await asyncio.sleep(1.5)
        during = [(t, 2.0) for t, slot in grants if t > stopped and slot is None]
        assert during, "the fallback let nothing through"
        assert min(t for t, _ in during) >= stopping + 0.2  # not before max_ahead has passed
        assert max_window(during) <= 40 / 2 + 2  # rate / peers + one batch
        assert await quota.push_back("C", None) == 0.5  # a 429 now slows the local share
        await asyncio.to_thread(redis_server.start)
        restarted = loop.time()
        for _ in range(60):
            await asyncio.sleep(0.05)
            if any(t > restarted and slot is not None for t, slot in grants):
                break
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert any(t > restarted and slot is not None for t, slot in grants), "not back on Redis"
    # every grant without a Redis slot was the fallback's (also those made while the
    # server was starting again, which neither window above counts)
    assert quota.stats.local_grants == sum(1 for _, slot in grants if slot is None)


async def test_a_demoted_primary_pauses_until_promoted_again(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    """A failover seen from the old primary: READONLY is an outage, not an error."""
    quota = await quota_factory({"C": 40}, max_ahead=0.2)
    await quota.acquire("C", 2)
    await raw.replicaof("127.0.0.1", str(free_port()))  # a primary that is not there
    loop = asyncio.get_running_loop()
    demoted = loop.time()
    grants: list[tuple[float, float | None]] = []
    sender = asyncio.create_task(_send_continuously(quota, "C", 2, grants))
    try:
        await asyncio.sleep(0.8)
        assert not quota.available
        assert not [t for t, _ in grants if t > demoted + 0.2 + 0.05]
        await raw.replicaof("NO", "ONE")
        promoted = loop.time()
        for _ in range(60):
            await asyncio.sleep(0.05)
            if any(t > promoted for t, _ in grants):
                break
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert any(t > promoted for t, _ in grants), "acquisitions did not resume"
    assert quota.stats.outages == 1


async def test_an_answer_waiting_cannot_cure_is_a_quota_error(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    quota = await quota_factory({"C": 40})
    await raw.set(quota.key("C"), "not a bucket")
    with pytest.raises(QuotaError, match="WRONGTYPE"):
        await quota.acquire("C", 2)


async def test_closing_cancels_the_batches_still_waiting(quota_factory: QuotaFactory) -> None:
    quota = await quota_factory({"C": 2})  # 500 ms a batch
    await quota.acquire("C", 1)
    waiting = asyncio.create_task(quota.acquire("C", 1))
    await asyncio.sleep(0.05)
    await quota.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
