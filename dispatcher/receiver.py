"""A webhook server for delivery reports (DRs): the target of ``send --callbacks URL``.

The gateway POSTs one JSON object per status change of a message (``id, from, to,
status, date, timestamp, externalId, clientId, message, username, callback`` — all
optional here, unknown fields kept). Each object becomes one NDJSON line with an added
``receivedAt``. The handler only parses and buffers, so it answers at once; a
background task writes the buffer every ``flush_interval`` seconds (and sooner when it
grows), and shutdown writes the rest, so the file is complete after a clean stop.

A body that is not JSON, or not an object or an array of objects, gets a 400 with the
reason, is counted, and is kept verbatim in a side file so that nothing is lost.

The app factory (:func:`create_receiver_app`) is separate from the runner
(:func:`running_receiver`, :func:`serve`), so tests mount it in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson
from aiohttp import web

from dispatcher.errors import OutputError
from dispatcher.timefmt import iso_utc

log = logging.getLogger("dispatcher.receiver")

#: Write the buffer before the next tick once it holds this many bytes.
FLUSH_BYTES = 1 << 20
#: The largest body accepted; a gateway posts one small object at a time.
MAX_BODY = 16 << 20
STATS_PATH = "/_receiver/stats"

Clock = Callable[[], float]


class Sink(Protocol):
    """Where lines go: a binary file or anything with ``write`` and ``flush``."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverStats:
    """Counts since start: POSTs, DR objects accepted, bodies refused, DR lines written."""

    requests: int
    received: int
    malformed: int
    written: int

    def as_dict(self) -> dict[str, int]:
        """The counts as a JSON-ready dict."""
        return asdict(self)


class DeliveryReportLog:
    """Parses DR bodies into buffered NDJSON lines and writes them on :meth:`flush`.

    ``out`` gets the DR lines; ``malformed_out`` (optional) a JSON line per refused
    body: ``{"receivedAt", "path", "reason", "body"}``. ``clock`` returns epoch seconds.
    """

    def __init__(
        self,
        out: Sink,
        *,
        malformed_out: Sink | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._out = out
        self._malformed_out = malformed_out
        self._clock = clock
        self._buffer: list[bytes] = []
        self._buffered_bytes = 0
        self._buffered_reports = 0
        self._requests = 0
        self._received = 0
        self._malformed = 0
        self._written = 0

    def add(self, body: bytes, path: str = "/") -> tuple[int, str | None]:
        """Take one request body; return (reports accepted, reason it was refused)."""
        self._requests += 1
        received_at = iso_utc(self._clock())
        reports, reason = _parse(body)
        if reason is not None:
            self._malformed += 1
            if self._malformed_out is not None:
                record = {
                    "receivedAt": received_at,
                    "path": path,
                    "reason": reason,
                    "body": body.decode("utf-8", "replace"),
                }
                self._malformed_out.write(orjson.dumps(record) + b"\n")
                self._malformed_out.flush()
            return 0, reason
        for report in reports:
            report["receivedAt"] = received_at
            line = orjson.dumps(report, option=orjson.OPT_APPEND_NEWLINE)
            self._buffer.append(line)
            self._buffered_bytes += len(line)
        self._received += len(reports)
        self._buffered_reports += len(reports)
        if self._buffered_bytes >= FLUSH_BYTES:
            self.flush()
        return len(reports), None

    def flush(self) -> None:
        """Write every buffered DR line to ``out`` and flush it."""
        if not self._buffer:
            return
        self._out.write(b"".join(self._buffer))
        self._out.flush()
        self._written += self._buffered_reports
        self._buffer.clear()
        self._buffered_bytes = self._buffered_reports = 0

    def stats(self) -> ReceiverStats:
        """The counts so far."""
        return ReceiverStats(
            requests=self._requests,
            received=self._received,
            malformed=self._malformed,
            written=self._written,
        )


def _parse(body: bytes) -> tuple[list[dict[str, Any]], str | None]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], f"body is not JSON: {exc}"
    if isinstance(value, dict):
        return [value], None
    if isinstance(value, list):
        if all(isinstance(item, dict) for item in value):
            return value, None
        return [], "body is a JSON array with an item that is not an object"
    return [], f"body is a JSON {type(value).__name__}, not an object or an array of objects"


# --- the app -------------------------------------------------------------------------

_LOG = web.AppKey("dr_log", DeliveryReportLog)


def create_receiver_app(
    out: BinaryIO | str | Path,
    *,
    malformed_out: BinaryIO | str | Path | None = None,
    flush_interval: float = 0.5,
    clock: Clock = time.time,
) -> web.Application:
    """The receiver as an aiohttp app: POST on any path takes DRs, GET stats counts them.

    ``out`` and ``malformed_out`` are paths (opened for appending at startup, closed at
    cleanup) or open binary streams (flushed, left open). With a path for ``out`` and no
    ``malformed_out``, refused bodies go to ``<out>.malformed.ndjson``, created only
    when the first one arrives.
    """
    if malformed_out is None and isinstance(out, str | Path):
        malformed_out = Path(f"{out}.malformed.ndjson")
    app = web.Application(client_max_size=MAX_BODY)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            out_stream = _open(stack, out)
            bad_stream: Sink | None
            if isinstance(malformed_out, str | Path):
                lazy = bad_stream = _LazyAppend(Path(malformed_out))
                stack.callback(lazy.close)
            else:
                bad_stream = malformed_out
            dr_log = DeliveryReportLog(out_stream, malformed_out=bad_stream, clock=clock)
            app[_LOG] = dr_log
            ticker = asyncio.create_task(_flush_every(dr_log, flush_interval))
            try:
                yield
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                dr_log.flush()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get(STATS_PATH, _stats)
    app.router.add_post("/{tail:.*}", _receive)
    return app


async def _receive(request: web.Request) -> web.Response:
    body = await request.read()
    accepted, reason = request.app[_LOG].add(body, request.path)
    if reason is not None:
        log.warning("refused a delivery report body on %s: %s", request.path, reason)
        return _json({"error": reason}, status=400)
    return _json({"received": accepted})


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[_LOG].stats().as_dict())


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


async def _flush_every(dr_log: DeliveryReportLog, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            dr_log.flush()
        except OSError as exc:
            log.error("cannot write delivery reports: %s", exc)


def _open(stack: contextlib.AsyncExitStack, target: BinaryIO | str | Path) -> Sink:
    if not isinstance(target, str | Path):
        return target
    try:
        return stack.enter_context(open(target, "ab"))
    except OSError as exc:
        raise OutputError(f"cannot open {target} for appending: {exc.strerror}") from exc


class _LazyAppend:
    """An append-mode file opened on first write, so no empty side file appears."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> int:
        if self._file is None:
            self._file = open(self._path, "ab")  # noqa: SIM115
        return self._file.write(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --- runners -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningReceiver:
    """A receiver serving on ``host:port``; ``url`` is a callback URL for ``send``."""

    app: web.Application
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT/dr``: pass it as ``--callbacks``."""
        return f"{self.base_url}/dr"

    def stats(self) -> ReceiverStats:
        """The counts so far."""
        return self.app[_LOG].stats()


@contextlib.asynccontextmanager
async def running_receiver(
    out: BinaryIO | str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> AsyncIterator[RunningReceiver]:
    """Serve a receiver until the block exits, then write everything and close.

    ``port=0`` picks a free port; ``options`` go to :func:`create_receiver_app`.
    """
    app = create_receiver_app(out, **options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield RunningReceiver(app, host, runner.addresses[0][1])
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
