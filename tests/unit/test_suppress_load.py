"""The load of an opt-out list, its fast paths against careful ones: the sort (numpy's
quicksort, or rows first where that is the faster way), the line numbers counted from
a block's keys, the first non-blank line found without splitting the block, and the
byte checks of a block of plain numbers."""

from __future__ import annotations

from array import array
from pathlib import Path
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import sorted_keys, suppress
from dispatcher.numbers import normalize_many
from dispatcher.sorted_keys import number_keys
from dispatcher.suppress import SuppressionList
from tests.support.native import built, twins

# --- the sort ---------------------------------------------------------------------------

_ORDERS = ["as drawn", "sorted", "reversed", "sorted rows", "few values"]


def _arranged(keys: list[int], order: str) -> list[int]:
    if order == "sorted":
        return sorted(keys)
    if order == "reversed":
        return sorted(keys, reverse=True)
    if order == "sorted rows":  # what the rows-first sort leaves for timsort to merge
        row = sorted_keys.ROW
        return [k for at in range(0, len(keys), row) for k in sorted(keys[at : at + row])]
    if order == "few values":
        return [k % 7 + 10**10 for k in keys]
    return keys


@pytest.fixture(params=[True, False], ids=["rows first", "quicksort"])
def rows_first(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(0, 2**50), max_size=3 * sorted_keys.ROW + 7),
    st.sampled_from(_ORDERS),
)
def test_sorted_distinct_is_what_unique_says(rows_first: bool, keys: list[int], order: str) -> None:
    keys = _arranged(keys, order)
    with mock.patch.object(sorted_keys, "_rows_first", rows_first):
        got = sorted_keys.sorted_distinct(np.array(keys, dtype=np.uint64))
    assert got.tolist() == np.unique(np.array(keys, dtype=np.uint64)).tolist()


_ROW = sorted_keys.ROW


@pytest.mark.parametrize("size", [0, 1, 2, 2 * _ROW - 1, 2 * _ROW, 2 * _ROW + 1, 300_001])
@pytest.mark.parametrize("order", _ORDERS)
def test_sorted_distinct_at_the_edges_of_the_rows(rows_first: bool, size: int, order: str) -> None:
    rng = np.random.default_rng(size)
    # Realistic keys (12-digit numbers of one prefix), a tenth of them repeated.
    drawn = rng.integers(525500000000, 525600000000, size=size, dtype=np.uint64)
    if size > 10:
        drawn[: size // 10] = drawn[-(size // 10) :]
    keys = np.array(_arranged(drawn.tolist(), order), dtype=np.uint64)
    with mock.patch.object(sorted_keys, "_rows_first", rows_first):
        got = sorted_keys.sorted_distinct(keys.copy())
    assert got.tolist() == np.unique(keys).tolist()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1) | st.integers(10**10, 10**10 + 40), max_size=700),
    st.sampled_from(_ORDERS),
    st.sampled_from([0, 2**22]),
)
def test_sorted_distinct_in_c_is_what_unique_says(
    keys: list[int], order: str, spare_limit: int
) -> None:
    # The C part's sort of a list's keys (`dispatcher.suppress._sorted_distinct`): by
    # radix with a spare array, or in place by bytes from the top (spare_limit 0: what
    # a list of more than 2^22 keys takes), whichever bits differ.
    core = built()
    keys = _arranged(keys, order)
    words = array("Q", keys)
    del words[core.sorted_distinct(words, spare_limit) :]
    assert words.tolist() == sorted(set(keys))


@pytest.mark.parametrize("spare_limit", [0, 2**22])
def test_sorted_distinct_in_c_on_realistic_keys(spare_limit: int) -> None:
    rng = np.random.default_rng(spare_limit)
    drawn = rng.integers(525500000000, 525600000000, size=300_001, dtype=np.uint64)
    drawn[:30_000] = drawn[-30_000:]
    words = array("Q", drawn.tobytes())
    del words[built().sorted_distinct(words, spare_limit) :]
    assert words.tolist() == np.unique(drawn).tolist()


