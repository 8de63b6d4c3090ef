"""The reader's fast path (msgspec into `Recipient`) against its careful path (orjson).

`parse_lines` decodes a line with msgspec and falls back to `_parse_one` when the
decoder refuses it; `_parse_each` always takes `_parse_one`. Whatever the line, both
must give the same record, compared by ``repr`` so that ``1``, ``1.0``, ``True`` and
``-0.0`` / ``0.0`` count as different (``==`` would not tell them apart).
"""

from __future__ import annotations

import gc
import math
import struct
from decimal import Context, Decimal

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dispatcher import reader
from dispatcher.models import BigInt, Recipient, Rejected
from dispatcher.reader import LineParser, _decode_each, _parse_each, parse_lines
from tests.support.native import twins


def exactly(records: list[Recipient | Rejected]) -> list[tuple[str, str]]:
    return [(type(r).__name__, repr(r)) for r in records]


def assert_paths_agree(lines: list[bytes], limit: int = 65536) -> None:
    """The fast path (`parse_lines`: the C part's ``decode_lines`` where it is built,
    else its twin `_decode_each`) gives the careful path's records, line numbers
    included."""
    careful = exactly(_parse_each(lines, 7, limit))
    assert exactly(parse_lines(lines, 7, max_line_bytes=limit)) == careful
    if max(map(len, lines), default=0) <= limit:
        assert exactly(_decode_each(lines, 7, limit)) == careful


# --- JSON written every way, valid or nearly ----------------------------------------

digits = st.text("0123456789", min_size=1, max_size=30)
big_digits = st.integers(19, 400).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))


@st.composite
def halfway(draw: st.DrawFn) -> str:
    """The exact decimal halfway between two adjacent doubles: rounding decides."""
    x = struct.unpack("<d", struct.pack("<Q", draw(st.integers(0, 2**63 - 1))))[0]
    y = math.nextafter(x, math.inf)
    if not math.isfinite(y):
        return "1e308"
    h = Context(prec=2000).divide(Decimal(x) + Decimal(y), 2)
    return format(h, "e")


def _decimal(whole: int, point: int, negative: bool) -> bytes:
    """``whole`` written with a decimal point ``point`` digits from its end: an amount
    as people write them (1331.65, -0.000123, 100.50), of any number of digits."""
    digits = str(whole).rjust(point + 1, "0")
    text = f"{digits[: len(digits) - point]}.{digits[len(digits) - point :]}" if point else digits
    return ("-" if negative else "").encode() + text.encode()


