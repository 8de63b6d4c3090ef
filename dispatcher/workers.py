"""``send --workers N``: N processes, each the whole pipeline on its share of the input.

One core out-runs any real quota, but a CPU-heavy job (long templates, smart encoding,
strict numbers) can use the machine's other cores. Each worker is ``dispatcher send``
with the user's own command line, run on share K of N by the rule of
`dispatcher.shares` (a stable hash of the number, so every line to one recipient is in
one worker and duplicates stay exact). A worker reads the whole input and keeps its
share — a file or a ``.gz``; for stdin the parent reads the
stream (inflating it when it is gzip) and hands each worker its own lines and a bare
newline for every other line (`HandOut`: one parse of each line, not N) — so line
numbers are the input's in every worker.

The job is still named by its results path, ``OUT``:

* the parent holds the job's lock (``OUT.lock``) for the whole run and records the
  number of workers in ``OUT.workers``: a ``--resume`` with another N is refused;
* worker K writes ``OUT.wKofN`` with its own journal and lock beside it (its
  summary, invalid numbers and malformed lines likewise), so each worker is exactly
  as crash-safe as a single run, and ``--resume`` resumes each one;
* when every worker has finished its share, the parent joins their results into
  ``OUT`` (one result per input line), and the other outputs likewise, then removes
  the worker files; until then ``OUT`` does not exist and the job is resumable;
* with results on stdout the workers' results stream through the parent as they
  come (no journal: no resume, as for a single process).

Without a shared quota (``--quota-url``) each worker gets 1/N of every rate, and of
every cap (the remainder to the first workers): together they never exceed the job's
limits. With a quota the rates are shared through Redis as between any processes,
and so are the caps: every worker counts in the job's one count in Redis
(`dispatcher.quota.caps`), so a cap is neither split nor stranded in a worker whose
share ran out.

Progress and metrics: each worker pushes its numbers to the parent down a pipe of its
own (`dispatcher.metrics.WorkerMetrics`) about once a second; the parent serves them
merged on ``--metrics-port`` and shows one progress line for the job (`_progress`).

Signals: the workers run in their own session, so a Ctrl-C at the terminal reaches
only the parent, which passes each signal on once: the first stops every worker
gracefully, the second at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import orjson

from dispatcher.cli._common import Signals
from dispatcher.config import Config
from dispatcher.errors import ConfigError, InputError
from dispatcher.reader import CHUNK_SIZE, parse_lines
from dispatcher.shares import Share, shares_of
from dispatcher.sources import open_source

if TYPE_CHECKING:
    from dispatcher.metrics import WorkerMetrics

log = logging.getLogger("dispatcher")

#: Set by the parent in a worker's environment: "K/N", this worker's share.
WORKER_ENV = "DISPATCHER_WORKER_OF"
#: Most workers on one machine.
MAX_WORKERS = 64


def record_path(results: str) -> str:
    """The parent's record of a workers job: how many workers it runs."""
    return results + ".workers"


@dataclass(frozen=True, slots=True)
class Worker:
    """Worker ``k`` (1-based) of ``n`` and the files it writes."""

    k: int
    n: int
    results: str | None  # None: its results stream through its stdout
    summary: str
    invalid: str | None
    rejects: str | None

    @classmethod
    def of(cls, config: Config, k: int, n: int, scratch: str) -> Worker:
        """Worker ``k``'s files beside the job's own (``scratch``: beside the job's
        results, or a temporary directory when results go to stdout)."""
        tag = f".w{k}of{n}"
        results = None if config.results == "-" else config.results + tag
        return cls(
            k,
            n,
            results,
            summary=(results or os.path.join(scratch, "results")) + ".summary.json",
            invalid=config.invalid + tag if config.invalid else None,
            rejects=config.rejects + tag if config.rejects else None,
        )

    def files(self) -> list[str]:
        """What the worker leaves once the parent has joined its outputs."""
        files = [self.summary]
        if self.results is not None:
            files += [self.results, self.results + ".journal", self.results + ".lock"]
        files += [f for f in (self.invalid, self.rejects) if f]
        return files


# --- in the worker ----------------------------------------------------------------------


