"""A chunk's number keys, text hashes and line numbers as packed 64-bit words
(`array.array`, or a memoryview of words), made by the C part (`dispatcher.native`) without numpy.

The campaign checks work on whole chunks of these words: the opt-out lists and the
duplicate record look numbers up by their key (the E.164 digits as an integer, see
`dispatcher.dedupe`), texts by their XXH3-64, lines by their number. Where the C part
is built, the duplicate record is held in C too (`dispatcher.dedupe.NativeRecord`), and
nothing on that path needs numpy: its import alone was 0.33 G instructions of a 1 M-line
``send`` of 12.6 G. The numpy code (`dispatcher.sorted_keys.number_keys`,
`dispatcher.dedupe_runs`) is the twin, run where the C part is not, and the tests
compare the two.

Every function here needs `dispatcher.native.core`; callers check it first.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

import xxhash

from dispatcher import native
from dispatcher.numbers import number_key

_xxh3: Final = xxhash.xxh3_64_intdigest

#: Packed words: an ``array.array``, or a memoryview of words (`empty`).
Words: TypeAlias = "array[int] | memoryview"


def empty(count: int, typecode: Literal["Q", "q"] = "Q") -> Words:
    """Room for ``count`` words (``"Q"``: uint64, ``"q"``: int64) that the C part writes
    every one of: a bytearray it made without zeroing, seen as words. Zeroed and copied
    into an ``array`` (``array(typecode, bytes(8 * count))``), the chunks' words cost
    0.03 G of memset and 0.01 G of memcpy over a 1 M-line job."""
    assert native.core is not None
    return memoryview(native.core.empty(8 * count)).cast(typecode)


def number_keys(numbers: Sequence[str | None]) -> Words:
    """The keys of E.164 numbers (as `dispatcher.numbers.normalize_many` returns them;
    0 for None), as `dispatcher.sorted_keys.number_keys` gives them; a ValueError for a
    string that is not a normalised number."""
    assert native.core is not None
    keys = empty(len(numbers))
    if native.core.number_keys(numbers, keys):
        return keys
    # int64 first, as the twin's careful path: an OverflowError from 2^63 up alike
    return array("Q", array("q", [number_key(n) for n in numbers]).tobytes())


def text_hashes(texts: str | Sequence[str], count: int) -> Words:
    """The XXH3-64 of each text's UTF-8 (lone surrogates passed through): one text (a
    str, or the same str object throughout, as a template without placeholders renders
    it) is hashed once."""
    assert native.core is not None
    if isinstance(texts, str) or one_text(texts):
        text = texts if isinstance(texts, str) else texts[0]
        return array("Q", [text_hash(text)]) * count
    hashes = empty(count)
    native.core.text_hashes(texts, hashes)
    return hashes


def text_hash(text: str) -> int:
    """The XXH3-64 of one text's UTF-8, lone surrogates passed through (the encode that
    refuses them is the faster one, tried first)."""
    try:
        return _xxh3(text.encode())
    except UnicodeEncodeError:  # a lone surrogate
        return _xxh3(text.encode("utf-8", "surrogatepass"))


def one_text(texts: Sequence[str]) -> bool:
    """Whether every text is one and the same str (a template without placeholders
    renders the same object for every line): hashed once, not once a line. Free when
    the texts differ: the first and the last are seldom one object then."""
    return bool(texts) and texts[0] is texts[-1] and texts.count(texts[0]) == len(texts)


def column(rows: Sequence[tuple[object, ...]], at: int) -> Words:
    """Item ``at`` of each row (an `dispatcher.models.Entry`: 0 is its line) as int64."""
    assert native.core is not None
    out = empty(len(rows), "q")
    if native.core.column_ints(rows, at, out):
        return out
    return array("q", [row[at] for row in rows])  # type: ignore[misc]


def column_keys(rows: Sequence[tuple[object, ...]], at: int) -> Words:
    """The key of item ``at`` of each row (an Entry's normalised number: 1)."""
    assert native.core is not None
    out = empty(len(rows))
    if native.core.column_keys(rows, at, out):
        return out
    return number_keys([row[at] for row in rows])  # type: ignore[misc]


def take_at(keys: Words, lines: Words, first: int) -> Words | None:
    """``keys[line - first]`` for each of ``lines``, or None when one is outside."""
    assert native.core is not None
    out = empty(len(lines))
    return out if native.core.take_at(keys, lines, first, out) else None


def is_words(values: object) -> bool:
    """Whether ``values`` are this module's words (not a numpy array)."""
    return isinstance(values, (array, memoryview))


def is_packed(values: object) -> bool:
    """Whether ``values`` are packed words (an `array.array` or a numpy array), not a
    list of Python objects (told without importing numpy)."""
    return hasattr(values, "itemsize")
