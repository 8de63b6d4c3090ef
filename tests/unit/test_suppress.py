"""Opt-out lists: the three formats and their detection, gzip and encodings, what is
counted and shown (unparseable entries, numbers no country can have), errors that name
the file, the chunk check, and the fast paths against the careful ones."""

from __future__ import annotations

import codecs
import csv
import gc
import gzip
import io
import re
from array import array
from pathlib import Path
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import country_lengths, native, sorted_keys, suppress
from dispatcher.errors import ConfigError
from dispatcher.sorted_keys import SortedKeys, number_keys
from dispatcher.suppress import ListStats, Problem, SuppressionList
from tests.support.native import built, twins

# Valid E.164 numbers (after normalisation) of a few countries, with the right lengths.
MX = "+525512345678"
US = "+12025550123"
FR = "+33612345678"
GB = "+447911123456"


def write(tmp_path: Path, name: str, text: str, *, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def load(*paths: Path) -> SuppressionList:
    return SuppressionList.load(list(paths))


def only_stats(lists: SuppressionList) -> ListStats:
    (stats,) = lists.stats
    return stats


def counts(stats: ListStats) -> tuple[str, int, int, int]:
    return stats.format, stats.entries, stats.numbers, stats.unparseable


# --- number_keys ---------------------------------------------------------------------


def test_number_keys_are_the_digits_and_none_is_zero() -> None:
    keys = number_keys([MX, None, "+123456789012345", US])
    assert keys.dtype == np.uint64
    assert keys.tolist() == [525512345678, 0, 123456789012345, 12025550123]
    assert number_keys([]).tolist() == []


@pytest.mark.parametrize("bad", ["+52 55", "", "+52x", "5.5", "+1 2"])
def test_number_keys_refuse_a_string_that_is_not_normalised(bad: str) -> None:
    # The one-call parse would stop early, or read two numbers, or none: the careful
    # path says which string is wrong.
    with pytest.raises(ValueError, match="not a normalised number"):
        number_keys([MX, bad, ""] if bad == "+1 2" else [MX, bad])


@given(st.lists(st.one_of(st.none(), st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))))
def test_number_keys_match_int_one_by_one(numbers: list[str | None]) -> None:
    assert number_keys(numbers).tolist() == [int(n) if n else 0 for n in numbers]


# --- formats -------------------------------------------------------------------------


def test_one_number_per_line_in_any_layout_normalize_accepts(tmp_path: Path) -> None:
    path = write(tmp_path, "optout.txt", f"{MX}\n\n  +1 (202) 555-0123 \n33.6.12.34.56.78\n")
    lists = load(path)
    stats = only_stats(lists)
    assert counts(stats) == ("numbers", 3, 3, 0)
    assert lists.contains_many([MX, US, FR, GB]) == [True, True, True, False]
    assert lists.listed([GB, MX, None, US, FR, GB]) == [1, 3, 4]  # the positions listed
    assert len(lists) == 3


def test_ndjson_takes_the_to_string_of_each_object(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "results.ndjson",
        f'{{"line":1,"to":"{MX}","status":"SENT"}}\n'
        f'{{"status":"SENT","to":"{US}"}}\n'  # "to" not first: the careful path
        "\n"
        "not json\n"
        '{"to":5215512345678}\n'
        "[1]\n"
        f'{{"to":"{FR}"}}\n',
    )
    lists = load(path)
    stats = only_stats(lists)
    assert counts(stats) == ("ndjson", 6, 3, 3)
    assert stats.unparseable_examples == [
        Problem(line=4, text="not json", reason="not JSON"),
        Problem(line=5, text='{"to":5215512345678}', reason="no 'to' string"),
        Problem(line=6, text="[1]", reason="not a JSON object"),
    ]
    assert lists.contains_many([MX, US, FR]) == [True, True, True]


