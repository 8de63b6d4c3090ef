"""The input reader: NDJSON rules of SPEC §2, on real files, gzip, stdin and pipes."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import FatalError, InputError
from dispatcher.models import BigInt, Recipient, Rejected
from dispatcher.reader import PIECE_SIZE, LineParser, Reader, _parse_each, _pieces, parse_lines

Record = Recipient | Rejected

SPEC_LINES = (
    b'{"to": "+525500000000", "params": ["Elizabeth", 10.65]}\n'
    b'{"to": "525511111111", "params": ["Joshua", 20.5], "ref": "crm-8812"}\n'
    b'{"to": "+15005550006", "text": "Your code is {0}", "from": "COMPANY", "params": ["4417"]}\n'
)
SPEC_RECORDS = [
    Recipient(line=1, to="+525500000000", params=["Elizabeth", 10.65]),
    Recipient(line=2, to="525511111111", params=["Joshua", 20.5], ref="crm-8812"),
    Recipient(
        line=3, to="+15005550006", params=["4417"], text="Your code is {0}", sender="COMPANY"
    ),
]


def parse(data: bytes, chunk: int = 0, max_line_bytes: int = 65536) -> list[Record]:
    parser = LineParser(max_line_bytes=max_line_bytes)
    out: list[Record] = []
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i : i + step]))
    out.extend(parser.finish())
    return out


def one(line: bytes) -> Record:
    (record,) = parse(line + b"\n")
    return record


def reason(line: bytes) -> str:
    record = one(line)
    assert isinstance(record, Rejected), record
    return record.reason


# --- fields ------------------------------------------------------------------------


def test_spec_examples() -> None:
    assert parse(SPEC_LINES) == SPEC_RECORDS


def test_overrides_map_to_recipient_fields() -> None:
    line = orjson.dumps(
        {
            "to": "+525500000000",
            "from": "COMPANY",
            "text": "Hi {0}",
            "externalId": "ext-1",
            "clientId": "client-9",
            "email": "a@example.com",
            "params": ["Ann", 3, True, 1.5],
            "ref": {"crm": [1, 2]},
            "unknown": {"ignored": True},
        }
    )
    assert one(line) == Recipient(
        line=1,
        to="+525500000000",
        params=["Ann", 3, True, 1.5],
        ref={"crm": [1, 2]},
        sender="COMPANY",
        text="Hi {0}",
        external_id="ext-1",
        client_id="client-9",
        email="a@example.com",
    )


def test_null_counts_as_absent() -> None:
    line = b'{"to": "1", "params": null, "ref": null, "from": null, "text": null, "email": null}'
    assert one(line) == Recipient(line=1, to="1")
    assert one(b'{"to": "1"}') == Recipient(line=1, to="1", params=[])


@pytest.mark.parametrize("ref", [0, 1.5, "x", True, [1, "a"], {"a": {"b": None}}])
def test_ref_is_any_json(ref: object) -> None:
    record = one(orjson.dumps({"to": "1", "ref": ref}))
    assert isinstance(record, Recipient)
    assert record.ref == ref


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"params": ["a"]}', "missing field 'to'"),
        (b"{}", "missing field 'to'"),
        (b'{"to": null}', "field 'to' must be a string"),
        (b'{"to": 525500000000}', "field 'to' must be a string"),
        (b'{"to": ["+52"]}', "field 'to' must be a string"),
        (b'{"to": "1", "params": "a"}', "field 'params' must be an array"),
        (b'{"to": "1", "params": {"0": "a"}}', "field 'params' must be an array"),
        (b'{"to": "1", "params": ["a", null]}', "params[1] must be a string, number or boolean"),
        (b'{"to": "1", "params": [[1]]}', "params[0] must be a string, number or boolean"),
        (b'{"to": "1", "params": [1, 2, {}]}', "params[2] must be a string, number or boolean"),
        (b'{"to": "1", "from": 2222}', "field 'from' must be a string"),
        (b'{"to": "1", "text": ["hi"]}', "field 'text' must be a string"),
        (b'{"to": "1", "externalId": 7}', "field 'externalId' must be a string"),
        (b'{"to": "1", "clientId": false}', "field 'clientId' must be a string"),
        (b'{"to": "1", "email": {}}', "field 'email' must be a string"),
    ],
)
def test_field_errors(line: bytes, why: str) -> None:
    assert reason(line) == why


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'"+525500000000"', "a string"),
        (b"525500000000", "a number"),
        (b"1.5", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_not_an_object(line: bytes, kind: str) -> None:
    assert reason(line) == f"line is not a JSON object (it is {kind})"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"to": "1",}', "invalid JSON: trailing comma is not allowed at column 11"),
        (b'{"to": "1"} x', "invalid JSON: unexpected content after document at column 13"),
        (b'{"to": "1"}{"to": "2"}', "invalid JSON: unexpected content after document at column 12"),
        (b"{'to': '1'}", "invalid JSON: unexpected character, expected a string key at column 2"),
        (b'{"to": "1\x00"}', "line contains a NUL byte"),
        (b"\x00", "line contains a NUL byte"),
        (b'{"to": "\xff"}', "invalid UTF-8 at byte 9"),
        (b'{"to": "\xc3"}', "invalid UTF-8 at byte 9"),
        (b'{"to": "1", "n": NaN}',
         "invalid JSON: unexpected character, expected a JSON value at column 18"),
        (b'{"to": "1", "n": 1e999}',
         "invalid JSON: number is infinity when parsed as double at column 18"),
    ],
)  # fmt: skip
def test_invalid_lines(line: bytes, why: str) -> None:
    assert reason(line) == why


# --- integers beyond 64 bits (orjson reads them as floats, or refuses them) ---------

HUGE = "1" + "0" * 400  # beyond a double: orjson refuses the line


def params_of(line: bytes) -> list[object]:
    record = one(line)
    assert isinstance(record, Recipient), record
    return record.params


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("18446744073709551616", BigInt("18446744073709551616")),  # 2**64
        ("-9223372036854775809", BigInt("-9223372036854775809")),  # -2**63 - 1
        ("1" + "0" * 30, BigInt("1" + "0" * 30)),
        (HUGE, BigInt(HUGE)),
        ("-" + HUGE, BigInt("-" + HUGE)),
        ("1" * 5000, BigInt("1" * 5000)),  # more digits than int() takes
        # What orjson holds exactly stays a plain int, as does every float.
        ("18446744073709551615", 2**64 - 1),
        ("-9223372036854775808", -(2**63)),
        ("-0", 0),
        ("1e19", 1e19),
        ("18446744073709551616.0", 2.0**64),
        ("-1E+19", -1e19),
    ],
)
@pytest.mark.parametrize(
    ("shape", "at"),
    [
        ('{{"to": "1", "params": [{0}]}}', 0),
        ('{{"to": "1", "params": ["a", {0}]}}', 1),  # the fast path's two params
        ('{{"to": "1", "params": [{0}, "a"], "ref": "r"}}', 0),
        ('{{"to": "1", "params": [1, 2, {0}]}}', 2),
        ('{{"to": "1", "params": ["a", {0}], "text": "{{1}}"}}', 1),  # override: careful path
    ],
)
def test_integers_beyond_64_bits_keep_their_digits(
    token: str, expected: object, shape: str, at: int
) -> None:
    line = shape.format(token).encode()
    got = params_of(line)[at]
    assert got == expected
    assert type(got) is type(expected)
    assert parse_lines([line], 1) == _parse_each([line], 1, 65536)


def test_a_big_integer_elsewhere_than_params_is_left_to_orjson() -> None:
    # ref is copied to the results by orjson, which cannot write a BigInt.
    record = one(b'{"to": "1", "params": [18446744073709551616], "ref": 18446744073709551616}')
    assert isinstance(record, Recipient)
    assert record.params == [BigInt("18446744073709551616")]
    assert record.ref == 2.0**64
    why = "invalid JSON: number is infinity when parsed as double at column 35"
    assert reason(b'{"to": "1", "params": [1], "ref": ' + HUGE.encode() + b"}") == why
    assert reason(b'{"to": ' + HUGE.encode() + b"}").startswith("invalid JSON: number is infinity")


@pytest.mark.parametrize(
    "line",
    [
        b'{"to": "1", "params": [' + HUGE.encode() + b', "\\ud800"]}',  # a lone surrogate
        b'{"to": "1", "params": [' + HUGE.encode() + b", NaN]}",
        b'{"to": "1", "params": [' + HUGE.encode() + b", 1e400]}",
        b'{"to": "1", "params": [' + HUGE.encode() + b"],}",
        b"[" + HUGE.encode() + b"]",
        b'{"to": "1", "params": [' + HUGE.encode() + b"]" + b"[" * 5000,
    ],
)
def test_the_exact_parse_refuses_what_orjson_refuses(line: bytes) -> None:
    assert reason(line).startswith("invalid JSON: ")


big_integers = st.one_of(
    st.integers(),
    st.integers(min_value=2**64),
    st.integers(max_value=-(2**63) - 1),
    st.sampled_from([10**30, -(2**70), 2**64, -(2**63) - 1, 10**400]),
)


@given(st.lists(st.one_of(big_integers, st.text(max_size=4), st.floats(allow_nan=False,
       allow_infinity=False)), max_size=4), st.booleans())  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_params_parse_exactly_on_both_paths(params: list[object], ref: bool) -> None:
    parts = ", ".join(str(p) if type(p) is int else orjson.dumps(p).decode() for p in params)
    tail = ', "ref": 1' if ref else ""
    line = f'{{"to": "1", "params": [{parts}]{tail}}}'.encode()
    expected = [
        BigInt(str(p)) if type(p) is int and not -(2**63) <= p < 2**64 else p for p in params
    ]
    assert repr(parse_lines([line], 1)) == repr(_parse_each([line], 1, 65536))
    assert params_of(line) == expected


def test_excerpt_is_the_start_of_the_line_decoded_leniently() -> None:
    record = one(b'{"to": "\xff' + b"x" * 500)
    assert isinstance(record, Rejected)
    assert record.excerpt == '{"to": "\ufffd' + "x" * 111
    assert len(record.excerpt) == 120
    assert parse(b"nope\r\n") == [
        Rejected(line=1, reason=reason(b"nope"), excerpt="nope"),
    ]


# --- lines: numbering, blanks, BOM, CRLF, length -----------------------------------


def test_blank_lines_keep_the_numbering_and_are_counted() -> None:
    data = b'\n  \n{"to": "1"}\n\t\r\n\n{"to": "2"}\n \x0c\n'
    parser = LineParser()
    records = parser.feed(data) + parser.finish()
    assert [r.line for r in records] == [3, 6]
    assert (parser.lines, parser.blank_lines) == (7, 5)


def test_crlf_bom_and_a_last_line_without_newline() -> None:
    data = b'\xef\xbb\xbf{"to": "1"}\r\n\r\n{"to": "2"}\r\n{"to": "3"}'
    assert parse(data) == [
        Recipient(line=1, to="1"),
        Recipient(line=3, to="2"),
        Recipient(line=4, to="3"),
    ]


def test_a_bom_is_only_accepted_at_the_start() -> None:
    records = parse(b'{"to": "1"}\n\xef\xbb\xbf{"to": "2"}\n')
    assert isinstance(records[1], Rejected)
    assert "byte order mark" in records[1].reason


def test_a_bom_split_across_reads_is_still_stripped() -> None:
    assert parse(b'\xef\xbb\xbf{"to": "1"}\n', chunk=1) == [Recipient(line=1, to="1")]
    assert parse(b"\xef\xbb") == [
        Rejected(line=1, reason="invalid UTF-8 at byte 1", excerpt="\ufffd")
    ]


def padded(size: int) -> bytes:
    """A valid line of exactly ``size`` bytes."""
    line = b'{"to": "1", "ref": "' + b"x" * size + b'"}'
    return line[: size - 2] + b'"}'


@pytest.mark.parametrize("chunk", [0, 1000, 4096])
def test_line_length_limit(chunk: int) -> None:
    limit = 5000
    data = b"\n".join([padded(limit), padded(limit + 1), padded(limit) + b"\r", b'{"to": "2"}'])
    records = parse(data, chunk=chunk, max_line_bytes=limit)
    assert [type(r) for r in records] == [Recipient, Rejected, Recipient, Recipient]
    assert records[1] == Rejected(
        line=2, reason="line is longer than 5000 bytes", excerpt=padded(limit)[:120].decode()
    )
    assert [r.line for r in records] == [1, 2, 3, 4]


@pytest.mark.parametrize("chunk", [0, 7, 1000])
def test_a_long_blank_line_is_rejected_however_it_is_chunked(chunk: int) -> None:
    records = parse(b" " * 100 + b'\n{"to": "1"}', chunk=chunk, max_line_bytes=50)
    assert [(type(r), r.line) for r in records] == [(Rejected, 1), (Recipient, 2)]


def test_a_huge_line_is_skipped_without_holding_it() -> None:
    chunk = b"y" * 65536
    parser = LineParser(max_line_bytes=65536)
    tracemalloc.start()
    try:
        records = parser.feed(b'{"to": "1"}\n{"to": "')
        for _ in range(320):  # 20 MiB of one line
            records += parser.feed(chunk)
        records += parser.feed(b'"}\n{"to": "3"}\n')
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert [(type(r), r.line) for r in records] == [(Recipient, 1), (Rejected, 2), (Recipient, 3)]
    assert parser.lines == 3


# --- properties: chunking, fast path, fuzz -------------------------------------------

scalars = st.one_of(
    st.text(max_size=8),
    st.integers(-(2**63), 2**64 - 1),  # what orjson can write
    st.floats(allow_nan=False),
    st.booleans(),
)
extras = st.dictionaries(
    st.sampled_from(["ref", "from", "text", "email", "x"]),
    st.one_of(st.none(), st.text(max_size=5), st.integers(0, 9)),
    max_size=2,
)
valid_lines = st.builds(
    lambda to, params, extra: orjson.dumps({"to": to, "params": params, **extra}),
    st.text(max_size=16),
    st.lists(scalars, max_size=3),
    extras,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    line = draw(valid_lines)
    at = draw(st.integers(0, len(line)))
    cut = draw(st.integers(0, 3))
    return line[:at] + draw(st.binary(max_size=3)) + line[at + cut :]


physical_lines = st.one_of(
    valid_lines,
    mutated(),
    st.binary(max_size=40),
    st.sampled_from([b"", b" ", b"\t", b"\r", b" \r", b"\xef\xbb\xbf", b"[]", b"null"]),
).map(lambda line: line.replace(b"\n", b""))


@st.composite
def ndjson(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(physical_lines, max_size=30))
    data = b"\n".join(lines)
    if lines and draw(st.booleans()):
        data += b"\n"
    return data


def expected_outcomes(data: bytes, max_line_bytes: int) -> list[tuple[int, bool]]:
    """(line number, rejected-as-too-long) for every line that must give a record."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for number, line in enumerate(lines, 1):
        body = line[:-1] if line.endswith(b"\r") else line
        if len(body) > max_line_bytes:
            out.append((number, True))
        elif line.strip():
            out.append((number, False))
    return out


