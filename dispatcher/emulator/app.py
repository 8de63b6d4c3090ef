"""The app factory of the gateway emulator: the gateway's routes and the test controls.

``create_app(settings)`` returns an ``aiohttp.web.Application`` with the gateway's routes
under ``/raven`` (handled by :class:`state.Emulator`) and the test controls under
``/_emulator``; :mod:`runner` serves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from dispatcher.emulator.control import add_control_routes
from dispatcher.emulator.settings import EmulatorSettings
from dispatcher.emulator.state import Emulator

EMULATOR = web.AppKey("emulator", Emulator)


def create_app(
    settings: EmulatorSettings | None = None, *, clock: Callable[[], float] | None = None
) -> web.Application:
    """The emulator as an aiohttp application; ``app[EMULATOR]`` is its state."""
    settings = settings or EmulatorSettings()
    emulator = Emulator(settings, clock or time.monotonic)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[EMULATOR] = emulator
    app.router.add_post("/raven/v2/messages", emulator.single)
    app.router.add_post("/raven/v3/messages/batch", emulator.batch)
    app.router.add_get("/raven/v2/messages/{id}", emulator.status)
    add_control_routes(app, emulator)
    app.cleanup_ctx.append(emulator.lifecycle)
    return app
