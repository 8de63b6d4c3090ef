"""Control of a running job: pause, resume, cancel, re-rate and status.

`Controls` is what a run can be told to do; three things tell it. ``dispatcher ctl JOB
ACTION`` (`request`, the client) reaches the running ``send`` over a Unix socket
(`ControlServer`); ``SIGUSR1`` toggles pause (`toggle_pause`); the job's own schedule
(`job_controls`) holds the start back until ``--start-at`` and halts the job at its
expiry.

The channel: a Unix socket in a directory only the job's owner can enter (0700: under
``$XDG_RUNTIME_DIR`` when there is one, else ``/tmp/dispatcher-UID``), the socket itself
0600, and each caller's user checked (``SO_PEERCRED``). A socket path is limited to
about 100 bytes, so the socket has a short name there and a pointer file beside the
journal (`control_path`: the results path + ``.ctl``) names it; both go when the run
ends. There is one only when results go to a file (the job is named by it); with
results on stdout there is no journal, so no ``ctl`` (and no ``--resume``).

The protocol: one JSON object per line each way, then the server closes. A request is
``{"action": "pause"|"resume"|"cancel"|"status"}`` or ``{"action": "rate", "code": C,
"rate": N}`` (N a positive number, or null for no limit); the answer is ``{"ok": true,
"message": …}`` (``status``: the status object) or ``{"ok": false, "error": …}``. The
answer never holds a secret: there is none in what it is made of.

What each action does: ``pause`` closes the gate every lane passes before starting a
request (`Pause`): requests in flight finish, no new one starts — at once, not within a
second; ``resume`` opens it; ``cancel`` halts the job (`Halt`, CANCELLED: the lines not
sent are CANCELLED, resumable, exit 4); ``rate`` changes a code's limit live
(`RateLimits.set_rate`, no burst; with a shared quota, for every job sharing it). Every
action is logged and counted in the summary (``controls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import stat
import struct
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from dispatcher.errors import FatalError
from dispatcher.halt import Halt
from dispatcher.models import Status
from dispatcher.resume import job_results
from dispatcher.schedule import Schedule, Timeline, countdown

if TYPE_CHECKING:
    from dispatcher.config import Config
    from dispatcher.journal import Journal
    from dispatcher.limiter import RateLimits
    from dispatcher.quota.shared import SharedQuota
    from dispatcher.summary import Summary
    from dispatcher.timing import WallClock
    from dispatcher.windows import Held, Windows

log = logging.getLogger("dispatcher.control")

ACTIONS = ("pause", "resume", "cancel", "rate", "status")
#: The longest request line the server reads (requests are a few dozen bytes).
MAX_REQUEST = 4096
#: Seconds a client may take to send its request, and the client waits for an answer.
TIMEOUT = 5.0
#: Longest socket path the platform takes (sun_path is 108 bytes on Linux, 104 on BSD).
MAX_SOCKET_PATH = 100
CANCELLED = "cancelled by dispatcher ctl"
EXPIRED = "the job expired at {} before this line was accepted"


def control_path(results: str) -> str:
    """The pointer file beside a job's journal that names its control socket."""
    return results + ".ctl"


class ControlError(FatalError):
    """No running job answers for a results path (exit 1 from ``ctl``)."""


