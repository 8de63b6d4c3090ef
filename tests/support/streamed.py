"""An answer as a real server framework streams it: chunked, or gzip'd, in pieces."""

from __future__ import annotations

from aiohttp import web


async def streamed(
    request: web.Request, payload: bytes, *, piece: int, gzip: bool = False
) -> web.StreamResponse:
    """``payload`` written ``piece`` bytes at a time, chunked (and gzip'd with ``gzip``)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if gzip:
        response.enable_compression(web.ContentCoding.gzip)
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    for at in range(0, len(payload), piece):
        await response.write(payload[at : at + piece])
    await response.write_eof()
    return response
