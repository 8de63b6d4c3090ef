"""Input: NDJSON bytes → `Recipient` | `Rejected`, in line order (SPEC §2).

`Reader` is the async face: it reads large chunks on a helper thread (a pipe on stdin
never blocks the event loop), decompresses gzip, and yields one list per chunk so the
consumer pays no await per recipient. The work per chunk is synchronous and pure:
`LineParser` (chunks → lines, carrying partial and over-long lines across chunks) and
`parse_lines` (lines → records); tests and benchmarks call them directly.

Every non-blank physical line gives exactly one record. Line numbers are 1-based and
count every physical line (``\\n``-terminated, or the last one without a newline),
including blank ones, which give no record.

Two paths give the same records. The fast one: msgspec decodes a line straight into
a `Recipient`, checking types as it decodes (the annotations of `Recipient` say what it
takes: scalars, integers within 64 bits, no unknown field). Every line it does not take
goes the careful way: orjson, then field checks in Python (`_parse_one`); a blank line,
a malformed one or an unusual one costs a second parse, which is rare. Tests check the
two paths against each other on generated and mutated lines.

Integers in ``params`` keep their exact digits whatever their size. orjson reads an
integer outside 64 bits as a float, and refuses one beyond a double's range. Both are
rare: the careful path only compares float params with 2**63, and a line with a float
that big, or one orjson refuses, pays for a third, exact parse with the standard library,
which turns such integers into `BigInt`. Elsewhere in a line (``ref``) they stay what
orjson makes of them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from functools import partial
from typing import Any, BinaryIO, Final

import msgspec
import orjson

from dispatcher import native
from dispatcher.blocking import BlockingWorker
from dispatcher.errors import InputError
from dispatcher.models import RECIPIENT_FIELDS, BigInt, Recipient, Rejected, json_default
from dispatcher.sources import ByteSource, open_source

MAX_LINE_BYTES: Final = 65536
#: Bytes read at a time (one hand-off to the reading thread each).
CHUNK_SIZE: Final = 1 << 18
#: What a yielded chunk holds at most, about (cut at a line's end): 64 KiB, ~1200
#: recipients, so that a chunk's records, numbers, texts and entries stay in the core's
#: cache (1 MiB of L2 here) from one column pass to the next. Simulated by cachegrind
#: (D1 48 KiB, LL 1 MiB) on 300 000 lines of the mixed file: 26 % fewer data reads
#: missing the L2 than whole 256 KiB blocks, for 1.5 % more instructions (16 and 32 KiB:
#: no fewer misses, 3.5-7 % more instructions, the per-chunk work).
PIECE_SIZE: Final = 1 << 16
EXCERPT_CHARS: Final = 120

_BOM: Final = b"\xef\xbb\xbf"
_PARAM_TYPES: Final = frozenset((str, int, float, bool, BigInt))
#: orjson reads integers in [-2**63, 2**64) as int; a float this size may be one beyond.
_BIG: Final = 2.0**63
_NEG_BIG: Final = -_BIG
#: A run of digits long enough to be an integer outside 64 bits.
_LONG_DIGITS: Final = re.compile(rb"[0-9]{19}")
_loads: Final = orjson.loads
_JSONDecodeError: Final = orjson.JSONDecodeError
_decode: Final = msgspec.json.Decoder(Recipient).decode
#: What a line the decoder does not take raises (ValidationError is a DecodeError;
#: RecursionError is defensive: the decoder refuses any nesting below ``params``).
_DECODE_FAILED: Final = (msgspec.DecodeError, RecursionError)
#: Failed decodes in a row after which parse_lines skips the decoder for _SKIP lines.
_MISSES: Final = 4
_SKIP: Final = 64

#: Optional string fields of a line → `Recipient` attribute.
OVERRIDES: Final = {
    "from": "sender",
    "text": "text",
    "externalId": "external_id",
    "clientId": "client_id",
    "email": "email",
}


def parse_lines(
    lines: Sequence[bytes], first_line: int, *, max_line_bytes: int = MAX_LINE_BYTES
) -> list[Recipient | Rejected]:
    """Parse physical lines (without their ``\\n``) numbered from ``first_line``.

    Returns one record per non-blank line, in order; never raises for bad input.
    """
    if not lines:
        return []
    # A chunk with a line too long goes the careful way (`_parse_each`), every line.
    core = native.core
    if core is not None:
        # `_decode_each` in C, which reads the usual line itself; None for a line too long
        records: list[Recipient | Rejected] | None = core.decode_lines(
            lines, first_line, *_decoding(max_line_bytes)
        )
        if records is not None:
            return records
    elif max(map(len, lines)) <= max_line_bytes:
        return _decode_each(lines, first_line, max_line_bytes)
    return _parse_each(lines, first_line, max_line_bytes)


def _pieces(data: bytes, size: int) -> list[bytes]:
    """``data`` cut after the first newline past every ``size`` bytes while more than
    ``1.5 * size`` are left; the last piece holds the rest (a partial line included)."""
    if len(data) < size + size // 2:
        return [data]
    pieces = []
    start = 0
    while len(data) - start >= size + size // 2:
        cut = data.find(b"\n", start + size)
        if cut < 0:
            break
        pieces.append(data[start : cut + 1])
        start = cut + 1
    pieces.append(data[start:])
    return pieces


def _decoding(max_line_bytes: int) -> tuple[Any, ...]:
    """The C part's ``decode_lines`` and ``decode_block``'s arguments after the first
    line's number: the longest line, the decoder and its failures, the careful path,
    when to skip the decoder, the record's type and slots."""
    return (
        max_line_bytes, _decode, _DECODE_FAILED,
        lambda line, number: _parse_one(line, number, max_line_bytes),
        _MISSES, _SKIP, Recipient, RECIPIENT_FIELDS,
    )  # fmt: skip