def worker_share() -> tuple[int, int] | None:
    """(K, N) when this process is a worker of a ``--workers`` job, else None."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    share = Share.parse(value, WORKER_ENV)
    return share.index + 1, share.count


def for_worker(config: Config, k: int, n: int) -> Config:
    """The worker's configuration: its share of the input (within the job's own
    ``--shard``, when it has one) and — without a shared quota, which counts them for
    the whole job — its share of the caps and of the rates."""
    outer = Share.parse(config.shard) if config.shard else Share(0, 1)
    # share_of(x, S*N) % S == share_of(x, S): worker k keeps only lines of the shard
    share = Share(outer.index + outer.count * (k - 1), outer.count * n)
    changes: dict[str, Any] = {"shard": str(share), "workers": 1}
    if config.quota_url is not None:
        return dataclasses.replace(config, **changes)
    changes["rates"] = _split_rates(config.rates, n)
    changes["kind_rates"] = _split_rates(config.kind_rates, n)
    for name in ("max_messages", "max_job_segments"):
        cap = getattr(config, name)
        if cap is not None:
            changes[name] = cap // n + (1 if k <= cap % n else 0)
    if config.max_cost is not None:
        changes["max_cost"] = config.max_cost / n
    return dataclasses.replace(config, **changes)


def _split_rates(rates: Mapping[str, float], n: int) -> Mapping[str, float]:
    from types import MappingProxyType

    return MappingProxyType({code: rate / n for code, rate in rates.items()})


# --- in the parent ----------------------------------------------------------------------


def worker_argv(argv: Sequence[str], worker: Worker, *, resume: bool) -> list[str]:
    """The user's own command line for one worker: later options win in argparse, so
    the worker's outputs go last; ``--resume`` only for a worker that has a journal."""
    words = [w for w in argv if w not in ("--resume", "--force")]
    if resume:
        words.append("--resume")
    elif "--force" in argv:
        words.append("--force")
    words += ["--results", worker.results or "-", "--summary", worker.summary]
    if worker.invalid:
        words += ["--invalid", worker.invalid]
    if worker.rejects:
        words += ["--rejects", worker.rejects]
    return [*words, "--no-progress"]


class Record:
    """``OUT.workers``: the number of workers of the job, and whether it is complete."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                value = orjson.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {self.path}: {exc}: remove it, or --force") from None
        if not isinstance(value, dict) or type(value.get("workers")) is not int:
            raise ConfigError(f"{self.path} is not a workers record: remove it, or --force")
        return value

    def write(self, workers: int, *, complete: bool) -> None:
        """Replace the record (synced, renamed into place); `OutputError` when it cannot."""
        from dispatcher.merge import write_atomically

        record = orjson.dumps({"workers": workers, "complete": complete}) + b"\n"
        write_atomically(self.path, lambda out: out.write(record))


def check_record(config: Config, n: int) -> bool:
    """Whether the job is complete already (a ``--resume`` has nothing to do); raises
    `ConfigError` when the job's record disagrees with this run (exit 2)."""
    record = Record(record_path(config.results)).read()
    if record is None:
        if config.resume and not _any_worker_files(config, n):
            raise ConfigError(
                f"--resume: no job with --workers at {config.results} (no "
                f"{record_path(config.results)}): start it without --resume"
            )
        if not config.force and os.path.lexists(config.results + ".journal"):
            raise ConfigError(
                f"a single-process job exists at {config.results}: finish it with --resume "
                "without --workers, or --force to start over"
            )
        return False
    if config.force:
        return False
    if not config.resume:
        raise ConfigError(
            f"a job with --workers {record['workers']} exists at {config.results}: finish it "
            "with --resume, or add --force to start over"
        )
    if record["workers"] != n:
        raise ConfigError(
            f"--resume: the job ran with --workers {record['workers']}, not {n}: each "
            "worker's journal covers its own share; resume with the same number"
        )
    return bool(record.get("complete"))


def _any_worker_files(config: Config, n: int) -> bool:
    return any(os.path.lexists(f"{config.results}.w{k}of{n}.journal") for k in range(1, n + 1))


#: The hand-out's mark for a line every worker gets whole (blank, or too long to judge
#: here), and for a line no worker keeps (another ``--shard``'s): each gets a newline.
_EVERYONE = -1
_NOBODY = -2
_BOM = b"\xef\xbb\xbf"


