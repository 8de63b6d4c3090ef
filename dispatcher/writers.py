"""Result sinks: results, invalid numbers and rejects as NDJSON, fed to the summary.

Every result line goes through `Outputs`, which also counts it in the `Summary`, so the
file and the account cannot disagree. Lines are built with orjson and collected in a
buffer that is written in large chunks; `flush` pushes it to the OS (and fsyncs with
``--fsync``) so that the journal can record a batch as done only after its results
are safely out of the process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Container, Sequence
from itertools import compress, repeat
from operator import is_, is_not, itemgetter
from typing import Any, BinaryIO, cast

import orjson

from dispatcher import native
from dispatcher.errors import OutputError
from dispatcher.logs import redact, redact_document
from dispatcher.models import Batch, Encoding, Entry, Rejected, Status
from dispatcher.summary import ACCEPTED, Summary

_dumps = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE
FLUSH_BYTES = 1 << 18

# Printable ASCII but '"' and '\\': text made of these is its own JSON string body.
_VERBATIM = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')
_line_of = itemgetter(0)  # Entry.line
_to_of = itemgetter(1)  # Entry.to
_ref_of = itemgetter(3)  # Entry.ref
_segments_of = itemgetter(4)  # Entry.segments
_encoding_of = itemgetter(5)  # Entry.encoding
_replaced_of = itemgetter(7)  # Entry.replaced
_saved_of = itemgetter(8)  # Entry.saved
#: Every encoding, as the C part's kinds are indexed (`native.core.accepted_lines`)
_ENCODINGS: tuple[Encoding, ...] = tuple(Encoding)


def _verbatim(texts: list[str]) -> bool:
    """Whether every one of ``texts`` is a string that needs no escaping in JSON."""
    try:
        text = "".join(texts)
    except TypeError:
        return False
    # One C pass: what is left after deleting the verbatim bytes needs escaping.
    # (A regex character class measured three times slower.)
    return not text.encode("utf-8", "surrogatepass").translate(None, _VERBATIM)


def _plain(ids: list[str | None], batch: Batch) -> bool:
    """Whether every id is a string and no id or number needs escaping in JSON."""
    if None in ids:
        return False
    return _verbatim(ids + list(map(_to_of, batch.entries)))  # type: ignore[arg-type]


def _text(value: Any) -> str:
    """``value`` as JSON text."""
    return _dumps(value).decode()


#: whole numbers as JSON text: `str` (an Entry's segments are ints, never bools)
_SMALL = {i: str(i) for i in range(256)}
_small_text = _SMALL.__getitem__


def _numbers(values: list[int]) -> list[str]:
    """Whole numbers as their JSON text (the usual ones by a dict look-up)."""
    try:
        return list(map(_small_text, values))
    except KeyError:
        return list(map(str, values))


#: what ends a line of `_batch_lines` and starts the next
_END = '}\n{"line":'


def _accepted_parts(status: str, attempts: int, transaction_id: str | None) -> tuple[str, str]:
    """The JSON text of an accepted line between its number and its id, and after its
    encoding: the same for every line of a batch."""
    middle = f',"status":{_text(status)},"id":"'
    return middle, f',"attempts":{attempts},"transactionId":{_text(transaction_id)}'


def _batch_lines(entries: list[Entry], head: str, after: str) -> tuple[bytes, dict[str, int]]:
    """The result lines of ``entries`` — the bytes orjson gives for each result dict
    ``{line, to, status…, segments, encoding, …after, [replaced], [ref]}`` — and
    their segments by encoding (in order of first appearance).

    ``head`` is the JSON text between the number and the segments (``,"status":…``),
    ``after`` what follows the encoding (``,"attempts":…``): both the same for every line
    of a batch. The numbers must need no escaping (`_verbatim`). Each field is taken
    out of the entries by one C-level map, and the lines are the join of one list whose
    constant slots are filled by slice assignment: no Python step per line but for a
    line with a ref or smart-encoding replacements. (Measured in instructions: 7–27 %
    fewer than a dict and an orjson call per line; for accepted lines, whose old loop
    already wrote text, 12 % more than that loop, which `_accepted_plain` keeps.)
    """
    count = len(entries)
    encodings = list(map(_encoding_of, entries))
    segments = list(map(_segments_of, entries))
    first = encodings[0]
    if encodings.count(first) == count:
        kinds = [first]
        segments_by = {first: sum(segments)}
    else:
        kinds = list(dict.fromkeys(encodings))
        segments_by = {
            kind: sum(compress(segments, map(is_, encodings, repeat(kind)))) for kind in kinds
        }
    tail_of = {kind: f',"encoding":{_text(kind)}{after}' for kind in kinds}
    if len(kinds) == 1:
        tails = [tail_of[first] + _END] * count
    else:
        ends = {kind: tail + _END for kind, tail in tail_of.items()}
        tails = list(map(ends.__getitem__, encodings))
    refs = list(map(_ref_of, entries))
    replaced = list(map(_replaced_of, entries))
    with_ref = refs.count(None) != count
    if with_ref or any(replaced):
        extra = set(compress(range(count), replaced))
        if with_ref:
            extra.update(compress(range(count), map(is_not, refs, repeat(None))))
        for position in sorted(extra):
            more, ref = replaced[position], refs[position]
            tails[position] = (
                tail_of[encodings[position]]
                + (f',"replaced":{more}' if more else "")
                + (f',"ref":{_dumps(ref).decode()}' if ref is not None else "")
                + _END
            )
    tails[-1] = tails[-1][: -len(_END) + 2]  # the last line ends at its newline
    # {"line":L,"to":"T"<head>,"segments":S<tail>
    width = 6
    parts = [',"to":"'] * (width * count + 1)
    parts[4::width] = [f'"{head},"segments":'] * count
    parts[0] = '{"line":'
    parts[1::width] = list(map(str, map(_line_of, entries)))
    parts[3::width] = list(map(_to_of, entries))
    parts[width - 1 :: width] = _numbers(segments)
    parts[width::width] = tails
    return "".join(parts).encode(), segments_by


def write_json(path: str, document: Any) -> str | None:
    """Write ``document`` as indented JSON, every secret masked in every string; the
    reason on failure (for an exit-3 message)."""
    try:
        with open(path, "wb") as f:
            f.write(_dumps(redact_document(document), option=orjson.OPT_INDENT_2))
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    return None


def _invalid_line(line: int, to: str | None, reason: str, source: str) -> bytes:
    """One line of the invalid-numbers file."""
    return _dumps({"line": line, "to": to, "reason": reason, "source": source}, option=_NL)


def _unsent_line(entry: Entry, status: str, error: str, attempts: int) -> bytes:
    """One line of `Outputs.unsent` by a dict and orjson (a number needing escaping)."""
    result = {
        "line": entry.line,
        "to": entry.to,
        "status": status,
        "segments": entry.segments,
        "encoding": entry.encoding,
        "attempts": attempts,
        "error": error,
    }
    return _extras(result, entry)


def _dry_run_line(entry: Entry) -> bytes:
    """One line of `Outputs.dry_run` by a dict and orjson (a number needing escaping)."""
    result = {
        "line": entry.line,
        "to": entry.to,
        "status": Status.DRY_RUN,
        "segments": entry.segments,
        "encoding": entry.encoding,
    }
    return _extras(result, entry)


def _extras(result: dict[str, Any], entry: Entry) -> bytes:
    """``result`` with the entry's replacements and ref, if any, as one NDJSON line."""
    if entry.replaced:
        result["replaced"] = entry.replaced
    if entry.ref is not None:
        result["ref"] = entry.ref
    return _dumps(result, option=_NL)