#: Amounts and whole numbers around the C part's own reading (at most 15 significant
#: digits for a float, 18 for an int, 22 after the point; msgspec reads the others).
decimals = st.builds(_decimal, st.integers(0, 10**20), st.integers(0, 25), st.booleans())
numbers = st.one_of(
    decimals.map(bytes.decode),
    st.integers().map(str),
    st.integers(min_value=2**62).map(str),
    st.integers(max_value=-(2**62)).map(str),
    st.sampled_from(
        [
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "-0",
            "-0.0",
            "0e0",
            "1e-400",
            "-1e-400",
            "0e99999999999",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.797693134862315807937e308",
            "1.7976931348623159e308",
            "1e400",
            "2.4703282292062327e-324",
            "2.4703282292062328e-324",
            "9007199254740993.0",
            # 16 digits: beyond 2**53, m / 10^k rounds twice (the C part reads 15)
            "9065583532.520021",
            "983043716.7526809",
            "998.3874458557473",
            # 22 and 23 digits after the point (the C part's powers of ten end at 1e22)
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "-0.00000000000000000000000",
            "123456789012345678",
            "1234567890123456789",
            "1.2.3",
            "1.",
            "NaN",
            "Infinity",
            "-Infinity",
            "1" + "0" * 5000,
        ]
    ),
    st.builds(
        lambda sign, whole, frac, exp: f"{sign}{whole.lstrip('0') or '0'}{frac}{exp}",
        st.sampled_from(["", "-"]),
        st.one_of(digits, big_digits),
        st.one_of(st.just(""), digits.map(lambda d: "." + d)),
        st.one_of(
            st.just(""),
            st.builds(
                lambda e, s, n: f"{e}{s}{n}",
                st.sampled_from("eE"),
                st.sampled_from(["", "+", "-"]),
                st.integers(0, 400),
            ),
        ),
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    halfway(),
    # not JSON numbers: the decoder must refuse them as orjson does
    st.sampled_from(["01", "1.", ".5", "+1", "1e", "1e+", "-", "1.5e5.5", "0x10", "1_000"]),
)


#: Pieces of a JSON string's body: escapes, raw UTF-8 and bytes that are not UTF-8.
string_pieces = st.one_of(
    st.text(max_size=3).map(lambda t: t.replace("\\", "\\\\").replace('"', '\\"')),
    st.sampled_from(
        [
            "\\u",
            "\\ud800",
            "\\udc00",
            "\\ud83d\\ude00",
            "\\uDBFF\\uDFFF",
            "\\u0000",
            "\\u00e9",
            "\\/",
            "\\x41",
            "\\",
            "\t",
            "\x00",
            "\x1f",
            '"',
        ]
    ),
).map(lambda s: s.encode("utf-8", "surrogatepass"))
raw_pieces = st.sampled_from(
    [b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xef\xbf\xbe", b"\xe2\x82", b"\xff"]
)
strings = st.lists(st.one_of(string_pieces, raw_pieces), max_size=4).map(
    lambda parts: b'"' + b"".join(parts) + b'"'
)
keys = st.one_of(
    st.sampled_from(
        [
            b'"to"',
            b'"params"',
            b'"ref"',
            b'"from"',
            b'"text"',
            b'"externalId"',
            b'"clientId"',
            b'"email"',
            b'"line"',
            b'"sender"',
            b'"external_id"',
            b'"x"',
            b'"t\\u006f"',
            b'"T0"',
        ]
    ),
    strings,
)
scalars = st.one_of(
    numbers.map(str.encode),
    strings,
    st.sampled_from([b"true", b"false", b"null", b"tru", b"nul", b"True", b"None"]),
)
spaces = st.sampled_from([b"", b"", b" ", b"\t", b"\r", b"  "])


def join(items: list[bytes], sep: bytes, space: bytes) -> bytes:
    return (sep + space).join(items)


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(
            lambda items, sp: b"[" + sp + join(items, b",", sp) + b"]",
            st.lists(inner, max_size=4),
            spaces,
        ),
        st.builds(
            lambda pairs, sp: b"{" + join([k + b":" + sp + v for k, v in pairs], b",", sp) + b"}",
            st.lists(st.tuples(keys, inner), max_size=3),
            spaces,
        ),
    ),
    max_leaves=8,
)
params = st.one_of(
    values,
    st.builds(
        lambda items, sp: b"[" + join(items, b",", sp) + b"]",
        st.lists(scalars, max_size=4),
        spaces,
    ),
)


clean_strings = st.text(max_size=6).map(lambda t: orjson.dumps(t))


clean_numbers = st.one_of(
    st.one_of(st.integers(-(2**64), 2**64), st.integers()).map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    decimals,
    decimals,
)
clean_scalars = st.one_of(clean_strings, clean_numbers, st.sampled_from([b"true", b"false"]))
#: A value that suits the field, mostly: the decoder takes such a line itself.
suits = {
    b'"to"': clean_strings,
    b'"params"': st.lists(clean_scalars, max_size=3).map(lambda ps: b"[" + b", ".join(ps) + b"]"),
    b'"ref"': st.one_of(clean_scalars, st.just(b"null")),
    b'"line"': clean_numbers,
    b'"text"': clean_strings,
    b'"from"': clean_strings,
    b'"email"': st.one_of(clean_strings, st.just(b"null")),
}


@st.composite
def field(draw: st.DrawFn) -> tuple[bytes, bytes]:
    key = draw(keys)
    if key in suits and draw(st.integers(0, 3)):
        return key, draw(suits[key])
    return key, draw(st.one_of(params, scalars, values) if key == b'"params"' else values)


@st.composite
def objects(draw: st.DrawFn) -> bytes:
    """An object with the fields of a line in any order, duplicates, odd values."""
    pairs = [
        draw(st.tuples(st.just(b'"to"'), suits[b'"to"'])),
        *draw(st.lists(field(), max_size=4)),
    ]
    pairs = draw(st.permutations(pairs))
    sp = draw(spaces)
    body = join([k + sp + b":" + sp + v for k, v in pairs], b",", sp)
    return draw(spaces) + b"{" + sp + body + sp + b"}" + draw(spaces)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    line = draw(objects())
    at = draw(st.integers(0, len(line)))
    cut = draw(st.integers(0, 3))
    return line[:at] + draw(st.binary(max_size=3)) + line[at + cut :]


lines = st.one_of(objects(), objects(), mutated(), values, st.binary(max_size=30)).map(
    lambda line: line.replace(b"\n", b"")
)


