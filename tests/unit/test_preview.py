"""Preview rows: what send would make of a line and why; the sample; the table and JSON.

The rows are checked against the contract (SPEC §3) and, line for line, against what
`Preparer` — send's own code — decides for the same lines.
"""

from __future__ import annotations

import io
import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from dispatcher.config import Config
from dispatcher.errors import ConfigError
from dispatcher.models import Encoding, Entry, Group, Recipient, Rejected, Status
from dispatcher.prepare import Preparer
from dispatcher.preview import (
    OK,
    Explainer,
    Previewer,
    Row,
    Sample,
    Table,
    explain_lines,
    read_records,
    visible,
)
from dispatcher.pricing import Pricing
from dispatcher.reader import parse_lines
from dispatcher.sources import open_source

GSM7, UCS2 = Encoding.GSM7, Encoding.UCS2
CODE = "12345"
PRICING = Pricing(0.01, {"1": 0.0075, "52": 0.03})


def previewer(**changes: Any) -> Previewer:
    options: dict[str, Any] = {"sender": CODE, "text": "Hi {0}"}
    smart = changes.pop("smart_encoding", False)
    pricing = changes.pop("pricing", PRICING)
    options.update(changes)
    return Previewer(Config(**options), pricing=pricing, smart_encoding=smart)


def recipient(line: int = 1, to: str = "+525500000001", *params: Any, **more: Any) -> Recipient:
    return Recipient(line=line, to=to, params=list(params), **more)


# --- rows ---------------------------------------------------------------------------------


def test_a_gsm7_line() -> None:
    row = previewer().row(recipient(3, "+52 55 0000 0001", "Ana"))
    assert row == Row(
        line=3,
        status=OK,
        to="+52 55 0000 0001",
        number="+525500000001",
        sender=CODE,
        own_text=False,
        text="Hi Ana",
        encoding=GSM7,
        units=6,
        segments=1,
        price=0.03,
        cost=0.03,
    )


def test_a_curly_quote_that_smart_encoding_replaces() -> None:
    # 80 characters: UCS-2 needs 2 segments, GSM-7 one.
    name = "O’Brien " + "x" * 69
    row = previewer(pricing=Pricing(0.01)).row(recipient(1, "+447700900123", name))
    assert (row.status, row.encoding, row.units, row.segments) == (OK, UCS2, 80, 2)
    assert [(c.char, c.code, c.at, c.replacement) for c in row.non_gsm] == [
        ("’", "U+2019", (4,), "'")
    ]
    assert row.non_gsm[0].name == "RIGHT SINGLE QUOTATION MARK"
    assert row.smart is not None
    assert row.smart.text == "Hi O'Brien " + "x" * 69
    assert (row.smart.encoding, row.smart.segments, row.smart.saved) == (GSM7, 1, 1)
    assert (row.smart.replaced, row.smart.applied) == (1, False)
    assert row.sent == (row.text, UCS2, 2)
    assert row.cost == pytest.approx(0.02)  # smart encoding is off: 2 segments are billed


def test_smart_encoding_on_sends_and_bills_the_gsm7_text() -> None:
    name = "O’Brien … " + "x" * 60
    row = previewer(pricing=Pricing(0.01), smart_encoding=True).row(recipient(1, "+1500", name))
    assert row.status == Status.INVALID_NUMBER  # too short: smart encoding never runs
    row = previewer(pricing=Pricing(0.01), smart_encoding=True).row(
        recipient(1, "+15005550006", name)
    )
    assert row.smart is not None
    assert row.smart.applied
    assert row.sent == ("Hi O'Brien ... " + "x" * 60, GSM7, 1)
    assert row.cost == pytest.approx(0.01)
    assert {c.char: c.replacement for c in row.non_gsm} == {"’": "'", "…": "..."}


def test_an_emoji_smart_encoding_cannot_replace() -> None:
    row = previewer().row(recipient(1, "+15005550006", "Zoë’s party 🎉"))
    assert row.encoding == UCS2
    assert [(c.char, c.code, c.at, c.replacement) for c in row.non_gsm] == [
        ("ë", "U+00EB", (5,), None),
        ("’", "U+2019", (6,), "'"),
        ("🎉", "U+1F389", (15,), None),
    ]
    assert row.smart is not None
    assert (row.smart.text, row.smart.saved, row.smart.replaced) == (None, 0, 0)
    assert row.smart.segments == row.segments