def _cpuinfo(tmp_path: Path, vendor: str, family: int) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\n"
    )
    return str(path)


def test_the_cpu_family_is_read_for_amd_only(tmp_path: Path) -> None:
    assert sorted_keys._amd_family(_cpuinfo(tmp_path, "AuthenticAMD", 25)) == 25
    assert sorted_keys._amd_family(_cpuinfo(tmp_path, "AuthenticAMD", 26)) == 26
    assert sorted_keys._amd_family(_cpuinfo(tmp_path, "GenuineIntel", 6)) is None
    assert sorted_keys._amd_family(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("avx512", "family", "expected"),
    [(True, 25, True), (True, 26, False), (True, None, False), (False, 25, False)],
)
def test_rows_first_only_with_avx512_sorts_on_zen4(
    avx512: bool, family: int | None, expected: bool
) -> None:
    with (
        mock.patch.object(sorted_keys, "_rows_first", None),
        mock.patch.object(sorted_keys, "_numpy_sorts_with_avx512", return_value=avx512),
        mock.patch.object(sorted_keys, "_amd_family", return_value=family),
    ):
        assert sorted_keys._sort_rows_first() is expected
        assert sorted_keys._rows_first is expected  # decided once


def test_numpy_says_whether_it_sorts_with_avx512() -> None:
    from numpy._core._multiarray_umath import __cpu_features__

    assert sorted_keys._numpy_sorts_with_avx512() is bool(__cpu_features__.get("AVX512_SKX"))