@given(st.lists(lines, min_size=1, max_size=8), st.sampled_from([20, 65536]))
@settings(max_examples=400, deadline=None)
@example([b'{"to": "1", "params": [18446744073709551616], "ref": "r"}'], 65536)
@example([b'{"to": "1", "line": 1' + b"0" * 400 + b"}"], 65536)
@example([b'{"to": "1", "x": 1e400}'], 65536)
@example([b'{"to": "1", "x": "\xed\xa0\x80"}'], 65536)
@example([b'{"to": "1", "params": [1], "params": null}'], 65536)
@example([b'{"to": 1, "to": "1"}', b'{"to": "1", "to": 1}'], 65536)
@example([b'{"to": "1", "to": "2"}', b'{"to": "1", "ref": 1, "ref": null}'], 65536)
@example([b'{"to": "1", "params": [1.2.3]}', b'{"to": "1", "params": [1.]}'], 65536)
@example([b'{"to": "1", "params": [9065583532.520021, 0.00000000000000000000001]}'], 65536)
def test_the_fast_path_agrees_with_the_careful_path(lines: list[bytes], limit: int) -> None:
    assert_paths_agree(lines, limit)


def _fed(data: bytes, step: int, limit: int) -> tuple[list[object], int, int]:
    parser = LineParser(max_line_bytes=limit)
    out: list[Recipient | Rejected] = []
    for at in range(0, len(data), step):
        out.extend(parser.feed(data[at : at + step]))
    out.extend(parser.finish())
    return exactly(out), parser.lines, parser.blank_lines


@given(
    st.lists(st.one_of(lines, st.sampled_from([b"", b"  ", b"\r", b'{"to": "1"}\r'])), max_size=12),
    st.integers(1, 300),
    st.sampled_from([30, 65536]),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_the_reader_in_c_splits_and_reads_chunks_as_its_twin(
    items: list[bytes], step: int, limit: int, final_newline: bool
) -> None:
    """`LineParser` with the C part (``decode_block``: the chunk split into lines in C,
    no bytes object a usual line) against its twin (``bytes.split`` and `parse_lines`),
    fed in pieces of any size: the same records, line numbers and counts of lines and
    blank lines, a line too long included."""
    data = b"\n".join(items) + (b"\n" if final_newline else b"")
    with twins(False):
        in_c = _fed(data, step, limit)
    with twins(True):
        assert _fed(data, step, limit) == in_c


@given(st.lists(numbers, min_size=1, max_size=3), st.sampled_from(["params", "ref", "line"]))
@settings(max_examples=300, deadline=None)
def test_numbers_of_every_size_and_form_agree(tokens: list[str], field: str) -> None:
    value = "[" + ", ".join(tokens) + "]" if field == "params" else tokens[0]
    line = f'{{"to": "+15550001111", "{field}": {value}}}'.encode()
    assert_paths_agree([line])


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("9223372036854775807", 2**63 - 1),  # the decoder's own
        ("9223372036854775808", 2**63),  # beyond its bound: orjson's int
        ("18446744073709551616", BigInt("18446744073709551616")),
        ("-9223372036854775809", BigInt("-9223372036854775809")),
        ("1" + "0" * 5000, BigInt("1" + "0" * 5000)),
        ("1e19", 1e19),
    ],
)
def test_integers_render_exactly_whichever_path_reads_them(token: str, expected: object) -> None:
    line = f'{{"to": "1", "params": ["a", {token}], "text": "{{1}}"}}'.encode()
    (record,) = parse_lines([line], 1)
    assert isinstance(record, Recipient)
    assert record.params == ["a", expected]
    assert type(record.params[1]) is type(expected)


# --- which lines the decoder takes itself (what makes the reader fast) ---------------

#: Lines as `bench/_mixed.py` writes them: numbers in people's forms, names with accents,
#: amounts, a text of its own, a ref.
MIXED_LINES = [
    b'{"to":"+91-324-467-0084","params":["John",1331.65]}',
    b'{"to":"+1 260 869 7579","params":["Nguy\xe1\xbb\x85n",1792]}',
    b'{"to":"+52-256-640-2158","params":["Kai",4654.75],"text":"Hello {0}, \xf0\x9f\x93\xa6"}',
    b'{"to":"34319813779","params":["Luis",2327],"ref":"crm-4"}',
]


@pytest.mark.parametrize(
    "line",
    [
        *MIXED_LINES,
        b'{"to": "1", "params": [true, -0.0, 9223372036854775807], "ref": 12}\r',
        b'{"to": "1", "from": "ACME", "externalId": "e", "clientId": "c", "email": "a@b.c"}',
        b'{"to": "1", "text": null, "params": []}',
    ],
)
def test_the_decoder_takes_the_usual_lines(line: bytes) -> None:
    record = reader._decode(line)
    assert type(record) is Recipient
    assert_paths_agree([line])


