"""Delivery reports: after a delay, POST each message's final status to its callbacks.

One shared ClientSession and a fixed pool of workers bound the concurrency; a report
that cannot be delivered is counted as failed and dropped, never retried or raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import aiohttp
import orjson

from dispatcher.emulator.ledger import Ledger
from dispatcher.emulator.settings import EmulatorSettings
from dispatcher.timefmt import iso_utc

MESSAGES = {
    "DELIVRD": "Message delivered to the handset",
    "UNDELIV": "Message could not be delivered",
    "EXPIRED": "Message expired before it could be delivered",
    "REJECTD": "Message rejected by the operator",
}

_Job = tuple[str, str, str, str, str, int, str | None, str | None, str]


class DeliveryReports:
    """Schedules the status change of accepted messages and posts the reports."""

    def __init__(self, settings: EmulatorSettings, ledger: Ledger) -> None:
        self._settings = settings
        self._ledger = ledger
        self._seed = settings.seed
        self._rng = random.Random(None if self._seed is None else self._seed + 2)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._next_timer = 0
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def reseed(self) -> None:
        self._rng = random.Random(None if self._seed is None else self._seed + 2)

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._settings.dr_timeout_s)
        connector = aiohttp.TCPConnector(limit=self._settings.dr_concurrency)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        self._workers = [
            asyncio.create_task(self._work()) for _ in range(self._settings.dr_concurrency)
        ]

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        if self._session is not None:
            await self._session.close()

    def schedule(
        self,
        *,
        ids: list[str],
        sender: str,
        tos: list[str],
        callbacks: list[str],
        external_id: str | None,
        client_id: str | None,
    ) -> None:
        """Fire the reports of these messages after the configured delay."""
        loop = asyncio.get_running_loop()
        token = self._next_timer = self._next_timer + 1
        args = (token, ids, sender, tos, callbacks, external_id, client_id)
        delay = self._settings.dr_delay_ms / 1000.0
        self._timers[token] = loop.call_later(delay, self._fire, *args)

    def _fire(
        self,
        token: int,
        ids: list[str],
        sender: str,
        tos: list[str],
        callbacks: list[str],
        external_id: str | None,
        client_id: str | None,
    ) -> None:
        del self._timers[token]
        s = self._settings
        undeliv = s.dr_undeliv
        expired = undeliv + s.dr_expired
        rejectd = expired + s.dr_rejectd
        now = time.time()
        date = iso_utc(now, "microseconds")
        stamp = int(now * 1000)
        draw = self._rng.random
        for id_, to in zip(ids, tos, strict=True):
            u = draw()
            if u < undeliv:
                status = "UNDELIV"
            elif u < expired:
                status = "EXPIRED"
            elif u < rejectd:
                status = "REJECTD"
            else:
                status = "DELIVRD"
            self._ledger.set_status(id_, status, date)
            for url in callbacks:
                self._queue.put_nowait(
                    (id_, sender, to, status, date, stamp, external_id, client_id, url)
                )

    async def _work(self) -> None:
        queue = self._queue
        while True:
            job = await queue.get()
            ok = await self._post(job)
            stats = self._ledger.stats
            if ok:
                stats.dr_sent += 1
            else:
                stats.dr_failed += 1

    async def _post(self, job: _Job) -> bool:
        id_, sender, to, status, date, stamp, external_id, client_id, url = job
        body = orjson.dumps(
            {
                "id": id_,
                "from": sender,
                "to": to,
                "status": status,
                "date": date,
                "timestamp": stamp,
                "externalId": external_id,
                "clientId": client_id,
                "message": MESSAGES[status],
                "username": self._settings.owner,
                "callback": url,
            }
        )
        assert self._session is not None
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                return resp.status < 300
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return False