@given(ndjson(), st.integers(1, 64), st.sampled_from([8, 30, 65536]))
@settings(max_examples=300, deadline=None)
def test_fuzz_one_outcome_per_non_blank_line(data: bytes, chunk: int, limit: int) -> None:
    records = parse(data, chunk=chunk, max_line_bytes=limit)
    outcomes = [(r.line, isinstance(r, Rejected) and "longer" in r.reason) for r in records]
    assert outcomes == expected_outcomes(data, limit)
    assert all(type(r) in (Recipient, Rejected) for r in records)
    assert records == parse(data, max_line_bytes=limit)  # chunking never matters


@given(st.lists(physical_lines, max_size=30), st.sampled_from([8, 65536]))
@settings(max_examples=300, deadline=None)
def test_fast_path_agrees_with_the_careful_path(lines: list[bytes], limit: int) -> None:
    # By repr: == would take 1, 1.0 and True for one another (more in test_reader_fast).
    fast = parse_lines(lines, 5, max_line_bytes=limit)
    assert list(map(repr, fast)) == list(map(repr, _parse_each(lines, 5, limit)))


# --- Reader on real files ----------------------------------------------------------


async def collect(reader: Reader, out: list[Record]) -> list[Record]:
    """Append the records to ``out`` as they come (so they survive an exception)."""
    async for chunk in reader:
        assert chunk  # never an empty list
        out.extend(chunk)
    return out