# --- blocks, line numbers and the format ---------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# Entries of a list: plain numbers (the fast path), numbers with separators, blank lines,
# and now and then one that is not a number or not a valid one (examples with lines).
_ENTRY = st.one_of(
    st.from_regex(r"\+?[1-9][0-9]{7,14}", fullmatch=True),
    st.from_regex(r"\+?[1-9][0-9]{7,14}", fullmatch=True),
    st.sampled_from(["+52 55 1234 5678", "", "  ", "x", "3312345678", "+2812345678", "0123"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_ENTRY, min_size=0, max_size=60),
    st.sampled_from(["numbers", "ndjson", "csv"]),
    st.sampled_from([16, 64, 1 << 20]),
    st.integers(0, 3),
    st.booleans(),
)
def test_the_fast_path_counts_lines_as_the_careful_one(
    tmp_path_factory: pytest.TempPathFactory,
    entries: list[str],
    kind: str,
    block: int,
    blank_first: int,
    numpy_twins: bool,
) -> None:
    # Small blocks: lines cut across blocks, blocks that are all plain numbers next to
    # blocks that are not, and blank lines before the first entry (or CSV header).
    head = "\n" * blank_first
    if kind == "ndjson":
        text = head + "".join(
            (orjson.dumps({"to": e}).decode() if e.strip() else e) + "\n" for e in entries
        )
    elif kind == "csv":
        text = head + "to\n" + "".join(f"{e}\n" for e in entries)
    else:
        text = head + "".join(f"{e}\n" for e in entries)
    path = _write(tmp_path_factory.mktemp("l"), f"list.{kind}", text)
    with mock.patch.object(suppress, "BLOCK", block), twins(numpy_twins):
        fast = SuppressionList.load([path])
        with mock.patch.object(suppress, "_plain_keys", return_value=None):
            careful = SuppressionList.load([path])
    assert fast.stats == careful.stats
    assert fast.keys.tolist() == careful.keys.tolist()
    # and every example's line is the line of the file it shows
    lines = text.split("\n")
    (stats,) = fast.stats
    for problem in stats.unparseable_examples + stats.not_valid_examples:
        assert problem.text in lines[problem.line - 1]


def test_a_header_after_many_blank_lines(tmp_path: Path) -> None:
    text = "\n" * 5000 + "  \n" + "name,to\nAna,+525512345678\nLuis,x\n"
    lists = SuppressionList.load([_write(tmp_path, "l.csv", text)])
    (stats,) = lists.stats
    assert (stats.format, stats.entries, stats.numbers, stats.unparseable) == ("csv:to", 2, 1, 1)
    assert stats.unparseable_examples[0].line == 5004


def test_a_file_of_blank_blocks_then_numbers(tmp_path: Path) -> None:
    text = "\n \n" * 40 + "3312345678\n"
    with mock.patch.object(suppress, "BLOCK", 8):
        lists = SuppressionList.load([_write(tmp_path, "l.txt", text)])
    (stats,) = lists.stats
    assert (stats.entries, stats.numbers, stats.not_valid) == (1, 1, 1)
    assert stats.not_valid_examples[0].line == 81


# --- the byte checks of a block of plain numbers --------------------------------------------

# Plain-looking lines with the bytes next to the digits and the + in ASCII ("/" and ":"
# around the digits, "*" and "," around the +), separators, and blank or empty lines.
_NEAR_PLAIN = st.lists(
    st.one_of(
        st.from_regex(r"\+?[1-9][0-9]{7,14}", fullmatch=True),
        st.from_regex(r"\+?[1-9][0-9]{7,14}", fullmatch=True),
        st.text(alphabet="0123456789+/:*, -\r\t", min_size=0, max_size=17),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(_NEAR_PLAIN, st.booleans())
def test_plain_keys_take_only_what_normalize_takes(lines: list[str], newline_last: bool) -> None:
    # The C part's one pass, and its numpy twin: the same answer, and what normalize says.
    text = "\n".join(lines) + ("\n" if newline_last else "")
    numbers = normalize_many(text.split("\n"))
    got = suppress._plain_keys(text)
    with twins():
        twin = suppress._plain_keys(text)
    assert (got is None) == (twin is None)
    if got is not None and twin is not None:
        assert got[0].tolist() == twin[0].tolist()
        assert list(got[1]) == list(twin[1])
    if got is None:
        assert None in numbers
    else:
        keys, international = got
        assert keys.tolist() == number_keys(numbers).tolist()
        assert list(international) == list(suppress._international(keys))


@pytest.mark.parametrize(
    "text", ["+525512345678\n", "\n+525512345678", "+525512345678\n\n+12025550123", "+/25512345678"]
)
def test_plain_keys_leave_blank_lines_and_other_bytes_to_the_careful_path(
    text: str, native_core: str
) -> None:
    assert suppress._plain_keys(text) is None


@pytest.mark.parametrize("block", [3, 16, 1 << 16])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_line_longer_than_many_blocks_is_one_line(
    tmp_path: Path, block: int, encoding: str, newline: str
) -> None:
    long = "ç" * 300  # two bytes each in UTF-8: characters cut across blocks too
    text = newline.join(["+525512345678", long, "+12025550123", "", "+33612345678", ""])
    path = tmp_path / "l.txt"
    path.write_bytes(text.encode(encoding))
    with mock.patch.object(suppress, "BLOCK", block):
        lists = SuppressionList.load([path])
    (stats,) = lists.stats
    assert (stats.entries, stats.numbers, stats.unparseable) == (4, 3, 1)
    assert [p.line for p in stats.unparseable_examples] == [2]
    assert lists.contains_many(["+525512345678", "+12025550123", "+33612345678"]) == [True] * 3


def test_more_keys_than_rows_merged_take_the_quicksort() -> None:
    keys = np.arange(3 * sorted_keys.ROW, dtype=np.uint64)[::-1].copy()
    with (
        mock.patch.object(sorted_keys, "_rows_first", True),
        mock.patch.object(sorted_keys, "ROWS_MERGED", 2 * sorted_keys.ROW),
        mock.patch.object(sorted_keys, "_sort_rows_first", side_effect=AssertionError),
    ):
        assert sorted_keys.sorted_distinct(keys).tolist() == list(range(3 * sorted_keys.ROW))
