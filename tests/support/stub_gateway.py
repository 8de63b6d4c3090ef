"""A small real gateway on loopback that answers as a test scripts it and records every
request: for what the emulator will not do (echo the key, answer 429 with any
``Retry-After``, show the raw path a client asked for)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as it arrived: method, raw path (still percent-encoded), headers, body."""

    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class StubGateway:
    """Answers with ``handler`` (by default `accept`); ``base_url`` ends in ``/raven``."""

    handler: Handler | None = None
    requests: list[Recorded] = field(default_factory=list)
    base_url: str = ""
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.raw_path, dict(request.headers), body)
        )
        return await (self.handler or self.accept)(request)

    async def accept(self, request: web.Request) -> web.StreamResponse:
        """Accept a batch as the gateway does: one id per recipient, in order."""
        return accepted(orjson.loads(await request.read()), ids=self._ids)

    @property
    def sends(self) -> list[Recorded]:
        """The send requests (batch or single), in order."""
        return [r for r in self.requests if r.method == "POST"]


def accepted(
    body: dict[str, Any],
    *,
    ids: itertools.count[int] | None = None,
    id_of: Callable[[int], str] = lambda n: f"id-{n}",
    transaction_id: str = "tx-1",
    explain: str | None = None,
    invalid: list[str] | None = None,
) -> web.Response:
    """The gateway's 200 answer to a batch body (or a single message's): ``id_of(n)``
    for each recipient (but the ``invalid`` numbers), ``transaction_id`` and ``explain``
    in ``meta``."""
    counter = ids if ids is not None else itertools.count()
    meta: dict[str, Any] = {"timestamp": 1, "transactionId": transaction_id}
    if explain is not None:
        meta["explain"] = explain
    if isinstance(body["to"], str):  # v2/messages: one message
        single = {"id": id_of(next(counter)), "to": body["to"], "status": "QUEUE"}
        return web.json_response({"meta": meta, "data": single})
    refused = set(invalid or ())
    recipients = [r["to"] for r in body["to"]]
    data = {
        "ids": [
            {"id": id_of(next(counter)), "mobile": to} for to in recipients if to not in refused
        ],
        "invalidNumber": [to for to in recipients if to in refused],
        "status": "QUEUE",
    }
    return web.json_response({"meta": meta, "data": data})


@asynccontextmanager
async def stub_gateway(handler: Handler | None = None) -> AsyncIterator[StubGateway]:
    """Start a `StubGateway` on 127.0.0.1:0 for the duration of the block."""
    stub = StubGateway(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stub._dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        stub.base_url = f"http://127.0.0.1:{port}/raven"
        yield stub
    finally:
        await runner.cleanup()