@pytest.mark.parametrize(
    "line",
    [
        b'{"to": "1", "name": "Ann"}',  # unknown fields: orjson must check their values
        b'{"to": "1", "params": [18446744073709551615]}',  # beyond int64
        b'{"to": "1", "ref": {"crm": 1}}',
        b'{"to": "1", "params": null}',
        b'{"to": 1}',
        b"   ",
    ],
)
def test_the_decoder_leaves_the_rest_to_the_careful_path(line: bytes) -> None:
    with pytest.raises(reader._DECODE_FAILED):
        reader._decode(line)
    assert_paths_agree([line])


@pytest.mark.parametrize(
    "line",
    [
        *MIXED_LINES,
        b' { "to" : "1" , "params" : [ true , false , -0.0 , -0 , 0.000123 ] } \r',
        b'{"to":"1","params":[123456789012345678,-123456789012345678,100.50]}',
        b'{"to": "1", "from": "ACME", "externalId": "e", "clientId": "c", "email": "a@b.c"}',
        b'{"email": null, "clientId": null, "externalId": null, "text": null, "from": null,'
        b' "to": ""}',
        b'{"to": "1", "params": [], "ref": null}',
        b'{"to": "1", "ref": 1.5}',
        b'{"to": "1", "ref": false}',
    ],
)
def test_the_c_part_reads_the_usual_line_itself(
    monkeypatch: pytest.MonkeyPatch, line: bytes
) -> None:
    """Each field, each kind of value and the spacing the C part's reader takes: it
    makes the record without msgspec's decoder, the same as the careful path's."""
    seen: list[bytes] = []
    monkeypatch.setattr(reader, "_decode", lambda line: seen.append(line) or reader._decode)
    with twins(False):
        assert exactly(parse_lines([line], 7)) == exactly(_parse_each([line], 7, 65536))
    assert seen == []


@pytest.mark.parametrize(
    "text",
    ["é", "ÿ", "aé", "Ā", "\u07ff", "\u0800", "€", "\uffff", "😀", "\U0010ffff", "Nguyễn",
     "aé€😀", "😀é", "ÿĀ", "\x7f\x80"],
)  # fmt: skip
def test_text_of_every_width_is_read_as_the_careful_path_reads_it(text: str) -> None:
    """The C part makes a str of UTF-8 itself, at the kind its widest character needs
    (a str of another kind would not equal the careful path's)."""
    line = orjson.dumps({"to": text, "params": [text, 1], "text": text + "{0}"})
    assert_paths_agree([line])
    record = parse_lines([line], 1)[0]
    assert type(record) is Recipient
    assert record.to == text
    assert record.params == [text, 1]


def test_records_are_not_tracked_by_the_cyclic_collector() -> None:
    # A chunk holds thousands of records: untracked, they cost the collector nothing.
    lines = [b'{"to": "1", "params": ["a", 1]}', b'{"to": "1", "ref": {"crm": [1]}}']
    records = parse_lines(lines, 1)  # the decoder's record, then the careful path's
    assert [type(r) for r in records] == [Recipient, Recipient]
    assert not any(map(gc.is_tracked, records))


@pytest.mark.parametrize("in_c", [True, False])
def test_lines_the_decoder_never_takes_mostly_skip_it(
    monkeypatch: pytest.MonkeyPatch, in_c: bool
) -> None:
    seen: list[bytes] = []
    decode = reader._decode

    def spying(line: bytes) -> Recipient:
        seen.append(line)
        return decode(line)

    monkeypatch.setattr(reader, "_decode", spying)
    odd = [b'{"to": "1", "params": ["a", 1], "name": "Ann"}', b'{"to": "1", "ref": {"crm": 1}}']
    usual = b'{"to": "1", "params": ["a", 1]}'
    lines = odd * 340 + [usual] * 100
    with twins(not in_c):
        records = parse_lines(lines, 1)
    assert exactly(records) == exactly(_parse_each(lines, 1, 65536))
    # 4 failed decodes, then 64 lines without: the decoder sees 1 odd line in 17...
    assert len(seen) - seen.count(usual) <= 680 // 17 + 4
    if in_c:  # ...and the C part reads the usual lines itself, skipped or not
        assert seen.count(usual) == 0
    else:  # ...and takes the usual lines again once they come
        assert seen.count(usual) >= 100 - 64