def _decode_each(
    lines: Sequence[bytes], first_line: int, max_line_bytes: int
) -> list[Recipient | Rejected]:
    """`parse_lines`' loop in Python: the twin of the C part's ``decode_lines``."""
    # msgspec decodes a well-formed line straight into a Recipient, checking the types
    # of its fields as it goes (see Recipient for what it accepts); any other line
    # (blank, malformed, a field of the wrong type, an unknown field, an integer beyond
    # 64 bits, a ref that is not a scalar) fails the decode and takes the careful path,
    # whose record it would have been anyway. A plain loop, one line at a time, rather
    # than one decode of the chunk as a JSON array: that cannot tell which line a record
    # came from when a line holds "{...},{...}" or an object spans two lines.
    # A failed decode costs 1-5 us (msgspec's error), more than the careful path itself:
    # after _MISSES failures in a row (a file whose lines all carry an extra column, or
    # an object as ref) the next _SKIP lines go straight to the careful path, then the
    # decoder is tried again. Which path a line takes never changes its record.
    out: list[Recipient | Rejected] = []
    append = out.append
    number = first_line - 1
    decode, failed = _decode, _DECODE_FAILED
    misses = skip = 0
    for line in lines:
        number += 1
        if not line:  # blank: no record (and no miss: a worker's hand-out is mostly these)
            continue
        if skip:
            skip -= 1
        else:
            try:
                record = decode(line)
            except failed:
                misses += 1
                if misses == _MISSES:
                    misses, skip = 0, _SKIP
            else:
                misses = 0
                record.line = number
                append(record)
                continue
        item = _parse_one(line, number, max_line_bytes)
        if item is not None:
            append(item)
    return out


def _has_big_float(params: list[Any]) -> bool:
    return any(type(p) is float and not _NEG_BIG < p < _BIG for p in params)


def _parse_each(
    lines: Sequence[bytes], first_line: int, max_line_bytes: int
) -> list[Recipient | Rejected]:
    out = []
    for number, line in enumerate(lines, first_line):
        item = _parse_one(line, number, max_line_bytes)
        if item is not None:
            out.append(item)
    return out


def _parse_one(line: bytes, number: int, max_line_bytes: int) -> Recipient | Rejected | None:
    """The careful path for one line: None for a blank line, else its record."""
    # Length first, as LineParser must decide it before it has seen the whole line.
    body = line[:-1] if line.endswith(b"\r") else line
    if len(body) > max_line_bytes:
        # The excerpt is cut where LineParser cuts it when it rejects the line early.
        head = line[: max_line_bytes + 2]
        return _rejected(number, f"line is longer than {max_line_bytes} bytes", head)
    if not line.strip():
        return None
    try:
        value = _loads(line)
    except _JSONDecodeError as exc:
        # Perhaps only an integer too big for a double: parse again, exactly.
        exact = _exact_object(line) if _LONG_DIGITS.search(line) else None
        if exact is None:
            return _rejected(number, _why_not_json(line, exc), line)
        return _from_object(exact, number, line, exact=True)
    if type(value) is dict:
        return _from_object(value, number, line)
    return _rejected(number, _not_an_object(value), line)


def _exact_int(token: str) -> int | BigInt:
    """A JSON integer token as orjson would read it, or a BigInt where orjson cannot."""
    if len(token) < 20:  # at most 19 digits, or "-" and 18: within 64 bits
        return int(token)
    if len(token) == 20:
        value = int(token)
        if -(2**63) <= value < 2**64:
            return value
    return BigInt(token)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{token} is too big for a double")
    return value


