"""A gateway that holds its answers and an input that arrives when the test says so:
races reproduced with events, never with pauses.

`held_gateway` is a real aiohttp server on 127.0.0.1:0 that answers batches as the
gateway does (QUEUE, one id per recipient), but only once the test sets ``release``.
`HeldInput` is a binary input whose every read returns the next piece the test gives
(one chunk for the reader), and which ends only when the test ends it."""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from tests.support.exactly_once import number


class HeldGateway:
    """The server's state, as the test sees it."""

    def __init__(self) -> None:
        #: set by the test: every held answer (and every later one) goes out
        self.release = asyncio.Event()
        #: set when the first request has arrived (and is being held)
        self.arrived = asyncio.Event()
        #: the body and the idempotency key of every request, in arrival order
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self.base_url = ""

    async def batch(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        self.keys.append(request.headers.get("Idempotency-Key"))
        self.arrived.set()
        await self.release.wait()
        ids = [
            {"id": f"m{len(self.bodies)}-{n}", "mobile": r["to"]} for n, r in enumerate(body["to"])
        ]
        return web.json_response(
            {"meta": {"transactionId": "held"}, "data": {"ids": ids, "status": "QUEUE"}}
        )


@contextlib.asynccontextmanager
async def held_gateway() -> AsyncIterator[HeldGateway]:
    """Serve a `HeldGateway` on an ephemeral port; everything is released at the end."""
    gateway = HeldGateway()
    app = web.Application()
    app.router.add_post("/raven/v3/messages/batch", gateway.batch)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gateway.base_url = f"http://127.0.0.1:{port}/raven"
    try:
        yield gateway
    finally:
        gateway.release.set()
        await runner.cleanup()


class HeldInput:
    """An input the test hands over piece by piece: each read (on the reader's helper
    thread) returns exactly the next piece; an empty piece ends the input."""

    name = "<held input>"

    def __init__(self) -> None:
        self._pieces: queue.Queue[bytes] = queue.Queue()

    def give(self, lines: range) -> None:
        """One piece: a recipient line for each of ``lines`` (numbers from `number`)."""
        self._pieces.put(
            b"".join(
                orjson.dumps({"to": number(line), "params": ["x", line]}) + b"\n" for line in lines
            )
        )

    def end(self) -> None:
        """End the input (again is harmless)."""
        self._pieces.put(b"")

    def read1(self, size: int) -> bytes:
        return self._pieces.get()

    def seekable(self) -> bool:
        return False
