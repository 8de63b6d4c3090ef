"""A thin test client for the emulator: real HTTP through a real aiohttp session."""

from __future__ import annotations

from typing import Any, NamedTuple

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from dispatcher.emulator.runner import RunningEmulator

KEY = "test-key"


class Reply(NamedTuple):
    status: int
    headers: CIMultiDictProxy[str]
    raw: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def data(self) -> Any:
        return self.json["data"]

    @property
    def explain(self) -> str:
        return str(self.json["meta"]["explain"])


class Api:
    """Calls ``/raven/...`` paths with the Bearer key, and ``/_emulator/...`` without."""

    def __init__(self, session: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
        self.session = session
        self.emulator = emulator

    def _url(self, path: str) -> str:
        if path.startswith("/_emulator"):
            return self.emulator.root_url + path
        return self.emulator.base_url + path

    def _headers(self, key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return {**headers, **(extra or {})}

    async def post(
        self,
        path: str,
        payload: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = KEY,
    ) -> Reply:
        body = data if data is not None else orjson.dumps(payload)
        async with self.session.post(
            self._url(path), data=body, headers=self._headers(key, headers)
        ) as resp:
            return Reply(resp.status, resp.headers, await resp.read())

    async def get(self, path: str, *, key: str | None = KEY) -> Reply:
        async with self.session.get(self._url(path), headers=self._headers(key, None)) as resp:
            return Reply(resp.status, resp.headers, await resp.read())

    async def single(self, payload: Any, **kwargs: Any) -> Reply:
        return await self.post("/v2/messages", payload, **kwargs)

    async def batch(self, payload: Any, **kwargs: Any) -> Reply:
        return await self.post("/v3/messages/batch", payload, **kwargs)

    async def stats(self) -> Any:
        return (await self.get("/_emulator/stats", key=None)).json
