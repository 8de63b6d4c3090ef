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

**Storage: a sorted array of 64-bit integers**, the E.164 digits as a number (at most
15 digits, below 2^50): 8 bytes per distinct number (76 MiB for 10 M), plus an index of
every 64th key (1/8 byte a number) and a Bloom filter of 2 bytes a number that tells
most recipients they are on no list with one word. Where the C part is built it holds
them (its ``KeySet`` over an ``array('Q')``, the chunk's keys in `dispatcher.keys`'
words) and numpy is never imported — its import alone was 0.33 G instructions of the
issue-13 run's 13.1 G; the numpy twin is `dispatcher.sorted_keys` (`NumpySet`). A chunk
of recipients is checked in one call: its numbers become integers in one C parse, the
filter rules most of them out, and the rest are looked up through the index. A
compressed bitmap (``pyroaring.BitMap64``) was measured too: it is 4 times smaller on
these numbers (2 bytes each: 20 MB for 10 M, as numbers of one country share their high
bits), but from Python a chunk costs 190 ns a number just to build the bitmap to
intersect with, 440 ns with the answer per line, and 175 ns per ``in`` one by one. The
load reads blocks of 1 MiB, with the garbage collector paused (a dict per NDJSON line
otherwise costs more in collections than in parsing), appends the keys to an array that
grows in place, and sorts and de-duplicates it in place at the end (in C by radix with
a spare array up to 4 Mi keys, beyond that by bytes from the top with none): the peak
is the array and one block's Python objects. A block
whose every entry is a plain number (`_plain_keys`: ASCII, an optional ``+`` and 8 to 15
digits once separators are removed — what lists mostly are) skips the line-by-line
normalisation: one C pass over its bytes, which also parses the digits and checks the
country (17 ms for 1 M numbers; the numpy twin's vectorised checks about 85 ns a
number), against 300 ns a number; NDJSON and CSV blocks take it for
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
import os
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from dispatcher import heap, native
from dispatcher import keys as packed_words
from dispatcher.country_lengths import LENGTHS
from dispatcher.errors import ConfigError, InputError, InvalidNumber
from dispatcher.numbers import (
    ASCII_SEPARATORS,
    MAX_DIGITS,
    MIN_DIGITS,
    normalize,
    normalize_many,
)
from dispatcher.sources import ByteSource, open_source

if TYPE_CHECKING:
    from dispatcher.dedupe import Packed

