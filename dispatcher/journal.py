"""Write-ahead journal beside the results file: it writes and reads records, nothing else.

Records, one JSON object per line, each ending with its checksum:

- ``{"journal": 2, "job": ID, "fingerprint": F, "options": {FLAG: DIGEST}, "input":
  PATH, "input_size": N, "schedule": {…}}`` — the header, the first line and only
  there (``options``, the body options one by one, and ``schedule``, the job's first
  start, scheduled start and expiry (`dispatcher.schedule`), are absent from headers
  written before they were added);
- ``{"sent": KEY, "lines": [...], …}`` — written (and handed to the OS) *before* a
  batch's first request leaves, so a crash can never hide a request the gateway may
  have seen;
- ``{"done": KEY, …}`` — after the batch's results reached the OS;
- ``{"unsent": KEY, …}`` — the gateway certainly did not act (an auth abort, a 413 split);
- ``{"compaction": "start"|"done", …}`` — the results file rewritten to one line per
  input line at the end of a resumed run (`dispatcher.resume.compact`);
- ``{"complete": true, …}`` — the job finished.

The checksum (``"crc"``, the CRC-32 in hex of the record's bytes without it) is the
record's last field, so the file stays NDJSON. A journal is trusted only as a whole:
`JournalFile` refuses (`DamagedJournal`, exit 2) any record whose checksum, kind or
fields are wrong, naming the line. The one damage a crash can cause is tolerated: the
*last* record cut short, without its newline (a record is one ``write`` ending in its
newline). A cut record was never complete, so the request it announced never left;
`JournalFile.repair` removes it before the journal is appended to again. A last record
that is whole but for its newline counts as written, and gets its newline back.

Format 1 had no checksums; a journal in it is refused with a message rather than
misread. What a resumed run makes of the records is decided in `dispatcher.resume`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson

from dispatcher.errors import ConfigError, OutputError

log = logging.getLogger("dispatcher")

VERSION = 2

#: Every record ends ``,"crc":"xxxxxxxx"}`` (then its newline).
_SEAL_START, _SEAL_END, _SEAL_SIZE = b',"crc":"', b'"}', 18
_HEADER = {"journal", "job", "fingerprint", "input", "input_size"}
#: The times a header's ``schedule`` may hold (`dispatcher.schedule.Schedule.record`).
_SCHEDULE = {"started", "start_at", "expire_at"}
#: Header fields added later: absent from older headers.
_HEADER_OPTIONAL = {"options", "schedule"}


def journal_path(results: str) -> str:
    """Where the journal of a results file lives."""
    return results + ".journal"


def seal(body: bytes) -> bytes:
    """A record as written: the JSON object ``body`` with its checksum as last field."""
    return b'%s,"crc":"%08x"}\n' % (body[:-1], zlib.crc32(body))


class DamagedJournal(ConfigError):
    """A journal that cannot be trusted (exit 2); nothing is sent from it."""


class Journal:
    """Appends journal records; `sent` reaches the OS before the request is made.

    ``path`` None is a run without a journal (results on stdout, a dry run): every
    record is dropped. Otherwise the file is opened for appending (created if need be:
    `create` is how a new job starts one).
    """

    def __init__(self, path: str | None, job: str, *, fsync: bool = False) -> None:
        self.path = path
        self.job = job
        self._fsync = fsync
        self._fd: int | None = None
        self._done: list[bytes] = []
        if path is not None:
            self._fd = _open(path, os.O_CREAT)

    @classmethod
    def create(
        cls,
        path: str,
        job: str,
        *,
        fingerprint: str,
        source: str,
        options: dict[str, str] | None = None,
        input_size: int | None,
        schedule: dict[str, str] | None = None,
        fsync: bool = False,
        replace: bool = False,
    ) -> Journal:
        """A new journal at ``path``, starting with its header.

        The file is created atomically (``O_EXCL``): when one is there already, the
        job was started before, and `ConfigError` says so — unless ``replace``
        (``--force``, under the job's lock), which removes it first.
        """
        if replace:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        try:
            fd = _open(path, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            raise ConfigError(
                f"a journal from an earlier run exists at {path}: add --resume to finish "
                "that job, or --force to start over (the results file is overwritten)"
            ) from None
        journal = cls(None, job, fsync=fsync)
        journal.path, journal._fd = path, fd
        header = {
            "journal": VERSION,
            "job": job,
            "fingerprint": fingerprint,
            **({} if options is None else {"options": options}),
            "input": source,
            "input_size": input_size,
            **({} if schedule is None else {"schedule": schedule}),
        }
        try:
            journal._write(seal(orjson.dumps(header)))
        except OutputError:
            journal.discard()
            raise
        return journal

    def sent(self, key: str, lines: list[int]) -> None:
        """Record a batch about to be sent; returns once the record is with the OS."""
        if self._fd is not None:
            self._write(seal(orjson.dumps({"sent": key, "lines": lines})))

    def done(self, key: str) -> None:
        """Record a batch whose results are written; kept until `commit`."""
        if self._fd is not None:
            self._done.append(seal(b'{"done":"%s"}' % key.encode()))

    def unsent(self, key: str) -> None:
        """Record a batch the gateway certainly did not act on."""
        if self._fd is not None:
            self._write(seal(b'{"unsent":"%s"}' % key.encode()))

    def commit(self) -> None:
        """Write the pending done records (call right after the results are flushed)."""
        if self._done and self._fd is not None:
            data = b"".join(self._done)
            self._done.clear()
            self._write(data)

    def compaction(self, stage: str) -> None:
        """Record a compaction of the results file: ``start``, then ``done``."""
        if self._fd is not None:
            self._write(seal(b'{"compaction":"%s"}' % stage.encode()))

    def complete(self) -> None:
        """Mark the job finished."""
        self.commit()
        if self._fd is not None:
            self._write(seal(b'{"complete":true}'))

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


def _open(path: str, create: int) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | create, 0o644)
    except FileExistsError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write the journal {path}: {exc.strerror}") from None


class JournalFile:
    """A journal read back: every record checked, in order (`records`).

    After a full read, `torn` is the size of a last record cut short by a crash (0 if
    none) and `unterminated` whether a whole last record lacks its newline; `repair`
    mends both before the journal is appended to.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.torn = 0
        self.unterminated = False
        self._size = 0

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, record)`` for every record, the header (line 1) first; raises
        `DamagedJournal` at the first line that is not a sound record, and `OSError`
        (`FileNotFoundError`: there is no journal) when it cannot be read."""
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                record = self._record(raw, number)
                if record is None:  # a torn last record
                    self.torn = len(raw)
                    break
                self._size += len(raw)
                yield number, record

    def repair(self) -> None:
        """Cut a torn last record off, or give a whole one its newline, saying so."""
        if self.torn:
            log.warning(
                "%s: cut off its last record (%d bytes), cut short by a crash as it was "
                "written (a record announcing a batch is complete before the batch leaves)",
                self.path,
                self.torn,
            )
            _cut(self.path, self._size, "journal")
            self.torn = 0
        elif self.unterminated:
            log.warning("%s: its last record lacked its newline (a crash); added", self.path)
            try:
                with open(self.path, "ab") as f:
                    f.write(b"\n")
            except OSError as exc:
                raise OutputError(f"cannot write the journal {self.path}: {exc.strerror}") from None
            self.unterminated = False

    def _record(self, raw: bytes, number: int) -> dict[str, Any] | None:
        """The record of one line, checked; None for a torn last line."""
        last = not raw.endswith(b"\n")
        body = _unseal(raw if last else raw[:-1])
        if body is None:
            if number == 1:
                self._check_version(raw)
            if not last:
                raise self._damaged(number, "its checksum does not match")
            # A crash cuts a record short; it never adds bytes after a whole one.
            end = raw.rfind(_SEAL_END) + len(_SEAL_END)
            if 0 < end < len(raw) and _unseal(raw[:end]) is not None:
                raise self._damaged(number, "it has bytes after its end")
            return None
        if last:
            self.unterminated = True
        try:
            record = orjson.loads(body)
        except orjson.JSONDecodeError:  # only a forged checksum gets here
            raise self._damaged(number, "it is not JSON") from None
        if number == 1:
            self._check_version(record)
        problem = _problem(record, number)
        if problem:
            raise self._damaged(number, problem)
        return record  # type: ignore[no-any-return]

    def _check_version(self, first: bytes | Any) -> None:
        """Refuse another version's header (the line, or the record) with a message."""
        if isinstance(first, bytes):
            try:
                first = orjson.loads(first)
            except orjson.JSONDecodeError:
                return
            if not isinstance(first, dict) or "crc" in first:
                return  # a damaged header of this version
        version = first.get("journal") if isinstance(first, dict) else None
        if type(version) is not int or version == VERSION:
            return
        if version < VERSION:
            raise DamagedJournal(
                f"the journal {self.path} was written by an older version of sms-dispatcher "
                f"(journal format {version}); finish it with that version or start over "
                "with --force"
            )
        raise DamagedJournal(
            f"the journal {self.path} was written by a newer version of sms-dispatcher "
            f"(journal format {version}); finish it with that version"
        )

    def _damaged(self, number: int, why: str) -> DamagedJournal:
        return damaged(self.path, number, why)


