"""The C part (`dispatcher._native`) against its numpy twins, function by function: the
same answers, bit for bit, on random and awkward inputs; and its refusals of buffers it
cannot take. The duplicate record and the opt-out set held in C are held to their numpy
twins in test_dedupe and test_suppress."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import keys as packed_words
from dispatcher import native, policy
from dispatcher.dedupe_runs import _Run, _text_hashes
from dispatcher.models import Encoding, Entry
from dispatcher.sorted_keys import _careful_keys, number_keys
from tests.support.native import built, twins

_U64 = np.uint64


def test_the_c_part_is_built_and_used() -> None:
    # The README's install builds it (setup.py); a silent fallback would hide a broken
    # build behind slower checks, or one left over from older sources.
    assert built().VERSION == native.VERSION, "dispatcher._native is stale: pip install -e ."
    assert native.core is built()


def test_a_build_of_another_version_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(built(), "VERSION", native.VERSION - 1)
    assert native._load() is None


def test_dispatcher_native_0_turns_the_c_part_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_NATIVE", "0")
    assert native._load() is None
    monkeypatch.setenv("DISPATCHER_NATIVE", "1")
    assert native._load() is built()


# ---- text hashes -------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TEXT, min_size=2, max_size=40))
def test_text_hashes_are_xxh3_of_the_utf8(texts: list[str]) -> None:
    # Any str, lone surrogates and characters of every plane included.
    expected = _text_hashes(texts, len(texts))  # the numpy twin's
    got = packed_words.text_hashes(texts, len(texts))  # the C part's
    assert got.tolist() == expected.tolist()
    assert got.tolist() == [
        xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in texts
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("abc XYZ,.{}0123456789" + "\x7f\x80éñüÿ\xa0", max_size=120), max_size=20))
def test_text_hashes_of_latin1_texts(texts: list[str]) -> None:
    """Texts of one byte a character (an accented name in an ASCII message): encoded
    eight characters at a time while they are ASCII, one at a time around the others;
    the accents at every offset of the eight, and at the edges of ASCII and Latin-1."""
    out = np.empty(len(texts), dtype=np.uint64)
    built().text_hashes(texts, out)
    assert out.tolist() == [xxhash.xxh3_64_intdigest(t.encode()) for t in texts]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text("ab {}.,09\x7f" + "\x80é€Łſ\u07ff\u0800\uffff" + "😀\U0010ffff\ud800", max_size=60),
        max_size=20,
    )
)
def test_text_hashes_of_wide_texts(texts: list[str]) -> None:
    """Texts of two and four bytes a character (a euro sign, an emoji): encoded four
    (two) characters at a time while they are ASCII, one at a time around the others;
    the edges of one-, two- and three-byte UTF-8 and lone surrogates among them."""
    out = np.empty(len(texts), dtype=np.uint64)
    built().text_hashes(texts, out)
    assert out.tolist() == [
        xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in texts
    ]


def test_text_hashes_of_long_and_awkward_texts() -> None:
    texts = ["", "a", "\udc80", "x\ud800y", "é" * 5000, "😀" * 1000, "a" * 241, "b" * 10_000]
    # either side of the length encoded on the stack (1024 characters)
    texts += ["é" * 1024, "😀" * 1024, "\ud800" * 1025, "\U0010ffff" * 1023 + "é", "€" * 1025]
    out = np.empty(len(texts), dtype=np.uint64)
    built().text_hashes(texts, out)
    assert out.tolist() == [
        xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in texts
    ]


@pytest.mark.parametrize(
    ("texts", "out", "error"),
    [
        (["a", 1], np.empty(2, _U64), TypeError),
        (["a", b"b"], np.empty(2, _U64), TypeError),
        (["a"], np.empty(2, _U64), ValueError),
        (["a"], np.empty(1, np.uint32), TypeError),
        (["a"], np.empty(1, _U64)[::1].view(np.uint8), TypeError),
        (3, np.empty(1, _U64), TypeError),
        (["a"], b"12345678", BufferError),  # read-only
    ],
)
def test_text_hashes_refuses(texts: Any, out: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        built().text_hashes(texts, out)


# ---- number keys ------------------------------------------------------------------------

_NUMBER = st.one_of(
    st.none(),
    st.integers(0, 10**18 - 1).map(lambda n: f"+{n}"),
    st.text("+0123456789 -.١\x00", max_size=22),
    st.sampled_from(["+", "", "+0", "+00012", "+" + "9" * 18, "+" + "9" * 19, "++1", "+1 "]),
)


def _careful(numbers: list[str | None]) -> list[int] | type[Exception]:
    try:
        return _careful_keys(numbers).tolist()  # type: ignore[no-any-return]
    except Exception as error:
        return type(error)


def _keys_or_error(numbers: list[str | None]) -> list[int] | type[Exception]:
    """The C part's keys (`dispatcher.keys`), or its error."""
    try:
        return packed_words.number_keys(numbers).tolist()
    except Exception as error:
        return type(error)


