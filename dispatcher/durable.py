"""Appending so that an acknowledgement can be trusted: when a write returns, the OS has
the bytes (and, when asked, the disk), and no failure takes earlier bytes with it.

- `AppendFile`: an append-only file written with ``os.write`` — no buffer in between.
  A write that fails half-way is undone, so a torn line never swallows the next one; a
  file removed while open is re-created with everything written so far.
- `GroupCommit`: one write (and one sync) for whatever concurrent callers handed in
  while the previous one was under way, and each caller told whether its bytes made it.

The delivery-report receiver acknowledges a report only after both (issue 12).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from dispatcher.errors import OutputError

log = logging.getLogger("dispatcher.durable")

#: Told after each write: the error that stopped it (or None) and what it carried.
OnResult = Callable[[OSError | None, int], None]


class Sink(Protocol):
    """Where bytes go: `AppendFile`, or an open binary stream (`StreamSink`)."""

    def append(self, data: bytes, /) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class AppendFile:
    """A file appended to with ``os.write``: when `append` returns, the OS has the bytes.

    A write that fails half-way (disk full) is undone by cutting the file back; where it
    cannot be (a device), the next write starts on a new line, so a torn line never
    swallows the next one. A file removed while open is re-created at its path with
    everything written so far (read back from the open descriptor) before the next
    write, so that nothing acknowledged is lost when the descriptor closes. ``lazy``
    opens the file on the first write, so an unused one never appears.
    """

    def __init__(self, path: str | Path, *, lazy: bool = False) -> None:
        self.path = Path(path).absolute()
        self._fd: int | None = None
        self._torn = self._dirty = False
        if not lazy:
            try:
                self._fd = self._open()
            except OSError as exc:
                raise OutputError(f"cannot open {path} for appending: {exc.strerror}") from exc

    def _open(self) -> int:
        # Read as well as write: a removed file is read back to re-create it.
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def append(self, data: bytes) -> None:
        """Write ``data`` whole, or raise OSError with the file as it was."""
        if self._fd is None:
            self._fd = self._open()
        fd = self._fd = self._restored(self._fd)
        if self._torn:
            data = b"\n" + data
        try:
            _write_all(fd, data)
        except _Partial as torn:
            if not (torn.done == 0 or _cut_back(fd, torn.done)):
                self._torn = True
            raise torn.error from None
        self._torn = False
        self._dirty = True

    def sync(self) -> None:
        """Flush what was written to the disk (nothing to do for a device)."""
        if self._fd is not None and self._dirty:
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # a device or a pipe: nothing to sync
                    self._dirty = True
                    raise

    def close(self) -> None:
        """Sync and close; `OutputError` when a removed file cannot be re-created."""
        if self._fd is None:
            return
        try:
            self._fd = self._restored(self._fd)
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            raise OutputError(
                f"{self.path} was removed and cannot be re-created ({exc.strerror}): "
                "what was written to it is lost"
            ) from exc
        try:
            os.fsync(self._fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise OutputError(f"cannot sync {self.path}: {exc.strerror}") from exc
        finally:
            os.close(self._fd)
            self._fd = None

    def _restored(self, fd: int) -> int:
        """``fd``, or when its file was removed, a new file at the path with its bytes."""
        status = os.fstat(fd)
        if status.st_nlink or not stat.S_ISREG(status.st_mode):
            return fd
        new = self._open()
        start = _end(new)
        offset = 0
        try:
            while chunk := os.pread(fd, 1 << 20, offset):
                _write_all(new, chunk)
                offset += len(chunk)
        except (OSError, _Partial) as exc:
            if start is not None:
                _cut(new, start)
            os.close(new)
            if isinstance(exc, _Partial):
                raise exc.error from None
            raise
        os.close(fd)
        log.warning("%s was removed: re-created it with the %d bytes written", self.path, offset)
        return new


class _Partial(Exception):
    """A write failed after ``done`` bytes."""

    def __init__(self, error: OSError, done: int) -> None:
        super().__init__(error)
        self.error, self.done = error, done


def _write_all(fd: int, data: bytes) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        try:
            written = os.write(fd, view[done:])
        except OSError as exc:
            raise _Partial(exc, done) from None
        if written <= 0:
            raise _Partial(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), done)
        done += written


def _cut_back(fd: int, done: int) -> bool:
    """Remove the ``done`` bytes a failed write left at the end of the file (O_APPEND
    put them there, and nobody else writes it); False where a file cannot be cut."""
    try:
        return _cut(fd, os.fstat(fd).st_size - done)
    except OSError:
        return False


def _end(fd: int) -> int | None:
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return None


def _cut(fd: int, size: int) -> bool:
    try:
        os.ftruncate(fd, size)
    except OSError:
        return False
    return True


class StreamSink:
    """An open binary stream as a `Sink`: written and flushed, left open."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def append(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self._stream.flush()


class GroupCommit:
    """Writes what concurrent callers hand in with one write (and, with ``fsync``, one
    sync) and tells each of them whether its bytes were written.

    With ``fsync``, each write and its sync run in a thread, and whatever arrives while
    one is under way waits for the next: the slower the disk, the bigger the batch.
    Without it, a write runs at once on the loop (the page cache takes it at once, so
    there is nothing to gain by waiting), unless a sync asked for by `sync_soon` is
    under way. ``on_result`` hears of every write.
    """

    def __init__(self, sink: Sink, *, fsync: bool, on_result: OnResult) -> None:
        self._sink = sink
        self._fsync = fsync
        self._on_result = on_result
        self._batch: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._sync_due = False

    async def write(self, data: bytes, items: int = 1) -> None:
        """Return once ``data`` is written; raise the OSError that stopped it.

        ``items`` (what ``data`` holds, say lines) is passed on to ``on_result``.
        """
        if not self._fsync and self._task is None:
            # Nothing to wait for: a write to the page cache is quicker than a hand-off.
            try:
                self._sink.append(data)
            except OSError as exc:
                self._on_result(exc, items)
                raise
            self._on_result(None, items)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._batch.append((data, items, waiter))
        self._start()
        await waiter

    def sync_soon(self) -> None:
        """Sync what was written, after the writes under way."""
        self._sync_due = True
        self._start()

    async def drain(self) -> None:
        """Wait for every write asked for so far."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._batch or self._sync_due:
                batch, self._batch = self._batch, []
                sync, self._sync_due = self._sync_due, False
                if batch:
                    await self._commit(batch)
                if sync and not self._fsync:
                    await self._sync()
        finally:
            self._task = None

    async def _commit(self, batch: list[tuple[bytes, int, asyncio.Future[None]]]) -> None:
        data = b"".join(item[0] for item in batch)
        error: OSError | None = None
        try:
            if self._fsync:
                await asyncio.to_thread(self._write_and_sync, data)
            else:
                self._sink.append(data)
        except OSError as exc:
            error = exc
        self._on_result(error, sum(item[1] for item in batch))
        for _, _, waiter in batch:
            if waiter.done():  # its caller was cancelled: the bytes stay written
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def _sync(self) -> None:
        try:
            await asyncio.to_thread(self._sink.sync)
        except OSError as exc:
            log.error("cannot sync to disk: %s", exc.strerror or exc)

    def _write_and_sync(self, data: bytes) -> None:
        self._sink.append(data)
        self._sink.sync()
