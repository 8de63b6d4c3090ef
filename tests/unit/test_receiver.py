"""dispatcher receiver: real HTTP posts in, complete NDJSON out, clean stops; what it
acknowledges is written, what it refuses is bounded, slow clients are cut off."""

from __future__ import annotations

import asyncio
import io
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from dispatcher.errors import ConfigError
from dispatcher.receiver import (
    STATS_PATH,
    Limits,
    ReceiverStats,
    create_receiver_app,
    running_receiver,
)
from tests.support.cli import ndjson
from tests.support.receiver import post

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
        assert counts["received"] == counts["written"] == 3
        assert counts["malformed"] == counts["malformedDropped"] == counts["unavailable"] == 0
    assert receiver.stats() == ReceiverStats(requests=3, received=3, malformed=0, written=3)
    lines = ndjson(out)
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
    assert len(ndjson(out)) == 1
    kept = ndjson(tmp_path / "dr.ndjson.malformed.ndjson")
    assert len(kept) == 1
    assert kept[0]["body"] == body.decode()
    assert kept[0]["path"] == "/dr"
    assert kept[0]["bytes"] == len(body)
    assert kept[0]["truncated"] is False
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
    assert [line["id"] for line in ndjson(out)] == ["old", "new"]


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


# --- acknowledged means written ---------------------------------------------------------


@pytest.mark.parametrize("fsync", [False, True])
async def test_an_acknowledged_report_is_already_in_the_file(tmp_path: Path, fsync: bool) -> None:
    out = tmp_path / "dr.ndjson"
    async with (
        running_receiver(out, fsync=fsync, flush_interval=3600) as receiver,
        aiohttp.ClientSession() as session,
    ):
        for i in range(3):
            report = orjson.dumps({"id": f"m{i}", "status": "DELIVRD"})
            assert await post(session, receiver.url, report) == (200, {"received": 1})
            # read by another descriptor, before any flush tick or shutdown
            assert [line["id"] for line in ndjson(out)] == [f"m{j}" for j in range(i + 1)]
        assert receiver.stats().written == 3


@pytest.mark.parametrize("fsync", [False, True])
async def test_concurrent_reports_are_all_written_once(tmp_path: Path, fsync: bool) -> None:
    out = tmp_path / "dr.ndjson"
    async with running_receiver(out, fsync=fsync) as receiver, aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(post(session, receiver.url, orjson.dumps({"id": f"m{i}"})) for i in range(200))
        )
        assert answers == [(200, {"received": 1})] * 200
    assert sorted(line["id"] for line in ndjson(out)) == sorted(f"m{i}" for i in range(200))
    assert receiver.stats().written == 200


