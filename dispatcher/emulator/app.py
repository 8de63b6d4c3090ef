"""The app factory of the gateway emulator: the gateway's routes and the test controls.

``create_app(settings)`` returns an ``aiohttp.web.Application`` with the gateway's routes
under ``/raven`` (handled by :class:`state.Emulator`) and the test controls under
``/_emulator``; :mod:`runner` serves it.

Every answer is JSON in the API's shape, errors included: another method on a known
path is a 405 with ``Allow``, an unknown path a 404, both with ``meta.explain``. They are
routes of their own (a ``*`` route after each path's real ones, a catch-all last), not a
middleware, so the send endpoints pay nothing for them.
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
    router = app.router
    router.add_post("/raven/v2/messages", emulator.single)
    router.add_route("*", "/raven/v2/messages", emulator.method_not_allowed("POST"))
    router.add_post("/raven/v3/messages/batch", emulator.batch)
    router.add_route("*", "/raven/v3/messages/batch", emulator.method_not_allowed("POST"))
    router.add_get("/raven/v2/messages/{id}", emulator.status)
    router.add_route("*", "/raven/v2/messages/{id}", emulator.method_not_allowed("GET", "HEAD"))
    add_control_routes(app, emulator)
    router.add_route("*", "/{path:.*}", emulator.not_found)
    app.cleanup_ctx.append(emulator.lifecycle)
    return app