class HandOut:
    """stdin dealt out to the workers, line by line: the synchronous core of `_deal`.

    Each line is parsed here once, by the reader's own `parse_lines`, and its share
    decided by `shares_of` — what `Share.keep` decides in the worker. The worker that
    keeps it gets the line, every other worker a bare newline, so that every worker
    numbers the lines as the input does (a blank line has a number and no record).
    Lines whose fate in the worker's reader depends on bytes a blank would drop go to
    every worker whole, and each worker's `Share.keep` decides as for a file: blank
    lines, and lines longer than ``max_line_bytes`` (the first line counted with its
    BOM), which are passed on as they come, never held whole here.

    ``shares[i]`` is worker ``i``'s share (all of one count; within a ``--shard`` they
    do not cover every share, and a line of another shard goes to nobody).
    `feed` and `finish` return the bytes for each worker, in order.
    """

    def __init__(self, shares: Sequence[Share], *, max_line_bytes: int) -> None:
        self.count = shares[0].count
        if any(s.count != self.count for s in shares):
            raise ValueError("the workers' shares must be of one count")
        self.workers = len(shares)
        self.max_line_bytes = max_line_bytes
        #: Lines dealt so far (complete, or passed on as too long).
        self.lines = 0
        self._worker_of = {s.index: i for i, s in enumerate(shares)}
        self._pieces: list[bytes] = []  # the current partial line
        self._pending = 0
        self._passing = False  # inside a long line, which every worker gets as it comes

    def feed(self, data: bytes) -> list[bytes]:
        """What each worker gets of the lines that ``data`` completes."""
        out: list[list[bytes]] = [[] for _ in range(self.workers)]
        if self._passing:
            newline = data.find(b"\n")
            if newline < 0:
                return [data] * self.workers
            self._passing = False
            for into in out:
                into.append(data[: newline + 1])
            data = data[newline + 1 :]
        if b"\n" in data:
            if self._pieces:
                self._pieces.append(data)
                data = b"".join(self._pieces)
            lines = data.split(b"\n")
            tail = lines.pop()
            self._deal(lines, out, b"\n")
            self._pieces = [tail] if tail else []
            self._pending = len(tail)
        elif data:
            self._pieces.append(data)
            self._pending += len(data)
        if self._pending > self.max_line_bytes:  # every worker's reader judges it
            start = b"".join(self._pieces)
            for into in out:
                into.append(start)
            self.lines += 1
            self._pieces, self._pending, self._passing = [], 0, True
        return [b"".join(into) for into in out]

    def finish(self) -> list[bytes]:
        """What each worker gets of the last line, when the input does not end with a
        newline: the line as it is to the worker that keeps it, a newline to the others."""
        out: list[list[bytes]] = [[] for _ in range(self.workers)]
        if self._pieces and not self._passing:
            last = b"".join(self._pieces)
            self._pieces, self._pending = [], 0
            self._deal([last], out, b"")
        return [b"".join(into) for into in out]

    def owners(self, lines: Sequence[bytes]) -> list[int]:
        """The worker (0-based) that keeps each of these next physical lines,
        `_EVERYONE` or `_NOBODY`."""
        first = self.lines + 1
        self.lines += len(lines)
        parsed = list(lines)
        if first == 1 and parsed[0].startswith(_BOM):
            parsed[0] = parsed[0][len(_BOM) :]  # as LineParser strips it
        owners = [_EVERYONE] * len(lines)  # blank lines have no record: whole to everyone
        records = parse_lines(parsed, first, max_line_bytes=self.max_line_bytes)
        if not records:
            return owners
        worker_of, limit = self._worker_of, self.max_line_bytes
        for record, share in zip(records, shares_of(records, self.count).tolist(), strict=True):
            at = record.line - first
            if len(lines[at]) <= limit:
                owners[at] = worker_of.get(share, _NOBODY)
        return owners

    def _deal(self, lines: list[bytes], out: list[list[bytes]], end: bytes) -> None:
        if not lines:
            return
        owners = self.owners(lines)
        for worker, into in enumerate(out):
            mine = [
                line if owner in (worker, _EVERYONE) else b""
                for line, owner in zip(lines, owners, strict=True)
            ]
            # the last line without its newline: to the others a newline numbers it
            into.append(b"\n".join(mine) + end or b"\n")