def test_every_place_of_a_character_and_invisible_ones() -> None:
    text = "a\u00a0b\u00a0c\u200bd"
    row = previewer(text="{0}").row(recipient(1, "+15005550006", text))
    assert [(c.code, c.at, c.replacement) for c in row.non_gsm] == [
        ("U+00A0", (1, 3), " "),
        ("U+200B", (5,), ""),
    ]
    assert row.smart is not None
    assert row.smart.text == "a b cd"


def test_a_combining_accent_is_composed_with_its_letter() -> None:
    row = previewer(text="{0}").row(recipient(1, "+15005550006", "Cafe\u0301"))
    assert [(c.code, c.at, c.replacement) for c in row.non_gsm] == [("U+0301", (4,), "é")]
    assert row.smart is not None
    assert row.smart.text == "Café"


def test_a_missing_param_is_rejected_with_its_number() -> None:
    row = previewer(text="Hi {0}, you owe {1}").row(recipient(7, "+447700900123", "Carl"))
    assert row.status == Status.REJECTED
    assert row.error == "template needs param {1} but the line has 1 param"
    assert (row.number, row.text, row.encoding) == ("+447700900123", None, None)
    assert (row.price, row.cost) == (0.01, 0.0)  # a line not sent costs nothing


def test_a_placeholder_above_999() -> None:
    item = recipient(5, "+15005550006", "x", text="Hi {1000}")
    row = previewer().row(item)
    assert (row.status, row.number) == (Status.REJECTED, "+15005550006")
    assert row.error == "placeholder {1000} is above {999}, the highest index a template may use"
    # The job's own template: a configuration error, as for send, before any line.
    with pytest.raises(ConfigError, match=r"placeholder \{1000\} is above \{999\}"):
        previewer(text="Hi {1000}")


def test_an_invalid_number() -> None:
    row = previewer().row(recipient(4, "12ab", "x"))
    assert row == Row(
        line=4, status=Status.INVALID_NUMBER, error="has letters", to="12ab", cost=0.0
    )


def test_a_malformed_line() -> None:
    (item,) = parse_lines([b"{oops"], 6)
    row = previewer().row(item)
    assert (row.line, row.status, row.excerpt) == (6, Status.REJECTED, "{oops")
    assert row.error is not None
    assert row.error.startswith("invalid JSON")


def test_per_line_text_and_sender() -> None:
    item = recipient(8, "+15005550006", "4417", text="Your code is {0}", sender="COMPANY")
    row = previewer().row(item)
    assert (row.sender, row.own_text, row.text) == ("COMPANY", True, "Your code is 4417")
    row = previewer().row(recipient(9, "+15005550006", "x", sender=""))
    assert (row.status, row.error) == (Status.REJECTED, "field 'from' is empty")
    row = previewer().row(recipient(10, "+15005550006", "x", text=""))
    assert (row.status, row.error) == (Status.REJECTED, "the rendered text is empty")


@pytest.mark.parametrize(
    ("model", "segments"), [("flat", [1, 2, 2, 2, 2]), ("3gpp", [1, 2, 3, 3, 2])]
)
def test_the_segment_model(model: str, segments: list[int]) -> None:
    texts = [
        "a" * 160,
        "a" * 161,
        "a" * 152 + "€" + "a" * 152,  # 306 septets: the escape pair may not be split
        "ж" * 135,
        "ж" * 134,  # flat 70 + 64; 3gpp 67 + 67
    ]
    p = previewer(text="{0}", segment_model=model)
    assert [p.row(recipient(1, "+15005550006", t)).segments for t in texts] == segments


def test_too_many_segments() -> None:
    row = previewer(text="{0}", max_message_segments=1).row(recipient(1, "+15005550006", "a" * 161))
    assert (row.status, row.segments, row.cost) == (Status.SEGMENTS_EXCEEDED, 2, 0.0)
    assert row.error == "text needs 2 segments (GSM7), more than max_segments 1"
    # Smart encoding comes before the segment count, as in send: one segment fits.
    text = "It’s " + "a" * 100
    assert previewer(text="{0}", max_message_segments=1).row(
        recipient(1, "+15005550006", text)
    ).status == (Status.SEGMENTS_EXCEEDED)
    row = previewer(text="{0}", max_message_segments=1, smart_encoding=True).row(
        recipient(1, "+15005550006", text)
    )
    assert (row.status, row.sent[1:], row.cost) == (OK, (GSM7, 1), 0.0075)


