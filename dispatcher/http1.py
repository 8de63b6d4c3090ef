"""The HTTP/1.1 client of the gateway and the load tester: pre-built requests over
keep-alive connections.

A client must not be what limits the rate it sends at. aiohttp spends about 75 µs of
one core on a request (building it, its response object, its timers), and its import
about 0.17 s of every run's start-up; at batch 1 that capped the load tester near
6–9 k requests/s on one core against a server that does nothing, where wrk does
20–39 k, and ``send --batch-size 1`` near 4 k messages/s. Here a request is bytes: its
head (request line and the fixed headers) built once, the body and the few headers
that change per request (``Idempotency-Key``) put after it; it is written on an idle
connection, and the answer is read by an `asyncio.Protocol` that finds the status
line, the few headers that matter and the body, with no object per header, and is
handed to a plain callback: no task, coroutine, future or timer per request (`fetch`,
the awaitable form `dispatcher.gateway` uses, adds one future).

What it keeps from aiohttp's client, so that the outcomes mean the same: one
connection per request in flight (the cap on requests in flight, hence on
connections, is the caller's: the sender's in-flight slots, the load test's
schedule), idle connections kept for 15 s at most (aiohttp's ``keepalive_timeout``),
and one the server has closed never reused; a total timeout per request (checked
every tenth of it, at most every 0.1 s) with the connection's own bound inside it;
TLS with the system's certificates (``ssl.create_default_context()``); gzip and
deflate answers; and one error per failure, which tells a request that never left
(*safe*) from one the server may have acted on (*ambiguous*) — a connection refused
or not made in time (TLS included) is `ConnectError` (safe), no answer in time
`RequestTimeout`, a connection closed or an answer cut off or not HTTP
`ConnectionLost` (both ambiguous). A request on a kept-alive connection that the
server closes as it arrives is `ConnectionLost` too, never sent again here (aiohttp
resends only idempotent methods, and a POST is not): resending is the retry policy's
call, under the same ``Idempotency-Key``. What an answer means stays
`dispatcher.api`'s.

Only what the gateway and the load tester need: answers framed by ``Content-Length``,
``chunked`` or the end of the connection, no redirects (a 3xx is an answer), no
proxies (aiohttp's session ignored the environment's too), no cookies.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import yarl

from dispatcher.errors import ConnectError, ConnectionLost, GatewayError, RequestTimeout

#: The answer of one request: HTTP status, the headers `api.check_answer` reads, body.
Reply = tuple[int, Mapping[str, str], bytes]
#: Hears how a request ended: its due time, and the answer, the error, or None.
Ended = Callable[[float, "Reply | GatewayError | None"], None]

#: Seconds an idle connection is kept (aiohttp's ``keepalive_timeout``): a server that
#: closes idle ones sooner makes the odd request on one it is closing ambiguous.
KEEPALIVE: Final = 15.0
#: A head longer than this is not an answer of the gateway's.
MAX_HEAD: Final = 64 * 1024
#: Nor is a body longer than this (a batch answer of 1000 ids is about 60 KiB).
MAX_BODY: Final = 64 * 1024 * 1024

_NO_HEADERS: Final[Mapping[str, str]] = {}
_NO_BODY_STATUS: Final = frozenset({204, 304})


class BadAnswer(Exception):
    """The bytes that came back are not an HTTP/1.x answer."""


class CutOff(BadAnswer):
    """The connection ended in the middle of an answer."""


class Pool:
    """Keep-alive connections to one server, each carrying one request at a time.

    `begin` writes the bytes of a `request` on an idle connection (else opens one:
    the cap on connections is the caller's — no more than its requests in flight)
    and returns; the request's end comes as a call of the ``ended`` it was given, from
    the connection's own callback — no task, coroutine or future per request (`fetch`
    is the awaitable form).
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        keepalive: float = KEEPALIVE,
    ) -> None:
        target = yarl.URL(url)
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.keepalive = keepalive
        self._host = target.raw_host or ""
        tls = target.scheme == "https"
        self._port: int = target.port or (443 if tls else 80)
        self._tls = ssl.create_default_context() if tls else None
        # for messages: host and path, never a user name or password (config refuses them)
        self._origin = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        fixed = [f"Host: {target.host_port_subcomponent}"]
        fixed += [f"{name}: {value}" for name, value in headers.items()]
        fixed.append("Accept-Encoding: gzip, deflate")  # what aiohttp asks for too
        self._fixed = "".join(f"{line}\r\n" for line in fixed).encode()
        self._head = self.head("POST", target.raw_path or "/")
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        #: Requests waiting for a new connection: their task, due time and listener.
        self._connecting: dict[asyncio.Task[None], tuple[float, Ended]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Timeouts are checked this often, not by a timer per request (uvloop's cost
        #: as much as parsing the answer): a request times out up to a tenth of its
        #: timeout late (aiohttp rounds one of 5 s or more up to a whole second).
        self._tick = min(0.1, max(0.001, timeout / 10))
        self._sweeper: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:  # never the request bytes: they hold the key
        return f"<Pool {self._origin}>"

    def head(self, method: str, path: str) -> bytes:
        """The start of every request of ``method`` to ``path`` (already %-encoded): the
        request line and the pool's headers, to hand to `request`."""
        return f"{method} {path} HTTP/1.1\r\n".encode() + self._fixed

    def request(
        self,
        body: bytes | None,
        *,
        head: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """The whole request, to hand to `begin` (as often as wanted): ``head`` (by default
        a POST to the pool's URL), ``headers`` of this request alone, and ``body`` (None:
        none, and no ``Content-Length``)."""
        if head is None:
            head = self._head
        if headers:
            head += _header_lines(headers)
        if body is None:
            return head + b"\r\n"
        return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)

    @property
    def connections(self) -> int:
        """Connections open now (idle or carrying a request)."""
        return len(self._open)

    def begin(self, request: bytes, due: float, ended: Ended) -> None:
        """Send ``request`` once; ``ended(due, outcome)`` is called when it ends (never
        before this returns), with the answer, or a `ConnectError`, `RequestTimeout` or
        `ConnectionLost`, or None when `abandon` or `close` ended it."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + self.timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._tick, self._sweep)
        idle = self._idle
        while idle:
            connection = idle.pop()
            # one the server is closing, or may close as the request arrives: not used
            if connection.transport.is_closing() or now - connection.idle_since > self.keepalive:
                connection.abort()
                continue
            connection.send(request, due, ended, deadline)
            return
        task = loop.create_task(self._connect_and_send(loop, request, due, ended, deadline))
        self._connecting[task] = (due, ended)
        task.add_done_callback(self._connected)

    async def fetch(self, request: bytes) -> Reply:
        """`begin` as a coroutine: the answer, or the error raised. Cancelled, it closes
        the connection that carries the request (its answer would be taken for the next
        one's), as aiohttp does."""
        answer: asyncio.Future[Reply | GatewayError | None] = (
            asyncio.get_running_loop().create_future()
        )

        def ended(_: float, outcome: Reply | GatewayError | None) -> None:
            if not answer.done():  # not cancelled
                answer.set_result(outcome)

        self.begin(request, 0.0, ended)
        try:
            outcome = await answer
        except asyncio.CancelledError:
            self._drop(ended)
            raise
        if outcome is None:
            raise ConnectionLost(f"the request to {self._where(request)} was abandoned")
        if isinstance(outcome, GatewayError):
            raise outcome
        return outcome

    async def abandon(self) -> None:
        """End every request still running with None, and close every connection."""
        self._stop_sweeping()
        connecting = list(self._connecting)
        for task in connecting:
            task.cancel()  # `_connected` tells its listener
        await asyncio.gather(*connecting, return_exceptions=True)
        for connection in list(self._open):
            connection.abandon()
        self._idle.clear()

    def close(self) -> None:
        """Close every connection (a request still on one ends `ConnectionLost`, one still
        connecting None)."""
        self._stop_sweeping()
        for task in self._connecting:
            task.cancel()
        for connection in list(self._open):
            connection.abort()
        self._idle.clear()

    async def aclose(self) -> None:
        """`close`, and wait until the requests still connecting have ended."""
        connecting = list(self._connecting)
        self.close()
        await asyncio.gather(*connecting, return_exceptions=True)

    def _drop(self, ended: Ended) -> None:
        """Stop the request ``ended`` listens to, closing its connection (a cancelled
        caller: rare, so a search rather than a handle per request)."""
        for task, (_, listener) in self._connecting.items():
            if listener is ended:
                task.cancel()
                return
        for connection in self._open:
            if connection.ended is ended:
                connection.abandon()
                return

    async def _connect_and_send(
        self,
        loop: asyncio.AbstractEventLoop,
        request: bytes,
        due: float,
        ended: Ended,
        deadline: float,
    ) -> None:
        try:
            connection = await self._connect(loop, request)
        except ConnectError as exc:
            ended(due, exc)
        else:
            connection.send(request, due, ended, deadline)

    def _connected(self, task: asyncio.Task[None]) -> None:
        due, ended = self._connecting.pop(task)
        if task.cancelled():  # perhaps before it ran at all: it could not say so
            ended(due, None)

    async def _connect(self, loop: asyncio.AbstractEventLoop, request: bytes) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectError(f"timed out connecting to {self._where(request)}") from exc
        except OSError as exc:  # refused, unreachable, no such host, TLS failures
            raise ConnectError(f"cannot connect to {self._where(request)}: {exc}") from exc
        return connection

    def _where(self, request: bytes) -> str:
        """Host and path of ``request``, for messages (never its headers: the key)."""
        line = request[: request.find(b"\r\n")].decode("latin-1")
        return self._origin + line.split(" ")[1]

    def _sweep(self) -> None:
        """Time out the requests past their deadline; come again while any runs."""
        assert self._loop is not None
        now = self._loop.time()
        running = bool(self._connecting)
        for connection in list(self._open):
            if connection.ended is not None:
                if connection.deadline <= now:
                    connection.expire()
                else:
                    running = True
        self._sweeper = self._loop.call_later(self._tick, self._sweep) if running else None

    def _stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _opened(self, connection: _Connection) -> None:
        self._open.add(connection)

    def _closed(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    def _release(self, connection: _Connection) -> None:
        assert self._loop is not None
        connection.idle_since = self._loop.time()
        self._idle.append(connection)


def _header_lines(headers: Mapping[str, str]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
    if lines.count(b"\r") != len(headers) or lines.count(b"\n") != len(headers) or b"\0" in lines:
        # what aiohttp refuses too: a line break would end the header, or the head
        raise ValueError("a header name or value holds a line break or a NUL")
    return lines


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, reads its answer, hands it over."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        #: The request in flight: who hears of its end, its due time, its deadline.
        self.ended: Ended | None = None
        self.due = self.deadline = 0.0
        self.request = b""  # the last one: only for messages
        self.idle_since = 0.0
        self.buffer = b""
        self.reusable = True

    @property
    def where(self) -> str:
        return self.pool._where(self.request)

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pool._opened(self)

    def data_received(self, data: bytes) -> None:
        if self.ended is None:  # nothing was asked: not a gateway to keep talking to
            self.abort()
            return
        buffer = self.buffer + data if self.buffer else data
        try:
            reply = _parse(buffer, self)
        except BadAnswer as exc:
            self._end(ConnectionLost(f"{self.where} sent an answer that is not HTTP: {exc}"))
            return
        if reply is None:
            self.buffer = buffer
            return
        self.buffer = b""
        self._end(reply)

    def eof_received(self) -> bool:
        if self.ended is None:  # idle: never handed out again, even before it is lost
            self.reusable = False
            self.pool._closed(self)
        return False  # close: an HTTP/1.1 client has nothing left to say

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.pool._closed(self)
        if self.ended is None:
            return
        if not self.buffer:
            self._end(ConnectionLost(f"{self.where} closed the connection without answering"))
            return
        try:
            reply = _parse(self.buffer, self, closed=True)
        except CutOff as error:
            problem = f"cut off the answer (the connection closed): {error}"
        except BadAnswer as error:
            problem = f"sent an answer that is not HTTP: {error}"
        else:
            if reply is not None:
                self._end(reply)
                return
            problem = "cut off the answer (the connection closed)"
        self._end(ConnectionLost(f"{self.where} {problem}"))

    # --- the pool's side ------------------------------------------------------------------

    def send(self, request: bytes, due: float, ended: Ended, deadline: float) -> None:
        self.ended = ended
        self.due = due
        self.deadline = deadline
        self.request = request
        self.transport.write(request)

    def expire(self) -> None:
        """The request's time is up: it ends `RequestTimeout`, and the connection
        closes (its answer could still come, and would be taken for the next one's)."""
        self.reusable = False
        self._end(RequestTimeout(f"no answer from {self.where} in time after sending"))

    def abandon(self) -> None:
        self.reusable = False
        self._end(None)

    def abort(self) -> None:
        self.reusable = False
        self.pool._closed(self)
        if self.transport is not None:
            self.transport.abort()

    def _end(self, outcome: Reply | GatewayError | None) -> None:
        """Hand ``outcome`` to whoever waits for it; keep the connection for the next
        request when it is whole and its answer was, else close it."""
        ended, self.ended = self.ended, None
        if not isinstance(outcome, tuple):  # no answer, or one that cannot be trusted
            self.abort()
        elif self.reusable:
            self.pool._release(self)
        else:  # an answer that ends the connection: close it politely
            self.pool._closed(self)
            self.transport.close()
        if ended is not None:
            ended(self.due, outcome)


def _parse(buffer: bytes, connection: _Connection, *, closed: bool = False) -> Reply | None:
    """The answer at the start of ``buffer``, or None while it is incomplete; sets
    ``connection.reusable`` to False when the connection cannot carry another request.
    ``closed``: the connection has ended, so a body framed by its end is whole."""
    start = 0
    while True:  # skip 1xx interim answers (100 Continue, 103 Early Hints)
        end = buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(buffer) - start > MAX_HEAD:
                raise BadAnswer("the head is too long")
            if closed and start < len(buffer):
                raise CutOff("the head is incomplete")
            return None
        lines = buffer[start:end].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BadAnswer("no HTTP/1.x status line")
        status = int(code)
        if status >= 200:
            break
        if status == 101:
            raise BadAnswer("101 Switching Protocols was not asked for")
        start = end + 4
    length: int | None = None
    chunked = False
    framed_by_close = False
    keep_alive = version == b"HTTP/1.1"
    encoding = b""
    headers = _NO_HEADERS
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise BadAnswer("a header line without a colon")
        name = name.lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (length is not None and length != int(value)):
                raise BadAnswer("a bad Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            codings = value.strip().lower()
            chunked = codings.endswith(b"chunked")
            framed_by_close = not chunked
        elif name == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
        elif name == b"content-encoding":
            encoding = value.strip().lower()
        elif name == b"retry-after":  # the one header `api.check_answer` reads
            headers = {"Retry-After": value.strip().decode("latin-1")}
    body_at = end + 4
    if status in _NO_BODY_STATUS:
        payload, after = b"", body_at
    elif chunked:
        decoded = _dechunk(buffer, body_at)
        if decoded is None:
            if closed:
                raise CutOff("the chunked body is incomplete")
            return None
        payload, after = decoded
    elif length is not None and not framed_by_close:
        after = body_at + length
        if len(buffer) < after:
            if length > MAX_BODY:
                raise BadAnswer("the body is too long")
            if closed:
                raise CutOff("the body is shorter than its Content-Length")
            return None
        payload = buffer[body_at:after]
    else:  # the body runs to the end of the connection
        if not closed:
            if len(buffer) - body_at > MAX_BODY:
                raise BadAnswer("the body is too long")
            return None
        keep_alive = False
        payload, after = buffer[body_at:], len(buffer)
    if after != len(buffer):  # more than was asked for: not a peer to go on with
        keep_alive = False
    if not keep_alive:
        connection.reusable = False
    if encoding and encoding != b"identity":
        payload = _decoded(payload, encoding)
    return status, headers, payload


def _dechunk(buffer: bytes, at: int) -> tuple[bytes, int] | None:
    """A chunked body from ``at``: its bytes and where it ends, None while incomplete."""
    parts: list[bytes] = []
    size_total = 0
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size_text = buffer[at:line_end].partition(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadAnswer("a bad chunk size") from None
        if size < 0:
            raise BadAnswer("a bad chunk size")
        size_total += size
        if size_total > MAX_BODY:
            raise BadAnswer("the body is too long")
        if size == 0:
            trailers_end = buffer.find(b"\r\n\r\n", line_end)
            if buffer.startswith(b"\r\n", line_end + 2):  # no trailers
                return b"".join(parts), line_end + 4
            if trailers_end < 0:
                return None
            return b"".join(parts), trailers_end + 4
        data_at = line_end + 2
        if len(buffer) < data_at + size + 2:
            return None
        if buffer[data_at + size : data_at + size + 2] != b"\r\n":
            raise BadAnswer("a chunk does not end where its size says")
        parts.append(buffer[data_at : data_at + size])
        at = data_at + size + 2


def _decoded(payload: bytes, encoding: bytes) -> bytes:
    try:
        if encoding in (b"gzip", b"x-gzip"):
            return zlib.decompress(payload, wbits=zlib.MAX_WBITS | 16)
        if encoding == b"deflate":
            try:
                return zlib.decompress(payload)
            except zlib.error:
                return zlib.decompress(payload, wbits=-zlib.MAX_WBITS)  # raw deflate
    except zlib.error as exc:
        raise BadAnswer(f"the {encoding.decode('latin-1')} body does not decode: {exc}") from None
    raise BadAnswer(f"an encoding that was not asked for: {encoding.decode('latin-1')}")