async def _send(live: dict[int, asyncio.StreamWriter], blocks: Sequence[bytes]) -> None:
    """``blocks[i]`` to worker ``i``, waiting for each pipe to take it; a worker that
    has gone stops receiving, the others go on."""
    for i, sink in list(live.items()):
        if not blocks[i]:
            continue
        try:
            sink.write(blocks[i])
            await sink.drain()
        except (BrokenPipeError, ConnectionResetError):
            del live[i]


async def _deal(
    source: BinaryIO,
    sinks: Sequence[asyncio.StreamWriter],
    shares: Sequence[Share],
    max_line_bytes: int,
) -> None:
    """Hand stdin out to the workers (`HandOut`): each parses only its own lines.

    stdin is read as a single ``send -`` reads it (`dispatcher.sources.open_source`:
    what has come, a read1 at a time, so a slow pipe does not hold lines back), and a
    gzip stream is inflated here, once — members one after another, a block at a time
    — not by every worker. EOF closes every worker's stdin; a failure does not (it is
    `_input_failed`'s), lest the workers take a cut input for the whole of it. A stream
    that cannot be read on (truncated or corrupt gzip, a read error) raises the
    `InputError` a single process reports, naming the last line read."""
    live = dict(enumerate(sinks))
    loop = asyncio.get_running_loop()
    stream = await loop.run_in_executor(None, open_source, source, CHUNK_SIZE)
    hand_out = HandOut(shares, max_line_bytes=max_line_bytes)
    while live:
        try:
            data = await loop.run_in_executor(None, stream.read)
        except InputError as exc:  # as `dispatcher.reader.Reader` words it
            raise InputError(
                f"{exc} (after line {hand_out.lines}; every line up to it was read)"
            ) from exc
        if not data:
            await _send(live, hand_out.finish())
            break
        await _send(live, hand_out.feed(data))
    for sink in live.values():
        with contextlib.suppress(OSError):
            sink.close()


def _input_failed(procs: Sequence[asyncio.subprocess.Process], task: asyncio.Task[None]) -> None:
    """When stdin cannot be read or handed out, stop the workers (a graceful stop):
    the job is unfinished, not complete on part of its input. An input that breaks
    (`InputError`) is the job's error, reported when the workers have stopped
    (`run_job`), as a single process reports it."""
    if task.cancelled() or (exc := task.exception()) is None:
        return
    if isinstance(exc, InputError):
        log.info("stdin broke off (%s): stopping the workers", exc)
    else:
        log.error("cannot hand stdin out to the workers (%s): stopping them", exc)
    signal_all(procs, signal.SIGTERM)


async def _relay(stream: asyncio.StreamReader, out: BinaryIO) -> None:
    """A worker's results, whole lines at a time, to the parent's stdout."""
    while line := await stream.readline():
        out.write(line)
        out.flush()


@dataclass(slots=True)
class Outcome:
    """How the workers ended: their exit codes and summaries."""

    codes: list[int]
    summaries: list[dict[str, Any] | None]
    elapsed: float
    #: stdin broke off (a truncated or corrupt gzip stream): the job's error
    broken: InputError | None = None


async def run_workers(
    argv: Sequence[str],
    config: Config,
    signals: Signals,
    workers: Sequence[Worker],
    resumes: Sequence[bool],
    begin: Callable[[], None],
) -> Outcome:
    """Serve the job's metrics (when asked: one endpoint, fed by every worker), call
    ``begin`` (nothing is started before a bad metrics port is refused), answer ``ctl``
    for the whole job (`Relay`), show the job's progress line (on a terminal, or
    ``--progress``: from the same numbers the workers push for the metrics), then run
    the workers (`_run_workers`)."""
    show = config.progress if config.progress is not None else sys.stderr.isatty()
    async with contextlib.AsyncExitStack() as stack:
        gathered = None
        if config.metrics_port is not None or show:
            from dispatcher.metrics import WorkerMetrics

            gathered = WorkerMetrics()
        if config.metrics_port is not None:
            from dispatcher.metrics import serving

            assert gathered is not None
            url = await stack.enter_async_context(
                serving(config.metrics_host, config.metrics_port, gathered.snapshot)
            )
            log.info("metrics on %s (the job's: every worker's numbers)", url)
        begin()
        if config.results != "-":
            await _serve_controls(
                stack, Relay(workers, config.results, shared=config.quota_url is not None)
            )
        progress = None
        if show and gathered is not None:
            progress = asyncio.create_task(_progress(gathered))
        try:
            outcome = await _run_workers(argv, config, signals, workers, resumes, gathered)
            if gathered is not None:
                await gathered.wait()  # every worker's last numbers
        finally:
            if progress is not None:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
    return outcome


