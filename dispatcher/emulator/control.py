"""The test controls under ``/_emulator``: stats, the message dump, faults, reset.

They need no API key: they are for the tests and benchmarks that run the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from dispatcher.emulator.state import Emulator

_JSON = "application/json"
#: Dump lines written per chunk: few writes, bounded memory.
_NDJSON_CHUNK = 1000


def add_control_routes(app: web.Application, emulator: Emulator) -> None:
    """Mount ``/_emulator/{stats,messages,faults,reset}`` for this emulator."""

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
                changes = orjson.loads(await request.read())
                if type(changes) is not dict:
                    raise ValueError("body must be a JSON object")
                current = emulator.set_faults(**changes)
            except ValueError as exc:  # JSONDecodeError is a ValueError too
                body = orjson.dumps({"error": str(exc)})
                return web.Response(status=400, body=body, content_type=_JSON)
        else:
            current = emulator.faults.settings.as_dict()
        return web.Response(body=orjson.dumps(current), content_type=_JSON)

    async def reset(request: web.Request) -> web.Response:
        emulator.reset()
        return web.Response(body=b'{"reset":true}', content_type=_JSON)

    app.router.add_get("/_emulator/stats", stats)
    app.router.add_get("/_emulator/messages", messages)
    app.router.add_get("/_emulator/faults", faults)
    app.router.add_post("/_emulator/faults", faults)
    app.router.add_post("/_emulator/reset", reset)
