"""Fixtures of the shared-quota tests: a real Redis (or Valkey) server per test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from dispatcher.limiter import RateLimits
from dispatcher.quota import open_quota
from dispatcher.quota.shared import SharedQuota
from tests.support.redis_server import RedisServer, server_binary, started

QuotaFactory = Callable[..., Coroutine[Any, Any, SharedQuota]]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started server on 127.0.0.1 (fails, never skips, without a server binary)."""
    try:
        server_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    server = started(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the test server, for looking at and poking the buckets."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def quota_factory(redis_server: RedisServer) -> AsyncIterator[QuotaFactory]:
    """Open quotas on the test server (namespace "t", rates by keyword); all closed after."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_one(rates: dict[str, float], **options: Any) -> SharedQuota:
            options.setdefault("namespace", "t")
            limits = RateLimits(rates=rates, kind_rates={})
            quota = await open_quota(redis_server.url, limits=limits, **options)
            stack.push_async_callback(quota.aclose)
            return quota

        yield open_one
