"""One job, one process: an exclusive OS lock on a file beside the results.

Two runs of one job — two ``--resume`` side by side, or ``--force`` while the job still
runs — would send the same lines twice, or delete the journal under a running job. So
whatever run touches a job's files (a send, ``--resume``, ``--force``, a dry run that
writes the results) holds ``RESULTS.lock`` for as long as it runs, and takes it before
it reads, creates, truncates or deletes anything of the job.

The lock is `fcntl.flock`: the kernel drops it when the process ends, however it ends,
so ``kill -9`` then ``--resume`` just works — a lock file left behind is no obstacle.
Once it holds the lock a run writes its process id, host and start time into the file,
so the run that finds the job busy can say who holds it.

The lock file is named after the results file's real path (``./x`` and a symlink to
``x`` are one job). The holder removes it when it ends; a run that locked the file just
as it was removed finds the name gone or pointing at a new file, and tries again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time

import orjson

from dispatcher.errors import ConfigError, OutputError
from dispatcher.timefmt import iso_utc

#: How often a run that found the job busy reads the holder's details again while the
#: holder has not written them yet (it has just taken the lock).
_READ_TRIES = 20
_READ_PAUSE = 0.025


def lock_path(results: str) -> str:
    """Where the lock of the job writing ``results`` lives."""
    return os.path.realpath(results) + ".lock"


class JobBusy(ConfigError):
    """Another process holds the job's lock (exit 2)."""


class JobLock:
    """The exclusive lock on one job, held from `acquire` to `release`."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, results: str) -> JobLock:
        """Lock the job that writes ``results``; `JobBusy` names the process holding it,
        `OutputError` says why the lock file cannot be created."""
        path = lock_path(results)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot write the lock file {path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise JobBusy(
                    f"job {results} is being run by {holder}: wait for it to end or stop it "
                    f"first (two runs of one job would text people twice; lock {path})"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise OutputError(f"cannot lock {path}: {exc.strerror}") from None
            if _still_named(fd, path):
                break
            os.close(fd)  # its holder removed it as we locked it: lock the new one
        lock = cls(path, fd)
        lock._write_holder()
        return lock

    def release(self) -> None:
        """Remove the lock file and unlock (in that order: see the module's docstring)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _write_holder(self) -> None:
        assert self._fd is not None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": iso_utc(time.time())}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, orjson.dumps(holder, option=orjson.OPT_APPEND_NEWLINE), 0)
        except OSError as exc:
            self.release()
            raise OutputError(f"cannot write the lock file {self.path}: {exc.strerror}") from None


def _still_named(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it; it writes just after taking the lock,
    so an empty file (or one naming a process gone from this host) is read again."""
    described = "another process"
    for attempt in range(_READ_TRIES):
        if attempt:
            time.sleep(_READ_PAUSE)
        try:
            holder = orjson.loads(os.pread(fd, 4096, 0))
            pid, host, since = int(holder["pid"]), str(holder["host"]), str(holder["since"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        described = f"process {pid} on host {host} since {since}"
        if host != socket.gethostname() or _alive(pid):
            break
    return described


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, and belongs to someone else
        return True
    return True