async def read_all(reader: Reader) -> list[Record]:
    return await collect(reader, [])


async def test_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"\n" + SPEC_LINES + b"\n")
    reader = Reader(path)
    records = await read_all(reader)
    assert records == [msgspec.structs.replace(r, line=r.line + 1) for r in SPEC_RECORDS]
    assert (reader.lines, reader.blank_lines) == (5, 2)
    assert reader.bytes_read == reader.total_bytes == path.stat().st_size


@pytest.mark.parametrize("chunk_size", [1, 5, 4096, 1 << 20])
async def test_chunk_size_does_not_change_the_records(tmp_path: Path, chunk_size: int) -> None:
    data = b"\xef\xbb\xbf" + SPEC_LINES.replace(b"\n", b"\r\n") * 20 + b"\n \nbad"
    path = tmp_path / "in.ndjson"
    path.write_bytes(data)
    assert await read_all(Reader(path, chunk_size=chunk_size)) == parse(data)


@given(st.binary(max_size=400).map(lambda b: b.replace(b"x", b"\n")), st.integers(1, 60))
def test_pieces_are_the_data_cut_after_newlines(data: bytes, size: int) -> None:
    pieces = _pieces(data, size)
    assert b"".join(pieces) == data
    for piece in pieces[:-1]:  # every cut: just after the first newline past `size`
        assert len(piece) > size
        assert piece.endswith(b"\n")
        assert b"\n" not in piece[size:-1]
    assert len(pieces[-1]) < size + size // 2 or b"\n" not in pieces[-1][size:]


