"""Serving the emulator: in the current event loop for tests and demos, or as a process
(``dispatcher gateway`` runs `serve` with its signal handling)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from dispatcher.emulator.app import EMULATOR, create_app
from dispatcher.emulator.settings import EmulatorSettings
from dispatcher.emulator.state import Emulator


class RunningEmulator:
    """A started emulator: where it listens, and in-process access to its state."""

    def __init__(self, emulator: Emulator, host: str, port: int) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        #: ``http://HOST:PORT``, where ``/_emulator/...`` lives.
        self.root_url = f"http://{shown}:{port}"
        #: What a client uses as its base URL (the API's ``/raven`` prefix included).
        self.base_url = f"{self.root_url}/raven"

    @property
    def settings(self) -> EmulatorSettings:
        return self.emulator.settings

    @property
    def api_key(self) -> str:
        return self.emulator.settings.api_key

    async def stats(self) -> dict[str, Any]:
        """The same dict as ``GET /_emulator/stats``."""
        return self.emulator.stats()

    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message, as the lines of ``GET /_emulator/messages``."""
        return list(self.emulator.ledger.messages())

    async def set_faults(self, **changes: Any) -> dict[str, float]:
        """Change some fault shares or the latency; returns all fault settings."""
        return self.emulator.set_faults(**changes)

    async def reset(self) -> None:
        """Forget messages, stats and stored responses, as ``POST /_emulator/reset``."""
        self.emulator.reset()

    def __repr__(self) -> str:
        return f"<RunningEmulator {self.base_url}>"


@contextlib.asynccontextmanager
async def running_emulator(
    settings: EmulatorSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] | None = None,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[RunningEmulator]:
    """Start the emulator in the running loop (``port=0``: any free port), then stop it."""
    settings = settings or EmulatorSettings()
    app = create_app(settings, clock=clock)
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound = runner.addresses[0][1]
        yield RunningEmulator(app[EMULATOR], host, bound)
    finally:
        await runner.cleanup()


def _tune_gc() -> None:
    # Own process only (never in a test's or the client's process): what exists at
    # start-up lives forever, so freeze it out of every collection; and collect young
    # objects less often, since a batch frees almost everything it allocates. Measured
    # on batches of 1000: 1.77 -> 1.25 ms per batch together with the ledger's tuples.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(settings: EmulatorSettings, *, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; the first stdout line is ``listening on URL``."""
    if settings.access_log:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    async with running_emulator(settings, host=host, port=port) as emulator:
        _tune_gc()
        print(f"listening on {emulator.root_url}", flush=True)
        await stop.wait()
