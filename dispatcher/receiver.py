"""A webhook server for delivery reports (DRs): the target of ``send --callbacks URL``.

The gateway POSTs one JSON object per status change of a message (``id, from, to,
status, date, timestamp, externalId, clientId, message, username, callback`` — all
optional here, unknown fields kept). Each object becomes one NDJSON line with an added
``receivedAt``. Safe to expose (issue 12):

- **A secret in the URL.** A gateway's callback is a URL, so the secret is the last
  segment of its path: ``http://host:8090/dr/<secret>``. A request whose last segment is
  not the secret gets 401 and nothing of it is stored; the counts are at
  ``/_receiver/stats/<secret>``. The secret is masked in every line the receiver
  writes (the gateway echoes the callback URL in each report) and in its logs. Without
  a secret the receiver listens on loopback only (:func:`check_host`).
- **Acknowledged means written.** A 2xx goes out only once the report's line was handed
  to the OS with ``os.write`` (with ``fsync``, synced to disk). Requests that arrive
  while a write is under way join the next one (group commit),
  so one fsync serves many. A write that fails gets 503 — the gateway retries — and
  the receiver keeps running; `dispatcher.durable.AppendFile` never lets a torn line or a removed
  file take an acknowledged report with it.
- **Bounded.** A body is at most ``max_body`` bytes and ``max_reports`` reports (413
  beyond), and must arrive within ``read_timeout`` seconds (408 and the connection
  closed; a connection that never completes its headers is closed as well). Refused
  bodies (400, 413) are kept in a side file, each cut to 64 KiB, within
  ``max_malformed`` bodies and ``max_malformed_bytes`` bytes a run; what does not fit
  is counted as dropped. See :class:`Limits`.

The app factory (:func:`create_receiver_app`) is separate from the runner
(:func:`running_receiver`, :func:`serve`), so tests mount it in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from dispatcher.config import (
    SECRET_CHARS,
    SECRET_MIN,
    Secret,
    read_secret_file,
)
from dispatcher.durable import AppendFile, GroupCommit, Sink, StreamSink
from dispatcher.errors import ConfigError
from dispatcher.logs import MASK, register_secret
from dispatcher.timefmt import iso_utc

log = logging.getLogger("dispatcher.receiver")
#: aiohttp's server logs here (see `_ClientErrors`).
_http_log = logging.getLogger("dispatcher.receiver.http")

STATS_PATH = "/_receiver/stats"
#: The most of a refused body read (and dropped) so that the answer reaches the client.
DISCARD_MAX = 16 << 20
SECRET_ENV = "DISPATCHER_RECEIVER_SECRET"
SECRET_MAX = 256
SECRET_FILE_MAX = 64 << 10
SECRET_FILE_WHAT = "the secret file (--secret-file)"
SECRET_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE"

Clock = Callable[[], float]


# --- the secret and where to listen ----------------------------------------------------


def check_secret(secret: str, source: str = "the receiver secret") -> None:
    """Refuse (`ConfigError`) a secret that does not fit a URL path segment as it is."""
    if not SECRET_MIN <= len(secret) <= SECRET_MAX:
        raise ConfigError(
            f"{source} has {len(secret)} characters; it needs {SECRET_MIN} to {SECRET_MAX} "
            f"(make one: {SECRET_HINT})"
        )
    if not SECRET_CHARS.issuperset(secret):
        raise ConfigError(
            f"{source} has characters a URL path would need escaped; use only A-Z a-z 0-9 "
            f"and - . _ ~ (make one: {SECRET_HINT})"
        )


def find_secret(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Secret | None:
    """The receiver's secret: from the file when one is named, else from
    ``DISPATCHER_RECEIVER_SECRET`` (surrounding white space ignored), else None."""
    if path is not None:
        value = read_secret_file(path, SECRET_FILE_WHAT).reveal()
        source = f"the secret in {os.fsdecode(path)}"
    else:
        value = (os.environ if env is None else env).get(SECRET_ENV, "").strip()
        source = SECRET_ENV
        if not value:
            return None
    check_secret(value, source)
    return Secret(value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, secret: object | None) -> None:
    """Refuse (`ConfigError`) to listen beyond loopback without a secret."""
    if secret is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host or '(all addresses)'} without a secret would let anyone who can "
            "reach it post delivery reports; give --secret-file FILE (or "
            f"{SECRET_ENV}) and use http://HOST:PORT/dr/<secret> as the callback URL, "
            "or listen on 127.0.0.1"
        )


# --- limits and counts -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one request, and the side file of refused bodies, may take."""

    #: The largest body (bytes); a gateway posts one small object at a time.
    max_body: int = 1 << 20
    #: The most reports in one array.
    max_reports: int = 1000
    #: Seconds a request has to send its headers, then its whole body.
    read_timeout: float = 10.0
    #: Refused bodies kept in the side file, per run; 0 keeps none.
    max_malformed: int = 1000
    #: Bytes written to the side file, per run.
    max_malformed_bytes: int = 16 << 20
    #: Each refused body kept is cut to this many bytes.
    malformed_body: int = 64 << 10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.read_timeout) and self.read_timeout > 0):
            raise ConfigError("read_timeout must be a positive number of seconds")
        for name, least in (
            ("max_body", 1),
            ("max_reports", 1),
            ("malformed_body", 1),
            ("max_malformed", 0),
            ("max_malformed_bytes", 0),
        ):
            if getattr(self, name) < least:
                raise ConfigError(f"{name} must be at least {least}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverStats:
    """Counts since start.

    ``received`` reports came in valid bodies, ``written`` of them were handed to the OS
    (and acknowledged); ``malformed`` bodies were refused (400, 413), ``malformed_dropped``
    of them not kept (the side file's cap); ``unauthorized`` requests lacked the secret,
    ``timed_out`` ones were too slow, ``unavailable`` ones got 503 (a failed write).
    """

    requests: int = 0
    received: int = 0
    written: int = 0
    malformed: int = 0
    malformed_dropped: int = 0
    unauthorized: int = 0
    timed_out: int = 0
    unavailable: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a JSON-ready dict (camelCase keys)."""
        return {_camel(item.name): getattr(self, item.name) for item in fields(self)}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


# --- parsing, counting, keeping --------------------------------------------------------


class Refused(Exception):
    """A body the receiver will not take: the HTTP status, the reason, and the body (or
    its first part: ``size`` bytes came, more may have followed unless ``complete``)."""

    def __init__(
        self,
        status: int,
        reason: str,
        body: bytes = b"",
        *,
        size: int | None = None,
        complete: bool = True,
    ) -> None:
        super().__init__(reason)
        self.status, self.reason, self.body = status, reason, body
        self.size = len(body) if size is None else size
        self.complete = complete and self.size == len(body)


class DeliveryReportLog:
    """Turns DR bodies into NDJSON lines, writes them (`write`), keeps refused bodies
    (`refuse`) within the limits, and counts.

    ``out`` gets the DR lines; ``malformed_out`` (optional) one JSON line per refused
    body: ``{"receivedAt", "path", "reason", "bytes", "body", "truncated"}``. ``clock``
    returns epoch seconds. ``secret`` is masked in everything written.
    """

    def __init__(
        self,
        out: Sink,
        *,
        malformed_out: Sink | None = None,
        secret: str | None = None,
        limits: Limits | None = None,
        fsync: bool = False,
        clock: Clock = time.time,
    ) -> None:
        self.limits = limits or Limits()
        self._out = out
        self._malformed_out = malformed_out
        self._secret = secret.encode() if secret else None
        self._clock = clock
        self._commit = GroupCommit(out, fsync=fsync, on_result=self._written)
        self._failing: int | None = None  # the errno of the write that failed last
        self._counts = {item.name: 0 for item in fields(ReceiverStats)}
        self._kept_bytes = 0
        self._kept = 0

    def count(self, name: str) -> int:
        """Add one to a count of `ReceiverStats`; the new value."""
        self._counts[name] += 1
        return self._counts[name]

    def authorized(self, raw_path: str) -> bool:
        """Whether the last segment of ``raw_path`` is the secret (always, without one)."""
        if self._secret is None:
            return True
        last = raw_path.rpartition("/")[2].encode("utf-8", "surrogateescape")
        return hmac.compare_digest(last, self._secret)

    def lines(self, body: bytes) -> tuple[bytes, int]:
        """The NDJSON lines of a body and how many; `Refused` when it is not valid."""
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Refused(400, f"body is not JSON: {exc}", body) from None
        if isinstance(value, dict):
            reports = [value]
        elif not isinstance(value, list):
            kind = type(value).__name__
            raise Refused(400, f"body is a JSON {kind}, not an object or an array of objects", body)
        elif not all(isinstance(item, dict) for item in value):
            raise Refused(400, "body is a JSON array with an item that is not an object", body)
        elif len(value) > self.limits.max_reports:
            raise Refused(
                413,
                f"{len(value)} reports in one request; at most {self.limits.max_reports}",
                body,
            )
        else:
            reports = value
        received_at = iso_utc(self._clock())
        data = bytearray()
        for report in reports:
            report["receivedAt"] = received_at
            data += orjson.dumps(report, option=orjson.OPT_APPEND_NEWLINE)
        self._counts["received"] += len(reports)
        return self._masked(bytes(data)), len(reports)

    async def write(self, data: bytes, reports: int) -> None:
        """Return once the lines are written; OSError when they could not be."""
        await self._commit.write(data, reports)

    def refuse(self, refused: Refused, path: str) -> None:
        """Count a refused body and keep it in the side file while the caps allow."""
        number = self.count("malformed")
        limits = self.limits
        line = b""
        if self._kept < limits.max_malformed:
            line = self._refused_line(refused, path)
        if not line or self._kept_bytes + len(line) > limits.max_malformed_bytes:
            if self.count("malformed_dropped") == 1:
                log.warning(
                    "the side file of refused bodies is full (%d bodies, %d bytes this run): "
                    "refused bodies are now counted, not kept",
                    self._kept,
                    self._kept_bytes,
                )
            return
        if self._malformed_out is not None:
            try:
                self._malformed_out.append(line)
            except OSError as exc:
                self.count("malformed_dropped")
                log.error("cannot keep a refused body: %s", exc.strerror or exc)
                return
        self._kept += 1
        self._kept_bytes += len(line)
        log.warning("refused a delivery report body (#%d): %s", number, refused.reason)

    def _refused_line(self, refused: Refused, path: str) -> bytes:
        cap = self.limits.malformed_body
        body = self._masked(refused.body)
        record = {
            "receivedAt": iso_utc(self._clock()),
            "path": self._masked(path.encode()).decode(),
            "reason": refused.reason,
            "bytes": refused.size,
            "body": body[:cap].decode("utf-8", "replace"),
            "truncated": not refused.complete or len(body) > cap,
        }
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)

    def sync_soon(self) -> None:
        """Sync the written lines to disk soon (without ``fsync``, every flush interval)."""
        self._commit.sync_soon()

    async def close(self) -> None:
        """Finish every write, sync and close the files (`OutputError` if one fails)."""
        await self._commit.drain()
        try:
            self._out.close()
        finally:
            if self._malformed_out is not None:
                self._malformed_out.close()

    def stats(self) -> ReceiverStats:
        """The counts so far."""
        return ReceiverStats(**self._counts)

    def _written(self, error: OSError | None, reports: int) -> None:
        if error is None:
            self._counts["written"] += reports
            if self._failing is not None:
                log.warning("writing delivery reports again")
                self._failing = None
        elif self._failing != error.errno:  # once per kind of failure, not per request
            self._failing = error.errno
            log.error(
                "cannot write delivery reports: %s; answering 503 so the gateway retries",
                error.strerror or error,
            )

    def _masked(self, data: bytes) -> bytes:
        if self._secret is not None and self._secret in data:
            return data.replace(self._secret, MASK.encode())
        return data


# --- the app ---------------------------------------------------------------------------

_LOG = web.AppKey("dr_log", DeliveryReportLog)
_LIMITS = web.AppKey("limits", Limits)


def create_receiver_app(
    out: BinaryIO | str | Path,
    *,
    malformed_out: BinaryIO | str | Path | None = None,
    secret: str | Secret | None = None,
    limits: Limits | None = None,
    fsync: bool = False,
    flush_interval: float = 0.5,
    clock: Clock = time.time,
) -> web.Application:
    """The receiver as an aiohttp app: POST on a path ending in the secret takes DRs,
    GET ``/_receiver/stats[/<secret>]`` counts them.

    ``out`` and ``malformed_out`` are paths (opened for appending at startup, closed at
    cleanup) or open binary streams (flushed, left open). With a path for ``out`` and no
    ``malformed_out``, refused bodies go to ``<out>.malformed.ndjson``, created only
    when the first one arrives. Without ``fsync`` the file is synced every
    ``flush_interval`` seconds.
    """
    key = secret.reveal() if isinstance(secret, Secret) else secret
    if key is not None:
        check_secret(key)
        register_secret(key)
    if not (math.isfinite(flush_interval) and flush_interval > 0):
        raise ConfigError("flush_interval must be a positive number of seconds")
    limits = limits or Limits()
    if malformed_out is None and isinstance(out, str | Path):
        malformed_out = Path(f"{out}.malformed.ndjson")
    app = web.Application(client_max_size=limits.max_body)
    app[_LIMITS] = limits

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        out_sink = AppendFile(out) if isinstance(out, str | Path) else StreamSink(out)
        bad_sink: Sink | None = None
        if isinstance(malformed_out, str | Path):
            bad_sink = AppendFile(malformed_out, lazy=True)
        elif malformed_out is not None:
            bad_sink = StreamSink(malformed_out)
        dr_log = DeliveryReportLog(
            out_sink, malformed_out=bad_sink, secret=key, limits=limits, fsync=fsync, clock=clock
        )
        app[_LOG] = dr_log
        # With fsync every write is synced already.
        ticker = None if fsync else asyncio.create_task(_sync_every(dr_log, flush_interval))
        try:
            yield
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await dr_log.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get(STATS_PATH, _stats)  # 401 with a secret: it is not the last segment
    if key is not None:
        app.router.add_get(STATS_PATH + "/{secret}", _stats)
    app.router.add_post("/{tail:.*}", _receive)
    return app


async def _receive(request: web.Request) -> web.Response:
    dr_log = request.app[_LOG]
    dr_log.count("requests")
    deadline = asyncio.get_running_loop().time() + dr_log.limits.read_timeout
    if not dr_log.authorized(request.rel_url.raw_path):
        await _discard_rest(request, deadline)
        answer = _unauthorized(dr_log, request)
        answer.force_close()  # nor is one without the secret
        return answer
    try:
        data, reports = dr_log.lines(await _read_body(request, dr_log.limits, deadline))
    except TimeoutError:
        dr_log.count("timed_out")
        limit = dr_log.limits.read_timeout
        return _json({"error": f"the body did not arrive within {limit:g} s"}, status=408)
    except ConnectionError:  # the client went away: nobody to answer
        return web.Response(status=400)
    except Refused as refused:
        dr_log.refuse(refused, request.path)
        answer = _json({"error": refused.reason}, status=refused.status)
        if refused.status == 413:  # a client sending too much is not kept on
            await _discard_rest(request, deadline)
            answer.force_close()
        return answer
    try:
        await dr_log.write(data, reports)
    except OSError as exc:
        dr_log.count("unavailable")
        reason = f"cannot write the delivery reports ({exc.strerror or exc}); retry later"
        return _json({"error": reason}, status=503)
    return _json({"received": reports})


async def _read_body(request: web.Request, limits: Limits, deadline: float) -> bytes:
    """The whole body by the deadline (TimeoutError) and within the size limit
    (`Refused` 413); `Refused` 400 when it cannot be decoded."""
    declared = request.content_length
    too_big = f"body over the {limits.max_body}-byte limit"
    if declared is not None and declared > limits.max_body:
        raise Refused(413, too_big, size=declared, complete=False)
    body = bytearray()
    content = request.content
    try:
        if content.is_eof():  # all of it came with the headers: no timer needed
            body += content.read_nowait()
        else:
            async with asyncio.timeout_at(deadline):
                async for chunk in content.iter_any():
                    body += chunk
                    if len(body) > limits.max_body:
                        break
    except web.RequestPayloadError as exc:  # bad chunked framing or compression
        reason = f"the body cannot be read: {_first_line(exc)}"
        raise Refused(400, reason, bytes(body[: limits.malformed_body]), complete=False) from None
    if len(body) > limits.max_body:
        kept = bytes(body[: limits.malformed_body])
        raise Refused(413, too_big, kept, size=len(body), complete=False)
    return bytes(body)


async def _discard_rest(request: web.Request, deadline: float) -> None:
    """Read what is left of a refused body, and drop it, until the deadline and up to
    `DISCARD_MAX` bytes: closing a connection with unread bytes resets it, and the
    client would miss the answer."""
    left = DISCARD_MAX
    with contextlib.suppress(TimeoutError, ConnectionError, web.RequestPayloadError):
        async with asyncio.timeout_at(deadline):
            while left > 0 and (chunk := await request.content.readany()):
                left -= len(chunk)


def _first_line(exc: BaseException) -> str:
    """aiohttp's reason for a client error, without the bytes it quotes."""
    while not isinstance(exc, HttpProcessingError) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0].rstrip(":") if lines else type(exc).__name__