def test_ndjson_with_a_second_to_takes_the_one_json_takes(tmp_path: Path) -> None:
    # JSON keeps the last of two equal keys: the fast path (first key "to") must not be
    # taken for this block.
    path = write(tmp_path, "dup.ndjson", f'{{"to":"{MX}","to":"{US}"}}\n{{"to":"{FR}"}}\n')
    lists = load(path)
    assert lists.contains_many([MX, US, FR]) == [False, True, True]


@pytest.mark.parametrize(
    ("header", "separator", "column"),
    [
        ("to,name", ",", "to"),
        ("Name;Phone;Extra", ";", "phone"),
        ("id\tNUMBER", "\t", "number"),
        (" name , To ", ",", "to"),
        ("phone,number,to", ",", "to"),  # "to" preferred, then "number", then "phone"
        ("phone,number", ",", "number"),
    ],
)
def test_csv_header_picks_the_column(
    tmp_path: Path, header: str, separator: str, column: str
) -> None:
    names = [n.strip().lower() for n in header.split(separator)]
    at = names.index(column)
    rows = []
    for number in (MX, US):
        fields = ["x"] * len(names)
        fields[at] = number
        rows.append(separator.join(fields))
    path = write(tmp_path, "list.csv", "\n".join([header, *rows]) + "\n")
    lists = load(path)
    stats = only_stats(lists)
    assert (stats.format, stats.entries, stats.numbers) == (f"csv:{column}", 2, 2)
    assert lists.contains_many([MX, US, FR]) == [True, True, False]


def test_csv_with_quotes_bom_crlf_and_bad_rows(tmp_path: Path) -> None:
    text = (
        "\ufeffName,Phone,Note\r\n"
        f'"Ana, M.","{MX}","said ""stop"""\r\n'
        "\r\n"
        f'Bo,"+1 202 555 0123",x\r\n'
        "Cy,,x\r\n"
        "short\r\n"
        '"Di","+33 6 12,34",x\r\n'
    )
    lists = load(write(tmp_path, "export.csv", text))
    stats = only_stats(lists)
    assert counts(stats) == ("csv:phone", 5, 2, 3)
    assert stats.unparseable_examples == [
        Problem(line=5, text="Cy,,x", reason="the 'phone' field is empty"),
        Problem(line=6, text="short", reason="no 'phone' field"),
        Problem(line=7, text='"Di","+33 6 12,34",x', reason="has an invalid character ','"),
    ]
    assert lists.contains_many([MX, US]) == [True, True]


def test_a_header_without_a_known_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "crm.csv", "msisdn,name\n5215512345678,Ana\n")
    with pytest.raises(ConfigError, match=r"crm\.csv: .*without a 'to', 'number' or 'phone'"):
        load(path)


def test_a_first_line_that_is_a_number_with_separators_is_not_a_header(tmp_path: Path) -> None:
    # "+52 55 1234 5678" has no , ; or tab; "+52-55-1234-5678" neither: numbers both.
    lists = load(write(tmp_path, "l.txt", "+52-55-1234-5678\n+52 55 1234 5679\n"))
    assert only_stats(lists).format == "numbers"
    assert len(lists) == 2


def test_gzip_by_magic_bytes_with_or_without_the_name(tmp_path: Path) -> None:
    data = gzip.compress(f"{MX}\n{US}\n".encode())
    (tmp_path / "a.txt.gz").write_bytes(data)
    (tmp_path / "b.txt").write_bytes(data)
    lists = load(tmp_path / "a.txt.gz", tmp_path / "b.txt")
    assert [s.numbers for s in lists.stats] == [2, 2]
    assert len(lists) == 2


def test_utf16_with_its_bom(tmp_path: Path) -> None:
    path = tmp_path / "excel.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + f"phone\r\n{MX}\r\n".encode("utf-16-le"))
    lists = load(path)
    assert only_stats(lists).format == "csv:phone"
    assert MX in lists


def test_empty_and_blank_files_load_as_empty_lists(tmp_path: Path) -> None:
    lists = load(write(tmp_path, "empty.txt", ""), write(tmp_path, "blank.txt", "\n \n\t\n"))
    assert len(lists) == 0
    assert [s.entries for s in lists.stats] == [0, 0]
    assert lists.contains_many([MX, None]) == [False, False]