@settings(max_examples=500, deadline=None)
@given(st.lists(_NUMBER, max_size=30))
def test_number_keys_in_c_are_the_careful_ones(numbers: list[str | None]) -> None:
    # Anything at all: the C loop's keys, or the careful path's (keys or error).
    assert _keys_or_error(numbers) == _careful(numbers)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 10**15 - 1).map(lambda n: f"+{n}"))))
def test_number_keys_of_normalised_numbers_agree(numbers: list[str | None]) -> None:
    # What normalize_many returns: C, the numpy twin and the careful path agree.
    twin = number_keys(numbers).tolist()
    assert _keys_or_error(numbers) == twin == _careful(numbers)


@settings(max_examples=500, deadline=None)
@given(st.text("0123456789", min_size=1, max_size=18), st.data())
def test_number_keys_in_c_read_every_digit(digits: str, data: st.DataObject) -> None:
    """Every length of 1 to 18 digits (8 to 16 are read as two words of eight, the first
    shifted into place): the value of all of them, and a refusal when any one position
    holds a byte next to the digits or a space."""
    out = np.empty(1, dtype=np.uint64)
    assert built().number_keys(["+" + digits], out)
    assert int(out[0]) == int(digits)
    at = data.draw(st.integers(0, len(digits) - 1))
    bad = data.draw(st.sampled_from(["/", ":", " ", "\x00", "a", "\x7f"]))
    assert built().number_keys(["+" + digits[:at] + bad + digits[at + 1 :]], out) is False


def test_number_keys_in_c_parse_normalised_numbers_and_none() -> None:
    out = np.empty(4, dtype=np.uint64)
    assert built().number_keys(["+5491132681800", None, "+1", "+" + "9" * 18], out)
    assert out.tolist() == [5491132681800, 0, 1, 10**18 - 1]
    for odd in ["5491132681800", "+", "+12 3", "+" + "9" * 19, "+١٢", "+1a", 12]:
        assert built().number_keys(["+1", odd], np.empty(2, _U64)) is False


# ---- the merge --------------------------------------------------------------------------


def _runs(rng: np.random.Generator, sizes: list[int], span: int, texts: bool) -> list[_Run]:
    """Runs of random keys, each sorted; a key may be in several runs (with its own text
    hash there, as the record's runs have it)."""
    runs = []
    line = 1
    for size in sizes:
        keys = np.sort(rng.integers(1, span, size=size, dtype=np.int64).view(_U64))
        hashes = rng.integers(0, 2**63, size=size, dtype=np.int64).view(_U64) if texts else None
        lines = np.arange(line, line + size, dtype=np.uint32)
        line += size
        runs.append(_Run.of(keys, hashes, lines))
    return runs


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 400), min_size=1, max_size=6),
    st.sampled_from([5, 100, 2**50]),
    st.booleans(),
)
def test_merge_in_c_is_the_stable_argsort(
    seed: int, sizes: list[int], span: int, texts: bool
) -> None:
    # The record's merge (`merge_keys`: four runs at a time in the record, any count
    # here) against a stable argsort of the runs joined, and the numpy record's merge:
    # equal keys (a small span) keep their runs' order, the earlier run's first.
    runs = _runs(np.random.default_rng(seed), sizes, span, texts)
    joined = np.concatenate([run.keys.table[: len(run)] for run in runs])
    owners = np.concatenate([np.full(len(run), r, np.uint8) for r, run in enumerate(runs)])
    out, source = np.empty(len(joined), _U64), np.empty(len(joined), np.uint8)
    built().merge_keys([run.keys.table[: len(run)] for run in runs], out, source)
    order = np.argsort(joined, kind="stable")
    assert out.tolist() == joined[order].tolist()
    assert source.tolist() == owners[order].tolist()
    twin = _Run.merge(runs)
    assert twin.keys.table[: len(twin)].tolist() == out.tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(1, 60), min_size=1, max_size=40), min_size=4, max_size=4))
def test_merge_of_four_runs_never_reads_past_a_run(runs: list[list[int]]) -> None:
    # Four runs (the record's merges) go in blocks no run can run out in: each run here
    # is a view of one array with a 0 right after it, which would win if read, so a step
    # past any run's end shows in the merged keys. Stable: of equal keys, the earlier
    # run's first.
    backing = np.concatenate([np.array([*sorted(run), 0], dtype=_U64) for run in runs])
    views, start = [], 0
    for run in runs:
        views.append(backing[start : start + len(run)])
        start += len(run) + 1
    total = sum(map(len, runs))
    out, source = np.empty(total, _U64), np.empty(total, np.uint8)
    built().merge_keys(views, out, source)
    expected = sorted((key, r) for r, run in enumerate(runs) for key in run)
    assert out.tolist() == [key for key, _ in expected]
    assert source.tolist() == [r for _, r in expected]