def _exact_parse(line: bytes) -> Any:
    """The standard library's parse, with integers as `_exact_int`; None if it fails.

    It refuses what orjson refuses and the standard library would take (NaN and the
    infinities, numbers beyond a double's range); lone surrogates are left to the caller.
    """
    try:
        return json.loads(
            line.decode("utf-8"),
            parse_int=_exact_int,
            parse_float=_finite_float,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError too
        return None


def _exact_object(line: bytes) -> dict[str, Any] | None:
    """A line orjson refused, if only for an integer beyond a double in its params.

    None (the line stays refused, for orjson's reason) when it is not a JSON object even
    so, when such an integer is anywhere but in ``params`` (``ref`` is copied to the
    results by orjson, which cannot write it), or when a string holds a lone surrogate.
    """
    value = _exact_parse(line)
    if type(value) is not dict:
        return None
    try:
        orjson.dumps({k: v for k, v in value.items() if k != "params"})
        orjson.dumps(value.get("params"), default=json_default)
    except TypeError:  # orjson.JSONEncodeError
        return None
    return value


def _exact_params(line: bytes, params: list[Any]) -> list[Any]:
    """``params`` parsed again exactly; as they were if the line will not parse so."""
    value = _exact_parse(line)
    if type(value) is dict and type(exact := value.get("params")) is list:
        return exact
    return params


def _why_not_json(line: bytes, exc: orjson.JSONDecodeError) -> str:
    if b"\x00" in line:
        return "line contains a NUL byte"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start + 1}"
    return f"invalid JSON: {exc.msg} at column {exc.colno}"


def _from_object(
    obj: dict[str, Any], number: int, line: bytes, *, exact: bool = False
) -> Recipient | Rejected:
    """Validate the fields of one JSON object; unknown fields are ignored.

    ``exact``: ``obj`` came from `_exact_parse`, its params hold no float in disguise.
    """
    to = obj.get("to")
    if "to" not in obj:
        return _rejected(number, "missing field 'to'", line)
    if type(to) is not str:
        return _rejected(number, "field 'to' must be a string", line)
    params = obj.get("params")
    if params is None:
        params = []
    elif type(params) is not list:
        return _rejected(number, "field 'params' must be an array", line)
    else:
        for i, param in enumerate(params):
            if type(param) not in _PARAM_TYPES:
                return _rejected(number, f"params[{i}] must be a string, number or boolean", line)
        if not exact and _has_big_float(params):
            params = _exact_params(line, params)
    overrides: dict[str, str] = {}
    for key, attr in OVERRIDES.items():
        value = obj.get(key)
        if value is None:
            continue
        if type(value) is not str:
            return _rejected(number, f"field '{key}' must be a string", line)
        overrides[attr] = value
    return Recipient(line=number, to=to, params=params, ref=obj.get("ref"), **overrides)


_KINDS: Final = {list: "an array", str: "a string", int: "a number", float: "a number"}


def _not_an_object(value: object) -> str:
    kind = "null" if value is None else "a boolean" if type(value) is bool else _KINDS[type(value)]
    return f"line is not a JSON object (it is {kind})"


def _rejected(number: int, reason: str, line: bytes) -> Rejected:
    return Rejected(line=number, reason=reason, excerpt=excerpt(line))


def excerpt(line: bytes) -> str:
    """The start of a line, decoded leniently, to show the user which line it was."""
    # 4 bytes per character at most in UTF-8: decode no more than needed.
    text = line[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS]
    return text.rstrip("\r\n")


