"""GatewayClient against small real servers on loopback: every answer and every
transport failure maps to the right error, and nothing ever shows the key."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import orjson
import pytest
from aiohttp import web

from dispatcher.config import Secret
from dispatcher.errors import (
    AuthError,
    BadResponse,
    BatchTooLarge,
    ConnectError,
    ConnectionLost,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    RetryableError,
    ServerError,
    Unavailable,
)
from dispatcher.gateway import (
    Answer,
    GatewayClient,
    match_ids,
    open_session,
    retry_after_seconds,
)

KEY = "sk-test-0123456789-secret"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stub:
    """A real aiohttp server on 127.0.0.1 whose answer each test sets."""

    def __init__(self) -> None:
        self.handler: Handler = self.ok_batch
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.base_url = ""

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, dict(request.headers), body))
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
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stub.base_url = f"http://127.0.0.1:{port}/raven/"
    async with open_session(concurrency=4, timeout=2.0, connect_timeout=2.0) as session:
        client = GatewayClient(session, stub.base_url, Secret(KEY))
        yield stub, client
    await runner.cleanup()


BODY = orjson.dumps(
    {"from": "12345", "text": "Hi {0}", "to": [{"to": "+525500000001", "params": ["A"]}]}
)


async def test_batch_success_sends_key_and_idempotency_key(
    stub: tuple[Stub, GatewayClient],
) -> None:
    server, client = stub
    answer = await client.send_batch(BODY, key="job-abc")
    assert answer == Answer(
        ids=[("id0", "+525500000001")], invalid=[], status="QUEUE", transaction_id="tx-1"
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
    assert (await client.send_single(b"{}")).ids == [("m1", "+1")]
    server.handler = flat
    answer = await client.send_single(b"{}")
    assert answer.ids == [("m2", None)]
    assert server.requests[-1][0] == "/raven/v2/messages"
    assert "Idempotency-Key" not in server.requests[-1][1]


def answer_with(status: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if body is None or isinstance(body, str | bytes):
            return web.Response(status=status, body=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "error", "safe"),
    [
        (429, RateLimited, True),
        (503, Unavailable, True),
        (408, Unavailable, True),
        (500, ServerError, False),
        (502, ServerError, False),
        (504, ServerError, False),
    ],
)
async def test_retryable_statuses(
    stub: tuple[Stub, GatewayClient], status: int, error: type[RetryableError], safe: bool
) -> None:
    server, client = stub
    server.handler = answer_with(status, {"meta": {"explain": "busy"}}, {"Retry-After": "3"})
    with pytest.raises(error) as caught:
        await client.send_batch(BODY)
    assert caught.value.safe is safe
    assert caught.value.status == status
    assert caught.value.cause in (str(status), "429", "5xx")
    if status in (429, 503):
        assert caught.value.retry_after == 3.0
    assert "busy" in str(caught.value)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_aborts_and_hides_the_key(
    stub: tuple[Stub, GatewayClient], status: int
) -> None:
    server, client = stub
    server.handler = answer_with(status, {"meta": {"explain": f"bad key {KEY}"}})
    with pytest.raises(AuthError, match="expired or revoked") as caught:
        await client.send_batch(BODY)
    assert caught.value.exit_code == 3


async def test_413_and_4xx(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(413, {"meta": {"explain": "too many"}})
    with pytest.raises(BatchTooLarge):
        await client.send_batch(BODY)
    server.handler = answer_with(
        400, {"meta": {"explain": "code 999 not assigned"}, "data": {"status": "CODE_NOT_ALLOWED"}}
    )
    with pytest.raises(RequestRejected, match="code 999 not assigned") as caught:
        await client.send_batch(BODY)
    assert caught.value.gateway_status == "CODE_NOT_ALLOWED"
    server.handler = answer_with(400, {"meta": {}, "data": {"invalidNumber": ["+1"]}})
    with pytest.raises(RequestRejected) as caught:
        await client.send_single(BODY)
    assert caught.value.invalid == ["+1"]
    server.handler = answer_with(404, "not here")
    with pytest.raises(RequestRejected, match="check --base-url"):
        await client.send_batch(BODY)
    server.handler = answer_with(302, None, {"Location": "http://elsewhere/"})
    with pytest.raises(RequestRejected, match="HTTP 302"):
        await client.send_batch(BODY)


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"meta": {}, "data": {"ids": [',
        b"[1, 2, 3]",
        b'{"meta": {}}',
        b'{"data": {"ids": "nope"}}',
        b'{"data": {"ids": [{"mobile": "+1"}]}}',
    ],
)
async def test_unreadable_success_is_ambiguous(
    stub: tuple[Stub, GatewayClient], body: bytes
) -> None:
    server, client = stub
    server.handler = answer_with(200, body)
    with pytest.raises(BadResponse) as caught:
        await client.send_batch(BODY)
    assert caught.value.safe is False


async def test_connection_refused_is_safe() -> None:
    async with open_session(concurrency=1, timeout=2.0, connect_timeout=2.0) as session:
        client = GatewayClient(session, "http://127.0.0.1:9/raven", Secret(KEY))
        with pytest.raises(ConnectError) as caught:
            await client.send_batch(BODY)
    assert caught.value.safe is True
    assert isinstance(caught.value, OSError)
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
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
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)
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
    assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)


async def test_slow_gateway_times_out_as_ambiguous(stub: tuple[Stub, GatewayClient]) -> None:
    server, _ = stub

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response()

    server.handler = slow
    async with open_session(concurrency=1, timeout=0.2, connect_timeout=0.2) as session:
        client = GatewayClient(session, server.base_url, Secret(KEY))
        with pytest.raises(RequestTimeout) as caught:
            await client.send_batch(BODY)
    assert caught.value.safe is False
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_status_lookup(stub: tuple[Stub, GatewayClient]) -> None:
    server, client = stub
    server.handler = answer_with(200, {"meta": {}, "data": {"id": "m1", "status": "DELIVRD"}})
    assert (await client.status("m1"))["status"] == "DELIVRD"
    assert server.requests[-1][0] == "/raven/v2/messages/m1"


def ans(ids: list[tuple[str, str | None]], invalid: list[str] | None = None) -> Answer:
    return Answer(ids=ids, invalid=invalid or [], status="QUEUE", transaction_id="t")


def test_match_ids_in_order_with_repeats_and_invalid() -> None:
    tos = ["+521", "+522", "+521", "+529"]
    answer = ans([("a", "+521"), ("b", "522"), ("c", "+521")], invalid=["+529"])
    assert match_ids(tos, answer) == ["a", "b", "c", None]
    answer = ans([("a", "+521"), ("c", "+521")], invalid=["522", "+529"])
    assert match_ids(tos, answer) == ["a", None, "c", None]


def test_match_ids_refuses_disagreement() -> None:
    with pytest.raises(BadResponse, match="answered 1 ids"):
        match_ids(["+1", "+2"], ans([("a", "+1")]))
    with pytest.raises(BadResponse, match="is for"):
        match_ids(["+1", "+2"], ans([("a", "+1"), ("b", "+3")]))
    with pytest.raises(BadResponse, match="does not account"):
        match_ids(["+1", "+2"], ans([("a", "+1")], invalid=["+3"]))


def test_match_ids_without_mobiles_goes_by_order() -> None:
    assert match_ids(["+1", "+2"], ans([("a", None), ("b", None)])) == ["a", "b"]
    assert match_ids(["+1", "+2"], ans([("b", None)], invalid=["+1"])) == [None, "b"]


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp()) == pytest.approx(30.0)
