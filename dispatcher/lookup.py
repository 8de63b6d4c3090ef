"""``dispatcher status``: ask the gateway what became of messages, by id.

For users without a delivery-report endpoint: ids come from the command line or from
a results file (every accepted line, or a random sample), and are looked up with
``GET v2/messages/{id}`` under a rate limit, a few at a time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from aiolimiter import AsyncLimiter

from dispatcher.errors import GatewayError, InputError, RetryableError
from dispatcher.gateway import GatewayClient
from dispatcher.logs import redact
from dispatcher.retry import RetryPolicy


def ids_from_results(path: str, *, sample: int | None = None, seed: int = 1) -> list[str]:
    """The gateway ids of a results file; with ``sample``, that many chosen at random
    (reservoir sampling, so the file is read once whatever its size)."""
    chosen: list[str] = []
    rng = random.Random(seed)
    seen = 0
    try:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    message_id = orjson.loads(raw).get("id")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if not message_id:
                    continue
                seen += 1
                if sample is None or len(chosen) < sample:
                    chosen.append(str(message_id))
                elif (slot := rng.randrange(seen)) < sample:
                    chosen[slot] = str(message_id)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return chosen


async def lookup(
    gateway: GatewayClient,
    ids: Iterable[str],
    *,
    rate: float = 10.0,
    concurrency: int = 4,
    policy: RetryPolicy | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield ``{"id", "status", …}`` per id, as answers arrive; a failed lookup yields
    ``{"id", "error"}`` instead of stopping the others. Status checks are reads, so
    every retryable failure is safe to retry."""
    limiter = AsyncLimiter(1, 1 / rate)
    policy = policy or RetryPolicy(max_attempts=3, retry_ambiguous=True)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    pending = list(ids)
    slots = asyncio.Semaphore(concurrency)

    async def one(message_id: str) -> None:
        try:
            async with limiter:
                data = await policy.call(lambda _: gateway.status(message_id))
            await queue.put({"id": message_id, **{k: v for k, v in data.items() if k != "id"}})
        except (GatewayError, RetryableError) as exc:
            await queue.put({"id": message_id, "error": redact(str(exc))})
        except Exception as exc:  # a bug must not leave the reader below waiting for ever
            await queue.put({"id": message_id, "error": redact(f"internal error: {exc!r}")})
        finally:
            slots.release()

    async def start_all() -> None:
        for message_id in pending:
            await slots.acquire()
            tasks.add(asyncio.create_task(one(message_id)))

    tasks: set[asyncio.Task[None]] = set()
    starter = asyncio.create_task(start_all())
    try:
        for _ in pending:
            yield await queue.get()
    finally:
        starter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(starter, *tasks, return_exceptions=True)