async def _progress(gathered: WorkerMetrics, interval: float = 0.25) -> None:
    """The job's progress line, refreshed until cancelled (then shown once more): the
    workers' numbers merged, which they push about once a second."""
    from dispatcher.progress import Progress, show_job

    began = time.perf_counter()
    progress = Progress(None)
    try:
        while True:
            show_job(progress, gathered.snapshot(), time.perf_counter() - began)
            await asyncio.sleep(interval)
    finally:
        show_job(progress, gathered.snapshot(), time.perf_counter() - began)
        progress.close()


async def _serve_controls(stack: contextlib.AsyncExitStack, relay: Relay) -> None:
    """``ctl OUT`` for the job as a whole, while the workers run; a socket that cannot
    be made costs the control, not the job."""
    from dispatcher.control import ControlServer

    server = ControlServer(relay, relay.results)
    try:
        await server.start()
    except OSError as exc:
        log.warning("control: no ctl for this job (%s); each worker answers on its own", exc)
        return
    stack.push_async_callback(server.close)


class Relay:
    """The parent's side of ``ctl OUT``: each request passed on to every worker still
    running (its own control socket, ``OUT.wKofN``), the answers joined. Without a
    shared quota a new rate is split like the job's rates: each worker gets 1/N."""

    def __init__(self, workers: Sequence[Worker], results: str, *, shared: bool) -> None:
        self.workers = [w for w in workers if w.results is not None]
        self.results = results
        self.job = "workers"
        self.shared = shared

    def sample(self) -> None:
        """Nothing to sample: each worker measures its own rates."""

    def handle(self, request: Any) -> dict[str, Any]:
        """Every worker's answer to ``request``, joined; never raises."""
        from dispatcher.control import ControlError
        from dispatcher.control import request as ask

        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is one JSON object"}
        n = len(self.workers)
        answers: dict[int, dict[str, Any]] = {}
        for worker in self.workers:
            message = dict(request)
            rate = request.get("rate")
            split = request.get("action") == "rate" and not self.shared
            if split and isinstance(rate, int | float) and not isinstance(rate, bool):
                message["rate"] = rate / n
            try:
                answers[worker.k] = ask(worker.results or "", message, timeout=2.0)
            except ControlError:
                answers[worker.k] = {"ok": True, "message": "finished", "finished": True}
        if request.get("action") == "status":
            return {"ok": True, "status": _joined_status(answers, n)}
        failed = {k: a for k, a in answers.items() if not a.get("ok")}
        if failed:
            return {
                "ok": False,
                "error": "; ".join(f"worker {k}: {a.get('error')}" for k, a in failed.items()),
            }
        said = {str(a.get("message")) for a in answers.values() if not a.get("finished")}
        return {"ok": True, "message": "; ".join(sorted(said)) or "every worker has finished"}