#: Examples kept per file and per kind of problem.
EXAMPLES: Final = 5
#: Bytes read (and decoded) at a time. With `dispatcher.heap` settled, a block's arrays
#: reuse the last one's memory at any size: 64 KiB to 1 MiB load a list of numbers in
#: the same time, and NDJSON is faster with 1 MiB (600 against 720 ms for 1 M lines).
BLOCK: Final = 1 << 20
COLUMNS: Final = ("to", "number", "phone")
_SEPARATORS: Final = (",", ";", "\t")


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
    """A set of E.164 numbers, checked a chunk at a time: the C part's ``KeySet`` over
    `array.array` keys where it is built (no numpy), else its numpy twin
    (`dispatcher.sorted_keys.NumpySet`)."""

    __slots__ = ("_set", "stats")

    def __init__(self, keys: Packed, stats: Sequence[ListStats] = ()) -> None:
        """``keys``: sorted distinct number keys (`load` and `from_numbers` build them):
        packed words for the C part's set (held, not copied), a numpy array for the
        twin's (padded in place)."""
        if native.core is not None:
            self._set: _KeySet = native.core.KeySet(keys)
        else:
            from dispatcher.sorted_keys import NumpySet

            self._set = NumpySet(keys)  # type: ignore[arg-type]
        self.stats = tuple(stats)

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]]) -> SuppressionList:
        """Read every list file; raise `ConfigError` naming a file that cannot be read."""
        heap.settle()  # the blocks' arrays reuse the heap (`dispatcher.heap`)
        keys = _new_keys()
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
        optout = cls(_sorted_distinct(keys), stats)
        heap.release()  # what the blocks held, kept by the heap since `settle`
        return optout

    @classmethod
    def from_numbers(cls, numbers: Sequence[str]) -> SuppressionList:
        """A list of the given raw numbers (normalised here; unparseable ones dropped)."""
        keys = _number_keys(normalize_many(numbers))
        return cls(_sorted_distinct(_packed([key for key in keys if key])))

    def __len__(self) -> int:
        """Distinct numbers over all the files."""
        return int(self._set.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the keys (8 a number), their index (1/8 byte a number) and filter (2)."""
        return int(self._set.nbytes)

    @property
    def keys(self) -> Packed:
        """The listed numbers' keys, ascending (the set's own: not to be changed)."""
        keys: Packed = self._set.keys
        return keys

    def __contains__(self, number: object) -> bool:
        """Whether ``number`` (any layout `normalize` accepts) is listed."""
        if not isinstance(number, str):
            return False
        try:
            e164 = normalize(number)
        except InvalidNumber:
            return False
        return bool(self.listed([e164]))

    def contains_many(self, numbers: Sequence[str | None]) -> list[bool]:
        """Per number (E.164 as `normalize_many` returns, or None): whether it is listed."""
        found = [False] * len(numbers)
        for position in self.listed(numbers):
            found[position] = True
        return found

    def listed(self, numbers: Sequence[str | None]) -> list[int]:
        """The positions of the listed numbers among ``numbers`` (as for `contains_many`)."""
        return self.listed_keys(_number_keys(numbers))

    def listed_keys(self, keys: Packed) -> list[int]:
        """The positions of the listed keys among ``keys`` (number keys, 0 for none:
        `dispatcher.keys.number_keys`, or the twin's
        `dispatcher.sorted_keys.number_keys`), ascending."""
        if not len(keys):
            return []
        return self._set.listed(keys)


class _KeySet(Protocol):
    """What `SuppressionList` holds: the C part's ``KeySet`` or `NumpySet`."""

    @property
    def size(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def keys(self) -> Any: ...

    def listed(self, keys: Any, /) -> list[int]: ...


class _Keys(Protocol):
    """The keys a load gathers (an ``array('Q')``, or the twin's `Growing`)."""

    def extend(self, values: Any, /) -> None: ...


# --- the C part or its numpy twin ------------------------------------------------------
# Each helper below takes the C part's path where it is built (packed words, no numpy)
# and imports the numpy twin (`dispatcher.sorted_keys`) only where it is not.


def _new_keys() -> _Keys:
    if native.core is not None:
        return array("Q")  # grows in place (realloc), extended a block at a time
    from dispatcher.sorted_keys import Growing

    return Growing()


def _append(keys: _Keys, block_keys: Packed) -> None:
    """Add a block's keys to those the load gathers: the C part's words by their bytes
    (an array's extend by anything but an array goes an item at a time, and its
    frombytes takes no array)."""
    if isinstance(block_keys, memoryview):  # read as its bytes ("B")
        keys.frombytes(block_keys.cast("B"))  # type: ignore[attr-defined]
    else:  # an array of the same type (copied whole), or the twin's numpy array
        keys.extend(block_keys)


def _sorted_distinct(keys: Any) -> Packed:
    """The gathered keys sorted, their repeats removed, in place."""
    if native.core is not None:
        words: array[int] = keys if isinstance(keys, array) else array("Q", keys)
        del words[native.core.sorted_distinct(words) :]
        return words
    from dispatcher import sorted_keys

    return sorted_keys.sorted_distinct(
        keys.take() if isinstance(keys, sorted_keys.Growing) else keys
    )


def _number_keys(numbers: Sequence[str | None]) -> Packed:
    if native.core is not None:
        return packed_words.number_keys(numbers)
    from dispatcher.sorted_keys import number_keys

    return number_keys(numbers)


def _packed(keys: list[int]) -> Packed:
    if native.core is not None:
        return array("Q", keys)
    import numpy as np

    return np.array(keys, dtype=np.uint64)


def _plain_keys(text: str) -> tuple[Packed, Packed | bytearray] | None:
    """The keys of ``text``'s lines when every line is a number as `normalize` takes it
    (ASCII; its separators removed, an optional ``+`` and 8 to 15 digits, the first not
    0) — the usual block of a list — and per key whether it can be an international
    number (1 or 0, or True or False); else None, and the careful path decides line by
    line. The C part reads the text in one pass (1 M numbers in 17 against 43-59 ms for
    the twin, `dispatcher.sorted_keys.plain_keys`, whose docstring has the rest)."""
    if not text or not text.isascii():
        return None
    if native.core is None:
        from dispatcher.sorted_keys import plain_keys

        return plain_keys(text)
    room = (len(text) + 1) // (MIN_DIGITS + 1) + 1  # each line has 8 digits and a newline
    keys = packed_words.empty(room)
    valid = bytearray(room)
    count = native.core.plain_keys(
        text, ASCII_SEPARATORS, country_table(), MIN_DIGITS, MAX_DIGITS, keys, valid
    )
    if count is None:
        return None
    del valid[count:]
    return keys[:count], valid


def _international(keys: Packed) -> Packed | bytearray:
    """Per key: whether some country code starts it with a national length it allows."""
    if native.core is None:
        from dispatcher.sorted_keys import international

        return international(keys)  # type: ignore[arg-type]
    valid = bytearray(len(keys))
    native.core.valid_keys(keys, country_table(), MIN_DIGITS, MAX_DIGITS, valid)
    return valid


def _not_valid_at(valid: Packed | bytearray) -> tuple[int, list[int]]:
    """How many keys are not valid (`_international`), and the first `EXAMPLES` of their
    positions."""
    if isinstance(valid, bytearray):  # counted without an int a byte
        count = valid.count(0)
        positions: list[int] = []
        at = 0
        while len(positions) < min(count, EXAMPLES):
            at = valid.index(0, at)
            positions.append(at)
            at += 1
        return count, positions
    import numpy as np

    bad = np.flatnonzero(~np.asarray(valid))
    return len(bad), bad[:EXAMPLES].tolist()


# --- reading a list file ---------------------------------------------------------------


def _load_file(path: str, keys: _Keys) -> ListStats:
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
    text: str, first_line: int, skip: int, extract: _Extractor, stats: ListStats, keys: _Keys
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
        _append(keys, block_keys)
        count, bad = _not_valid_at(international)
        if count:
            raws = text.split("\n") if raws is None else raws
            _not_valid(count, bad, block_keys, raws, None, first_line, stats)
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
    block_keys = _number_keys(numbers)
    positions: list[int] | None = None
    if lines is not None:  # some failed: keep the positions for the examples below
        positions = [i for i, key in enumerate(block_keys) if key]
        block_keys = _packed([block_keys[i] for i in positions])
    stats.numbers += len(block_keys)
    _append(keys, block_keys)
    count, bad = _not_valid_at(_international(block_keys))
    _not_valid(count, bad, block_keys, raws, positions, first_line, stats)
    return text.count("\n") + 1


def _not_valid(
    count: int,
    bad: list[int],
    block_keys: Packed,
    raws: list[str],
    positions: list[int] | None,
    first_line: int,
    stats: ListStats,
) -> None:
    """Count ``count`` keys as not valid, with examples of those at ``bad``
    (``positions``: of each key among ``raws``, when not the same)."""
    stats.not_valid += count
    for i in bad[: EXAMPLES - len(stats.not_valid_examples)]:
        at = positions[i] if positions is not None else i
        number = f"+{int(block_keys[i])}"
        stats.not_valid_examples.append(
            Problem(line=first_line + at, text=_excerpt(raws[at]), reason=_why_not_valid(number))
        )


def _excerpt(line: str) -> str:
    line = line.strip()
    return line if len(line) <= 60 else line[:57] + "..."


# --- the country check -----------------------------------------------------------------


def country_lengths() -> dict[int, frozenset[int]]:
    """Country calling code → the lengths its national numbers can have (libphonenumber's,
    as stored in `dispatcher.country_lengths`)."""
    return {
        code: frozenset(n for n in range(mask.bit_length()) if mask >> n & 1)
        for code, mask in LENGTHS.items()
    }


_table: bytes | None = None


def country_table() -> bytes:
    """[digit count * 1000 + first three digits] → 1 where a country code starts such a
    number with a national length it allows (16 KB, made once: the codes are a prefix
    code, so the first three digits name at most one)."""
    global _table
    if _table is None:
        table = bytearray((MAX_DIGITS + 1) * 1000)
        for code, lengths in LENGTHS.items():
            size = len(str(code))
            low = code * 10 ** (3 - size)
            high = (code + 1) * 10 ** (3 - size)
            for national in range(MAX_DIGITS + 1 - size):
                if lengths >> national & 1:
                    start = (size + national) * 1000
                    table[start + low : start + high] = b"\x01" * (high - low)
        _table = bytes(table)
    return _table


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
