"""A small aiohttp app served on loopback for one test: for gateway behaviour the
emulator does not have (an answer of a given shape, a TLS certificate, a 413)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serving(
    app: web.Application, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 on a free port; yields the port, and stops the server
    however the block ends."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