def test_merge_keys_up_to_64_runs_and_no_more() -> None:
    core = built()
    runs = [np.array([i, 100 + i], dtype=_U64) for i in range(64)]
    out, source = np.empty(128, _U64), np.empty(128, np.uint8)
    core.merge_keys(runs, out, source)
    assert out.tolist() == sorted(range(64)) + sorted(range(100, 164))
    assert source.tolist() == list(range(64)) * 2
    with pytest.raises(ValueError, match="1 to 64"):
        core.merge_keys([*runs, runs[0]], np.empty(130, _U64), np.empty(130, np.uint8))
    with pytest.raises(ValueError, match="1 to 64"):
        core.merge_keys([], out, source)


def test_merge_keys_refuses_short_outputs() -> None:
    with pytest.raises(ValueError, match="too short"):
        built().merge_keys([np.arange(3, dtype=_U64)], np.empty(2, _U64), np.empty(3, np.uint8))


# ---- the entries' lines -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_column_ints_reads_the_entries_lines(lines: list[int]) -> None:
    entries = [Entry(line, "+1", [], None, 1, "gsm", None) for line in lines]
    for numpy_twins in (False, True):
        with twins(numpy_twins):
            assert policy._lines(entries).tolist() == lines


@settings(max_examples=300, deadline=None)
@given(st.lists(_NUMBER, max_size=40))
def test_column_keys_reads_the_entries_numbers(numbers: list[str | None]) -> None:
    # The keys of the entries' numbers, parsed from the entries where the chunk's keys
    # do not serve: in C, number_keys' keys (or its careful path's error) for anything in
    # the column; the numpy twin's for what normalize_many gives (and None).
    entries = [Entry(i, to, [], None, 1, "gsm", None) for i, to in enumerate(numbers)]  # type: ignore[arg-type]

    def keys() -> list[int] | type[Exception]:
        try:
            return policy._keys(entries).tolist()  # type: ignore[no-any-return]
        except Exception as error:
            return type(error)

    expected = _careful(numbers)
    assert keys() == expected
    if all(n is None or re.fullmatch(r"\+[0-9]{1,18}", n) for n in numbers):
        with twins():
            assert keys() == expected
        out = np.empty(len(entries), dtype=np.uint64)  # read in C, not by the careful path
        assert built().column_keys(entries, 1, out) is True
        assert out.tolist() == expected


@pytest.mark.parametrize(
    "rows",
    [
        [(1,), [2]],  # a list, not a tuple
        [(1,), ()],  # too short
        [(1,), (2**63,)],  # beyond int64
        [(1,), ("2",)],  # not an int
        [(1,), (2.0,)],
    ],
)
def test_column_ints_leaves_odd_rows_to_the_careful_path(rows: list[Any]) -> None:
    assert built().column_ints(rows, 0, np.empty(len(rows), np.int64)) is False


def test_column_ints_refuses_a_bad_call() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        built().column_ints([(1,)], -1, np.empty(1, np.int64))
    with pytest.raises(ValueError, match="one word a row"):
        built().column_ints([(1,)], 0, np.empty(2, np.int64))
    assert built().column_ints([(1, 7)], 1, out := np.empty(1, np.int64)) is True
    assert out.tolist() == [7]


# ---- an opt-out list's load ---------------------------------------------------------------


def test_plain_keys_refuses_a_table_too_small_and_stops_when_out_of_room() -> None:
    core = built()
    keys, valid = np.empty(4, _U64), np.empty(4, bool)
    with pytest.raises(ValueError, match="table"):
        core.plain_keys("+525512345678", b" ", np.zeros(999, bool), 8, 15, keys, valid)
    table = np.ones((16, 1000), bool)
    assert core.plain_keys("+525512345678\n12025550123", b" ", table, 8, 15, keys, valid) == 2
    assert keys[:2].tolist() == [525512345678, 12025550123]
    # more lines than room: the careful path
    text = "\n".join(["12025550123"] * 5)
    assert core.plain_keys(text, b" ", table, 8, 15, keys, valid) is None


