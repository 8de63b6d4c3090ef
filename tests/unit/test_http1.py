"""The HTTP/1.1 client of the gateway and the load tester (`dispatcher.http1.Pool`)
against real servers on loopback: a raw one that answers with exactly the bytes a test
gives (every way an answer can be framed, and the broken ones), and aiohttp's server
(chunked and compressed answers as it writes them)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from dispatcher.errors import ConnectError, ConnectionLost, RequestTimeout
from dispatcher.http1 import Pool
from tests.support.loopback import serving
from tests.support.streamed import streamed
from tests.support.tls import self_signed, server_context

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sekrit-key-123"}
BODY = b'{"from":"12345","type":"MT","text":"hi","to":"+15005550006"}'

#: What the raw server does with one request: the chunks to write (None: close).
Script = Callable[[bytes], list[bytes | None]]


class RawServer:
    """Reads one request at a time (head + Content-Length body) and plays the script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.eofs = 0
        self.handlers: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eofs += 1
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                for chunk in self.script(request):
                    if chunk is None:
                        writer.close()
                        return
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.001)  # separate reads on the client's side
        except ConnectionError:
            return
        finally:
            writer.close()


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[tuple[RawServer, str]]:
    state = RawServer(script)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield state, f"http://127.0.0.1:{port}/raven/v2/messages"
    finally:
        server.close()
        for writer in state.writers:  # each handler then sees the end of its connection
            writer.close()
        await asyncio.gather(*state.handlers, return_exceptions=True)
        await server.wait_closed()


def pool(url: str, timeout: float = 5.0) -> Pool:
    return Pool(url, HEADERS, timeout=timeout, connect_timeout=5.0)


def answer(payload: bytes, *extra: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
    head += b"".join(line + b"\r\n" for line in extra)
    return head + b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)


DOC = b'{"meta":{"transactionId":"t"},"data":{"id":"m1","to":"+15005550006"}}'


def raw_deflate(payload: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(payload) + compressor.flush()


FRAMINGS: dict[str, Callable[[bytes], list[bytes | None]]] = {
    "content-length": lambda p: [answer(p)],
    "content-length, split": lambda p: [answer(p)[:20], answer(p)[20:-7], answer(p)[-7:]],
    "chunked": lambda p: [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"a;ext=1\r\n" + p[:10] + b"\r\n",
        b"%x\r\n%s" % (len(p) - 10, p[10:20]),
        p[20:] + b"\r\n0\r\n",
        b"X-Trailer: yes\r\n\r\n",
    ],
    "chunked, no trailer": lambda p: [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(p), p)
    ],
    "until close, HTTP/1.0": lambda p: [b"HTTP/1.0 200 OK\r\n\r\n" + p[:9], p[9:], None],
    "gzip": lambda p: [answer(gzip.compress(p), b"Content-Encoding: gzip")],
    "deflate": lambda p: [answer(zlib.compress(p), b"Content-Encoding: deflate")],
    "raw deflate": lambda p: [answer(raw_deflate(p), b"Content-Encoding: deflate")],
    "after 100 Continue": lambda p: [b"HTTP/1.1 100 Continue\r\n\r\n", answer(p)],
}


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_each_framing_of_an_answer_is_read_whole(framing: str) -> None:
    async with raw_server(lambda _: FRAMINGS[framing](DOC)) as (server, url):
        client = pool(url)
        try:
            for _ in range(3):  # and the connection goes on, unless the answer ended it
                status, _, payload = await client.fetch(client.request(BODY))
                assert (status, payload) == (200, DOC)
        finally:
            client.close()
    expected = 3 if framing == "until close, HTTP/1.0" else 1
    assert server.connections == expected


async def test_the_request_is_the_gateway_clients() -> None:
    async with raw_server(lambda _: [answer(DOC)]) as (server, url):
        client = pool(url.replace("127.0.0.1", "localhost"))
        try:
            await client.fetch(client.request(BODY))
        finally:
            client.close()
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    port = url.split(":")[2].split("/")[0]
    assert lines[0] == b"POST /raven/v2/messages HTTP/1.1"
    assert set(lines[1:]) == {
        f"Host: localhost:{port}".encode(),
        b"Content-Type: application/json",
        b"Authorization: Bearer sekrit-key-123",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: %d" % len(BODY),
    }
    assert body == BODY
    assert "sekrit" not in repr(client)


