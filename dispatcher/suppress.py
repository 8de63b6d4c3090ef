"""Opt-out (suppression) lists: numbers that must never be texted (issue 13).

``--suppress FILE`` (repeatable) loads one or more lists into a `SuppressionList`; a line
whose normalised number is in it gets ``SUPPRESSED`` and is never sent.

**File formats**, told apart per file by its first non-blank line (after a UTF-8 BOM, or
a UTF-16 one, which also sets the encoding; ``.gz`` files are unpacked first, recognised
by their magic bytes as every input is):

- it starts with ``{``: **NDJSON**, one object per line whose ``to`` string is the number
  (other keys are ignored, so a results file or a ``dispatcher gen`` file is a list);
- it is ``to``, ``number`` or ``phone`` alone, or it splits at ``,`` (else ``;``, else
  a tab) into fields one of which is one of those (any case, spaces around ignored;
  ``to`` preferred, then ``number``, then ``phone``): **CSV** with that header row and
  that column, fields quoted or not (a quoted field may not span lines);
- it has one of those separators but no such column, and is not a number either: the
  file is refused (a list that would silently suppress nothing is worse than no list);
- otherwise: **one number per line**, the first line included.

Blank lines are skipped everywhere. Every entry is normalised by the same rule as ``to``
(`dispatcher.numbers.normalize`); an entry that fails is **unparseable**: counted and
reported with the first few examples (line, text, reason), never fatal. A list file that
cannot be read is a `ConfigError` naming it (exit 2, before anything is sent).

**Storage: a sorted numpy array of 64-bit integers**, the E.164 digits as a number (at
most 15 digits, below 2^50): 8 bytes per distinct number (76 MiB for 10 M), plus an
index of every 64th key (1/8 byte a number; see `SortedKeys`). A chunk of recipients is
checked in one call: its numbers become integers in one C parse (`number_keys`), and
all of them descend the array together, so that their cache misses overlap. A
compressed bitmap (``pyroaring.BitMap64``) was measured too: it is 4 times smaller on
these numbers (2 bytes each: 20 MB for 10 M, as numbers of one country share their high
bits), but from Python a chunk costs 190 ns a number just to build the bitmap to
intersect with, 440 ns with the answer per line, and 175 ns per ``in`` one by one. The
load reads blocks of 1 MiB, with the garbage collector paused (a dict per NDJSON line
otherwise costs more in collections than in parsing), appends the keys to an array that
grows in place, and sorts and de-duplicates it in place at the end: the peak is the
array and one block's Python objects, about 1.4 times the steady size at 10 M. A block
whose every entry is a plain number (`_plain_keys`: ASCII, an optional ``+`` and 8 to 15
digits once separators are removed — what lists mostly are) skips the line-by-line
normalisation: a few vectorised checks over its bytes, which also parse the digits and
check the country, about 85 ns a number against 300; NDJSON and CSV blocks take it for
the numbers their extractor found. Any
other block is read line by line as before. Load times: see the README's
campaign-safety figures.

**Not a valid number for any country.** A list kept in national format (``5512345678``
for a Mexican mobile) normalises to numbers that match nobody. The load counts entries
that cannot be international numbers: each is split into a country calling code (the
codes are a prefix code: at most one of the 1 to 3 digit prefixes is one) and a national
number whose length must be one the country's numbers can have. The table — country code
→ possible national lengths, the union over the regions sharing the code, local-only
lengths (numbers dialled without their area code) left out — comes from the metadata of
Google's libphonenumber (the ``phonenumbers`` package: its
``general_desc.possible_length``), stored in `dispatcher.country_lengths` (deriving it
at each load took 45 to 60 ms); checking is one look-up a number in a table indexed
by its digit count and first three digits (16 KB, made from it at the first use). It
catches an unknown country code (``+28…``, ``+9000…``) and a wrong length
(``+3312345678``: France has 9-digit national numbers; ``+2125551234``, an American
number without its 1, is Morocco with 7 digits where it has 9). It misses what only the
full number patterns catch — a national number whose digits happen to make a real code
and length: ``5512345678`` reads as Brazil (+55) with 8 digits, which Brazil has — and
it never says whether a number is assigned. Full validation (``is_valid_number``) would
take 30 µs a number, five minutes for 10 M. A national list therefore shows up as a large
share of such entries rather than all of them, which is what it is for.
"""

from __future__ import annotations

import codecs
import csv
import gc
import importlib
import os
import re
import warnings
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import orjson

from dispatcher import heap, native
from dispatcher.country_lengths import LENGTHS
from dispatcher.errors import ConfigError, InputError, InvalidNumber
from dispatcher.numbers import (
    ASCII_SEPARATORS,
    MAX_DIGITS,
    MIN_DIGITS,
    normalize,
    normalize_many,
    number_key,
)
from dispatcher.sources import ByteSource, open_source

_U64 = npt.NDArray[np.uint64]

#: Examples kept per file and per kind of problem.
EXAMPLES: Final = 5
#: Bytes read (and decoded) at a time. With `dispatcher.heap` settled, a block's arrays
#: reuse the last one's memory at any size: 64 KiB to 1 MiB load a list of numbers in
#: the same time, and NDJSON is faster with 1 MiB (600 against 720 ms for 1 M lines).
BLOCK: Final = 1 << 20
COLUMNS: Final = ("to", "number", "phone")
_SEPARATORS: Final = (",", ";", "\t")
_NO_KEYS: Final = np.empty(0, dtype=np.int64)
_POW10: Final = np.array([10**i for i in range(MAX_DIGITS + 2)], dtype=np.uint64)