def test_several_files_make_one_set_with_stats_per_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.txt", f"{MX}\n{US}\n")
    b = write(tmp_path, "b.ndjson", f'{{"to":"{US}"}}\n{{"to":"{FR}"}}\n')
    lists = load(a, b)
    assert [(s.path, s.numbers) for s in lists.stats] == [(str(a), 2), (str(b), 2)]
    assert len(lists) == 3
    # keys, index, and the filter (2 bytes a number, 512 at least); the numpy twin pads
    # its keys with SortedKeys.STEP more
    padding = 0 if native.core is not None else 8 * SortedKeys.STEP
    assert lists.nbytes == 8 * (3 + 1) + padding + 512


def test_lines_across_blocks_keep_their_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of 7 bytes: every line (and a two-byte character) is cut somewhere.
    monkeypatch.setattr(suppress, "BLOCK", 7)
    numbers = [f"+5255{i:08d}" for i in range(40)]
    text = "\n".join(numbers[:20]) + "\nçà\n" + "\n".join(numbers[20:]) + "\n"
    lists = load(write(tmp_path, "l.txt", text))
    stats = only_stats(lists)
    assert (stats.entries, stats.numbers, stats.unparseable) == (41, 40, 1)
    assert stats.unparseable_examples == [Problem(line=21, text="çà", reason="has letters")]
    assert lists.contains_many(numbers) == [True] * 40


def test_examples_are_capped_but_every_entry_is_counted(tmp_path: Path) -> None:
    lists = load(write(tmp_path, "l.txt", "x\n" * 50))
    stats = only_stats(lists)
    assert stats.unparseable == 50
    assert [p.line for p in stats.unparseable_examples] == [1, 2, 3, 4, 5]


def test_the_collector_is_left_as_it_was(tmp_path: Path) -> None:
    path = write(tmp_path, "l.txt", f"{MX}\n")
    assert gc.isenabled()
    load(path)
    assert gc.isenabled()
    gc.disable()
    try:
        load(path)
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- errors --------------------------------------------------------------------------


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"opt-out list: cannot read .*nope\.txt: No such file"):
        load(write(tmp_path, "ok.txt", MX), tmp_path / "nope.txt")


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="opt-out list: cannot read"):
        load(tmp_path)


def test_corrupt_gzip_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "l.txt.gz"
    path.write_bytes(gzip.compress(f"{MX}\n".encode() * 1000)[:60])
    with pytest.raises(ConfigError, match=r"opt-out list: .*l\.txt\.gz is truncated"):
        load(path)


# --- the country check ---------------------------------------------------------------


def test_a_national_list_is_noticed(tmp_path: Path) -> None:
    # Numbers kept without their country code: a Mexican 33… reads as France (+33, 9-digit
    # national numbers), an American 212… as Morocco (+212, 9 digits); a Mexican 55…
    # reads as Brazil (+55) with 8 digits, which Brazil has: the documented miss.
    lists = load(write(tmp_path, "national.txt", "3312345678\n2125551234\n5512345678\n"))
    stats = only_stats(lists)
    assert (stats.numbers, stats.not_valid) == (3, 2)
    assert stats.not_valid_examples == [
        Problem(
            line=1,
            text="3312345678",
            reason="country code 33 has national numbers of 9 digits, not 8",
        ),
        Problem(
            line=2,
            text="2125551234",
            reason="country code 212 has national numbers of 9 digits, not 7",
        ),
    ]


def test_international_numbers_pass_and_unknown_codes_do_not(tmp_path: Path) -> None:
    lists = load(write(tmp_path, "l.txt", f"{MX}\n{US}\n{FR}\n{GB}\n+2812345678\n+80012345678\n"))
    stats = only_stats(lists)
    assert stats.not_valid == 1  # +800 (international freephone) has 8 digits: valid
    assert stats.not_valid_examples == [
        Problem(line=5, text="+2812345678", reason="no country has this country code")
    ]


