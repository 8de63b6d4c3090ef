"""GatewayClient against small real servers on loopback: the requests it makes, every
transport failure mapped to the right error, answers handed to the protocol, and
nothing ever shows the key. (The protocol itself is tests/unit/test_api.py.)"""

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from dispatcher.api import Answer
from dispatcher.config import Secret
from dispatcher.errors import (
    AuthError,
    BadResponse,
    ConnectError,
    ConnectionLost,
    GatewayError,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    RetryableError,
    Unavailable,
)
from dispatcher.gateway import GatewayClient, path_segment
from tests.support.loopback import serving
from tests.support.streamed import streamed
from tests.support.tls import self_signed, server_context

KEY = "sk-test-0123456789-secret"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stub:
    """A real aiohttp server on 127.0.0.1 whose answer each test sets."""

    def __init__(self) -> None:
        self.handler: Handler = self.ok_batch
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.raw: list[web.Request] = []
        self.peers: list[object] = []  # the client's end of each request's connection
        self.base_url = ""

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, dict(request.headers), body))
        self.raw.append(request)
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        return await self.handler(request)

    @staticmethod
    async def ok_batch(request: web.Request) -> web.StreamResponse:
        sent = orjson.loads(await request.read())
        ids = [{"id": f"id{n}", "mobile": r["to"]} for n, r in enumerate(sent["to"])]
        return web.json_response(
            {
                "meta": {"timestamp": 1, "transactionId": "tx-1"},
                "data": {"ids": ids, "status": "QUEUE"},
            }
        )


@pytest.fixture
async def stub() -> AsyncIterator[tuple[Stub, GatewayClient]]:
    stub = Stub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stub.dispatch)
    async with serving(app) as port:
        stub.base_url = f"http://127.0.0.1:{port}/raven/"
        async with GatewayClient(
            stub.base_url, Secret(KEY), timeout=2.0, connect_timeout=2.0
        ) as client:
            yield stub, client


BODY = orjson.dumps(
    {"from": "12345", "text": "Hi {0}", "to": [{"to": "+525500000001", "params": ["A"]}]}
)


def pairs(answer: Answer) -> list[tuple[str, str | None]]:
    return list(zip(answer.ids, answer.mobiles, strict=True))


async def test_batch_success_sends_key_and_idempotency_key(
    stub: tuple[Stub, GatewayClient],
) -> None:
    server, client = stub
    answer = await client.send_batch(BODY, key="job-abc")
    assert answer == Answer(
        ids=["id0"], mobiles=["+525500000001"], invalid=[], status="QUEUE", transaction_id="tx-1"
    )
    path, headers, body = server.requests[0]
    assert path == "/raven/v3/messages/batch"
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Idempotency-Key"] == "job-abc"
    assert headers["Content-Type"] == "application/json"
    assert body == BODY
    assert KEY not in repr(client)