class NdjsonSink:
    """One NDJSON output: a file or stdout, written in large buffered chunks."""

    def __init__(
        self, target: BinaryIO, name: str, *, fsync: bool = False, owned: bool = True
    ) -> None:
        self._target = target
        self.name = name
        self._fsync = fsync
        self._owned = owned
        self._parts: list[bytes] = []
        self._size = 0

    @classmethod
    def open(cls, path: str, *, append: bool = False, fsync: bool = False) -> NdjsonSink:
        """Open ``path`` ("-" is stdout) for writing; unwritable → `OutputError`."""
        if path == "-":
            return cls(sys.stdout.buffer, "stdout", fsync=False, owned=False)
        try:
            target = open(path, "ab" if append else "wb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        return cls(target, path, fsync=fsync)

    def write(self, data: bytes) -> None:
        """Queue bytes; they reach the OS at the next flush (or when the buffer is big)."""
        self._parts.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def write_many(self, lines: list[bytes]) -> None:
        """Queue many lines at once (one batch's results)."""
        self._parts.extend(lines)
        self._size += sum(map(len, lines))
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand everything queued to the OS; with fsync, to the disk."""
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        try:
            self._target.write(data)
            self._target.flush()
            if self._fsync:
                os.fsync(self._target.fileno())
        except BrokenPipeError:
            raise OutputError(f"cannot write {self.name}: the reader closed the pipe") from None
        except OSError as exc:
            raise OutputError(f"cannot write {self.name}: {exc.strerror}") from None

    def close(self) -> None:
        """Flush and close (stdout is flushed, never closed)."""
        try:
            self.flush()
        finally:
            if self._owned:
                try:
                    self._target.close()
                except OSError as exc:  # the file's own buffer could not be written
                    raise OutputError(f"cannot write {self.name}: {exc.strerror}") from None


def prune(path: str, *, keep: Container[int]) -> None:
    """Rewrite an invalid/rejects file of an interrupted run keeping only the lines in
    ``keep`` (those with a result): the others are written again by the resumed run."""
    try:
        with open(path, "rb") as f:
            raw_lines = f.readlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror}") from None
    kept = []
    for raw in raw_lines:
        if not raw.endswith(b"\n"):
            break
        try:
            line = orjson.loads(raw)["line"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if line in keep:
            kept.append(raw)
    try:
        with open(path, "wb") as f:
            f.writelines(kept)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


class Outputs:
    """Writes every kind of result and counts it in the summary."""

    def __init__(
        self,
        results: NdjsonSink,
        summary: Summary,
        *,
        invalid: NdjsonSink | None = None,
        rejects: NdjsonSink | None = None,
    ) -> None:
        self.results = results
        self.invalid = invalid
        self.rejects = rejects
        self.summary = summary

    def rejected(self, item: Rejected) -> None:
        """A malformed input line."""
        self.results.write(
            _dumps({"line": item.line, "status": Status.REJECTED, "error": item.reason}, option=_NL)
        )
        if self.rejects is not None:
            self.rejects.write(
                _dumps(
                    {"line": item.line, "reason": item.reason, "excerpt": item.excerpt}, option=_NL
                )
            )
        self.summary.statuses[Status.REJECTED] += 1

    def local(
        self,
        line: int,
        to: str | None,
        status: Status,
        error: str,
        *,
        ref: Any = None,
        segments: int | None = None,
        encoding: str | None = None,
        invalid: bool = False,
        first: int | None = None,
        replaced: int = 0,
    ) -> None:
        """A result decided without the gateway (invalid number, render error, a policy)."""
        result: dict[str, Any] = {"line": line, "to": to, "status": status}
        if segments is not None:
            result["segments"] = segments
            result["encoding"] = encoding
        if replaced:
            result["replaced"] = replaced
        if first is not None:
            result["first"] = first
        result["error"] = error
        if ref is not None:
            result["ref"] = ref
        self.results.write(_dumps(result, option=_NL))
        if invalid and self.invalid is not None:
            self.invalid.write(_invalid_line(line, to, error, "client"))
        self.summary.statuses[status] += 1

    def local_many(
        self, status: Status, error: str, lines: list[int], tos: list[str | None], refs: list[Any]
    ) -> None:
        """`local` of many lines with one status and error and nothing else (the opted-out
        lines of a chunk): the same bytes (`_locals`)."""
        self._locals(status, lines, tos, [_dumps(error)] * len(lines), refs, invalid=False)

    def invalid_many(
        self, lines: list[int], tos: list[str], reasons: list[str], refs: list[Any]
    ) -> None:
        """`local` of many invalid numbers (``INVALID_NUMBER``, each with its reason, and
        its line in the invalid file): the same bytes (`_locals`)."""
        errors = list(map(_dumps, reasons))
        self._locals(Status.INVALID_NUMBER, lines, tos, errors, refs, invalid=True)

    def _locals(
        self,
        status: Status,
        lines: list[int],
        tos: Sequence[str | None],
        errors: list[bytes],
        refs: list[Any],
        *,
        invalid: bool,
    ) -> None:
        """`local`'s lines for many lines of one status (``errors``: each line's, as JSON),
        made by ``%`` formats of the fixed parts and orjson's of the varying ones rather
        than a dict and a call each (0.3 against 1.3 µs a line). Never the error in a
        format: it may hold a %."""
        if not lines:
            return
        status_part = b',"status":' + _dumps(status) + b',"error":'
        results, invalids = [], []
        for line, to, error, ref in zip(lines, tos, errors, refs, strict=True):
            head = b'{"line":%d,"to":%s' % (line, _dumps(to))
            if ref is None:
                results.append(head + status_part + error + b"}\n")
            else:
                results.append(head + status_part + error + b',"ref":' + _dumps(ref) + b"}\n")
            if invalid:
                invalids.append(head + b',"reason":' + error + b',"source":"client"}\n')
        self.results.write_many(results)
        if invalid and self.invalid is not None:
            self.invalid.write_many(invalids)
        self.summary.statuses[status] += len(lines)

    def accepted(
        self,
        batch: Batch,
        ids: list[str | None],
        *,
        status: str,
        attempts: int,
        transaction_id: str | None,
        started: float,
    ) -> None:
        """The gateway's answer to a batch: an id per line, or refused as invalid."""
        if len(ids) == len(batch):
            plain_ids = cast("list[str]", ids)
            if batch.packed is not None and self._accepted_packed(
                batch, plain_ids, status, attempts, transaction_id, started
            ):
                return
            if native.core is not None and self._accepted_in_c(  # it checks the ids are str
                batch, plain_ids, status, attempts, transaction_id, started
            ):
                return
            if _plain(ids, batch):
                self._accepted_plain(batch, plain_ids, status, attempts, transaction_id, started)
                return
        lines: list[bytes] = []
        by_encoding: dict[str, int] = {}
        billed: list[Entry] = []
        refused = accepted_segments = saved = smart = 0
        for entry, message_id in zip(batch.entries, ids, strict=True):
            if message_id is None:
                refused += 1
                lines.append(
                    self._gateway_invalid(entry.line, entry.to, entry.ref, attempts, transaction_id)
                )
                continue
            result = {
                "line": entry.line,
                "to": entry.to,
                "status": status,
                "id": message_id,
                "segments": entry.segments,
                "encoding": entry.encoding,
                "attempts": attempts,
                "transactionId": transaction_id,
            }
            if entry.replaced:
                result["replaced"] = entry.replaced
                saved += entry.saved
                smart += 1
            if entry.ref is not None:
                result["ref"] = entry.ref
            lines.append(_dumps(result, option=_NL))
            by_encoding[entry.encoding] = by_encoding.get(entry.encoding, 0) + entry.segments
            accepted_segments += entry.segments
            billed.append(entry)
        self.results.write_many(lines)
        summary = self.summary
        summary.statuses[status] += len(lines) - refused
        summary.by_code[status, batch.group.sender] += len(lines) - refused
        if refused:
            summary.statuses[Status.INVALID_NUMBER] += refused
            summary.by_code[Status.INVALID_NUMBER, batch.group.sender] += refused
        if status in ACCEPTED:
            summary.segments.update(by_encoding)
            summary.charge(billed)
            summary.sent(batch.group.sender, len(lines) - refused, accepted_segments, started)
            summary.smart(smart, saved)

    def _accepted_plain(
        self,
        batch: Batch,
        ids: list[str],
        status: str,
        attempts: int,
        transaction_id: str | None,
        started: float,
    ) -> None:
        """`accepted` for the usual batch (every line has an id; no id or number needs
        escaping): the bytes orjson gives for each result dict, built from text whose
        constant parts are serialised once per batch — a third of the time of a dict
        and an orjson call per line (bench/bench_pipeline.py)."""
        middle, after = _accepted_parts(status, attempts, transaction_id)
        tails: dict[str, str] = {}
        segments_by: dict[str, int] = {}
        parts: list[str] = []
        append = parts.append
        # Encodings come in runs: an identity check per line, a dict (and the Enum's
        # Python-level __hash__) only where a run ends.
        last: str | None = None
        tail = ""
        run = 0
        saved_segments = smart = 0
        for (line, to, _, ref, segments, encoding, _, replaced, saved), message_id in zip(
            batch.entries, ids, strict=True
        ):
            if encoding is not last:
                if last is not None:
                    segments_by[last] = segments_by.get(last, 0) + run
                last, run = encoding, 0
                tail = tails.get(encoding, "")
                if not tail:
                    tail = tails[encoding] = f',"encoding":{_text(encoding)}{after}'
            run += segments
            if replaced:
                saved_segments += saved
                smart += 1
                append(
                    f'{{"line":{line},"to":"{to}"{middle}{message_id}",'
                    f'"segments":{segments}{tail},"replaced":{replaced}'
                    + (f',"ref":{_dumps(ref).decode()}}}\n' if ref is not None else "}\n")
                )
            elif ref is None:
                append(
                    f'{{"line":{line},"to":"{to}"{middle}{message_id}",'
                    f'"segments":{segments}{tail}}}\n'
                )
            else:
                append(
                    f'{{"line":{line},"to":"{to}"{middle}{message_id}",'
                    f'"segments":{segments}{tail},"ref":{_dumps(ref).decode()}}}\n'
                )
        if last is not None:
            segments_by[last] = segments_by.get(last, 0) + run
        self.results.write("".join(parts).encode())
        self._count_accepted(batch, len(parts), status, segments_by, smart, saved_segments, started)

    def _accepted_in_c(
        self,
        batch: Batch,
        ids: list[str],
        status: str,
        attempts: int,
        transaction_id: str | None,
        started: float,
    ) -> bool:
        """`_accepted_plain` by the C part (`dispatcher.native`), which also checks that
        no number or id needs escaping: 182-189 against 460-556 ns a line for the check
        and the loop in Python (1000-line batches, 5 % refs, min of 7 in one process).
        False when it leaves the batch to them (an id or number to escape, an int beyond
        64 bits)."""
        assert native.core is not None
        middle, after = _accepted_parts(status, attempts, transaction_id)
        kinds = tuple((kind, f',"encoding":{_text(kind)}{after}') for kind in _ENCODINGS)
        done = native.core.accepted_lines(batch.entries, ids, middle, kinds, _dumps)
        if done is None:
            return False
        text, sums, smart, saved_segments = done
        self.results.write(text)
        segments_by = {_ENCODINGS[kind]: total for kind, total in sums}
        self._count_accepted(batch, len(ids), status, segments_by, smart, saved_segments, started)
        return True

    def _accepted_packed(
        self,
        batch: Batch,
        ids: list[str],
        status: str,
        attempts: int,
        transaction_id: str | None,
        started: float,
    ) -> bool:
        """`_accepted_in_c` for a packed batch (`dispatcher.models.Packed`): its result
        lines' pieces were written as it closed; here each id and the batch-wide text go
        between them. False when an id needs escaping (the other paths then)."""
        packed = batch.packed
        assert native.core is not None
        assert packed is not None
        middle, after = _accepted_parts(status, attempts, transaction_id)
        text = native.core.accepted_packed(
            packed.pieces, packed.ends, ids, middle.encode(), after.encode()
        )
        if text is None:
            return False
        self.results.write(text)
        self._count_accepted(batch, len(ids), status, packed.segments_by, 0, 0, started)
        return True

    def _count_accepted(
        self,
        batch: Batch,
        lines: int,
        status: str,
        segments_by: dict[str, int],
        smart: int,
        saved_segments: int,
        started: float,
    ) -> None:
        """The summary's account of `_accepted_plain`'s lines."""
        summary = self.summary
        summary.statuses[status] += lines
        summary.by_code[status, batch.group.sender] += lines
        if status in ACCEPTED:
            summary.segments.update(segments_by)
            if summary.table is not None:  # prices by number: the entries are needed
                summary.charge(batch.entries)
            summary.sent(batch.group.sender, lines, sum(segments_by.values()), started)
            summary.smart(smart, saved_segments)

    def _gateway_invalid(
        self, line: int, to: str, ref: Any, attempts: int, transaction_id: str | None
    ) -> bytes:
        reason = "the gateway listed the number as invalid"
        if self.invalid is not None:
            self.invalid.write(_invalid_line(line, to, reason, "gateway"))
        result: dict[str, Any] = {
            "line": line,
            "to": to,
            "status": Status.INVALID_NUMBER,
            "attempts": attempts,
            "transactionId": transaction_id,
            "error": reason,
        }
        if ref is not None:
            result["ref"] = ref
        return _dumps(result, option=_NL)

    def unsent(
        self, batch: Batch, status: str, error: str, *, attempts: int, invalid: bool = False
    ) -> None:
        """A whole batch that ends without ids: FAILED, AMBIGUOUS or a gateway refusal
        (``invalid`` when the gateway refused the number itself)."""
        error = redact(error)  # a gateway may echo anything back, even the key
        entries = batch.entries
        if invalid and self.invalid is not None:
            self.invalid.write_many(
                [_invalid_line(entry.line, entry.to, error, "gateway") for entry in entries]
            )
        if _verbatim(list(map(_to_of, entries))):
            after = f',"attempts":{attempts},"error":{_text(error)}'
            self.results.write(_batch_lines(entries, f',"status":{_text(status)}', after)[0])
        else:
            self.results.write_many(
                [_unsent_line(entry, status, error, attempts) for entry in entries]
            )
        count = len(entries)
        self.summary.statuses[status] += count
        self.summary.by_code[status, batch.group.sender] += count
        if status == Status.AMBIGUOUS:
            self.summary.ambiguous_segments += sum(map(_segments_of, entries))

    def dry_run(self, batch: Batch) -> None:
        """What would be sent: status DRY_RUN, with segments and encoding."""
        entries = batch.entries
        if _verbatim(list(map(_to_of, entries))):
            data, segments_by = _batch_lines(entries, ',"status":"DRY_RUN"', "")
            self.results.write(data)
            self.summary.segments.update(segments_by)
        else:
            self.results.write_many([_dry_run_line(entry) for entry in entries])
            for entry in entries:
                self.summary.segments[entry.encoding] += entry.segments
        self.summary.statuses[Status.DRY_RUN] += len(entries)
        self.summary.by_code[Status.DRY_RUN, batch.group.sender] += len(entries)
        self.summary.charge(entries)
        replaced = list(map(_replaced_of, entries))
        if any(replaced):
            self.summary.smart(len(replaced) - replaced.count(0), sum(map(_saved_of, entries)))

    def flush(self) -> None:
        """Push every sink's buffer to the OS."""
        for sink in (self.results, self.invalid, self.rejects):
            if sink is not None:
                sink.flush()

    def close(self) -> None:
        """Flush and close every sink."""
        errors = []
        for sink in (self.results, self.invalid, self.rejects):
            if sink is not None:
                try:
                    sink.close()
                except OutputError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