@given(
    st.lists(st.integers(0, 2**50), max_size=300),
    st.sampled_from(["as drawn", "sorted", "sorted blocks", "reversed"]),
)
def test_sorted_distinct_keys_are_sorted_set(keys: list[int], order: str) -> None:
    # Lists in no order take quicksort, lists in order (or nearly) merge their runs.
    if order == "sorted":
        keys = sorted(keys)
    elif order == "sorted blocks":
        keys = [k for start in range(0, len(keys), 40) for k in sorted(keys[start : start + 40])]
    elif order == "reversed":
        keys = sorted(keys, reverse=True)
    got = sorted_keys.sorted_distinct(np.array(keys, dtype=np.uint64))
    assert got.tolist() == sorted(set(keys))


def test_country_table_facts() -> None:
    table = suppress.country_lengths()
    assert table[52] == {10}
    assert table[33] == {9}
    assert 10 in table[1]
    assert 28 not in table
    assert all(1 <= code <= 999 for code in table)


def _international_slowly(key: int, table: dict[int, frozenset[int]]) -> bool:
    digits = str(key)
    return any(
        int(digits[:size]) in table and len(digits) - size in table[int(digits[:size])]
        for size in (1, 2, 3)
    )


@given(st.lists(st.integers(min_value=10**7, max_value=10**15 - 1), max_size=50))
def test_country_check_matches_a_loop_over_the_table(keys: list[int]) -> None:
    table = suppress.country_lengths()
    got = list(suppress._international(np.array(keys, dtype=np.uint64)))
    assert got == [_international_slowly(key, table) for key in keys]


# --- checking numbers ----------------------------------------------------------------


def test_contains_many_and_contains() -> None:
    lists = SuppressionList.from_numbers([MX, "+1 202 555 0123", "garbage"])
    assert len(lists) == 2
    assert lists.contains_many([US, None, FR, MX, MX]) == [True, False, False, True, True]
    assert "+52 55 1234 5678" in lists
    assert "+52 55 1234 0000" not in lists
    assert "not a number" not in lists
    assert 525512345678 not in lists  # only strings are numbers here
    assert SuppressionList.from_numbers([]).contains_many([MX]) == [False]


@given(
    listed=st.sets(st.integers(min_value=10**7, max_value=10**15 - 1), max_size=200),
    asked=st.lists(st.integers(min_value=10**7, max_value=10**15 - 1), max_size=200),
)
def test_contains_keys_matches_a_set(listed: set[int], asked: list[int]) -> None:
    lists = SuppressionList.from_numbers([f"+{n}" for n in listed])
    queries = asked + list(listed)[:20]
    got = lists.contains_many([f"+{n}" for n in queries])
    assert got == [n in listed for n in queries]


@given(
    st.lists(st.integers(0, 2**64 - 2), max_size=300).map(sorted),
    st.lists(st.integers(0, 2**64 - 2), max_size=100),  # the largest is the padding
)
def test_sorted_keys_find_what_searchsorted_finds(keys: list[int], queries: list[int]) -> None:
    # Repeated keys included: dedupe's runs hold one number once per text. With
    # CACHED_KEYS at 0 the descent runs on every size.
    table = SortedKeys.empty(len(keys))
    table[: len(keys)] = keys
    held = SortedKeys(table, len(keys))
    asked = np.array(queries + keys[::7], dtype=np.uint64)
    wanted = np.searchsorted(np.array(keys, dtype=np.uint64), asked).tolist()
    listed = [q in set(keys) for q in asked.tolist()]
    for cached in (0, sorted_keys.CACHED_KEYS):
        with mock.patch.object(sorted_keys, "CACHED_KEYS", cached):
            assert held.first_at_least(asked).tolist() == wanted
            assert held.contains(asked).tolist() == listed


# --- fast paths against careful ones --------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)


def _careful_to(line: str) -> str:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ""
    to = obj.get("to") if isinstance(obj, dict) else None
    return to if isinstance(to, str) else ""