async def test_single_accepts_both_shapes(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub

    async def enveloped(request: web.Request) -> web.Response:
        return web.json_response(
            {"meta": {"transactionId": "t"}, "data": {"id": "m1", "to": "+1", "status": "QUEUE"}}
        )

    async def flat(request: web.Request) -> web.Response:
        return web.json_response({"status": "QUEUE", "messageId": "m2", "description": "queued"})

    server.handler = enveloped
    assert pairs(await client.send_single(b"{}")) == [("m1", "+1")]
    server.handler = flat
    answer = await client.send_single(b"{}")
    assert pairs(answer) == [("m2", None)]
    assert server.requests[-1][0] == "/raven/v2/messages"
    assert "Idempotency-Key" not in server.requests[-1][1]


def answer_with(status: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if body is None or isinstance(body, str | bytes):
            return web.Response(status=status, body=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return handler


async def test_an_error_answer_reaches_the_protocol_with_its_headers(
    stub: tuple[Stub, GatewayClient],
) -> None:
    server, client = stub
    server.handler = answer_with(429, {"meta": {"explain": "busy"}}, {"Retry-After": "3"})
    with pytest.raises(RateLimited, match="busy") as caught:
        await client.send_batch(BODY)
    assert caught.value.retry_after == 3.0
    server.handler = answer_with(200, b"<html>not json</html>")
    with pytest.raises(BadResponse):
        await client.send_single(BODY)


async def test_auth_failure_never_shows_the_key(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(401, {"meta": {"explain": "bad key"}})
    with pytest.raises(AuthError, match="expired or revoked") as caught:
        await client.send_batch(BODY)
    assert KEY not in str(caught.value)
    assert KEY not in repr(client)


async def test_redirects_are_not_followed(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(302, None, {"Location": "http://elsewhere/"})
    with pytest.raises(RequestRejected, match="HTTP 302"):
        await client.send_batch(BODY)
    assert len(server.requests) == 1


async def test_connection_refused_is_safe() -> None:
    async with GatewayClient(
        "http://127.0.0.1:9/raven", Secret(KEY), timeout=2.0, connect_timeout=2.0
    ) as client:
        with pytest.raises(ConnectError) as caught:
            await client.send_batch(BODY)
    assert caught.value.safe is True
    assert isinstance(caught.value, OSError)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)  # the OS's own word
    assert KEY not in str(caught.value)


async def test_dropped_connection_is_ambiguous(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub

    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    server.handler = drop
    with pytest.raises(ConnectionLost) as caught:
        await client.send_batch(BODY)
    assert caught.value.safe is False
    assert "closed the connection without answering" in str(caught.value)
    assert len(server.requests) == 1  # the request did reach the gateway


async def test_cut_off_body_is_ambiguous(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub

    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"data": {')
        assert request.transport is not None
        request.transport.close()
        return response

    server.handler = truncated
    with pytest.raises(ConnectionLost) as caught:
        await client.send_batch(BODY)
    assert "cut off the answer" in str(caught.value)


async def test_slow_gateway_times_out_as_ambiguous(stub: tuple[Stub, GatewayClient]) -> None:
    server, _ = stub

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response()

    server.handler = slow
    async with GatewayClient(
        server.base_url, Secret(KEY), timeout=0.2, connect_timeout=0.2
    ) as client:
        with pytest.raises(RequestTimeout) as caught:
            await client.send_batch(BODY)
    assert caught.value.safe is False
    assert isinstance(caught.value, TimeoutError)
    assert "no answer from 127.0.0.1" in str(caught.value)


async def test_status_lookup(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(200, {"meta": {}, "data": {"id": "m1", "status": "DELIVRD"}})
    assert (await client.status("m1"))["status"] == "DELIVRD"
    assert server.requests[-1][0] == "/raven/v2/messages/m1"


@pytest.mark.parametrize(
    ("message_id", "segment"),
    [
        ("../../admin", "..%2F..%2Fadmin"),
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("...", "..."),
        ("%2e%2e", "%252e%252e"),
        ("é x", "%C3%A9%20x"),
        ("507f1f77b", "507f1f77b"),
    ],
)
def test_an_id_is_one_path_segment(message_id: str, segment: str) -> None:
    assert path_segment(message_id) == segment


async def test_a_status_lookup_stays_under_v2_messages(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(200, {"data": {"status": "QUEUE"}})
    for message_id in ("../../admin", "a/b?c#d", "..", "."):
        await client.status(message_id)
    raw = [request.raw_path for request in server.raw]
    assert raw == [
        "/raven/v2/messages/..%2F..%2Fadmin",
        "/raven/v2/messages/a%2Fb%3Fc%23d",
        "/raven/v2/messages/%2E%2E",
        "/raven/v2/messages/%2E",
    ]


async def test_a_key_echoed_in_an_answer_never_reaches_the_caller(
    stub: tuple[Stub, GatewayClient],
) -> None:
    server, client = stub

    async def echo(request: web.Request) -> web.Response:
        key = request.headers["Authorization"]
        sent = orjson.loads(await request.read())
        ids = [{"id": f"{key[9:]}-{n}", "mobile": r["to"]} for n, r in enumerate(sent["to"])]
        return web.json_response(
            {"meta": {"transactionId": key[5:20]}, "data": {"ids": ids, "status": "QUEUE"}}
        )

    server.handler = echo
    answer = await client.send_batch(BODY)
    assert pairs(answer) == [("********-0", "+525500000001")]
    assert answer.transaction_id == "r ********"  # "Bearer sk-…"[5:20]
    server.handler = answer_with(400, f"refused: Authorization: Bearer {KEY}" * 3)
    with pytest.raises(RequestRejected) as caught:
        await client.send_batch(BODY)
    assert KEY[:8] not in str(caught.value)
    assert "Bearer ********" in str(caught.value)


async def test_a_gateway_that_trickles_its_answer_for_ever_times_out(
    stub: tuple[Stub, GatewayClient],
) -> None:
    server, _ = stub

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while True:  # a byte now and then: no read ever waits long, the whole never ends
            await response.write(b" ")
            await asyncio.sleep(0.02)

    server.handler = trickle
    async with GatewayClient(
        server.base_url, Secret(KEY), timeout=0.3, connect_timeout=0.3
    ) as client:
        with pytest.raises(RequestTimeout):
            await asyncio.wait_for(client.send_batch(BODY), 10)


async def test_503_with_retry_after_reaches_the_protocol(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(503, {"meta": {"explain": "down"}}, {"Retry-After": "4"})
    with pytest.raises(Unavailable) as caught:
        await client.send_single(BODY)
    assert (caught.value.retry_after, caught.value.safe) == (4.0, True)


DOCUMENT = {"meta": {"transactionId": "tx-9"}, "data": {"id": "m9", "to": "+1", "status": "QUEUE"}}


async def gzipped(request: web.Request) -> web.StreamResponse:
    response = web.json_response(DOCUMENT)
    response.enable_compression(web.ContentCoding.gzip)
    return response


async def chunked(request: web.Request) -> web.StreamResponse:
    return await streamed(request, orjson.dumps(DOCUMENT), piece=7)


async def closing(request: web.Request) -> web.StreamResponse:
    response = web.json_response(DOCUMENT)
    response.force_close()  # "Connection: close"
    return response


@pytest.mark.parametrize("handler", [gzipped, chunked, closing])
async def test_answers_however_framed_or_encoded(
    stub: tuple[Stub, GatewayClient], handler: Handler
) -> None:
    server, client = stub
    server.handler = handler
    for _ in range(3):
        assert pairs(await client.send_single(BODY)) == [("m9", "+1")]
    assert "gzip" in server.requests[0][1]["Accept-Encoding"]
    assert len(set(server.peers)) == (
        3 if handler is closing else 1
    )  # kept alive unless told not to


async def test_the_key_header_is_named_by_the_caller_or_left_out(
    stub: tuple[Stub, GatewayClient],
) -> None:
    server, _ = stub
    for name in ("X-Request-Key", None):
        async with GatewayClient(
            server.base_url, Secret(KEY), timeout=2, connect_timeout=2, idempotency_header=name
        ) as client:
            await client.send_batch(BODY, key="job-k")
        headers = server.requests[-1][1]
        assert "Idempotency-Key" not in headers
        assert headers.get("X-Request-Key") == ("job-k" if name else None)


async def test_a_key_that_would_break_the_request_is_never_sent(
    stub: tuple[Stub, GatewayClient],
) -> None:
    server, client = stub
    with pytest.raises(ValueError, match="line break"):
        await client.send_batch(BODY, key="job\r\nX-Evil: 1")
    assert server.requests == []


async def test_a_status_lookup_is_a_get_without_a_body(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(200, {"data": {"status": "QUEUE"}})
    await client.status("m1")
    request = server.raw[-1]
    assert (request.method, request.raw_path) == ("GET", "/raven/v2/messages/m1")
    assert "Content-Length" not in request.headers
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert "Idempotency-Key" not in request.headers
    assert server.requests[-1][2] == b""


@asynccontextmanager
async def silent_server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Accepts connections, reads, never writes a byte: its address as host:port."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in connections:
            writer.close()
        await server.wait_closed()


async def test_a_connection_not_made_in_time_is_safe() -> None:
    # a TLS handshake the server never answers: the connection is never made
    async with (
        silent_server() as address,
        GatewayClient(
            f"https://{address}/raven", Secret(KEY), timeout=5.0, connect_timeout=0.2
        ) as client,
    ):
        with pytest.raises(ConnectError, match=r"timed out connecting to 127\.0\.0\.1") as caught:
            await client.send_batch(BODY, key="k")
    assert caught.value.safe is True
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_https_verifies_the_gateway_with_the_systems_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    app = web.Application()
    app.router.add_post("/raven/v2/messages", closing)
    async with serving(app, ssl_context=server_context(cert, key)) as port:
        base_url = f"https://127.0.0.1:{port}/raven"
        async with GatewayClient(base_url, Secret(KEY), timeout=5, connect_timeout=5) as client:
            with pytest.raises(ConnectError, match="certificate verify failed") as caught:
                await client.send_single(BODY)
        assert caught.value.safe is True
        assert KEY not in str(caught.value)
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # now it is one of "the system's"
        async with GatewayClient(base_url, Secret(KEY), timeout=5, connect_timeout=5) as client:
            assert pairs(await client.send_single(BODY)) == [("m9", "+1")]


async def test_no_error_and_no_repr_shows_the_key(
    stub: tuple[Stub, GatewayClient], caplog: pytest.LogCaptureFixture
) -> None:
    server, client = stub
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []

    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1)
        return web.Response()

    async with GatewayClient(
        server.base_url, Secret(KEY), timeout=0.2, connect_timeout=0.2
    ) as quick:
        for handler in (drop, slow, answer_with(401, f"no: {KEY}"), answer_with(400, KEY)):
            server.handler = handler
            for call in (quick.send_batch(BODY, key="k"), quick.status("m1")):
                with pytest.raises((GatewayError, RetryableError)) as caught:
                    await call
                errors.append(caught.value)
        shown = [repr(quick), repr(quick._pool)]
    async with GatewayClient(
        "http://127.0.0.1:9/r", Secret(KEY), timeout=1, connect_timeout=1
    ) as gone:
        with pytest.raises(ConnectError) as refused:
            await gone.send_single(BODY)
        errors.append(refused.value)
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            shown += [str(chain), repr(chain), *map(str, chain.args)]
            chain = chain.__cause__ or chain.__context__
    assert {type(e).__name__ for e in errors} >= {"ConnectionLost", "RequestTimeout", "AuthError"}
    assert not [text for text in shown if KEY in text]
    assert KEY not in caplog.text
    assert KEY not in repr(client)


async def test_the_repr_shows_no_userinfo_of_the_base_url() -> None:
    async with GatewayClient(
        "https://ops:hunter2@gw.example/raven/", Secret(KEY), timeout=1, connect_timeout=1
    ) as client:
        shown = repr(client)
    assert shown == "<GatewayClient https://gw.example/raven>"
    assert "hunter2" not in shown