def _joined_status(answers: Mapping[int, dict[str, Any]], n: int) -> dict[str, Any]:
    """One ``ctl status`` for the job: counts and rates added up, each worker's state."""
    statuses = [a["status"] for a in answers.values() if isinstance(a.get("status"), dict)]
    joined: dict[str, Any] = {"workers": n}
    for key in ("lines", "waiting_for_window"):
        joined[key] = sum(s.get(key) or 0 for s in statuses)
    counts: dict[str, int] = {}
    codes: dict[str, dict[str, Any]] = {}
    for status in statuses:
        for name, count in status.get("statuses", {}).items():
            counts[name] = counts.get(name, 0) + count
        for code, numbers in status.get("codes", {}).items():
            into = codes.setdefault(code, {"limit": 0.0, "rate": 0.0, "sent": 0})
            for key in ("limit", "rate", "sent"):
                if into[key] is not None and numbers.get(key) is not None:
                    into[key] += numbers[key]
                else:
                    into[key] = None  # one worker without a limit: the job has none
    joined["statuses"] = dict(sorted(counts.items()))
    joined["codes"] = codes
    states = {
        k: a["status"].get("state") if "status" in a else "finished" for k, a in answers.items()
    }
    joined["state"] = (
        next(iter(set(states.values()))) if len(set(states.values())) == 1 else "mixed"
    )
    joined["by_worker"] = {f"{k}/{n}": state for k, state in sorted(states.items())}
    joined["paused"] = all(s.get("paused") for s in statuses) if statuses else False
    openings = [s["next_window_opens"] for s in statuses if s.get("next_window_opens")]
    joined["next_window_opens"] = min(openings) if openings else None
    return joined


async def _run_workers(
    argv: Sequence[str],
    config: Config,
    signals: Signals,
    workers: Sequence[Worker],
    resumes: Sequence[bool],
    gathered: WorkerMetrics | None,
) -> Outcome:
    """Start the workers, feed stdin when it is the input, relay results on stdout,
    pass signals on, and wait for every one."""
    started = time.perf_counter()
    env = dict(os.environ)
    stdin_input = argv_input(argv) == "-"
    procs = []
    for worker, resume in zip(workers, resumes, strict=True):
        env[WORKER_ENV] = f"{worker.k}/{worker.n}"
        procs.append(
            await spawn(
                ["-m", "dispatcher", *worker_argv(argv, worker, resume=resume)],
                env=env,
                metrics=gathered,
                k=worker.k,
                stdin=asyncio.subprocess.PIPE if stdin_input else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if worker.results is None else None,
            )
        )
    tasks = []
    deal = None
    if stdin_input:
        sinks = [p.stdin for p in procs if p.stdin is not None]
        stdin = sys.stdin.buffer
        assert isinstance(stdin, io.BufferedReader)  # read1: what has come, not 64 KiB
        shares = [Share.parse(for_worker(config, w.k, w.n).shard or "") for w in workers]
        deal = asyncio.create_task(_deal(stdin, sinks, shares, config.max_line_bytes))
        deal.add_done_callback(partial(_input_failed, procs))
        tasks.append(deal)
    for proc in procs:
        if proc.stdout is not None:
            tasks.append(asyncio.create_task(_relay(proc.stdout, sys.stdout.buffer)))

    pass_signals(signals, procs)
    loop = asyncio.get_running_loop()  # SIGUSR1: each worker toggles its pause (ctl)
    loop.add_signal_handler(signal.SIGUSR1, signal_all, procs, signal.SIGUSR1)
    try:
        codes = [await proc.wait() for proc in procs]
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        kill_all(procs)  # the parent is going: no worker outlives it
    summaries = [_read_summary(w.summary) for w in workers]
    broken = None
    if deal is not None and not deal.cancelled() and isinstance(deal.exception(), InputError):
        broken = cast("InputError", deal.exception())
    return Outcome(codes, summaries, time.perf_counter() - started, broken)


async def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    metrics: WorkerMetrics | None,
    k: int,
    **options: Any,
) -> asyncio.subprocess.Process:
    """Start ``python ARGS`` as worker ``k`` in its own session, so that a Ctrl-C at the
    terminal reaches only the parent (`pass_signals`). With ``metrics``, the worker
    pushes its numbers down a pipe of its own (``DISPATCHER_METRICS_FD``) and binds no
    port. ``options`` go to `asyncio.create_subprocess_exec` (stdin, stdout…)."""
    pipe = None
    if metrics is not None:
        from dispatcher.metrics import PUSH_FD_ENV

        pipe = await metrics.pipe(k)
        env = {**env, PUSH_FD_ENV: str(pipe)}
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env=dict(env),
            start_new_session=True,
            pass_fds=() if pipe is None else (pipe,),
            **options,
        )
    finally:
        if pipe is not None:
            os.close(pipe)


