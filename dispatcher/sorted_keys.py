"""The opt-out set's numpy code: the twin of the C part (`dispatcher.native`), which
runs where it is built — and what the numpy duplicate record (`dispatcher.dedupe_runs`)
is made of.

`dispatcher.suppress` reads list files and holds a `dispatcher.suppress.SuppressionList`;
where the C part is built it never imports this module (nor numpy, whose import alone
is 0.33 G instructions): the keys are `array.array` words (`dispatcher.keys`), the set is
the C part's ``KeySet``, the load's sort its ``sorted_distinct``. Here are the same
steps in numpy, each with its measurements: a chunk's numbers parsed (`number_keys`),
the keys sorted and made distinct in place (`sorted_distinct`), a block of plain numbers
read by vectorised passes (`plain_keys`), the country check (`international`), the
sorted keys and their index (`SortedKeys`), the Bloom filter (`KeyFilter`) and the set
(`NumpySet`). The tests check each against the C part.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from dispatcher.numbers import ASCII_SEPARATORS, MAX_DIGITS, MIN_DIGITS, number_key

_U64 = npt.NDArray[np.uint64]

_NO_KEYS: Final = np.empty(0, dtype=np.int64)
_POW10: Final = np.array([10**i for i in range(MAX_DIGITS + 2)], dtype=np.uint64)


def number_keys(numbers: Sequence[str | None]) -> _U64:
    """The E.164 numbers as integers (their digits), 0 for None.

    ``numbers`` are what `dispatcher.numbers.normalize_many` returns, parsed by one
    numpy call over their join (42 ns a number, against 90 for ``int`` one by one);
    anything it does not expect takes the careful path. The twin of
    `dispatcher.keys.number_keys` (the C part's one loop).
    """
    if not numbers:
        return np.empty(0, dtype=np.uint64)
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
        word, bits = self.spots(keys, hashes)
        return np.flatnonzero((self.words.take(word) & bits) == bits)

    def maybe_add(self, keys: _U64, hashes: _U64 | None) -> npt.NDArray[np.intp]:
        """`maybe`, then `add` of every pair: what a record that adds each pair it asks
        about needs (a pair it has is in the filter already). The C part probes and sets
        one word a pair in one pass, where a pair whose bits an earlier one of the call
        set is among the positions too (a false positive more, which only costs its
        look-up)."""
        asked = self.maybe(keys, hashes)
        self.add(keys, hashes)
        return asked

    def add(self, keys: _U64, hashes: _U64 | None) -> None:
        """Add the pairs."""
        word, bits = self.spots(keys, hashes)
        np.bitwise_or.at(self.words, word, bits)


_MIX1: Final = np.uint64(0x9E3779B97F4A7C15)
_MIX2: Final = np.uint64(0xBF58476D1CE4E5B9)
_S32: Final = np.uint64(32)
_S29: Final = np.uint64(29)
_LOW6: Final = np.uint64(63)
_ONE: Final = np.uint64(1)
_BIT_SHIFTS: Final = (np.uint64(6), np.uint64(12), np.uint64(18))


class Growing:
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


def sorted_distinct(keys: _U64) -> _U64:
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


#: The bytes of a block of plain numbers: digits, + and newline.
_PLAIN_BYTES: Final = b"0123456789+\n"


def plain_keys(text: str) -> tuple[_U64, npt.NDArray[np.bool_]] | None:
    """The keys of ``text``'s lines when every line is a number as `normalize` takes it
    (ASCII; its separators removed, an optional ``+`` and 8 to 15 digits, the first not
    0) — the usual block of a list — and per key whether it can be an international
    number (`international`); else None, and the careful path decides line by line.

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


def _country_table() -> npt.NDArray[np.bool_]:
    """[digits, first three digits] → valid for some country (`dispatcher.suppress`'s
    table, as a 2-D numpy view of its bytes)."""
    from dispatcher.suppress import country_table

    return np.frombuffer(country_table(), dtype=bool).reshape(MAX_DIGITS + 1, 1000)


def international(keys: _U64) -> npt.NDArray[np.bool_]:
    """Per key: whether some country code starts it with a national length it allows.

    One uint64 division a key (its first three digits; the keys have 8 to 15), then one
    look-up in `_country_table` by the digit count and those three digits (what
    `plain_keys` reads from the bytes instead, for the blocks it takes)."""
    digits = np.searchsorted(_POW10, keys, side="right")
    prefix = keys // _POW10[digits - 3]  # the first three digits
    return _country_table()[digits, prefix.astype(np.intp)]


class NumpySet:
    """A `dispatcher.suppress.SuppressionList`'s keys in numpy: `SortedKeys` behind a
    `KeyFilter` of 16 bits a key (the C part's ``KeySet`` is its twin)."""

    __slots__ = ("_filter", "_keys")

    def __init__(self, keys: _U64) -> None:
        """``keys``: sorted distinct keys (the array is padded in place)."""
        size = len(keys)
        keys.resize(size + SortedKeys.STEP, refcheck=False)  # in place for a big array
        keys[size:] = SortedKeys.PAD
        self._keys = SortedKeys(keys, size)
        # 16 bits a number: most recipients are on no list, and are told so by one word.
        self._filter = KeyFilter(2 * size)
        for start in range(0, size, FILTER_BLOCK):
            self._filter.add(keys[start : min(start + FILTER_BLOCK, size)], None)

    @property
    def size(self) -> int:
        return self._keys.size

    @property
    def keys(self) -> _U64:
        return self._keys.table[: self._keys.size]

    @property
    def nbytes(self) -> int:
        """Bytes of the keys (8 a number), their index (1/8 byte a number) and filter (2)."""
        return int(self._keys.table.nbytes + self._keys.index.nbytes + self._filter.nbytes)

    def listed(self, keys: _U64) -> list[int]:
        """The positions of the listed keys, ascending."""
        maybe = self._filter.maybe(keys, None)
        if not len(maybe):
            return []
        asked = keys.take(maybe)
        # Sorted, the queries of one block read its keys one after another.
        order = np.argsort(asked, kind="stable")  # 12 ns a key here, the default kind 45
        listed = maybe.take(order)[self._keys.contains(asked.take(order))]
        listed.sort()
        return listed.tolist()  # type: ignore[no-any-return]