def number_keys(numbers: Sequence[str | None]) -> _U64:
    """The E.164 numbers as integers (their digits), 0 for None.

    ``numbers`` are what `dispatcher.numbers.normalize_many` returns. The C part
    (`dispatcher.native`) parses them in one loop; its twin here parses them by one C
    call over their join (42 ns a number, against 90 for ``int`` one by one). Anything
    either does not expect takes the careful path. The keys serve both the opt-out lists
    and `dispatcher.dedupe`.
    """
    if not numbers:
        return np.empty(0, dtype=np.uint64)
    if native.core is not None:
        keys = np.empty(len(numbers), dtype=np.uint64)
        if native.core.number_keys(numbers, keys):
            return keys
        return _careful_keys(numbers)
    try:
        text = " ".join(numbers)  # type: ignore[arg-type]
    except TypeError:  # a None among them
        text = " ".join([n or "0" for n in numbers])
    parsed = _parse_ints(text)
    if len(parsed) != len(numbers) or text.count(" ") != len(numbers) - 1:
        return _careful_keys(numbers)
    return parsed.view(np.uint64)


def _careful_keys(numbers: Sequence[str | None]) -> _U64:
    return np.array([number_key(n) for n in numbers], dtype=np.int64).view(np.uint64)


def _parse_ints(text: str) -> npt.NDArray[np.int64]:
    """The integers of ``text`` (separated by whitespace), parsed in C; fewer than its
    tokens (possibly none) where one is not an integer.

    A string that is not a number ends the parse: a ValueError in numpy 2, a
    DeprecationWarning and a short result in numpy 1. Either way, and for a string with
    a space or an empty one (a token too many or too few), the caller counts the
    tokens and takes a careful path. numpy 2 needs no warnings filter, which costs more
    than the parse of a small chunk (20 µs a call)."""
    try:
        if _NUMPY_WARNS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return np.fromstring(text, dtype=np.int64, sep=" ")
        return np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        return _NO_KEYS


_NUMPY_WARNS: Final = int(np.__version__.split(".")[0]) < 2


#: Keys added to a filter at a time (bounds the temporary arrays).
FILTER_BLOCK: Final = 1 << 16
#: Up to this many keys (512 KiB), `SortedKeys` uses ``np.searchsorted`` as it is.
CACHED_KEYS: Final = 1 << 16
#: Up to this many queries in order, too (see `SortedKeys.first_at_least`).
FEW_QUERIES: Final = 1 << 10


class SortedKeys:
    """Sorted uint64 keys, looked up a chunk at a time.

    ``np.searchsorted`` walks each query's binary search alone: about 23 dependent reads
    in 10 M keys, most of them cache misses when the numbers are real ones (they cluster
    in a few prefixes, so no path stays cached): 660 ns a look-up measured. Here a
    sample of every `STEP`-th key (1/64 of the keys: 1.2 MiB at 10 M, in the cache)
    finds each query's block with ``searchsorted``, then all the queries descend their
    blocks together, six levels of one vectorised gather each, whose cache misses
    overlap: 140 ns a look-up on the same numbers and machine (20 at 10 M uniform keys).
    ``table`` holds the keys and then `STEP` copies of the largest uint64, so that the
    descent never reads past its end and no key ever matches the padding.
    """

    STEP: Final = 64
    PAD: Final = np.iinfo(np.uint64).max

    __slots__ = ("index", "size", "table")

    def __init__(self, table: _U64, size: int) -> None:
        """``table``: `size` sorted keys, then at least `STEP` times `PAD` (see `empty`)."""
        self.table = table
        self.size = size
        self.index = table[: size : self.STEP].copy()

    @classmethod
    def empty(cls, size: int) -> _U64:
        """A table to fill with ``size`` sorted keys (the padding is set)."""
        table = np.empty(size + cls.STEP, dtype=np.uint64)
        table[size:] = cls.PAD
        return table

    def first_at_least(self, queries: _U64) -> npt.NDArray[np.intp]:
        """Per query, the position of the first key >= it (`size` or more when none).

        A table in the cache, or a few queries (`FEW_QUERIES`), take ``np.searchsorted``
        as it is. It starts each search from the last one's answer when the queries
        ascend — as both callers' do: the filter's few positives, in key order — and the
        descent below costs some 25 numpy calls whatever the count: for 150 queries in
        order, 4 to 5 µs against 22 to 33 at 1.3 M and 10 M keys; from about 5000
        queries the descent is cheaper (206 against 371 µs at 1.3 M keys).
        """
        if self.size <= CACHED_KEYS or len(queries) <= FEW_QUERIES:
            return np.searchsorted(self.table[: self.size], queries)
        step = self.STEP
        # Block j holds the keys from j * STEP: the answer is after the last key < q,
        # which is in the block before the first sampled key >= q (or before the start).
        at = np.searchsorted(self.index, queries)
        at -= 1
        at *= step
        np.maximum(at, -1, out=at)
        table = self.table
        step //= 2
        while step:
            at += step * (table.take(at + step) < queries)
            step //= 2
        at += 1
        return at

    def contains(self, queries: _U64) -> npt.NDArray[np.bool_]:
        """Per query (below `PAD`, as every number key is): whether it is a key."""
        if not self.size:
            return np.zeros(len(queries), dtype=bool)
        return self.table[self.first_at_least(queries)] == queries  # type: ignore[no-any-return]