@pytest.mark.parametrize(
    "text",
    [
        "1202+5550123", "+12025550123+", "++12025550123", "012025550123", "1202555",
        "1202555012345678", "12025550123\n", "12025550123\n\n15005550006", "1202x5550123",
        "1202\t5550123",
    ],
)  # fmt: skip
def test_plain_keys_leaves_every_line_that_is_not_a_plain_number(text: str) -> None:
    """A + after a digit, a second +, a leading 0, too few or too many digits, an empty
    line, a character that is not a separator: the careful path's."""
    table = np.ones((16, 1000), bool)
    keys, valid = np.empty(4, _U64), np.empty(4, bool)
    assert built().plain_keys(text, b" -", table, 8, 15, keys, valid) is None


# ---- the result lines of an accepted batch -----------------------------------------------


def test_accepted_lines_takes_the_usual_batch_and_leaves_odd_ones() -> None:
    core = built()
    entries = [
        Entry(7, "+525512345678", [], None, 1, Encoding.GSM7, None),
        Entry(8, "+12025550123", [], {"crm": "é"}, 2, Encoding.UCS2, None, 3, 1),
    ]
    kinds = ((Encoding.GSM7, ',"encoding":"GSM7"},T'), (Encoding.UCS2, ',"encoding":"UCS2"},T'))
    done = core.accepted_lines(entries, ["a", "b"], ',"status":"QUEUE","id":"', kinds, orjson.dumps)
    assert done is not None
    text, sums, smart, saved = done
    assert text.decode() == (
        '{"line":7,"to":"+525512345678","status":"QUEUE","id":"a","segments":1,'
        '"encoding":"GSM7"},T}\n'
        '{"line":8,"to":"+12025550123","status":"QUEUE","id":"b","segments":2,'
        '"encoding":"UCS2"},T,"replaced":3,"ref":{"crm":"é"}}\n'
    )
    assert (sums, smart, saved) == ([(0, 1), (1, 2)], 1, 1)
    # the kinds in the order of their first entry
    reverse = core.accepted_lines(entries[::-1], ["b", "a"], ",", kinds, orjson.dumps)
    assert reverse is not None
    assert reverse[1] == [(1, 2), (0, 1)]
    # an encoding of no kind, an int beyond 64 bits, a number that is not ASCII: None
    for odd in (
        entries[0]._replace(encoding="GSM7"),
        entries[0]._replace(line=2**64),
        entries[0]._replace(to="+52551234567٨"),
    ):
        assert core.accepted_lines([odd], ["a"], ",", kinds, orjson.dumps) is None
    with pytest.raises(ValueError, match="an id an entry"):
        core.accepted_lines(entries, ["a"], ",", kinds, orjson.dumps)
    with pytest.raises(TypeError, match="bytes"):
        core.accepted_lines(entries[1:], ["a"], ",", kinds, str)


def test_the_plain_path_functions_refuse_a_bad_call() -> None:
    """``chunk_numbers``, ``plain_texts`` and ``plain_entries`` read a record's slots
    at the offsets its type's member descriptors give: anything else is refused, as
    are specials out of order or out of range."""
    from dispatcher.models import RECIPIENT_FIELDS as _FIELDS
    from dispatcher.models import Entry, Recipient
    from dispatcher.numbers import normalize_or_none

    core = built()
    chunk = [Recipient(line=1, to="+15005550006", params=["x"])]
    with pytest.raises(TypeError, match="member descriptors"):
        core.chunk_numbers(chunk, Recipient, _FIELDS[:8], normalize_or_none)
    with pytest.raises(TypeError, match="object slot"):
        core.chunk_numbers(chunk, Entry, _FIELDS, normalize_or_none)
    with pytest.raises(ValueError, match="one literal more"):
        core.plain_texts(chunk, ["+15005550006"], Recipient, _FIELDS, ("a",), (0,), str, str)
    with pytest.raises(ValueError, match="a number an item"):
        core.plain_texts(chunk, [], Recipient, _FIELDS, ("a", ""), (0,), str, str)
    counts = [("GSM7", 1, 1)]
    for specials in ([0, 0], [2, 1], [3], [-1, 0]):
        plain = counts * (3 - len(specials))
        with pytest.raises(ValueError, match="specials ascending"):
            core.plain_entries(
                Entry, chunk * 3, ["+1"] * 3, specials, plain, None, Recipient, _FIELDS
            )
    with pytest.raises(ValueError, match="a count a plain one"):
        core.plain_entries(Entry, chunk, ["+1"], [], [], None, Recipient, _FIELDS)
    with pytest.raises(TypeError, match="tuple type"):
        core.plain_entries(list, chunk, ["+1"], [], counts, None, Recipient, _FIELDS)
    (entry,) = core.plain_entries(Entry, chunk, ["+1"], [], counts, ["t"], Recipient, _FIELDS)
    assert entry == Entry(1, "+1", ["x"], None, 1, "GSM7", "t", 0, 0)
    assert type(entry) is Entry