def _unseal(record: bytes) -> bytes | None:
    """The JSON body of a record (without its newline), or None when its checksum is
    missing or wrong."""
    start = len(record) - _SEAL_SIZE
    body = record[:start] + b"}"
    if (
        start > 0
        and record.startswith(_SEAL_START, start)
        and record.endswith(_SEAL_END)
        and record[start + len(_SEAL_START) : -len(_SEAL_END)] == b"%08x" % zlib.crc32(body)
    ):
        return body
    return None


def damaged(path: str, number: int, why: str) -> DamagedJournal:
    """The error for a journal that cannot be trusted from line ``number`` on."""
    return DamagedJournal(
        f"the journal {path} is damaged at line {number}: {why}; nothing was sent. It can "
        "no longer tell which batches were sent: reconcile the results with the gateway "
        "(dispatcher status) before starting over with --force"
    )


def _problem(record: Any, number: int) -> str | None:
    """What is wrong with a record at line ``number`` (None: nothing)."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    keys = record.keys()
    if "journal" in keys:
        if number != 1:
            return "it is a second header"
        if not (_HEADER <= keys <= _HEADER | _HEADER_OPTIONAL):
            return "it is not a sound journal header"
        options = record.get("options", {})
        if not (isinstance(options, dict) and all(_text(v) for v in options.values())):
            return "its options are not a table of digests"
        schedule = record.get("schedule", {"started": "-"})
        if not (isinstance(schedule, dict) and all(_text(v) for v in schedule.values())):
            return "its schedule is not a table of times"
        if "started" not in schedule or not schedule.keys() <= _SCHEDULE:
            return "its schedule is not a table of times"
        if "schedule" in keys and not all(map(_moment, schedule.values())):
            return "its schedule holds a time that is not ISO 8601 with an offset"
        if record["journal"] != VERSION:
            return "its format version is not a number"
        size = record["input_size"]
        if not (_text(record["job"]) and isinstance(record["fingerprint"], str)):
            return "its job or fingerprint is not text"
        if size is not None and not (type(size) is int and size >= 0):
            return "its input size is not a number of bytes"
        return None
    if keys == {"sent", "lines"}:
        lines = record["lines"]
        if not _text(record["sent"]):
            return "its batch key is not text"
        if not (isinstance(lines, list) and lines):
            return "its lines are not a list of line numbers"
        if not all(type(n) is int and n > 0 for n in lines):
            return "a line number is not a positive integer"
        return None
    if len(keys) == 1:
        ((kind, value),) = record.items()
        if kind in ("done", "unsent"):
            return None if _text(value) else "its batch key is not text"
        if kind == "complete":
            return None if value is True else "its complete mark is not true"
        if kind == "compaction":
            return None if value in ("start", "done") else "its compaction stage is unknown"
    return "it is a record of an unknown kind"


def _moment(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _cut(path: str, size: int, what: str) -> None:
    try:
        os.truncate(path, size)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {path}: {exc.strerror}") from None


def records(path: str) -> Iterator[dict[str, Any]]:
    """The records of a journal, in order, checked (`JournalFile.records`); a record
    cut off by a crash is left out (its batch was never sent)."""
    for _, record in JournalFile(path).records():
        yield record
