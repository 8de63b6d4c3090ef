"""Helpers for the receiver's tests: a JSON POST and its answer."""

from __future__ import annotations

from typing import Any

import aiohttp


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    """POST ``body`` (bytes, a stream, an async generator) as JSON; (status, parsed answer)."""
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()