@st.composite
def _ndjson_lines(draw: st.DrawFn) -> str:
    obj = draw(st.dictionaries(st.sampled_from(["line", "to", "x", "params"]), _json_values))
    if draw(st.booleans()):
        obj["to"] = draw(st.sampled_from([MX, US, "+52 55 1234 5678", "", "a\\b", 'q"']))
    line = orjson.dumps(obj).decode()
    choice = draw(st.integers(0, 9))
    if choice == 0:  # a second "to", as text
        line = line[:-1] + (',"to":"+15550001111"}' if len(obj) else '"to":"+15550001111"}')
    elif choice == 1:
        line = line[: draw(st.integers(0, len(line)))]  # cut short: not JSON
    elif choice == 2:
        line = '{"to":"' + draw(st.sampled_from([MX, US])) + '", broken'
    return line


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ndjson_lines(), min_size=1, max_size=12))
def test_ndjson_fast_path_takes_what_json_takes(lines: list[str]) -> None:
    text = "\n".join(lines)
    got = suppress._Ndjson().raws(text)
    assert len(got) == len(lines)
    for line, to in zip(lines, got, strict=True):
        # Where JSON says the line has a "to", the fast path says the same; a line cut
        # after its "to" (not JSON) may be read as far as its "to" (documented).
        careful = _careful_to(line)
        if careful or not re.match(r'\{"to":"[^"\\]*"', line):
            assert to == careful, line


_csv_fields = st.text(alphabet=st.sampled_from(list("+0123456789 ab,;\t\"'")), max_size=12).filter(
    lambda f: "\n" not in f and "\r" not in f
)


@settings(max_examples=300)
@given(
    st.sampled_from([",", ";", "\t"]),
    st.integers(0, 3),
    st.lists(st.lists(_csv_fields, min_size=1, max_size=5), min_size=1, max_size=8),
)
def test_csv_regex_reads_the_field_csv_reads(
    separator: str, column: int, rows: list[list[str]]
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, lineterminator="\n")
    writer.writerows(rows)
    text = out.getvalue().rstrip("\n")
    lines = text.split("\n")
    got = suppress._Csv(separator, column, "to").raws(text)
    assert len(got) == len(lines)
    for line, field in zip(lines, got, strict=True):
        row = next(csv.reader([line], delimiter=separator), [])
        wanted = row[column] if len(row) > column else ""
        assert field == wanted, line


# --- the fast path of a block of plain numbers -----------------------------------------

# Mostly numbers near the edges of what normalize takes (7 to 16 digits, a leading 0, a
# + or two, separators), so that whole blocks often are numbers; now and then garbage.
_NEAR_NUMBER = st.builds(
    lambda plus, digits, gap: plus + (gap.join([digits[:3], digits[3:]]) if gap else digits),
    st.sampled_from(["", "", "+", "++", " +"]),
    st.from_regex(r"[0-9]{7,16}", fullmatch=True),
    st.sampled_from(["", "", " ", "-", "\u00a0", "+"]),
)
_PLAIN_LINES = st.lists(
    st.one_of(
        _NEAR_NUMBER,
        _NEAR_NUMBER,
        st.sampled_from([MX, US, FR, GB, "525512345678", "+52 55 1234 5678", "(202) 555-0123"]),
        st.text(alphabet="0123456789+ -.()\u00a0x", max_size=18),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(_PLAIN_LINES)
def test_plain_keys_agree_with_normalize_line_by_line(lines: list[str]) -> None:
    from dispatcher.numbers import normalize_many

    numbers = normalize_many(lines)
    got = suppress._plain_keys("\n".join(lines))
    if got is None:  # the careful path decides: some line is not a number, or not ASCII
        assert None in numbers or not "".join(lines).isascii()
    else:
        assert None not in numbers
        keys, international = got
        assert keys.tolist() == number_keys(numbers).tolist()
        # the country check from the bytes is the one from the keys
        assert list(international) == list(suppress._international(keys))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(10**7, 10**15 - 1), st.booleans()), min_size=1, max_size=40))
