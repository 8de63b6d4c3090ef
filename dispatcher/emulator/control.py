"""The test controls under ``/_emulator``: stats, the message dump, faults, reset, and the
OpenAPI document of the gateway API the emulator serves.

They need no API key: they are for the tests and benchmarks that run the emulator. Their
errors have the API's shape (``meta.explain``); a value they cannot take is a 400.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from dispatcher.emulator.state import Emulator

_JSON = "application/json"
#: Dump lines written per chunk: few writes, bounded memory.
_NDJSON_CHUNK = 1000
OPENAPI_PATH = "/_emulator/openapi.json"


@cache
def openapi_document() -> bytes:
    """The OpenAPI 3 document of the emulated gateway API (``openapi.json`` beside this)."""
    return resources.files("dispatcher.emulator").joinpath("openapi.json").read_bytes()


def add_control_routes(app: web.Application, emulator: Emulator) -> None:
    """Mount ``/_emulator/{stats,messages,faults,reset,openapi.json}`` for this emulator."""

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(emulator.stats()), content_type=_JSON)

    async def messages(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        chunk: list[bytes] = []
        for message in emulator.ledger.messages():
            chunk.append(orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE))
            if len(chunk) >= _NDJSON_CHUNK:
                await response.write(b"".join(chunk))
                chunk.clear()
        if chunk:
            await response.write(b"".join(chunk))
        await response.write_eof()
        return response

    async def faults(request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return emulator.error(413, "body too large for a fault update")
            try:
                changes = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return emulator.error(400, f"body is not valid JSON: {exc.msg}")
            if type(changes) is not dict:
                return emulator.error(400, "body must be a JSON object of fault settings")
            try:
                current = emulator.set_faults(**changes)
            except ValueError as exc:
                return emulator.error(400, str(exc))
        else:
            current = emulator.faults.settings.as_dict()
        return web.Response(body=orjson.dumps(current), content_type=_JSON)

    async def reset(request: web.Request) -> web.Response:
        emulator.reset()
        return web.Response(body=b'{"reset":true}', content_type=_JSON)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=openapi_document(), content_type=_JSON)

    router = app.router
    for path, methods, handler in (
        ("/_emulator/stats", ("GET",), stats),
        ("/_emulator/messages", ("GET",), messages),
        ("/_emulator/faults", ("GET", "POST"), faults),
        ("/_emulator/reset", ("POST",), reset),
        (OPENAPI_PATH, ("GET",), openapi),
    ):
        for method in methods:
            if method == "GET":
                router.add_get(path, handler)  # and HEAD
            else:
                router.add_route(method, path, handler)
        # Every other method is a 405 in the API's shape.
        allowed = ("GET", "HEAD", *methods[1:]) if methods[0] == "GET" else methods
        router.add_route("*", path, emulator.method_not_allowed(*allowed))