class KeyFilter:
    """A blocked Bloom filter of (key, hash) pairs (or keys alone): most look-ups are of
    keys that are not there — a new recipient of `dispatcher.dedupe_runs`, a number on
    no opt-out list — and a key the filter has never seen needs no look-up at all.

    Each pair sets 4 bits of one 64-bit word (a "split block" filter: one cache miss a
    query). Sized for `capacity` pairs at 8 bits each: at 8 to 16 bits a pair (1 to 2
    bytes), 3.4 to 0.5 % false positives measured (a false positive only costs the
    look-up the key would have had anyway); never a false negative.
    """

    __slots__ = ("capacity", "size", "words")

    def __init__(self, capacity: int) -> None:
        size = max(64, -(-capacity // 8))  # 8 bits a pair
        self.capacity = size * 8
        self.size = np.uint64(size)
        self.words = np.zeros(size, dtype=np.uint64)

    @property
    def nbytes(self) -> int:
        return self.words.nbytes

    def spots(self, keys: _U64, hashes: _U64 | None) -> tuple[_U64, _U64]:
        """(word, bits) of each pair: a 64-bit mix of both, the word from its top 32 bits
        (scaled to the size by a multiply), 4 bit positions from its low 24 (the numpy
        twin of the C part's, `dispatcher.native`)."""
        mixed = keys * _MIX1
        if hashes is not None:
            mixed ^= hashes
        mixed ^= mixed >> _S32
        mixed *= _MIX2
        mixed ^= mixed >> _S29
        bits = _ONE << (mixed & _LOW6)
        for shift in _BIT_SHIFTS:
            bits |= _ONE << ((mixed >> shift) & _LOW6)
        return ((mixed >> _S32) * self.size) >> _S32, bits

    def maybe(self, keys: _U64, hashes: _U64 | None) -> npt.NDArray[np.intp]:
        """The positions of the pairs that may have been added (the others certainly
        were not)."""
        if native.core is not None:
            found = native.core.filter_maybe(self.words, keys, hashes)
            return np.frombuffer(found, dtype=np.int64)
        word, bits = self.spots(keys, hashes)
        return np.flatnonzero((self.words.take(word) & bits) == bits)

    def maybe_add(self, keys: _U64, hashes: _U64 | None) -> npt.NDArray[np.intp]:
        """`maybe`, then `add` of every pair: a record that adds each pair it asks about
        (a pair it has is in the filter already) probes and sets one word a pair in one
        pass. In C, a pair whose bits an earlier one of the call set is among the
        positions too (a false positive more, which only costs its look-up)."""
        if native.core is not None:
            found = native.core.filter_maybe_add(self.words, keys, hashes)
            return np.frombuffer(found, dtype=np.int64)
        asked = self.maybe(keys, hashes)
        self.add(keys, hashes)
        return asked

    def add(self, keys: _U64, hashes: _U64 | None, at: npt.NDArray[np.intp] | None = None) -> None:
        """Add the pairs (those at positions ``at`` only, when given)."""
        if native.core is not None:  # positions as int64, whatever intp is here
            native.core.filter_add(
                self.words, keys, hashes, None if at is None else at.astype(np.int64, copy=False)
            )
            return
        if at is not None:
            keys = keys.take(at)
            hashes = hashes.take(at) if hashes is not None else None
        word, bits = self.spots(keys, hashes)
        np.bitwise_or.at(self.words, word, bits)


_MIX1: Final = np.uint64(0x9E3779B97F4A7C15)
_MIX2: Final = np.uint64(0xBF58476D1CE4E5B9)
_S32: Final = np.uint64(32)
_S29: Final = np.uint64(29)
_LOW6: Final = np.uint64(63)
_ONE: Final = np.uint64(1)
_BIT_SHIFTS: Final = (np.uint64(6), np.uint64(12), np.uint64(18))


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One entry of a list that was set aside, to show the user where and why."""

    line: int
    text: str
    reason: str


@dataclass(slots=True, kw_only=True)
class ListStats:
    """What the load of one list file found."""

    path: str
    #: "ndjson", "csv" (with the column's name: "csv:to") or "numbers".
    format: str = "numbers"
    #: Non-blank lines, a CSV header row excluded.
    entries: int = 0
    #: Entries that normalised to a number (repeats included).
    numbers: int = 0
    unparseable: int = 0
    #: Numbers that cannot be international numbers (see the module docstring).
    not_valid: int = 0
    unparseable_examples: list[Problem] = field(default_factory=list)
    not_valid_examples: list[Problem] = field(default_factory=list)


class SuppressionList:
    """A set of E.164 numbers, checked a chunk at a time."""

    __slots__ = ("_filter", "_keys", "stats")

    def __init__(self, keys: _U64, stats: Sequence[ListStats] = ()) -> None:
        """``keys``: sorted distinct `number_keys`; `load` and `from_numbers` build them."""
        size = len(keys)
        keys.resize(size + SortedKeys.STEP, refcheck=False)  # in place for a big array
        keys[size:] = SortedKeys.PAD
        self._keys = SortedKeys(keys, size)
        # 16 bits a number: most recipients are on no list, and are told so by one word.
        self._filter = KeyFilter(2 * size)
        for start in range(0, size, FILTER_BLOCK):
            self._filter.add(keys[start : min(start + FILTER_BLOCK, size)], None)
        self.stats = tuple(stats)

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]]) -> SuppressionList:
        """Read every list file; raise `ConfigError` naming a file that cannot be read."""
        heap.settle()  # the blocks' arrays reuse the heap (`dispatcher.heap`)
        keys = _Growing()
        # Parsing NDJSON makes a dict per line, and the collector's passes over them cost
        # more than the parse itself (1.8 s against 0.7 s per million `dispatcher gen`
        # lines); nothing made here is part of a reference cycle.
        collecting = gc.isenabled()
        gc.disable()
        try:
            stats = [_load_file(os.fspath(path), keys) for path in paths]
        finally:
            if collecting:
                gc.enable()
        optout = cls(_sorted_distinct(keys.take()), stats)
        heap.release()  # what the blocks held, kept by the heap since `settle`
        return optout

    @classmethod
    def from_numbers(cls, numbers: Sequence[str]) -> SuppressionList:
        """A list of the given raw numbers (normalised here; unparseable ones dropped)."""
        keys = number_keys(normalize_many(numbers))
        return cls(_sorted_distinct(keys[keys != 0].copy()))

    def __len__(self) -> int:
        """Distinct numbers over all the files."""
        return self._keys.size

    @property
    def nbytes(self) -> int:
        """Bytes of the keys (8 a number), their index (1/8 byte a number) and filter (2)."""
        return int(self._keys.table.nbytes + self._keys.index.nbytes + self._filter.nbytes)

    def __contains__(self, number: object) -> bool:
        """Whether ``number`` (any layout `normalize` accepts) is listed."""
        if not isinstance(number, str):
            return False
        try:
            e164 = normalize(number)
        except InvalidNumber:
            return False
        return bool(self.contains_keys(number_keys([e164]))[0])

    def contains_many(self, numbers: Sequence[str | None]) -> list[bool]:
        """Per number (E.164 as `normalize_many` returns, or None): whether it is listed."""
        return self.contains_keys(number_keys(numbers)).tolist()  # type: ignore[no-any-return]

    def listed(self, numbers: Sequence[str | None]) -> list[int]:
        """The positions of the listed numbers among ``numbers`` (as for `contains_many`)."""
        return self.listed_keys(number_keys(numbers))

    def listed_keys(self, keys: _U64 | array[int]) -> list[int]:
        """The positions of the listed keys among ``keys`` (`number_keys`, or
        `dispatcher.keys.number_keys`; 0 for none)."""
        if isinstance(keys, array):
            keys = np.frombuffer(keys, dtype=np.uint64)
        return self._listed(keys).tolist()  # type: ignore[no-any-return]

    def contains_keys(self, keys: _U64) -> npt.NDArray[np.bool_]:
        """Per key of `number_keys` (0 is never listed): whether it is listed."""
        found = np.zeros(len(keys), dtype=bool)
        found[self._listed(keys)] = True
        return found

    def _listed(self, keys: _U64) -> npt.NDArray[np.intp]:
        """The positions of the listed keys, ascending."""
        maybe = self._filter.maybe(keys, None)
        if not len(maybe):
            return maybe
        asked = keys.take(maybe)
        # Sorted, the queries of one block read its keys one after another.
        order = np.argsort(asked, kind="stable")  # 12 ns a key here, the default kind 45
        listed = maybe.take(order)[self._keys.contains(asked.take(order))]
        listed.sort()
        return listed


class _Growing:
    """An append-only uint64 array that grows in place (realloc: no copy of big arrays)."""

    def __init__(self) -> None:
        self._data = np.empty(1 << 16, dtype=np.uint64)
        self._size = 0

    def extend(self, values: _U64) -> None:
        end = self._size + len(values)
        if end > len(self._data):
            self._data.resize(max(end, len(self._data) * 3 // 2), refcheck=False)
        self._data[self._size : end] = values
        self._size = end

    def take(self) -> _U64:
        data, self._data = self._data, np.empty(0, dtype=np.uint64)
        data.resize(self._size, refcheck=False)
        return data


def _sorted_distinct(keys: _U64) -> _U64:
    """``keys`` sorted with repeats removed, in place (``np.unique`` sorts a copy, and in
    numpy 2.4 took 25 s on 10 M sorted integers).

    A list kept in order (an export sorted by number, or files each sorted) is sorted
    by merging its runs (timsort, ``kind="stable"``): 0.3 ms for 1 M sorted keys, 2.6
    for 100 sorted blocks, against 48 to 52 for the default quicksort, which is 15 %
    faster on keys in no order (51 against 61 ms). Counting the descents that tell
    them apart takes 0.3 ms. Where numpy's quicksort is the slow one of `_sort_rows_first`,
    keys in no order (up to `ROWS_MERGED`) are sorted in rows first."""
    size = len(keys)
    if size < 2:
        return keys
    descents = np.count_nonzero(keys[1:] < keys[:-1])
    if descents * 64 < size:
        keys.sort(kind="stable")
    elif native.core is not None and size <= ROWS_MERGED:
        native.core.sort_keys(keys)  # radix: 1 M keys 16.5 against 49-56 ms (rows first)
    elif 2 * ROW <= size <= ROWS_MERGED and _sort_rows_first():
        whole = size - size % ROW
        keys[:whole].reshape(-1, ROW).sort(axis=1)
        keys[whole:].sort()
        keys.sort(kind="stable")
    else:
        keys.sort()
    kept = 1
    step = 1 << 20
    for start in range(1, size, step):
        block = keys[start : start + step]
        new = block != keys[start - 1 : start - 1 + len(block)]
        values = block[new]  # a copy, taken before anything is written over the block
        keys[kept : kept + len(values)] = values
        kept += len(values)
    keys.resize(kept, refcheck=False)
    return keys


#: Keys a row, when sorted in rows first (`_sort_rows_first`).
ROW: Final = 256
#: At most this many keys are sorted in rows first: timsort's merge takes a buffer of
#: half the keys (16 MiB here), which at 10 M keys raised the load's peak from 109 to
#: 137 MiB added, for 0.16 s of its 2.3.
ROWS_MERGED: Final = 1 << 22
_rows_first: bool | None = None


def _sort_rows_first() -> bool:
    """Whether numpy sorts with AVX-512 on an AMD Zen 4: its quicksort (x86-simd-sort)
    then partitions with a compress-store that Zen 4 runs as microcode, 55 ns a key at
    1 M keys where its AVX2 version takes 12 to 16, but it sorts arrays of up to 256
    keys with sorting networks, no partition: 2.5 ns a key. There, rows of `ROW` keys
    each sorted and then merged by timsort take 44 against 54 ms for 1 M keys in no
    order (min of 7, alternated, at load 1.5; 0.65 against 0.81 s for 10 M, but see
    `ROWS_MERGED`); elsewhere the merge would cost 3 times the quicksort. Zen 4 is
    AMD's family 25 with AVX-512 (Zen 3, the same family, has none; Zen 5, family 26,
    compresses fast)."""
    global _rows_first
    if _rows_first is None:
        _rows_first = _numpy_sorts_with_avx512() and _amd_family() == 25
    return _rows_first


def _numpy_sorts_with_avx512() -> bool:
    """Whether numpy dispatches to its AVX-512 (Skylake-X) loops: not where the CPU lacks
    them, nor when NPY_DISABLE_CPU_FEATURES turned them off."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:  # numpy 2, then numpy 1
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return bool(features.get("AVX512_SKX"))
    return False  # pragma: no cover - a numpy without the table


def _amd_family(cpuinfo: str = "/proc/cpuinfo") -> int | None:
    """The CPU family of an AMD processor (Linux), else None."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return None
    if "AuthenticAMD" not in head:
        return None
    found = re.search(r"^cpu family\s*:\s*([0-9]+)", head, re.MULTILINE)
    return int(found[1]) if found else None


# --- reading a list file ---------------------------------------------------------------


def _load_file(path: str, keys: _Growing) -> ListStats:
    stats = ListStats(path=path)
    try:
        source = open_source(path, BLOCK)
    except InputError as exc:
        raise ConfigError(f"opt-out list: {exc}") from None
    try:
        extract: _Extractor | None = None
        line = 1  # of the block's first line
        for text in _blocks(source):
            lines_skipped = 0
            if extract is None:
                extract, lines_skipped = _detect(path, text)
                if extract is None:  # only blank lines so far
                    line += text.count("\n") + 1
                    continue
                stats.format = extract.name
            line += _load_block(text, line, lines_skipped, extract, stats, keys)
    except InputError as exc:
        raise ConfigError(f"opt-out list: {exc}") from None
    finally:
        source.close()
    return stats


def _blocks(source: ByteSource) -> Iterator[str]:
    """Texts of whole lines without the last newline (their lines are counted by
    `_load_block`, which can often tell without a pass over the text). A line longer
    than a block is gathered in parts and joined once (no copy a block read)."""
    decoder: codecs.IncrementalDecoder | None = None
    pending: list[str] = []  # the start of a line whose end is not read yet
    while True:
        data = source.read()
        if decoder is None:
            if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                decoder = codecs.getincrementaldecoder("utf-16")("replace")
            else:
                decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
        text = decoder.decode(data, final=not data)
        if "\r" in text:
            text = text.replace("\r", "")
        rest = ""
        if data:
            cut = text.rfind("\n")
            if cut < 0:
                if text:
                    pending.append(text)
                continue
            text, rest = text[:cut], text[cut + 1 :]
        if pending:
            pending.append(text)
            text = "".join(pending)
            pending.clear()
        if rest:
            pending.append(rest)
        if not data and not text:
            return
        yield text
        if not data:
            return


class _Extractor:
    """How one format gives the raw number of each line."""

    name = "numbers"

    def raws(self, text: str) -> list[str]:
        """One string per line of ``text`` ("" where the line has none)."""
        return text.split("\n")

    def reason(self, line: str) -> str:
        """Why a non-blank line gave no number."""
        return _number_reason(line)


class _Ndjson(_Extractor):
    name = "ndjson"

    def raws(self, text: str) -> list[str]:
        # The fast path reads the lines that start with their "to" (as `dispatcher gen`
        # writes them; results files put "line" first) with one regex over the block, and
        # skips the rest of each line: 0.36 against 1.1 µs a line for orjson and the look-up
        # of "to". It is taken only when every line of the block starts so and holds
        # '"to"' once (so no line has a second "to" that JSON would take instead).
        tos: list[str] = _FIRST_TO(text)
        if "" not in tos and text.count('"to"') == len(tos):
            return tos
        # One orjson call per line, not one over the lines joined into an array (20 %
        # faster): there, a line holding two objects and two lines making one string
        # would shift every later line's number onto its neighbour.
        lines = text.split("\n")
        try:
            objects = list(map(_loads, lines))
        except orjson.JSONDecodeError:
            return [_to_of(line) for line in lines]
        found = [o.get("to") if type(o) is dict else None for o in objects]
        try:
            "".join(found)  # type: ignore[arg-type]
        except TypeError:  # some line has no "to" string
            return [to if type(to) is str else "" for to in found]
        return found  # type: ignore[return-value]

    def reason(self, line: str) -> str:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return "not JSON"
        if type(obj) is not dict:
            return "not a JSON object"
        to = obj.get("to")
        if type(to) is not str:
            return "no 'to' string"
        return _number_reason(to)


_loads: Final = orjson.loads
# Per line: the "to" string of a line that starts with it (or with "line" and then it),
# "" for any other line. [^"\\\n]: a value with an escape takes the careful path.
_FIRST_TO: Final = re.compile(
    r'^(?:\{\s*(?:"line"\s*:\s*[0-9]+\s*,\s*)?"to"\s*:\s*"([^"\\\n]*)".*|.*)$', re.MULTILINE
).findall


def _to_of(line: str) -> str:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ""
    to = obj.get("to") if type(obj) is dict else None
    return to if type(to) is str else ""


class _Csv(_Extractor):
    def __init__(self, separator: str, column: int, header: str) -> None:
        self.name = f"csv:{header}"
        self._separator = separator
        self._column = column
        self._header = header
        sep = re.escape(separator)
        value = rf'(?:"(?:[^"\n]|"")*"|[^{sep}"\n]*)'
        # One match per line, the column's field in group 1 ("" for a line that is too
        # short or not CSV): the same trick as `numbers.normalize_many`.
        self._fields = re.compile(
            rf"^(?:(?:{value}{sep}){{{column}}}({value})(?:{sep}[^\n]*)?|.*)$", re.MULTILINE
        ).findall

    def raws(self, text: str) -> list[str]:
        fields: list[str] = self._fields(text)
        if '"' in text:
            fields = [f[1:-1].replace('""', '"') if f[:1] == '"' else f for f in fields]
        return fields

    def reason(self, line: str) -> str:
        row = next(csv.reader([line], delimiter=self._separator), [])
        if len(row) <= self._column:
            return f"no '{self._header}' field"
        value = row[self._column]
        if not value.strip():
            return f"the '{self._header}' field is empty"
        if value != (self.raws(line) or [""])[0]:
            return "quotes not at the edges of a field"
        return _number_reason(value)


def _number_reason(raw: str) -> str:
    try:
        normalize(raw)
    except InvalidNumber as exc:
        return str(exc)
    return "not a number"  # pragma: no cover - only when normalize and normalize_many disagree


def _detect(path: str, text: str) -> tuple[_Extractor | None, int]:
    """The format of a file from its first non-blank line, and how many lines of ``text``
    to skip (a CSV header and the blank lines before it)."""
    skipped = 0
    start = 0
    while True:  # to the first non-blank line, not through the whole block
        skipped += 1
        end = text.find("\n", start)
        first = (text[start:] if end < 0 else text[start:end]).strip()
        if first:
            break
        if end < 0:
            return None, 0
        start = end + 1
    if first.startswith("{"):
        return _Ndjson(), 0
    if first.strip('"').lower() in COLUMNS:  # a header of one column
        return _Csv(",", 0, first.strip('"').lower()), skipped
    for separator in _SEPARATORS:
        if separator not in first:
            continue
        names = [name.strip().lower() for name in next(csv.reader([first], delimiter=separator))]
        for wanted in COLUMNS:
            if wanted in names:
                return _Csv(separator, names.index(wanted), wanted), skipped
    if any(separator in first for separator in _SEPARATORS) and normalize_many([first]) == [None]:
        shown = first if len(first) <= 80 else first[:77] + "..."
        raise ConfigError(
            f"opt-out list {path}: its first line looks like a CSV header without a "
            f"'to', 'number' or 'phone' column: {shown!r}"
        )
    return _Extractor(), 0


def _load_block(
    text: str, first_line: int, skip: int, extract: _Extractor, stats: ListStats, keys: _Growing
) -> int:
    """Add the keys of ``text`` (whose first line is numbered ``first_line``; ``skip``
    lines of it are not entries) to ``keys``; return how many lines it has."""
    if skip:
        first_line += skip
    # One number a line: the text is its own list of raw numbers (no split, no join).
    plain = type(extract) is _Extractor
    raws = None if plain else extract.raws(text)[skip:]
    plain_keys = _plain_keys(text if raws is None else "\n".join(raws))
    if plain_keys is not None:  # every entry a number: no line to look at one by one
        block_keys, international = plain_keys
        stats.entries += len(block_keys)
        stats.numbers += len(block_keys)
        keys.extend(block_keys)
        bad = np.flatnonzero(~international)
        if len(bad):
            raws = text.split("\n") if raws is None else raws
            _not_valid(bad, block_keys, raws, None, first_line, stats)
        # A key a line when the text is the list (the same count as its newlines + 1).
        return len(block_keys) if plain else text.count("\n") + 1
    if raws is None:
        raws = text.split("\n")
    lines: list[str] | None = None
    numbers = normalize_many(raws)
    entries = len(numbers)
    if None in numbers:
        lines = text.split("\n")[skip:]
        failed = [i for i, number in enumerate(numbers) if number is None]
        for i in failed:
            line = lines[i]
            if not line.strip():
                entries -= 1
                continue
            stats.unparseable += 1
            if len(stats.unparseable_examples) < EXAMPLES:
                stats.unparseable_examples.append(
                    Problem(line=first_line + i, text=_excerpt(line), reason=extract.reason(line))
                )
    stats.entries += entries
    block_keys = number_keys(numbers)
    valid = block_keys != 0
    if lines is not None:  # some failed: keep the positions for the examples below
        positions = np.flatnonzero(valid)
        block_keys = block_keys[positions]
    else:
        positions = None
    stats.numbers += len(block_keys)
    keys.extend(block_keys)
    bad = np.flatnonzero(~_international(block_keys))
    _not_valid(bad, block_keys, raws, positions, first_line, stats)
    return text.count("\n") + 1


def _not_valid(
    bad: npt.NDArray[np.intp],
    block_keys: _U64,
    raws: list[str],
    positions: npt.NDArray[np.intp] | None,
    first_line: int,
    stats: ListStats,
) -> None:
    """Count the keys at ``bad`` as not valid, with examples (``positions``: of each key
    among ``raws``, when not the same)."""
    stats.not_valid += len(bad)
    for i in bad[: EXAMPLES - len(stats.not_valid_examples)].tolist():
        at = int(positions[i]) if positions is not None else i
        number = f"+{int(block_keys[i])}"
        stats.not_valid_examples.append(
            Problem(line=first_line + at, text=_excerpt(raws[at]), reason=_why_not_valid(number))
        )


#: The bytes of a block of plain numbers: digits, + and newline.
_PLAIN_BYTES: Final = b"0123456789+\n"


def _plain_keys(text: str) -> tuple[_U64, npt.NDArray[np.bool_]] | None:
    """The keys of ``text``'s lines when every line is a number as `normalize` takes it
    (ASCII; its separators removed, an optional ``+`` and 8 to 15 digits, the first not
    0) — the usual block of a list — and per key whether it can be an international
    number (`_international`); else None, and the careful path decides line by line.

    The checks are a few vectorised passes over the bytes and the line starts (a block
    without separators is not copied to remove them), the digits are parsed where the
    checks found them (`_digits_value`), and the country check reads each number's
    length and first three digits there too: 84 against 101 ms for 1 M numbers with
    the country check (min of 15, alternated in one process at load 1.7) when it took
    a C parse of the text and a division a key; against 300 ns a number for
    `normalize_many` and `number_keys` on the lines. Telling a block of digits, pluses
    and newlines by numpy compares and counts rather than ``bytes.translate`` and
    ``bytes.count`` took that to 33-35 against 42-55 ms (min of 15, alternated)."""
    if not text or not text.isascii():
        return None
    if native.core is not None:
        return _plain_keys_in_c(text)
    data = text.encode()
    octets = np.frombuffer(data, dtype=np.uint8)
    pluses = np.count_nonzero(octets == _PLUS)
    # Bytes that are not digits (``x - 48`` wraps below 0) but newlines and pluses: none
    # in the usual block, told by numpy compares and counts (cheaper than a `translate`).
    other = octets - _ZERO
    other = np.greater(other, 9, out=other.view(bool))
    if np.count_nonzero(other) != np.count_nonzero(octets == _NEWLINE) + pluses:
        if data.translate(None, _PLAIN_BYTES).translate(None, ASCII_SEPARATORS):
            return None
        data = data.translate(None, ASCII_SEPARATORS)
        if not data:
            return None
        octets = np.frombuffer(data, dtype=np.uint8)
        pluses = np.count_nonzero(octets == _PLUS)
    ends = np.flatnonzero(octets == _NEWLINE)
    if data.endswith(b"\n"):  # an empty last line
        return None
    starts = np.empty(len(ends) + 1, dtype=np.intp)
    starts[0] = 0
    starts[1:] = ends + 1
    ends = np.append(ends, len(octets))
    # A + only at the start of a line (a line starts with one + at most, so every + is
    # at a line start when they are as many), and the digits after it.
    leading = octets[starts] == _PLUS
    if pluses != np.count_nonzero(leading):
        return None
    first = starts + leading
    digits = ends - first
    if digits.min() < MIN_DIGITS or digits.max() > MAX_DIGITS:
        return None
    lead = octets[first]
    if (lead == _ZERO).any():
        return None
    keys = _digits_value(data, ends, digits)
    # The first three digits (every number has 8 or more) index the country table.
    prefix = lead.astype(np.intp)
    for offset in (1, 2):
        prefix *= 10
        prefix += octets[first + offset]
    prefix -= _ZERO * 111
    return keys, _country_table()[digits, prefix]


def _plain_keys_in_c(text: str) -> tuple[_U64, npt.NDArray[np.bool_]] | None:
    """`_plain_keys` by the C part (`dispatcher.native`), one pass over the text: 1 M
    numbers in 17 against 43-59 ms (in process, CI on the other core)."""
    assert native.core is not None
    room = (len(text) + 1) // (MIN_DIGITS + 1) + 1  # each line has 8 digits and a newline
    keys = np.empty(room, dtype=np.uint64)
    valid = np.empty(room, dtype=bool)
    table = _country_table()
    count = native.core.plain_keys(
        text, ASCII_SEPARATORS, table, MIN_DIGITS, MAX_DIGITS, keys, valid
    )
    if count is None:
        return None
    return keys[:count], valid[:count]


def _digits_value(data: bytes, ends: npt.NDArray[np.intp], digits: npt.NDArray[np.intp]) -> _U64:
    """The value of the ``digits[i]`` digits (8 to 15) that end before ``ends[i]`` in
    ``data``: two 8-byte words a number (its last 8 digits, and the 8 bytes before them
    with those that are not its digits zeroed), each turned into its value by three
    multiply-and-shift steps on all its bytes at once (SWAR): a list's load took 128
    against 137 ms at 1 M numbers with ``np.fromstring`` over the text instead (min of
    6, alternated)."""
    padded = bytes(8) + data  # so that the word before a first line's last 8 digits exists
    words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    low = _eight_digits(words[ends])  # the word of padded[end : end + 8], data[end - 8 : end]
    high = words[ends - 8]
    high &= _HIGH_DIGITS[digits]
    value = _eight_digits(high)
    value *= _E8
    value += low
    return value


def _eight_digits(words: _U64) -> _U64:
    """The value of each word's 8 ASCII digits (the first in the lowest byte; a zero byte
    reads as a 0), in place."""
    for mask, multiplier, shift in _SWAR:
        words &= mask
        words *= multiplier
        words >>= shift
    return words


_SWAR: Final = (
    (np.uint64(0x0F0F0F0F0F0F0F0F), np.uint64(10 << 8 | 1), np.uint64(8)),
    (np.uint64(0x00FF00FF00FF00FF), np.uint64(100 << 16 | 1), np.uint64(16)),
    (np.uint64(0x0000FFFF0000FFFF), np.uint64(10000 << 32 | 1), np.uint64(32)),
)
_E8: Final = np.uint64(10**8)
#: Per digit count (8 to 15): the bytes of the word before the last 8 digits that are
#: digits of the number (its top ``count - 8`` bytes).
_HIGH_DIGITS: Final = np.array(
    [((1 << 64) - 1) ^ ((1 << 8 * (16 - n)) - 1) if n > 8 else 0 for n in range(MAX_DIGITS + 1)],
    dtype=np.uint64,
)


_NEWLINE: Final = ord("\n")
_PLUS: Final = ord("+")
_ZERO: Final = ord("0")


def _excerpt(line: str) -> str:
    line = line.strip()
    return line if len(line) <= 60 else line[:57] + "..."


# --- the country check -----------------------------------------------------------------

#: Indexed by a number's digit count and its first three digits: whether a country code
#: starts it with a national length it allows (`_country_table`).
_table: npt.NDArray[np.bool_] | None = None


def country_lengths() -> dict[int, frozenset[int]]:
    """Country calling code → the lengths its national numbers can have (libphonenumber's,
    as stored in `dispatcher.country_lengths`)."""
    return {
        code: frozenset(n for n in range(mask.bit_length()) if mask >> n & 1)
        for code, mask in LENGTHS.items()
    }


def _country_table() -> npt.NDArray[np.bool_]:
    """[digits, first three digits] → valid for some country (16 KB, made once: the codes
    are a prefix code, so the first three digits name at most one)."""
    global _table
    if _table is None:
        table = np.zeros((MAX_DIGITS + 1, 1000), dtype=bool)
        for code, lengths in LENGTHS.items():
            size = len(str(code))
            low = code * 10 ** (3 - size)
            high = (code + 1) * 10 ** (3 - size)
            for national in range(MAX_DIGITS + 1 - size):
                if lengths >> national & 1:
                    table[size + national, low:high] = True
        _table = table
    return _table


def _international(keys: _U64) -> npt.NDArray[np.bool_]:
    """Per key: whether some country code starts it with a national length it allows.

    One uint64 division a key (its first three digits; the keys have 8 to 15), then one
    look-up in `_country_table` by the digit count and those three digits (what
    `_plain_keys` reads from the bytes instead, for the blocks it takes)."""
    digits = np.searchsorted(_POW10, keys, side="right")
    prefix = keys // _POW10[digits - 3]  # the first three digits
    return _country_table()[digits, prefix.astype(np.intp)]


def _why_not_valid(number: str | None) -> str:
    digits = (number or "").lstrip("+")
    for size in (1, 2, 3):
        code = int(digits[:size])
        mask = LENGTHS.get(code, 0)
        if mask:
            allowed = [n for n in range(mask.bit_length()) if mask >> n & 1]
            lengths = ", ".join(map(str, allowed))
            return (
                f"country code {code} has national numbers of {lengths} digits, "
                f"not {len(digits) - size}"
            )
    return "no country has this country code"