class LineParser:
    """Bytes in chunks of any size → records in line order: the synchronous core of `Reader`.

    Strips a UTF-8 BOM at the very start, carries a partial line to the next chunk, and
    rejects a line longer than ``max_line_bytes`` as soon as it is known to be too long,
    then skips the rest of it without holding it in memory.
    """

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        #: Physical lines seen so far (complete, or rejected as too long).
        self.lines = 0
        #: Of which blank (whitespace-only).
        self.blank_lines = 0
        self._head = b""  # the first bytes, until they are known to hold a BOM or not
        self._at_start = True
        self._pieces: list[bytes] = []  # the current partial line
        self._pending = 0
        self._skipping = False  # inside a line already rejected as too long

    def feed(self, data: bytes) -> list[Recipient | Rejected]:
        """Records for the lines that ``data`` completes (possibly none)."""
        if self._at_start:
            data = self._head + data
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._head = data
                return []
            self._at_start = False
            self._head = b""
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._skipping = False
            data = data[newline + 1 :]
        if not data:
            return []
        if data.find(b"\n") < 0:
            self._pieces.append(data)
            self._pending += len(data)
            return self._check_pending([])

        if self._pieces:
            self._pieces.append(data)
            data = b"".join(self._pieces)
        core = native.core
        if core is not None:
            # `parse_lines` of the complete lines, split in C: no bytes object a line
            records, count = core.decode_block(
                data, self.lines + 1, *_decoding(self.max_line_bytes)
            )
            if records is not None:
                tail = data[data.rfind(b"\n") + 1 :]
                self.lines += count
                self.blank_lines += count - len(records)
                self._pieces = [tail] if tail else []
                self._pending = len(tail)
                return self._check_pending(records)
        lines = data.split(b"\n")
        tail = lines.pop()
        out = self._parse(lines)
        self._pieces = [tail] if tail else []
        self._pending = len(tail)
        return self._check_pending(out)

    def finish(self) -> list[Recipient | Rejected]:
        """Records for the last line, when the input does not end with a newline."""
        if self._at_start and self._head:
            self._pieces, self._pending = [self._head], len(self._head)
        self._at_start, self._head = False, b""
        if self._skipping or not self._pieces:
            return []
        last = b"".join(self._pieces)
        self._pieces, self._pending = [], 0
        return self._parse([last])

    def _parse(self, lines: list[bytes]) -> list[Recipient | Rejected]:
        if not lines:
            return []
        out = parse_lines(lines, self.lines + 1, max_line_bytes=self.max_line_bytes)
        self.lines += len(lines)
        self.blank_lines += len(lines) - len(out)
        return out

    def _check_pending(self, out: list[Recipient | Rejected]) -> list[Recipient | Rejected]:
        # One byte of slack: a "\r" before the coming "\n" is not part of the line.
        if self._pending > self.max_line_bytes + 1:
            self.lines += 1
            start = b"".join(self._pieces)[: self.max_line_bytes + 2]
            out.append(
                _rejected(self.lines, f"line is longer than {self.max_line_bytes} bytes", start)
            )
            self._pieces, self._pending, self._skipping = [], 0, True
        return out


class Reader:
    """Recipients from NDJSON: ``async for records in Reader(path): ...``.

    ``source`` is a path (``.gz`` or gzip magic bytes: decompressed), ``"-"`` for stdin,
    or a binary file object (not closed here). Each iteration yields the records of one
    chunk of input, in line order. Progress attributes, updated as it goes: ``lines``,
    ``blank_lines``, ``bytes_read`` (bytes of the file itself, compressed for gzip) and
    ``total_bytes`` (the file's size, None for a pipe).

    A missing or unreadable file, or a truncated or corrupt gzip stream, raises
    `InputError` after every complete line before the fault has been yielded; a partial
    last line cut off by the fault is not.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.source = source
        self.chunk_size = chunk_size
        self.bytes_read = 0
        self.total_bytes: int | None = None
        self._parser = LineParser(max_line_bytes=max_line_bytes)
        self._chunks: AsyncGenerator[list[Recipient | Rejected], None] | None = None

    @property
    def lines(self) -> int:
        """Physical lines seen so far, blank ones included."""
        return self._parser.lines

    @property
    def blank_lines(self) -> int:
        """Blank (whitespace-only) lines seen so far: they have no record."""
        return self._parser.blank_lines

    def __aiter__(self) -> AsyncIterator[list[Recipient | Rejected]]:
        if self._chunks is not None:
            raise RuntimeError("a Reader can only be iterated once")
        self._chunks = self._read()
        return self._chunks

    async def aclose(self) -> None:
        """Stop reading and release the file (for a consumer that stops early)."""
        if self._chunks is not None:
            await self._chunks.aclose()

    async def _read(self) -> AsyncGenerator[list[Recipient | Rejected], None]:
        worker = BlockingWorker("dispatcher-reader")
        stream: ByteSource | None = None
        parser = self._parser
        try:
            stream = await worker.run(partial(open_source, self.source, self.chunk_size))
            self.total_bytes = stream.total_bytes
            while True:
                try:
                    data = await worker.run(stream.read)
                except InputError as exc:
                    self.bytes_read = stream.bytes_read
                    raise InputError(
                        f"{exc} (after line {parser.lines}; every line up to it was read)"
                    ) from exc
                self.bytes_read = stream.bytes_read
                if not data:
                    break
                for piece in _pieces(data, PIECE_SIZE):
                    records = parser.feed(piece)
                    if records:
                        yield records
            records = parser.finish()
            if records:
                yield records
        finally:
            worker.close(stream.close if stream is not None else None)
