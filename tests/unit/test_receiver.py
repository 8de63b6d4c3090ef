"""dispatcher receiver: real HTTP posts in, complete NDJSON out, clean stops."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dispatcher.receiver import (
    FLUSH_BYTES,
    STATS_PATH,
    DeliveryReportLog,
    ReceiverStats,
    running_receiver,
)

DR = {
    "id": "611b3a42c5f7904590c17d1f",
    "from": "12345",
    "to": "+525500000001",
    "status": "DELIVRD",
    "date": "2021-08-17T04:25:40.117592194Z",
    "timestamp": 1629174340117,
    "externalId": "campaign-7",
    "clientId": "client-3",
    "message": "Hola Elizabeth",
    "username": "[email protected]",
    "callback": "http://127.0.0.1/dr",
}
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, Any]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


async def test_objects_arrays_and_unknown_fields_are_written_in_order(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    second = {"id": "b", "status": "ENROUTE", "extra": {"nested": [1, 2]}}
    third = {"status": "UNDELIV"}  # missing fields are fine
    async with running_receiver(out) as receiver, aiohttp.ClientSession() as session:
        assert receiver.url == f"http://127.0.0.1:{receiver.port}/dr"
        assert await post(session, receiver.url, orjson.dumps(DR)) == (200, {"received": 1})
        body = orjson.dumps([second, third])
        assert await post(session, receiver.base_url + "/any/path?x=1", body) == (
            200,
            {"received": 2},
        )
        assert await post(session, receiver.base_url + "/", b"[]") == (200, {"received": 0})
        async with session.get(receiver.base_url + STATS_PATH) as r:
            counts = await r.json()
        assert counts["requests"] == 3
        assert counts["received"] == 3
        assert counts["malformed"] == 0
    assert receiver.stats() == ReceiverStats(requests=3, received=3, malformed=0, written=3)
    lines = read_ndjson(out)
    assert [{k: v for k, v in line.items() if k != "receivedAt"} for line in lines] == [
        DR,
        second,
        third,
    ]
    assert all(ISO_MS.fullmatch(line["receivedAt"]) for line in lines)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b"42", "not an object"),
        (b'"DELIVRD"', "not an object"),
        (b'[{"id": "a"}, 3]', "not an object"),
        (b'{"id": "a"', "not JSON"),
    ],
)
async def test_malformed_bodies_get_400_and_are_kept(
    tmp_path: Path, body: bytes, reason: str
) -> None:
    out = tmp_path / "dr.ndjson"
    async with running_receiver(out) as receiver, aiohttp.ClientSession() as session:
        status, answer = await post(session, receiver.url, body)
        assert status == 400
        assert reason in answer["error"]
        assert await post(session, receiver.url, orjson.dumps(DR)) == (200, {"received": 1})
    assert receiver.stats() == ReceiverStats(requests=2, received=1, malformed=1, written=1)
    assert len(read_ndjson(out)) == 1
    kept = read_ndjson(tmp_path / "dr.ndjson.malformed.ndjson")
    assert len(kept) == 1
    assert kept[0]["body"] == body.decode()
    assert kept[0]["path"] == "/dr"
    assert reason in kept[0]["reason"]


async def test_no_malformed_file_without_malformed_bodies(tmp_path: Path) -> None:
    async with running_receiver(tmp_path / "dr.ndjson") as receiver, aiohttp.ClientSession() as s:
        await post(s, receiver.url, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dr.ndjson"]


async def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    out.write_bytes(b'{"id":"old"}\n')
    async with running_receiver(out) as receiver, aiohttp.ClientSession() as session:
        await post(session, receiver.url, b'{"id":"new"}')
    assert [line["id"] for line in read_ndjson(out)] == ["old", "new"]


async def test_streams_stay_open_and_the_clock_is_injected() -> None:
    out, bad = io.BytesIO(), io.BytesIO()
    async with (
        running_receiver(out, malformed_out=bad, clock=lambda: 1.5) as receiver,
        aiohttp.ClientSession() as session,
    ):
        await post(session, receiver.url, b'{"id":"x","receivedAt":"forged"}')
        await post(session, receiver.url, b"[1]")
    assert out.getvalue() == b'{"id":"x","receivedAt":"1970-01-01T00:00:01.500Z"}\n'
    assert orjson.loads(bad.getvalue())["receivedAt"] == "1970-01-01T00:00:01.500Z"


async def test_the_buffer_is_written_while_running(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    async with (
        running_receiver(out, flush_interval=0.02) as receiver,
        aiohttp.ClientSession() as session,
    ):
        await post(session, receiver.url, orjson.dumps(DR))
        for _ in range(500):  # bounded wait for the background writer, no timing assert
            if out.stat().st_size:
                break
            await asyncio.sleep(0.01)
        assert read_ndjson(out)[0]["id"] == DR["id"]
        assert receiver.stats().written == 1


def test_a_large_buffer_is_written_without_waiting_for_the_tick() -> None:
    out = io.BytesIO()
    dr_log = DeliveryReportLog(out, clock=lambda: 0.0)
    body = orjson.dumps([DR] * 100)
    while not out.getvalue():
        assert dr_log.stats().received * len(orjson.dumps(DR)) < 2 * FLUSH_BYTES
        assert dr_log.add(body) == (100, None)
    assert dr_log.stats().written == dr_log.stats().received
    assert out.getvalue().count(b"\n") == dr_log.stats().received