class Pause:
    """The gate each lane passes before starting a request: open unless paused; a
    halted job opens it for good (its lines are then accounted, not sent)."""

    def __init__(self, halt: Halt) -> None:
        self._halt = halt
        self._open = asyncio.Event()
        self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def set(self, paused: bool) -> bool:
        """Pause or resume; False when it already was so."""
        if paused == self.paused:
            return False
        if paused:
            self._open.clear()
        else:
            self._open.set()
        return True

    async def wait(self) -> None:
        """Return once not paused, or halted."""
        if self._open.is_set() or self._halt.halted:
            return
        opened = asyncio.ensure_future(self._open.wait())
        halted = asyncio.ensure_future(self._halt.wait())
        try:
            await asyncio.wait({opened, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            halted.cancel()


class Controls:
    """What a running job can be told: the run's `Halt`, its `Pause`, its rate limits.

    ``waiting`` and ``next_opening`` tell `status` how many lines wait for a send
    window and when the next one opens (the windows' held store; none by default).
    """

    def __init__(
        self,
        *,
        limits: RateLimits | SharedQuota,
        summary: Summary,
        job: str = "",
        timeline: Timeline | None = None,
        halt: Halt | None = None,
        dry_run: bool = False,
    ) -> None:
        #: the run's one halt (the send windows' held lines wait on it too)
        self.halt = halt or Halt()
        #: a dry run says what the schedule would do instead of waiting for it
        self.dry_run = dry_run
        self.pause = Pause(self.halt)
        self.limits = limits
        self.summary = summary
        self.job = job
        self.timeline = timeline
        self.waiting: Callable[[], int] = lambda: 0
        self.next_opening: Callable[[], str | None] = lambda: None
        #: per code, recent (loop time, messages sent) samples for the measured rate
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=6)

    @property
    def expires(self) -> float | None:
        """The job's expiry on the event loop's clock (None: it has none)."""
        return None if self.timeline is None else self.timeline.expires

    # --- the actions --------------------------------------------------------------------

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one request (see the module docstring); never raises."""
        if not isinstance(request, dict) or request.get("action") not in ACTIONS:
            return _refused(f"the action must be one of {', '.join(ACTIONS)}")
        action = request["action"]
        if action == "status":
            return {"ok": True, "status": self.status()}
        if action == "rate":
            code, rate = request.get("code"), request.get("rate", 0)
            if not isinstance(code, str) or not code or len(code) > 64:
                return _refused("rate needs a sender code")
            if rate is None:
                rate = math.inf
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
                return _refused("rate needs a positive number of messages per second, or inf")
            return {"ok": True, "message": self.set_rate(code, float(rate), source="ctl")}
        act = {"pause": self.do_pause, "resume": self.do_resume, "cancel": self.cancel}[action]
        return {"ok": True, "message": act(source="ctl")}

    def do_pause(self, *, source: str) -> str:
        return self._toggle(True, source)

    def do_resume(self, *, source: str) -> str:
        return self._toggle(False, source)

    def toggle(self, *, source: str) -> str:
        """Pause when running, resume when paused (``SIGUSR1``)."""
        return self._toggle(not self.pause.paused, source)

    def _toggle(self, paused: bool, source: str) -> str:
        action = "pause" if paused else "resume"
        if self.halt.halted:
            message = f"the job is {self.halt.status}: nothing more is sent"
        elif self.pause.set(paused):
            message = (
                "paused: requests in flight finish, no new one starts"
                if paused
                else "resumed: sending again"
            )
        else:
            message = "already paused" if paused else "not paused"
        self._record(action, source, message)
        return message

    def cancel(self, *, source: str) -> str:
        """Halt the job: the lines not sent yet become CANCELLED (resumable)."""
        if self.halt.set(Status.CANCELLED, CANCELLED):
            message = "cancelled: the lines not sent are CANCELLED; --resume sends them"
            self.summary.exit_reason = "cancelled"
        else:
            message = f"the job is already {self.halt.status}"
        self._record("cancel", source, message)
        return message

    def expire(self) -> None:
        """The expiry has come: what is not accepted now is EXPIRED_UNSENT."""
        assert self.timeline is not None
        moment = self.timeline.schedule.record()["expire_at"]
        if self.halt.set(Status.EXPIRED_UNSENT, EXPIRED.format(moment)):
            would = "would expire" if self.dry_run else "expired"
            log.warning("the job %s at %s: lines not accepted are EXPIRED_UNSENT", would, moment)
            self.summary.exit_reason = f"expired at {moment}"

    def set_rate(self, code: str, rate: float, *, source: str) -> str:
        """Change ``code``'s limit now (no burst; with a shared quota, for every job)."""
        shown = "no limit" if math.isinf(rate) else f"{rate:g}/s"
        share = getattr(self.limits, "share_rate", None)
        if share is not None:  # the shared quota: every job sharing it follows
            share(code, rate)
            message = f"code {code}: rate {shown}, for every job sharing the quota"
        else:
            set_rate = getattr(self.limits, "set_rate")  # noqa: B009 (RateLimits)
            set_rate(code, rate)
            message = f"code {code}: rate {shown}"
        self._record("rate", source, message)
        return message

    def _record(self, action: str, source: str, message: str) -> None:
        self.summary.controls[action] += 1
        level = logging.WARNING if action == "cancel" else logging.INFO
        log.log(level, "control (%s): %s: %s", source, action, message)

    # --- status ------------------------------------------------------------------------

    def sample(self) -> None:
        """Note what each code has sent so far (for the measured rate in `status`)."""
        now = asyncio.get_running_loop().time()
        self._samples.append((now, {c: s.messages for c, s in self.summary.codes.items()}))

    def status(self) -> dict[str, Any]:
        """What ``ctl status`` prints: state, counts by status, per code rate and limit."""
        self.sample()
        summary = self.summary
        first_t, first = self._samples[0]
        last_t, last = self._samples[-1]
        span = last_t - first_t
        codes: dict[str, Any] = {}
        for code in sorted(set(last) | set(_rated(self.limits))):
            limit = self.limits.rate(code)
            sent = last.get(code, 0)
            rate = (sent - first.get(code, 0)) / span if span >= 0.5 else None
            codes[code] = {
                "limit": None if math.isinf(limit) else limit,
                "rate": None if rate is None else round(rate, 1),
                "sent": sent,
            }
        timeline = self.timeline
        schedule = timeline.schedule if timeline is not None else None
        return {
            "job": self.job,
            "pid": os.getpid(),
            "state": self._state(),
            "paused": self.pause.paused,
            "halted": self.halt.status,
            "lines": summary.lines,
            "statuses": {str(k): v for k, v in sorted(summary.statuses.items()) if v},
            "codes": codes,
            "waiting_for_window": self.waiting(),
            "next_window_opens": self.next_opening(),
            **_schedule(schedule, timeline),
            "elapsed_s": round(summary.elapsed, 1),
            "controls": dict(summary.controls),
        }

    def _state(self) -> str:
        if self.halt.status is Status.CANCELLED:
            return "cancelled"
        if self.halt.status is Status.EXPIRED_UNSENT:
            return "expired"
        if self.timeline is not None and self.timeline.until_start() > 0:
            return "waiting to start"
        return "paused" if self.pause.paused else "sending"

    # --- the schedule -----------------------------------------------------------------

    async def started(self, stop: Callable[[], Any]) -> bool:
        """Wait for the scheduled start, logging the countdown each minute; return at
        once when the job is halted meanwhile (its lines are then accounted, not sent).
        False when ``stop()`` (awaitable: the run's stop request) came first."""
        timeline = self.timeline
        if timeline is None or timeline.until_start() <= 0:
            return True
        if self.dry_run:
            at = timeline.schedule.describe().partition(", ")[0]
            log.info("dry run: the job %s, in %s", at, countdown(timeline.until_start()))
            return True
        halted = asyncio.ensure_future(self.halt.wait())
        stopped = asyncio.ensure_future(stop())
        try:
            while (left := timeline.until_start()) > 0 and not self.halt.halted:
                at = timeline.schedule.describe().partition(", ")[0]
                log.warning("waiting: the job %s, in %s (Ctrl-C stops it)", at, countdown(left))
                wake = min(left, _next_minute(left))
                await asyncio.wait(
                    {halted, stopped}, timeout=wake, return_when=asyncio.FIRST_COMPLETED
                )
                if stopped.done():
                    return False
        finally:
            halted.cancel()
            stopped.cancel()
        return True

    async def expiry(self) -> None:
        """Halt the job at its expiry (a timer on the loop clock); never returns early."""
        expires = self.expires
        if expires is None:
            return
        await asyncio.sleep(max(0.0, expires - asyncio.get_running_loop().time()))
        self.expire()


def _opening(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _next_minute(left: float) -> float:
    """Seconds until ``left`` is a whole number of minutes (the countdown's next line)."""
    return left % 60 or 60.0


def _schedule(schedule: Schedule | None, timeline: Timeline | None) -> dict[str, Any]:
    if schedule is None or timeline is None:
        return {}
    record = schedule.record()
    out: dict[str, Any] = {k: record[k] for k in ("start_at", "expire_at") if k in record}
    if timeline.until_start() > 0:
        out["starts_in_s"] = round(timeline.until_start(), 1)
    return out


def _rated(limits: RateLimits | SharedQuota) -> list[str]:
    base = getattr(limits, "limits", limits)  # a shared quota over RateLimits
    return list(getattr(base, "codes", ()))


def _refused(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


# --- SIGUSR1 ----------------------------------------------------------------------------

#: The controls of the jobs running in this process (one, from the CLI).
_RUNNING: weakref.WeakSet[Controls] = weakref.WeakSet()


def toggle_pause() -> None:
    """``SIGUSR1``: pause the running job, or resume it when paused."""
    for controls in list(_RUNNING):
        controls.toggle(source="SIGUSR1")


# --- the server ---------------------------------------------------------------------------


def socket_directory() -> str:
    """A directory only this user can enter, for control sockets (made if need be):
    ``$XDG_RUNTIME_DIR/dispatcher``, else ``/tmp/dispatcher-UID``. Raises OSError when
    it is not this user's, or not private and cannot be made so."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = f"/tmp/dispatcher-{uid}"
    usable = os.path.isabs(runtime) and len(runtime) < MAX_SOCKET_PATH - 40
    if usable and os.path.isdir(runtime):
        base = os.path.join(runtime, "dispatcher")
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o700)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise PermissionError(f"{base} is not a directory of this user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(base, 0o700)
    return base


class Answering(Protocol):
    """What a control socket serves: the run's `Controls`, or the parent of a
    ``--workers`` job relaying to its workers (`dispatcher.workers.Relay`)."""

    job: str

    def handle(self, request: Any) -> dict[str, Any]: ...
    def sample(self) -> None: ...


class ControlServer:
    """The job's control socket and the pointer beside its journal (`control_path`)."""

    def __init__(self, controls: Answering, results: str) -> None:
        self.controls = controls
        self.pointer = control_path(results)
        self.socket = ""
        self._server: asyncio.AbstractServer | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen, then write the pointer; raises OSError when it cannot."""
        directory = socket_directory()
        self.socket = os.path.join(directory, f"{self.controls.job or 'job'}-{os.getpid()}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)  # a crashed run of the same pid: no one listens there
        self._server = await asyncio.start_unix_server(self._serve, self.socket, limit=MAX_REQUEST)
        os.chmod(self.socket, 0o600)
        pointer = {"socket": self.socket, "pid": os.getpid(), "job": self.controls.job}
        _write_private(self.pointer, orjson.dumps(pointer) + b"\n")
        self._sampler = asyncio.create_task(self._sample(), name="control sampler")
        log.info("control: dispatcher ctl %s pause|resume|cancel|rate|status", self.pointer[:-4])

    async def close(self) -> None:
        """Stop listening; remove the socket and the pointer (when still ours)."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        _remove(self.pointer, self.socket)

    async def _sample(self) -> None:
        while True:
            self.controls.sample()
            await asyncio.sleep(1.0)

    def _handle(self, request: Any) -> dict[str, Any]:
        try:
            return self.controls.handle(request)
        except Exception as exc:  # a bug: say so to the caller, keep the run going
            log.error("control: the request failed: %r", exc)
            return _refused(f"the job could not do it: {type(exc).__name__}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _same_user(writer):
                answer = _refused("only the job's owner may control it")
            else:
                line = await asyncio.wait_for(reader.readline(), TIMEOUT)
                try:
                    request = orjson.loads(line)
                except orjson.JSONDecodeError:
                    answer = _refused("a request is one JSON object on one line")
                else:
                    answer = self._handle(request)
            writer.write(orjson.dumps(answer, default=str) + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            log.debug("control: a request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _remove(pointer: str, socket_path: str) -> None:
    """Remove the socket, and the pointer when it still names it (a later run of the
    same job may have written its own)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        with open(pointer, "rb") as f:
            ours = orjson.loads(f.read()).get("socket") == socket_path
        if ours:
            os.unlink(pointer)
    with contextlib.suppress(OSError):
        os.unlink(socket_path)


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """Whether the peer runs as this user (the directory already keeps others out)."""
    sock = writer.get_extra_info("socket")
    peercred = getattr(socket, "SO_PEERCRED", None)
    if sock is None or peercred is None:
        return True
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return True
    _, uid, _ = struct.unpack("3i", raw)
    return bool(uid == os.getuid())


def _write_private(path: str, data: bytes) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def job_controls(
    config: Config,
    journal: Journal,
    limits: RateLimits | SharedQuota,
    summary: Summary,
    schedule: Schedule,
    clock: WallClock,
    halt: Halt,
    windows: Windows | None,
) -> contextlib.AbstractAsyncContextManager[Controls]:
    """`controlled`, for a send job: its control socket when it has a journal (results
    in a file), the lines its send ``windows`` hold for ``status``."""
    return controlled(
        limits=limits,
        summary=summary,
        job=journal.job,
        schedule=schedule,
        clock=clock,
        results=None if journal.path is None else job_results(config),
        halt=halt,
        held=None if windows is None else windows.held,
        dry_run=config.dry_run,
    )


@contextlib.asynccontextmanager
async def controlled(
    *,
    limits: RateLimits | SharedQuota,
    summary: Summary,
    job: str,
    schedule: Schedule,
    clock: WallClock,
    results: str | None,
    halt: Halt | None = None,
    held: Held | None = None,
    dry_run: bool = False,
) -> AsyncIterator[Controls]:
    """The run's `Controls` over its ``halt``: its expiry timer running (already halted
    when the expiry has passed: nothing is sent), SIGUSR1 toggling pause, and — when
    ``results`` names the job's file — its control socket. ``held``: the lines waiting
    for their send window, for ``status``. A ``dry_run`` does not wait for the start."""
    timeline = Timeline(schedule, clock)
    controls = Controls(
        limits=limits, summary=summary, job=job, timeline=timeline, halt=halt, dry_run=dry_run
    )
    if held is not None:
        controls.waiting = lambda: held.waiting
        controls.next_opening = lambda: _opening(held.next_opening)
    if described := schedule.describe():
        log.info("schedule: the job %s", described)
    start, end = schedule.start_at, schedule.expire_at
    expires_first = start is not None and end is not None and end <= start
    if expires_first:
        log.warning("the job expires before its scheduled start: nothing will be sent")
    if timeline.expired() or (dry_run and expires_first):
        controls.expire()
    timer = asyncio.create_task(controls.expiry(), name="expiry")
    server = None
    if results is not None:
        server = ControlServer(controls, results)
        try:
            await server.start()
        except OSError as exc:
            log.warning("control: no socket (%s): dispatcher ctl cannot reach this job", exc)
            await server.close()
            server = None
    _RUNNING.add(controls)
    try:
        yield controls
    finally:
        _RUNNING.discard(controls)
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
        if server is not None:
            await server.close()


# --- the client ---------------------------------------------------------------------------


def request(results: str, message: dict[str, Any], *, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the job whose results file is ``results``; its answer.

    Raises `ControlError` when no running job answers (no pointer, a stale one).
    """
    pointer = control_path(results)
    try:
        with open(pointer, "rb") as f:
            path = orjson.loads(f.read())["socket"]
    except FileNotFoundError:
        raise ControlError(
            f"no running job for {results}: there is no control pointer {pointer} (is the "
            "send running, with --results naming this file?)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ControlError(f"cannot read the control pointer {pointer}: {exc}") from None
    started = time.monotonic()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(orjson.dumps(message) + b"\n")
            answer = _read_line(sock)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(
            f"no running job answers for {results}: its control pointer {pointer} is stale "
            "(the send that wrote it has ended; the job can be finished with send --resume)"
        ) from None
    except (OSError, TimeoutError) as exc:
        waited = time.monotonic() - started
        raise ControlError(
            f"the job of {results} did not answer ({exc or type(exc).__name__}, "
            f"after {waited:.1f}s)"
        ) from None
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise ControlError(f"the job of {results} gave an answer that is not JSON") from None
    if not isinstance(parsed, dict):
        raise ControlError(f"the job of {results} gave an answer that is not a JSON object")
    return parsed


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > 1 << 20:
            break
    return data
