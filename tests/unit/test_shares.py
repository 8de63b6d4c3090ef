"""The share rule of ``--shard K/N``: stable, by number, every line in exactly one share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import ConfigError
from dispatcher.models import Recipient, Rejected
from dispatcher.shares import Share, share_of

numbers = st.integers(10**7, 10**15 - 1).map(lambda n: f"+{n}")


def test_parse() -> None:
    assert Share.parse("2/3") == Share(1, 3)
    assert str(Share.parse(" 1 / 4 ")) == "1/4"
    for bad, message in (("0/3", "K must"), ("4/3", "K must"), ("1/0", "N must"), ("a", "K/N")):
        with pytest.raises(ConfigError, match=message):
            Share.parse(bad)


def test_the_rule_is_pinned() -> None:
    # Hosts running different versions must agree: a change here splits jobs wrongly.
    assert [share_of("+525500000001", 1, 3), share_of("+14155550100", 1, 7)] == [0, 3]
    assert share_of(None, 12, 5) == 0


@settings(deadline=None)  # the first example imports numpy
@given(st.lists(numbers, min_size=1, max_size=60), st.integers(1, 9))
def test_every_line_is_in_exactly_one_share_and_a_number_in_one(raw: list[str], count: int) -> None:
    chunk: list[Recipient | Rejected] = [Recipient(line=i + 1, to=n) for i, n in enumerate(raw)]
    chunk.append(Rejected(line=len(raw) + 1, reason="not JSON"))
    chunk.append(Recipient(line=len(raw) + 2, to="not a number"))
    kept = [Share(k, count).keep(chunk) for k in range(count)]
    lines = sorted(item.line for share in kept for item in share)
    assert lines == [item.line for item in chunk]
    owner = {}
    for index, share in enumerate(kept):
        for item in share:
            if isinstance(item, Recipient) and item.to.startswith("+"):
                assert owner.setdefault(item.to, index) == index


def test_a_number_however_written_goes_to_one_share() -> None:
    chunk: list[Recipient | Rejected] = [
        Recipient(line=1, to="+52 55 0000 0001"),
        Recipient(line=2, to="525500000001"),
        Recipient(line=3, to="+52-55-0000-0001"),
    ]
    sizes = [len(Share(k, 4).keep(chunk)) for k in range(4)]
    assert sorted(sizes) == [0, 0, 0, 3]


def test_shares_are_even() -> None:
    chunk: list[Recipient | Rejected] = [
        Recipient(line=i, to=f"+5255{i:08d}") for i in range(1, 30_001)
    ]
    sizes = [len(Share(k, 3).keep(chunk)) for k in range(3)]
    assert min(sizes) > 9_500  # consecutive numbers spread, not striped into one share


@settings(deadline=None)
@given(
    st.lists(
        st.one_of(numbers, st.sampled_from(["", "12ab", "+1 415 555 0100", "14155550100"])),
        min_size=1,
        max_size=60,
    ),
    st.integers(2, 9),
    st.integers(1, 10**9),
)
def test_keep_is_share_of_item_by_item(raw: list[str], count: int, first: int) -> None:
    """`Share.keep` (the chunk at once, in numpy) against `share_of` line by line."""
    from dispatcher.numbers import normalize_many

    chunk: list[Recipient | Rejected] = [Recipient(line=first + i, to=n) for i, n in enumerate(raw)]
    chunk.insert(len(chunk) // 2, Rejected(line=first + len(raw), reason="not JSON"))
    numbers = normalize_many([getattr(item, "to", "") for item in chunk])
    for index in range(count):
        expected = [
            item
            for item, number in zip(chunk, numbers, strict=True)
            if share_of(number, item.line, count) == index
        ]
        assert Share(index, count).keep(chunk) == expected


_FORMATS = ["+{cc}{n}", "{cc}{n}", "+{cc} {n}", "+{cc}-{n}", "({cc}) {n}", "+{cc}.{n}"]


@settings(deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(_FORMATS), st.sampled_from(["1", "44", "52"]),
                      st.integers(2 * 10**9, 10**10 - 1)).map(
                lambda t: b'{"to": "%s", "params": ["Zo\xc3\xab", 1]}'
                % t[0].format(cc=t[1], n=t[2]).encode()
            ),
            st.sampled_from([
                b"", b"  ", b'{"to": "+12345"}', b'{"to": "0412 345 678"}', b"to=+1415",
                b'{"to": 14155550100}', b'{"to": "+14155550100", "params": ["\xff"]}',
                b'{"params": []}', b"\xef\xbb\xbf",
            ]),
        ),
        min_size=1, max_size=50,
    ),
    st.integers(1, 5),
    st.integers(2, 1000),  # line 1 and its BOM: tests/unit/test_workers.py
)  # fmt: skip
def test_the_hand_out_decides_as_keep(lines: list[bytes], count: int, first: int) -> None:
    # The parent of --workers hands stdin out by these decisions: the worker's
    # Share.keep must keep exactly the lines it was handed.
    from dispatcher.reader import parse_lines
    from dispatcher.workers import HandOut

    hand_out = HandOut([Share(k, count) for k in range(count)], max_line_bytes=65536)
    hand_out.lines = first - 1  # a chunk from the middle of the input
    owners = hand_out.owners(lines)
    records = parse_lines(lines, first)
    for k in range(count):
        kept = [item.line for item in Share(k, count).keep(records)]
        assert kept == [first + i for i, owner in enumerate(owners) if owner == k]
    # a line without a record (blank) goes to every worker whole
    assert {first + i for i, owner in enumerate(owners) if owner < 0} == set(
        range(first, first + len(lines))
    ) - {item.line for item in records}