async def test_a_full_disk_gets_503_and_the_receiver_keeps_running(tmp_path: Path) -> None:
    # /dev/full fails every write with ENOSPC: a real full disk, no privileges needed.
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full here")
    bad = tmp_path / "bad.ndjson"
    async with (
        running_receiver("/dev/full", malformed_out=bad) as receiver,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(3):
            status, answer = await post(session, receiver.url, orjson.dumps(DR))
            assert status == 503
            assert "No space left on device" in answer["error"]
        assert (await post(session, receiver.url, b"oops"))[0] == 400  # still answering
        async with session.get(receiver.base_url + STATS_PATH) as r:
            assert (await r.json())["unavailable"] == 3
    assert receiver.stats() == ReceiverStats(
        requests=4, received=3, written=0, malformed=1, unavailable=3
    )
    assert len(ndjson(bad)) == 1


async def test_a_removed_file_is_recreated_with_every_acknowledged_report(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dr.ndjson"
    async with running_receiver(out) as receiver, aiohttp.ClientSession() as session:
        for i in range(3):
            await post(session, receiver.url, orjson.dumps({"id": f"before{i}"}))
        out.unlink()
        for i in range(2):
            assert await post(session, receiver.url, orjson.dumps({"id": f"after{i}"})) == (
                200,
                {"received": 1},
            )
        assert len(ndjson(out)) == 5  # re-created at once, not only at shutdown
        out.unlink()  # and removed again, with nothing posted since
    ids = [line["id"] for line in ndjson(out)]
    assert ids == ["before0", "before1", "before2", "after0", "after1"]


# --- bounded -----------------------------------------------------------------------------


async def raw_request(port: int, data: bytes) -> bytes:
    """Send ``data`` and stall; what the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 30)  # bounded; not a timing assert
    finally:
        writer.close()


async def test_refused_bodies_are_kept_within_the_caps(tmp_path: Path) -> None:
    out, bad = tmp_path / "dr.ndjson", tmp_path / "bad.ndjson"
    limits = Limits(max_malformed=3, malformed_body=100)
    async with (
        running_receiver(out, malformed_out=bad, limits=limits) as receiver,
        aiohttp.ClientSession() as session,
    ):
        for i in range(5):
            status, _ = await post(session, receiver.url, b"x" * (50 + 100 * i))
            assert status == 400
    kept = ndjson(bad)
    assert [k["bytes"] for k in kept] == [50, 150, 250]
    assert [len(k["body"]) for k in kept] == [50, 100, 100]
    assert [k["truncated"] for k in kept] == [False, True, True]
    stats = receiver.stats()
    assert (stats.malformed, stats.malformed_dropped) == (5, 2)
    assert stats.as_dict()["malformedDropped"] == 2


async def test_refused_bodies_are_kept_within_a_byte_cap(tmp_path: Path) -> None:
    out, bad = tmp_path / "dr.ndjson", tmp_path / "bad.ndjson"
    limits = Limits(max_malformed_bytes=1000)
    async with (
        running_receiver(out, malformed_out=bad, limits=limits) as receiver,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(10):
            await post(session, receiver.url, b"y" * 300)
    assert bad.stat().st_size <= 1000
    kept = len(ndjson(bad))
    assert kept == 2
    assert receiver.stats().malformed_dropped == 10 - kept


async def test_a_body_over_the_limit_gets_413_without_being_read(tmp_path: Path) -> None:
    out, bad = tmp_path / "dr.ndjson", tmp_path / "bad.ndjson"
    limits = Limits(max_body=1000)
    async with (
        running_receiver(out, malformed_out=bad, limits=limits) as receiver,
        aiohttp.ClientSession() as session,
    ):
        big = orjson.dumps([DR] * 10)
        assert len(big) > 1000
        status, answer = await post(session, receiver.url, big)
        assert status == 413
        assert "1000-byte limit" in answer["error"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            for _ in range(10):
                yield orjson.dumps(DR)

        assert (await post(session, receiver.url, chunked()))[0] == 413
        assert await post(session, receiver.url, orjson.dumps(DR)) == (200, {"received": 1})
    assert len(ndjson(out)) == 1
    kept = ndjson(bad)
    assert kept[0]["bytes"] == len(big)
    assert kept[0]["body"] == ""  # refused on its Content-Length, never read
    assert all(k["truncated"] for k in kept)
    assert receiver.stats().malformed == 2


async def test_a_body_that_cannot_be_decoded_gets_400_and_is_kept(tmp_path: Path) -> None:
    out, bad = tmp_path / "dr.ndjson", tmp_path / "bad.ndjson"
    async with running_receiver(out, malformed_out=bad) as receiver:
        head = b"POST /dr HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 15\r\n"
        answer = await raw_request(receiver.port, head + b"\r\nnot gzip at all")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b'"the body cannot be read: Can not decode content-encoding: gzip"}')
    assert ndjson(bad)[0]["reason"].startswith("the body cannot be read")
    assert receiver.stats().malformed == 1


@pytest.mark.parametrize(("path", "status"), [("/dr", 401), (f"/dr/{'s' * 16}", 413)])
async def test_a_refused_big_body_still_gets_its_answer(
    tmp_path: Path, path: str, status: int
) -> None:
    # The rest of a refused body is read and dropped before the connection closes:
    # closed with unread bytes, the connection would be reset under the answer.
    body = b"x" * (3 << 20)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    async with running_receiver(tmp_path / "dr.ndjson", secret="s" * 16) as receiver:
        answer = await raw_request(receiver.port, head.encode() + body)
        assert answer.startswith(b"HTTP/1.1 %d " % status)
        assert receiver.stats().written == 0


async def test_too_many_reports_in_one_request_get_413(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    async with (
        running_receiver(out, limits=Limits(max_reports=5)) as receiver,
        aiohttp.ClientSession() as session,
    ):
        status, answer = await post(session, receiver.url, orjson.dumps([DR] * 6))
        assert status == 413
        assert answer == {"error": "6 reports in one request; at most 5"}
        assert await post(session, receiver.url, orjson.dumps([DR] * 5)) == (200, {"received": 5})
    assert len(ndjson(out)) == 5


async def test_a_half_sent_body_gets_408_and_the_connection_closed(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    async with running_receiver(out, limits=Limits(read_timeout=0.2)) as receiver:
        head = b"POST /dr HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        answer = await raw_request(receiver.port, head + b'{"id": "a", ')
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert receiver.stats().timed_out == 1
    assert out.read_bytes() == b""


async def test_half_sent_headers_get_the_connection_closed(tmp_path: Path) -> None:
    async with running_receiver(tmp_path / "dr.ndjson", limits=Limits(read_timeout=0.2)) as r:
        assert await raw_request(r.port, b"POST /dr HTTP/1.1\r\nHost: x\r\nContent-Le") == b""


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf])
def test_a_flush_interval_must_be_positive_and_finite(interval: float) -> None:
    with pytest.raises(ConfigError, match="flush_interval"):
        create_receiver_app(io.BytesIO(), flush_interval=interval)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_body": 0},
        {"max_reports": 0},
        {"read_timeout": 0},
        {"read_timeout": math.nan},
        {"read_timeout": math.inf},
        {"max_malformed": -1},
        {"max_malformed_bytes": -1},
    ],
)
def test_limits_are_checked(limits: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(limits))):
        Limits(**limits)  # type: ignore[arg-type]