async def test_connection_close_and_extra_bytes_end_the_connection() -> None:
    scripts: dict[str, Script] = {
        "close": lambda _: [answer(DOC, b"Connection: close")],
        "extra": lambda _: [answer(DOC) + b"HTTP/1.1 200 OK\r\n"],
    }
    for script in scripts.values():
        async with raw_server(script) as (server, url):
            client = pool(url)
            try:
                for _ in range(3):
                    assert (await client.fetch(client.request(BODY)))[2] == DOC
            finally:
                client.close()
        assert server.connections == 3


async def test_retry_after_is_handed_on() -> None:
    script: Script = lambda _: [answer(b"{}", b"retry-after:  7 ", status=b"429 Too Many")]  # noqa: E731
    async with raw_server(script) as (_, url):
        client = pool(url)
        try:
            status, headers, _ = await client.fetch(client.request(BODY))
        finally:
            client.close()
    assert (status, dict(headers)) == (429, {"Retry-After": "7"})


BROKEN: dict[str, list[bytes | None]] = {
    "closed without answering": [None],
    "cut off in the head": [b"HTTP/1.1 200 OK\r\nContent-Le", None],
    "cut off in the body": [answer(DOC)[:-5], None],
    "cut off in a chunk": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nab", None],
    "not HTTP": [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
    "a header without a colon": [b"HTTP/1.1 200 OK\r\nnonsense\r\n\r\n"],
    "a bad Content-Length": [b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"],
    "a bad chunk size": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    "a chunk longer than its size": [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"
    ],
    "gzip that is not": [answer(b"plain", b"Content-Encoding: gzip")],
    "an encoding not asked for": [answer(b"x", b"Content-Encoding: br")],
}


@pytest.mark.parametrize("case", BROKEN)
async def test_a_broken_answer_is_a_lost_connection(case: str) -> None:
    async with raw_server(lambda _: BROKEN[case]) as (server, url):
        client = pool(url)
        try:
            with pytest.raises(ConnectionLost):
                await client.fetch(client.request(BODY))
            assert client.connections == 0
        finally:
            client.close()
    assert len(server.requests) == 1


async def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    async with raw_server(lambda _: []) as (server, url):  # reads, never answers
        client = pool(url, timeout=0.2)
        try:
            with pytest.raises(RequestTimeout):
                await client.fetch(client.request(BODY))
            assert client.connections == 0
            for _ in range(100):  # the server sees the connection end
                if server.eofs:
                    break
                await asyncio.sleep(0.01)
        finally:
            client.close()
    assert server.eofs == 1


async def test_abandon_ends_what_is_running_and_closes_the_connections() -> None:
    async with raw_server(lambda _: []) as (server, url):
        client = pool(url)
        ends: list[tuple[float, object]] = []
        try:
            for due in (1.0, 2.0):
                client.begin(client.request(BODY), due, lambda *end: ends.append(end))
            while len(server.requests) < 2:
                await asyncio.sleep(0.01)
            client.begin(client.request(BODY), 3.0, lambda *end: ends.append(end))
            await client.abandon()  # the third one may not even be connected yet
            assert sorted(ends) == [(1.0, None), (2.0, None), (3.0, None)]
            assert client.connections == 0
        finally:
            client.close()


async def test_bytes_nobody_asked_for_end_an_idle_connection() -> None:
    async with raw_server(lambda _: [answer(DOC), b"surprise"]) as (server, url):
        client = pool(url)
        try:
            assert (await client.fetch(client.request(BODY)))[2] == DOC
            for _ in range(100):
                if client.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert client.connections == 0
            assert (await client.fetch(client.request(BODY)))[2] == DOC  # on a new one
        finally:
            client.close()
    assert server.connections == 2


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        client = pool(f"http://127.0.0.1:{port}/raven/v2/messages")
        with pytest.raises(ConnectError, match="cannot connect"):
            await client.fetch(client.request(BODY))


async def test_answers_as_aiohttps_server_writes_them() -> None:
    """Chunked and compressed, as a real server framework sends them."""
    document = {"meta": {"transactionId": "t"}, "data": {"id": "m1", "text": "x" * 5000}}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        kind = request.match_info["kind"]
        if kind == "plain":
            return web.json_response(document)
        return await streamed(request, orjson.dumps(document), piece=1000, gzip=kind == "gzip")

    app = web.Application()
    app.router.add_post("/raven/{kind}", handler)
    async with serving(app) as port:
        for kind in ("plain", "chunked", "gzip"):
            client = pool(f"http://127.0.0.1:{port}/raven/{kind}")
            try:
                for _ in range(3):
                    status, _, payload = await client.fetch(client.request(BODY))
                    assert status == 200
                    assert orjson.loads(payload) == document
                assert client.connections == 1
            finally:
                client.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1."""
    return self_signed(tmp_path)


async def test_https_verifies_the_server_with_the_systems_authorities(
    certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    context = server_context(cert, key)
    state = RawServer(lambda _: [answer(DOC)])
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/raven/v2/messages"
    try:
        untrusted = pool(url)
        with pytest.raises(ConnectError, match="certificate"):
            await untrusted.fetch(untrusted.request(BODY))
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # now it is one of "the system's"
        trusted = pool(url)
        try:
            assert await trusted.fetch(trusted.request(BODY)) == (200, {}, DOC)
        finally:
            trusted.close()
    finally:
        server.close()
        for writer in state.writers:
            writer.close()
        await asyncio.gather(*state.handlers, return_exceptions=True)


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds (the loop turning meanwhile); fails after 500 turns."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_a_request_of_another_method_and_path_with_headers_of_its_own() -> None:
    async with raw_server(lambda _: [answer(DOC)]) as (server, url):
        client = pool(url)
        try:
            head = client.head("GET", "/raven/v2/messages/m%2F1")
            request = client.request(None, head=head, headers={"Idempotency-Key": "k-1"})
            assert await client.fetch(request) == (200, {}, DOC)
            await client.fetch(client.request(BODY, headers={"X-Other": "2"}))
        finally:
            client.close()
    get, post = server.requests
    lines = get.split(b"\r\n")
    assert lines[0] == b"GET /raven/v2/messages/m%2F1 HTTP/1.1"
    assert b"Idempotency-Key: k-1" in lines
    assert not any(line.lower().startswith(b"content-length") for line in lines)
    assert get.endswith(b"\r\n\r\n")
    assert post.startswith(b"POST /raven/v2/messages HTTP/1.1\r\n")
    assert b"\r\nX-Other: 2\r\n" in post
    assert post.endswith(b"\r\n\r\n" + BODY)


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\0b"])
def test_a_header_that_would_break_the_head_is_refused(value: str) -> None:
    client = pool("http://127.0.0.1:9/raven/v2/messages")
    with pytest.raises(ValueError, match="line break or a NUL"):
        client.request(BODY, headers={"Idempotency-Key": value})


async def test_a_connection_idle_past_the_keepalive_is_closed_not_reused() -> None:
    async with raw_server(lambda _: [answer(DOC)]) as (server, url):
        client = pool(url)
        try:
            await client.fetch(client.request(BODY))
            for connection in client._idle:  # as if it had waited 16 s
                connection.idle_since -= client.keepalive + 1
            await client.fetch(client.request(BODY))
            assert client.connections == 1
            await wait_for(lambda: server.eofs == 1)  # the stale one was closed
        finally:
            client.close()
    assert server.connections == 2
    assert len(server.requests) == 2


async def test_an_idle_connection_the_server_ends_is_never_handed_out_again() -> None:
    async with raw_server(lambda _: [answer(DOC)]) as (server, url):
        client = pool(url)
        try:
            await client.fetch(client.request(BODY))
            (connection,) = client._idle
            connection.eof_received()  # the server's FIN, as the loop hands it over
            assert (await client.fetch(client.request(BODY)))[2] == DOC
        finally:
            client.close()
    assert server.connections == 2  # the second request went on a new connection
    assert len(server.requests) == 2


async def test_a_kept_alive_connection_closed_as_the_request_arrives_is_lost_not_resent() -> None:
    answers = iter([[answer(DOC)], [None]])  # the second request: closed unanswered
    async with raw_server(lambda _: next(answers)) as (server, url):
        client = pool(url)
        try:
            await client.fetch(client.request(BODY))
            with pytest.raises(ConnectionLost, match="closed the connection without answering"):
                await client.fetch(client.request(BODY))
        finally:
            client.close()
    assert len(server.requests) == 2  # sent once: resending is the retry policy's call


async def test_a_cancelled_fetch_closes_the_connection_that_carries_it() -> None:
    async with raw_server(lambda _: []) as (server, url):  # reads, never answers
        client = pool(url)
        try:
            task = asyncio.create_task(client.fetch(client.request(BODY)))
            await wait_for(lambda: bool(server.requests))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.connections == 0  # at once: the caller's slot may be reused
            await wait_for(lambda: server.eofs == 1)
        finally:
            client.close()


async def test_a_fetch_cancelled_while_connecting_leaves_nothing_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with raw_server(lambda _: [answer(DOC)]) as (_, url):
        client = pool(url)
        task = asyncio.create_task(client.fetch(client.request(BODY)))
        await asyncio.sleep(0)  # begun: its connection is being made
        assert client._connecting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()
        assert client.connections == 0
        assert not client._connecting
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
