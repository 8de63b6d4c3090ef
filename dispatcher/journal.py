"""Write-ahead journal beside the results file: it writes and reads records, nothing else.

Records, one JSON object per line:

- ``{"journal": 1, "job": ID, "fingerprint": F, "input": PATH, "input_size": N}`` — the
  header;
- ``{"sent": KEY, "lines": [...]}`` — written (and handed to the OS) *before* a batch's
  first request leaves, so a crash can never hide a request the gateway may have seen;
- ``{"done": KEY}`` — after the batch's results reached the OS;
- ``{"unsent": KEY}`` — the gateway certainly did not act (an auth abort, a 413 split);
- ``{"compaction": "start"|"done"}`` — the results file rewritten to one line per input
  line at the end of a resumed run (`dispatcher.resume.compact`);
- ``{"complete": true}`` — the job finished.

What a resumed run makes of them is decided in `dispatcher.resume`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import orjson

from dispatcher.errors import OutputError

VERSION = 1


def journal_path(results: str) -> str:
    """Where the journal of a results file lives."""
    return results + ".journal"


class Journal:
    """Appends journal records; `sent` reaches the OS before the request is made.

    ``path`` None is a run without a journal (results on stdout, a dry run): every
    record is dropped.
    """

    def __init__(
        self, path: str | None, job: str, *, fsync: bool = False, truncate: bool = False
    ) -> None:
        self.path = path
        self.job = job
        self._fsync = fsync
        self._fd: int | None = None
        self._done: list[bytes] = []
        if path is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
            try:
                self._fd = os.open(path, flags, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot write the journal {path}: {exc.strerror}") from None

    @classmethod
    def create(
        cls,
        path: str,
        job: str,
        *,
        fingerprint: str,
        source: str,
        input_size: int | None,
        fsync: bool = False,
    ) -> Journal:
        """A new journal at ``path`` (replacing any there), starting with its header."""
        journal = cls(path, job, fsync=fsync, truncate=True)
        header = {
            "journal": VERSION,
            "job": job,
            "fingerprint": fingerprint,
            "input": source,
            "input_size": input_size,
        }
        journal._write(orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE))
        return journal

    def sent(self, key: str, lines: list[int]) -> None:
        """Record a batch about to be sent; returns once the record is with the OS."""
        if self._fd is not None:
            self._write(
                orjson.dumps({"sent": key, "lines": lines}, option=orjson.OPT_APPEND_NEWLINE)
            )

    def done(self, key: str) -> None:
        """Record a batch whose results are written; kept until `commit`."""
        if self._fd is not None:
            self._done.append(b'{"done":"%s"}\n' % key.encode())

    def unsent(self, key: str) -> None:
        """Record a batch the gateway certainly did not act on."""
        if self._fd is not None:
            self._write(b'{"unsent":"%s"}\n' % key.encode())

    def commit(self) -> None:
        """Write the pending done records (call right after the results are flushed)."""
        if self._done and self._fd is not None:
            data = b"".join(self._done)
            self._done.clear()
            self._write(data)

    def compaction(self, stage: str) -> None:
        """Record a compaction of the results file: ``start``, then ``done``."""
        if self._fd is not None:
            self._write(b'{"compaction":"%s"}\n' % stage.encode())

    def complete(self) -> None:
        """Mark the job finished."""
        self.commit()
        if self._fd is not None:
            self._write(b'{"complete":true}\n')

    def discard(self) -> None:
        """Close and delete a journal this run created but never used (its outputs
        could not be opened): it would only block the next run."""
        self.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def close(self) -> None:
        """Close the file (pending done records are dropped unless committed)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot write the journal {self.path}: {exc.strerror}") from None


def records(path: str) -> Iterator[dict[str, Any]]:
    """The records of a journal, in order; a record cut off by a crash is skipped (its
    batch was never sent: the record reaches the OS before the request leaves)."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