def test_without_prices_there_is_no_cost() -> None:
    row = previewer(pricing=None).row(recipient(1, "+15005550006", "x"))
    assert (row.price, row.cost) == (None, None)


# --- the same decisions as send ---------------------------------------------------------

LINES = [
    b'{"to": "+525500000001", "params": ["Ana"]}',
    b'{"to": "52 (55) 0000-0002", "params": ["Bob\xe2\x80\x99s"]}',
    b'{"to": "12ab", "params": ["x"]}',
    b"{oops",
    b'{"to": "+15005550006", "params": []}',
    b'{"to": "+15005550007", "params": ["' + "ж".encode() * 700 + b'"]}',
    b'{"to": "+15005550008", "params": ["' + b"a" * 1600 + b'"]}',
    b'{"to": "+15005550009", "text": "Code {0}", "from": "COMPANY", "params": ["1"]}',
    b'{"to": "+15005550010", "from": "", "params": ["1"]}',
    b'{"to": "+15005550011", "text": "", "params": ["1"]}',
    b'{"to": "0015005550012", "params": ["1"]}',
    b'{"to": "+15005550013", "params": [null]}',
    b'{"to": "+15005550014", "params": ["\xf0\x9f\x8e\x89 \xe2\x80\x9cyes\xe2\x80\x9d"]}',
    b"[1, 2]",
    b'{"to": "bad", "from": "", "params": []}',  # the number is checked first
    b'{"to": "+15005550015", "from": "", "params": []}',  # then the sender, then the params
]


class _Sink:
    def __init__(self) -> None:
        self.outcomes: dict[int, tuple[Any, ...]] = {}

    def rejected(self, item: Rejected) -> None:
        self.outcomes[item.line] = (Status.REJECTED, item.reason, None, None, None)

    def local(self, line: int, to: str | None, status: Status, error: str, **more: Any) -> None:
        self.outcomes[line] = (status, error, None, more.get("segments"), more.get("encoding"))

    def local_many(
        self, status: Status, error: str, lines: list[int], tos: list[str | None], refs: list[Any]
    ) -> None:
        for line, to in zip(lines, tos, strict=True):
            self.local(line, to, status, error)

    def invalid_many(
        self, lines: list[int], tos: list[str], reasons: list[str], refs: list[Any]
    ) -> None:
        for line, to, reason in zip(lines, tos, reasons, strict=True):
            self.local(line, to, Status.INVALID_NUMBER, reason)


class _Entries:
    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def add_many(self, group: Group, entries: list[Entry]) -> None:
        for e in entries:
            self.sink.outcomes[e.line] = (OK, None, (e.to, group.sender), e.segments, e.encoding)


@pytest.mark.parametrize("model", ["flat", "3gpp"])
def test_the_same_outcomes_as_send(model: str) -> None:
    config = Config(sender=CODE, text="Hi {0}", segment_model=model)
    records = parse_lines(LINES, 1)
    sink = _Sink()
    Preparer(config, capacity=lambda code: math.inf).feed(records, _Entries(sink), sink)
    p = Previewer(config)
    rows = {r.line: r for r in map(p.row, records)}
    assert set(rows) == set(sink.outcomes) == set(range(1, len(LINES) + 1))
    for line, (status, error, sent, segments, encoding) in sink.outcomes.items():
        row = rows[line]
        assert (row.status, row.error) == (status, error), line
        if sent is not None:
            assert (row.number, row.sender) == sent, line
        if segments is not None:
            assert (row.segments, row.encoding) == (segments, encoding), line


# --- the sample -------------------------------------------------------------------------


def _chunks(items: list[int], sizes: Iterator[int]) -> Iterator[list[int]]:
    i = 0
    while i < len(items):
        size = next(sizes)
        yield items[i : i + size]
        i += size


def _sample(items: list[int], size: int, seed: int, chunk_sizes: Iterator[int]) -> list[int]:
    sample = Sample(size, seed)
    for chunk in _chunks(items, chunk_sizes):
        sample.feed(chunk)
    assert sample.seen == len(items)
    return sorted(sample.kept)