def pass_signals(signals: Signals, procs: Sequence[asyncio.subprocess.Process]) -> None:
    """Pass the parent's first signal on to every worker still running (a graceful
    stop), and a SIGTERM on the second (each worker's own second signal: exit now)."""

    signals.on_stop(lambda signum: signal_all(procs, signum))
    signals.on_force(lambda: signal_all(procs, signal.SIGTERM))


def signal_all(procs: Sequence[asyncio.subprocess.Process], signum: int) -> None:
    """Send ``signum`` to every worker still running."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)


def kill_all(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """Kill the workers still running (the parent is going: no worker outlives it)."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _read_summary(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            value = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


# --- joining ----------------------------------------------------------------------------


def join_files(parts: Sequence[str], target: str) -> None:
    """Concatenate ``parts`` into ``target`` through a temporary file renamed into
    place (the results of a finished job appear whole or not at all)."""
    from dispatcher.merge import write_atomically

    def fill(out: BinaryIO) -> None:
        for part in parts:
            try:
                with open(part, "rb") as f:
                    while block := f.read(1 << 20):
                        out.write(block)
            except FileNotFoundError:
                continue

    write_atomically(target, fill)


def join_summaries(summaries: Sequence[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """One summary JSON from the workers': counts add up; latency percentiles are the
    slowest worker's (an upper bound, labelled so); rates are over the job's time."""
    joined: dict[str, Any] = {}
    for summary in summaries:
        _add(joined, summary)
    lines = joined.get("lines", 0)
    joined["elapsed_s"] = round(elapsed, 3)
    joined["recipients_per_s"] = round(
        (lines - joined.get("resumed_lines", 0)) / max(elapsed, 1e-9), 1
    )
    latency = [s.get("latency_ms", {}) for s in summaries]
    joined["latency_ms"] = {
        key: max((lat.get(key) or 0.0 for lat in latency), default=0.0)
        for key in ("p50", "p90", "p99", "max")
    } | {"of": "the slowest worker"}
    for code, stats in joined.get("codes", {}).items():
        stats["achieved_rate"] = round(stats["messages"] / elapsed, 2) if elapsed else None
        rates = [s["codes"][code].get("configured_rate") for s in summaries if code in s["codes"]]
        stats["configured_rate"] = _sum_rates(rates)
    reasons = {s.get("exit_reason") for s in summaries} - {"completed"}
    joined["exit_reason"] = "completed" if not reasons else "; ".join(sorted(map(str, reasons)))
    joined["workers"] = len(summaries)
    cap = [s["policy"]["cap_reached"] for s in summaries if s.get("policy", {}).get("cap_reached")]
    if "policy" in joined:
        joined["policy"]["cap_reached"] = cap[0] if cap else None
    joined.pop("exit_code", None)
    return joined


def _sum_rates(rates: list[Any]) -> float | None:
    numbers = [r for r in rates if isinstance(r, int | float)]
    if not numbers:
        return None
    total = sum(numbers)
    return total if math.isfinite(total) else None


def _add(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    """Add ``part``'s numbers into ``into``, recursively; other values: the first."""
    for key, value in part.items():
        if isinstance(value, bool) or value is None:
            into.setdefault(key, value)
        elif isinstance(value, int | float):
            # a worker that had none of something says None (a code's rate, say)
            into[key] = value if into.get(key) is None else into[key] + value
        elif isinstance(value, Mapping):
            if not isinstance(into.get(key), dict):
                into[key] = {}
            _add(into[key], value)
        else:
            into.setdefault(key, value)


# --- the job ----------------------------------------------------------------------------

STOPPING = "stopping: the workers finish their in-flight requests (again to exit now)"


def run_job(argv: Sequence[str], config: Config, n: int) -> int:
    """``send --workers N`` from the parent's side: the whole job; the exit code."""
    from dispatcher.cli._common import ExitCode, fail
    from dispatcher.job import places
    from dispatcher.lock import JobLock
    from dispatcher.paths import check_distinct, check_writable

    read, written = places(argv_input(argv), config)
    check_distinct(read, written)
    check_writable(written)
    signals = Signals(STOPPING)
    lock = contextlib.nullcontext() if config.results == "-" else JobLock.acquire(config.results)
    with lock:
        if config.results != "-" and check_record(config, n):
            print(f"dispatcher: the job at {config.results} is complete", file=sys.stderr)
            return ExitCode.OK
        record = None if config.results == "-" else Record(record_path(config.results))
        scratch = _scratch(config)
        with scratch as directory:
            workers = [Worker.of(config, k, n, directory) for k in range(1, n + 1)]
            # --resume resumes the workers that have a journal; the others start afresh
            resumes = [
                config.resume and w.results is not None and os.path.lexists(w.results + ".journal")
                for w in workers
            ]
            begin = (lambda: record.write(n, complete=False)) if record else (lambda: None)
            outcome = signals.run(run_workers(argv, config, signals, workers, resumes, begin))
            code = _exit_code(outcome, signals.exit_code)
            summaries = [s for s in outcome.summaries if s is not None]
            # stdin broke off and the workers were stopped for it: the job ends with
            # the error and the exit code of a single `send -`
            broken = outcome.broken if signals.exit_code is None else None
            if broken is not None:
                code = fail(broken, ExitCode.ABORTED)
            elif code in (ExitCode.OK, ExitCode.FAILED) and len(summaries) == n:
                _join_outputs(config, workers)
                if record is not None:
                    record.write(n, complete=True)
            elif code == ExitCode.ABORTED:
                dead = [
                    f"worker {w.k} of {n} ({_how(c)})"
                    for w, c in zip(workers, outcome.codes, strict=True)
                    if c not in (0, 1, 4)
                ]
                fail(
                    f"{', '.join(dead)}: the job is unfinished"
                    + (", --resume finishes it" if record is not None else ""),
                    ExitCode.ABORTED,
                )
        if summaries or broken is not None:
            # workers stopped as they started have no summary: the job's has zeros
            joined = join_summaries(summaries or [_empty_summary()], outcome.elapsed)
            joined["workers"] = len(summaries)
            if broken is not None:
                joined["exit_reason"] = f"aborted: {broken}"
            code = _report(config, joined, code)
    return code


def _empty_summary() -> dict[str, Any]:
    from dispatcher.summary import Summary

    return Summary().as_dict()


def argv_input(argv: Sequence[str]) -> str:
    """The INPUT word of a ``send`` command line (``-`` when absent)."""
    from dispatcher.cli import build_parser

    args = build_parser().parse_args(list(argv))
    return str(args.input)


def _scratch(config: Config) -> contextlib.AbstractContextManager[str]:
    """Where the workers' summaries go when the job has no results file."""
    import tempfile

    if config.results != "-":
        return contextlib.nullcontext(os.path.dirname(os.path.abspath(config.results)))
    return tempfile.TemporaryDirectory(prefix="dispatcher-workers-")


def _how(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def _exit_code(outcome: Outcome, interrupted: int | None) -> int:
    """The job's exit: a usage error first, then a signal, then an abort, then
    resumable lines, then failures."""
    codes = outcome.codes
    if 2 in codes:
        return 2
    if interrupted is not None:
        return interrupted
    if any(c < 0 or c == 3 or c > 4 for c in codes):
        return 3
    if 4 in codes:
        return 4
    return 1 if 1 in codes else 0


def _join_outputs(config: Config, workers: Sequence[Worker]) -> None:
    """Every worker finished its share: their outputs become the job's, and go."""
    if config.results != "-":
        join_files([w.results for w in workers if w.results], config.results)
    for target, parts in (
        (config.invalid, [w.invalid for w in workers if w.invalid]),
        (config.rejects, [w.rejects for w in workers if w.rejects]),
    ):
        if target:
            join_files(parts, target)
    for worker in workers:
        for path in worker.files():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _report(config: Config, summary: dict[str, Any], code: int) -> int:
    from dispatcher.cli._common import ExitCode, fail
    from dispatcher.progress import summary_table
    from dispatcher.writers import write_json

    summary["exit_code"] = code
    if config.summary and (problem := write_json(config.summary, summary)):
        code = fail(problem, ExitCode.ABORTED)
    print(summary_table(summary), file=sys.stderr)
    return code