def test_the_digits_of_a_block_of_plain_numbers_are_read_as_int_reads_them(
    numbers: list[tuple[int, bool]],
) -> None:
    # Every length from 8 to 15 digits, with and without the +, the first line included
    # (its word before the last 8 digits starts before the block).
    got = suppress._plain_keys("\n".join(("+" if plus else "") + str(n) for n, plus in numbers))
    assert got is not None
    assert got[0].tolist() == [n for n, _ in numbers]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_PLAIN_LINES, st.sampled_from(["numbers", "ndjson", "csv"]))
def test_a_list_loads_the_same_without_the_fast_path(
    tmp_path: Path, lines: list[str], kind: str
) -> None:
    if kind == "ndjson":
        text = "".join(orjson.dumps({"to": line, "n": 1}).decode() + "\n" for line in lines)
    elif kind == "csv":
        text = "name,to\n" + "".join(f'x,"{line}"\n' for line in lines)
    else:
        text = "\n".join(lines) + "\n"
    path = write(tmp_path, f"list.{kind}", text)
    fast = load(path)
    with mock.patch.object(suppress, "_plain_keys", return_value=None):
        careful = load(path)
    assert fast.keys.tolist() == careful.keys.tolist()
    assert fast.stats == careful.stats


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(10**10, 10**10 + 2000), max_size=300),
    st.lists(st.integers(10**10 - 5, 10**10 + 2005), max_size=300),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_listed_numbers_as_a_set_says(
    listed: list[int], asked: list[int], descend: bool, crowded: bool, numpy_twins: bool
) -> None:
    # The filter in front of the sorted keys (or one that says "maybe" to every number),
    # and the descent of SortedKeys (CACHED_KEYS at 0) or a plain binary search, in C or
    # in the numpy twins: the answers are those of a set.
    with twins(numpy_twins):
        lists = SuppressionList.from_numbers([f"+{n}" for n in listed])
    with (
        twins(numpy_twins),
        mock.patch.object(sorted_keys, "CACHED_KEYS", 0 if descend else sorted_keys.CACHED_KEYS),
    ):
        if crowded:
            with mock.patch.object(
                sorted_keys.KeyFilter, "maybe", lambda self, keys, hashes: np.arange(len(keys))
            ):
                got = lists.contains_many([f"+{n}" for n in asked])
        else:
            got = lists.contains_many([f"+{n}" for n in asked])
    assert got == [n in set(listed) for n in asked]
    assert len(lists) == len(set(listed))


def test_stored_country_table_is_the_installed_phonenumbers_one() -> None:
    """`dispatcher.country_lengths.LENGTHS` is stored, not derived at each load: it must
    still be what the installed phonenumbers says (regenerate it when this fails)."""
    derived = country_lengths.derive()
    new_table = "\n".join(f"    {code}: 0x{mask:X}," for code, mask in sorted(derived.items()))
    assert derived == country_lengths.LENGTHS, f"paste into LENGTHS:\n{new_table}"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 3000), st.sampled_from([10**11, 2**50, 2**64 - 1]))
def test_the_key_set_in_c_answers_as_a_set(seed: int, size: int, top: int) -> None:
    # The C part's KeySet against a Python set, asked 100 times as many keys as it holds
    # (at least 20 000): its filter's false positives — a few in a thousand at 16 bits a
    # key — are each looked up and refused, and every listed key is found.
    rng = np.random.default_rng(seed)
    listed = np.unique(rng.integers(1, top, size=size, dtype=np.uint64, endpoint=True))
    held = built().KeySet(array("Q", listed.tobytes()))
    asked = rng.integers(1, top, size=max(20_000, 100 * size), dtype=np.uint64, endpoint=True)
    asked[: len(listed)] = listed
    rng.shuffle(asked)
    members = set(listed.tolist())
    got = held.listed(array("Q", asked.tobytes()))
    assert got == [i for i, key in enumerate(asked.tolist()) if key in members]
    assert held.size == len(listed)