def test_the_same_seed_gives_the_same_sample_however_the_input_is_chunked() -> None:
    items = list(range(10_000))
    rng = random.Random(1)
    first = _sample(items, 20, 7, iter(lambda: 1000, None))
    assert len(first) == len(set(first)) == 20
    assert _sample(items, 20, 7, iter(lambda: rng.randint(1, 3000), None)) == first
    assert _sample(items, 20, 7, iter(lambda: 1, None)) == first
    assert _sample(items, 20, 8, iter(lambda: 1000, None)) != first


def test_a_short_input_is_taken_whole() -> None:
    assert _sample(list(range(5)), 20, 1, iter(lambda: 2, None)) == list(range(5))
    assert _sample(list(range(20)), 20, 1, iter(lambda: 7, None)) == list(range(20))


def test_every_item_is_equally_likely() -> None:
    # 3000 fixed seeds, 2 of 10 items: each item expected 600 times; the bounds are
    # over 6 standard deviations (sd = 21.9), and the seeds make the test repeatable.
    counts: Counter[int] = Counter()
    for seed in range(3000):
        counts.update(_sample(list(range(10)), 2, seed, iter(lambda: 3, None)))
    assert set(counts) == set(range(10))
    assert all(470 < n < 730 for n in counts.values()), counts


# --- the explainer, the table and the JSON rows ---------------------------------------------

SOURCE = [
    {"to": "+525500000001", "params": ["Ana"]},
    {"to": "+15005550006", "params": ["Bob’s"]},
    {"to": "12ab", "params": ["x"]},
    {"to": "+447700900123", "params": ["Zoë 🎉"]},
    {"to": "+447700900124", "params": ["\x1b[31mred"]},
]


def _records() -> list[Recipient | Rejected]:
    return parse_lines([orjson.dumps(line) for line in SOURCE], 1)


def test_the_first_lines_come_as_they_are_fed_and_then_no_more_is_read() -> None:
    out = io.StringIO()
    explainer = Explainer(previewer(), out, limit=2, json=True)
    taken: list[int] = []

    def chunks() -> Iterator[list[Recipient | Rejected]]:
        for item in _records():
            taken.append(item.line)
            yield [item]

    totals = explain_lines(chunks(), explainer)
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()[:2]]
    assert [r["line"] for r in rows] == [1, 2]
    assert taken == [1, 2], "read on after the limit"
    assert totals.as_dict() == {
        "lines": 2,
        "statuses": {"OK": 2},
        "encodings": {"GSM7": [1, 1], "UCS2": [1, 1]},
        "segments": 2,
        "cost": 0.03 + 0.0075,
        "smart_lines": 1,
        "smart_saved": 0,
        "smart_applied": False,
    }
    assert out.getvalue().splitlines()[2] == ""  # the totals follow (to out, here)


def test_json_rows_have_every_documented_field() -> None:
    out, footer = io.StringIO(), io.StringIO()
    explainer = Explainer(previewer(), out, json=True, footer=footer)
    explain_lines([_records()], explainer)
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    keys = ["line", "status", "error", "to", "number", "from", "own_text", "text", "encoding"]
    keys += ["units", "segments", "non_gsm", "smart", "price", "cost", "excerpt"]
    assert all(list(r) == keys for r in rows)
    assert rows[1]["non_gsm"] == [
        {
            "char": "’",
            "code": "U+2019",
            "name": "RIGHT SINGLE QUOTATION MARK",
            "at": [6],
            "replacement": "'",
        }
    ]
    assert rows[1]["smart"] == {
        "text": "Hi Bob's",
        "encoding": "GSM7",
        "segments": 1,
        "saved": 0,
        "replaced": 1,
        "applied": False,
    }
    assert rows[2]["status"] == "INVALID_NUMBER"
    assert "5 lines previewed (every line of the input)" in footer.getvalue()