async def test_a_read_is_yielded_in_pieces_of_whole_lines(tmp_path: Path) -> None:
    """A read of 256 KiB comes out as chunks of ~64 KiB (`PIECE_SIZE`), the records
    the same as one parse of the whole file, however the reads fall."""
    line = b'{"to":"+12025550100","params":["Ana",12.5],"ref":"r"}\n'
    data = b"\xef\xbb\xbf" + line * (5 * PIECE_SIZE // len(line)) + b"\n \nbad"
    path = tmp_path / "in.ndjson"
    path.write_bytes(data)
    chunks: list[list[Record]] = []
    async for chunk in Reader(path):
        chunks.append(chunk)
    assert [r for chunk in chunks for r in chunk] == parse(data)
    assert len(chunks) >= 4
    assert max(map(len, chunks)) <= PIECE_SIZE // len(line) + 2
    for chunk_size in (PIECE_SIZE // 3, 3 * PIECE_SIZE + 17):
        assert await read_all(Reader(path, chunk_size=chunk_size)) == parse(data)


async def test_reads_gzip(tmp_path: Path) -> None:
    data = SPEC_LINES * 1000
    for name in ("in.ndjson.gz", "no-suffix"):  # by name and by magic bytes
        path = tmp_path / name
        path.write_bytes(gzip.compress(data))
        reader = Reader(str(path), chunk_size=4096)
        assert await read_all(reader) == parse(data)
        # Progress counts the compressed bytes: it is what total_bytes measures.
        assert reader.bytes_read == reader.total_bytes == path.stat().st_size
        assert reader.lines == 3000


async def test_reads_concatenated_gzip_members(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson.gz"
    path.write_bytes(gzip.compress(SPEC_LINES) + gzip.compress(SPEC_LINES) + b"\x00" * 10)
    assert len(await read_all(Reader(path))) == 6


async def test_truncated_gzip_yields_what_came_before_then_fails(tmp_path: Path) -> None:
    data = b"".join(b'{"to": "+5255%08d"}\n' % i for i in range(50_000))
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(gzip.compress(data)[:-5000])
    reader = Reader(path, chunk_size=1 << 16)
    got: list[Record] = []
    with pytest.raises(InputError) as info:
        await collect(reader, got)
    assert 10_000 < len(got) < 50_000
    assert got == parse(data)[: len(got)]
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value)
    assert f"after line {len(got)}" in str(info.value)
    assert reader.lines == len(got)


async def test_corrupt_gzip_fails_with_the_file_name(tmp_path: Path) -> None:
    data = b"".join(b'{"to": "+5255%08d"}\n' % i for i in range(50_000))
    packed = bytearray(gzip.compress(data))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = b"\xff" * 64
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(packed))
    got: list[Record] = []
    with pytest.raises(InputError, match=r"bad\.gz has corrupt gzip data"):
        await collect(Reader(path, chunk_size=1 << 16), got)
    # Lines well before the damage come out right. (Deflate may decode some garbage
    # before it notices, and the CRC is only checked at the end of a member.)
    assert 10_000 < len(got) < 50_000
    assert got[:10_000] == parse(data)[:10_000]


async def test_a_gz_name_without_gzip_data_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.ndjson.gz"
    path.write_bytes(SPEC_LINES)
    with pytest.raises(InputError, match=r"is named \.gz but is not gzip data"):
        await read_all(Reader(path))


async def test_missing_and_unreadable_inputs(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"
    with pytest.raises(InputError) as info:
        await read_all(Reader(missing))
    assert str(info.value) == f"cannot read {missing}: No such file or directory"
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, FatalError)
    with pytest.raises(InputError, match="Is a directory"):
        await read_all(Reader(tmp_path))


async def test_empty_file(tmp_path: Path) -> None:
    for name in ("empty.ndjson", "empty.ndjson.gz"):
        (tmp_path / name).write_bytes(b"")
        reader = Reader(tmp_path / name)
        assert await read_all(reader) == []
        assert (reader.lines, reader.bytes_read, reader.total_bytes) == (0, 0, 0)


async def test_reads_a_binary_file_object_without_closing_it() -> None:
    stream = io.BytesIO(SPEC_LINES)
    reader = Reader(stream)
    assert await read_all(reader) == SPEC_RECORDS
    assert reader.total_bytes == len(SPEC_LINES)
    assert not stream.closed


async def test_a_text_file_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(SPEC_LINES)
    with path.open() as text, pytest.raises(TypeError, match="binary mode"):
        await read_all(Reader(text))  # type: ignore[arg-type]


async def test_a_reader_is_iterated_once() -> None:
    reader = Reader(io.BytesIO(SPEC_LINES))
    await read_all(reader)
    with pytest.raises(RuntimeError, match="only be iterated once"):
        await read_all(reader)


# --- stdin and pipes ---------------------------------------------------------------

STDIN_SCRIPT = textwrap.dedent(
    """
    import asyncio, orjson
    from dispatcher.reader import Reader

    async def main():
        reader = Reader("-", chunk_size=3)
        records = []
        async for chunk in reader:
            records += [[r.line, type(r).__name__] for r in chunk]
        print(orjson.dumps([records, reader.lines, reader.total_bytes]).decode())

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("packer", [bytes, gzip.compress])
def test_reads_stdin(packer: object) -> None:
    data = SPEC_LINES + b"\n{oops\n"
    done = subprocess.run(
        [sys.executable, "-c", STDIN_SCRIPT],
        input=packer(data),  # type: ignore[operator]
        capture_output=True,
        timeout=60,
        check=True,
    )
    records, lines, total = orjson.loads(done.stdout)
    assert records == [[1, "Recipient"], [2, "Recipient"], [3, "Recipient"], [5, "Rejected"]]
    assert (lines, total) == (5, None)


async def test_a_pipe_does_not_block_the_loop_nor_wait_for_a_full_chunk() -> None:
    read_fd, write_fd = os.pipe()
    loop_ran = threading.Event()
    first_seen = threading.Event()

    def producer() -> None:
        # Writes nothing until the event loop has run while the reader waits: a read
        # blocking the loop would leave the pipe empty and the test would fail.
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            if not loop_ran.wait(20):
                return
            pipe.write(b'{"to": "1"}\n')
            # The second line only comes once the first was delivered on its own.
            if first_seen.wait(20):
                pipe.write(b'{"to": "2"}\n')

    thread = threading.Thread(target=producer)
    thread.start()
    got: list[Record] = []
    with os.fdopen(read_fd, "rb") as stream:

        async def consume() -> None:
            async for chunk in Reader(stream, chunk_size=1 << 20):
                got.extend(chunk)
                first_seen.set()

        task = asyncio.create_task(consume())
        for _ in range(5):
            await asyncio.sleep(0)
        loop_ran.set()
        await task
    thread.join()
    assert got == [Recipient(line=1, to="1"), Recipient(line=2, to="2")]


def test_stopping_while_stdin_is_idle_lets_the_process_exit() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from dispatcher.reader import Reader

        async def main():
            chunks = aiter(Reader("-"))
            try:
                await asyncio.wait_for(anext(chunks), 0.2)
            except TimeoutError:
                print("stopped", flush=True)

        asyncio.run(main())
        """
    )
    # stdin stays open and silent: the read thread is still blocked when main() returns.
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        code = proc.wait(timeout=60)
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert (code, proc.stdout.read(), proc.stderr.read()) == (0, b"stopped\n", b"")
    finally:
        proc.kill()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