async def _stats(request: web.Request) -> web.Response:
    dr_log = request.app[_LOG]
    if not dr_log.authorized(request.rel_url.raw_path):
        return _unauthorized(dr_log, request)
    return _json(dr_log.stats().as_dict())


def _unauthorized(dr_log: DeliveryReportLog, request: web.Request) -> web.Response:
    number = dr_log.count("unauthorized")
    if str(number).strip("0") == "1":  # the 1st, 10th, 100th…: logs stay bounded
        log.warning(
            "refused a request without the secret from %s (%d so far)", request.remote, number
        )
    error = "the URL must end with the receiver's secret: http://HOST:PORT/dr/<secret>"
    return _json({"error": error}, status=401)


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


async def _sync_every(dr_log: DeliveryReportLog, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        dr_log.sync_soon()


class _ClientErrors(logging.Filter):
    """aiohttp logs each malformed HTTP request, and each client that hangs up, with a
    traceback: anyone could fill the log. These become one line, for the 1st, 10th,
    100th… of them; other errors (ours) pass as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | ConnectionError):
            return True
        self.count += 1
        if str(self.count).strip("0") != "1":
            return False
        record.msg = f"{record.getMessage()}: {_first_line(exc)} ({self.count} so far)"
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_http_log.addFilter(_ClientErrors())


# --- runners ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningReceiver:
    """A receiver serving on ``host:port``; ``url`` is a callback URL for ``send``."""

    app: web.Application
    host: str
    port: int
    secret: Secret | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT/dr[/<secret>]``: pass it as ``--callbacks``."""
        return f"{self.base_url}/dr{self._tail}"

    @property
    def stats_url(self) -> str:
        """``http://HOST:PORT/_receiver/stats[/<secret>]``."""
        return f"{self.base_url}{STATS_PATH}{self._tail}"

    @property
    def _tail(self) -> str:
        return "" if self.secret is None else "/" + self.secret.reveal()

    def stats(self) -> ReceiverStats:
        """The counts so far."""
        return self.app[_LOG].stats()


@contextlib.asynccontextmanager
async def running_receiver(
    out: BinaryIO | str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    secret: str | Secret | None = None,
    **options: Any,
) -> AsyncIterator[RunningReceiver]:
    """Serve a receiver until the block exits, then write everything and close.

    ``port=0`` picks a free port; ``options`` go to :func:`create_receiver_app`. A host
    beyond loopback needs a ``secret`` (`ConfigError`).
    """
    check_host(host, secret)
    app = create_receiver_app(out, secret=secret, **options)
    timeout = app[_LIMITS].read_timeout
    # keepalive_timeout closes a connection that has not completed a request's headers
    # (or sent another) within the read timeout; lingering_time=0 closes one whose body
    # timed out instead of reading it on (a refused one is read on by _discard_rest, up
    # to the same deadline).
    runner = web.AppRunner(
        app,
        access_log=None,
        logger=_http_log,
        shutdown_timeout=5.0,
        keepalive_timeout=timeout,
        lingering_time=0,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        wrapped = Secret(secret) if isinstance(secret, str) else secret
        yield RunningReceiver(app, host, runner.addresses[0][1], wrapped)
    finally:
        await runner.cleanup()


async def serve(
    out: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8090,
    stop: asyncio.Event,
    on_listening: Callable[[str], None] = print,
    **options: Any,
) -> ReceiverStats:
    """Run a receiver until ``stop`` is set; return the final counts.

    ``on_listening`` gets ``listening on http://HOST:PORT`` once the port is bound.
    """
    async with running_receiver(out, host, port, **options) as receiver:
        on_listening(f"listening on {receiver.base_url}")
        await stop.wait()
    return receiver.stats()