def test_a_sample_is_written_in_line_order_with_its_seed() -> None:
    out = io.StringIO()
    records = parse_lines([orjson.dumps(line) for line in SOURCE * 3], 1)
    explainer = Explainer(previewer(), out, sample=4, seed=5, json=True, footer=io.StringIO())
    explain_lines([records[:7], records[7:]], explainer)
    lines = [orjson.loads(line)["line"] for line in out.getvalue().splitlines()]
    assert len(lines) == 4
    assert lines == sorted(lines)
    again = io.StringIO()
    footer = io.StringIO()
    explain_lines(
        [records], Explainer(previewer(), again, sample=4, seed=5, json=True, footer=footer)
    )
    assert again.getvalue() == out.getvalue()
    assert "a random sample of 4 of 15 lines, seed 5" in footer.getvalue()


def test_the_table() -> None:
    out = io.StringIO()
    totals = explain_lines([_records()], Explainer(previewer(), out, width=100))
    table = out.getvalue()
    assert "\x1b" not in table, "an escape sequence reached the terminal"
    lines = table.splitlines()
    assert lines[0].split() == ["LINE", "NUMBER", "ENC", "SEG", "COST", "TEXT"]
    assert lines[1].split() == ["1", "+525500000001", "GSM7", "1", "0.0300", "Hi", "Ana"]
    assert "’ U+2019 at 6 → '" in table
    assert "smart encoding makes it GSM7, 1 segment: saves nothing" in table
    assert "12ab              INVALID_NUMBER: has letters" in table
    assert "🎉 U+1F389 at 7 (no GSM-7 look-alike)" in table
    assert "smart encoding cannot make it GSM-7" in table
    assert "Hi ␛[31mred" in table
    assert "5 lines previewed (every line of the input): 4 OK, 1 INVALID_NUMBER" in table
    assert "would send 4 messages, 4 segments (GSM7 1 message, 1 segment; UCS2 3 messages" in table
    assert "cost: 0.0575 (0.0100 per segment; 2 prefixes priced apart)" in table
    assert "smart encoding would make 1 line GSM-7 and save 0 segments" in table
    assert totals.cost == pytest.approx(0.03 + 0.0075 + 0.01 + 0.01)
    assert all(len(line) <= 100 for line in lines)


def _text_lines(text: str, width: int) -> list[str]:
    """The text column of a one-line preview ``width`` columns wide."""
    out = io.StringIO()
    p = previewer(text="{0}", pricing=None)
    explain_lines([[recipient(1, "+15005550006", text)]], Explainer(p, out, width=width))
    lines = out.getvalue().splitlines()[1:]
    at = lines[0].index(text[:4])
    return [line[at:] for line in lines if line[:at].isspace() or line.startswith("      1")]


def test_long_texts_wrap_at_spaces_and_are_cut_after_three_lines() -> None:
    text = " ".join(f"w{i:03}" for i in range(100))  # 499 characters
    lines = _text_lines(text, 60)  # 22 columns of text
    assert lines == ["w000 w001 w002 w003", "w004 w005 w006 w007", "w008 w009 w010… (+445)"]
    assert text.index("w010") + 4 + 445 == len(text)


def test_wide_characters_take_two_columns() -> None:
    assert _text_lines("末" * 30, 60) == ["末" * 11, "末" * 11, "末" * 8]


def test_visible() -> None:
    assert visible("plain text") == "plain text"
    assert visible("a\nb\r\tc\x1b[0m\x7f") == "a⏎b␍␉c␛[0m␡"
    assert visible("a\u00a0b\u200dc\u2028") == "a⟨U+00A0⟩b⟨U+200D⟩c⟨U+2028⟩"
    assert visible("Zoë 🎉 ’") == "Zoë 🎉 ’"


def test_the_table_shows_overrides_and_written_numbers() -> None:
    table = Table(previewer(), width=100)
    item = recipient(8, "1 (500) 555-0006", "1", text="Code {0}", sender="COMPANY")
    shown = table.row(previewer().row(item))
    assert "written 1 (500) 555-0006" in shown
    assert "from COMPANY, its own text" in shown
    assert "written" not in table.row(previewer().row(recipient(1, "15005550006", "x")))


def test_read_records_from_a_gzip_file(tmp_path: Any) -> None:
    import gzip

    path = tmp_path / "in.ndjson.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(line) + b"\n" for line in SOURCE)))
    stream = open_source(str(path), 1 << 18)
    try:
        records = [r for chunk in read_records(stream) for r in chunk]
    finally:
        stream.close()
    assert [r.line for r in records] == [1, 2, 3, 4, 5]
