"""Duplicate detection for a job: which lines repeat an earlier message (issue 13).

Modes (``--dedupe``):

``number+text`` (the default)
    A line is a duplicate when an earlier line of the job has the same sender code, the
    same normalised number and the same rendered text (after smart encoding).
``number``
    One message per number per job: a line is a duplicate when an earlier line has the
    same number, whatever its sender code and text. The sender code is deliberately not
    part of the key: the promise is to the person who owns the number ("you get one
    message from this campaign"), and a list merged badly across two brands' codes is
    exactly the case it must catch. Use ``number+text`` to let each code, or each
    different text, through once.
``off``
    Nothing is recorded: memory stays flat, for endless pipes.

The later line of a pair gets ``DUPLICATE`` with ``first``: the first line's number,
whatever became of that line. The caller feeds only lines that passed the number,
opt-out, render, smart-encoding and segment checks (SPEC §10), so a line refused for
another reason never counts as a first.

**Exact on code and number, a 64-bit hash of the text.** The key of a recipient is one
unsigned 64-bit integer: the E.164 digits (at most 15, so below 10^15 < 2^50) in the low
50 bits and, in ``number+text`` mode, a small id of the sender code in the 14 bits above
(ids are given in order of first appearance; a job may use at most 16 383 codes). Two
different numbers or codes therefore never share a key. The text is reduced to its
XXH3-64 hash: two different texts to the same code and number are taken for one only if
their hashes collide. For k distinct texts sent to one number the chance of any collision
is at most k(k-1)/2 / 2^64 ≈ k²/2^65 — 3·10^-18 for ten texts to one number. It is a
chance per number, so over a job it adds up to at most the sum of k²/2^65 over the
numbers: for 10 M numbers with 3 texts each, 2·10^-12.

XXH3 and not Python's ``hash()``: ``hash()`` of a str is salted per process
(PYTHONHASHSEED), so keys could not be compared across processes — worker shards
(issue 15), or a state written by one process and read by the next. XXH3's output is
fixed by its specification; measured on rendered texts of 50 and 170 characters it costs
57 and 160 ns per call (``hash()`` of a fresh str: 42 and 134 ns; BLAKE2b-64: 370 ns).
A text given as one str for the whole call (a template without placeholders) is hashed
once.

**Memory.** A job's first `SMALL` distinct recipients are kept in a dict (about 115
bytes each, 3.6 MiB at most), unless the input file is big enough to outgrow it
(``expected``). Numbers handed as keys (packed words: an opt-out list had them parsed)
skip the dict, which would only cost more than the runs then. Beyond that the record is
packed: sorted runs, **20 bytes per distinct recipient** (12 in ``number`` mode) and 1
to 2 bytes of filter, held in C where the C part is built (`NativeRecord`: no numpy,
whose import alone is 0.33 G instructions and 15 MiB) and in numpy otherwise
(`dispatcher.dedupe_runs.Runs`, its twin, whose docstring has the design). A
1 M-line ``send`` with dedupe alone (the ``dispatcher gen`` file): 12.64 G instructions
with the numpy record and the C part's loops, 12.27 G with the record in C. Resident
memory measured by ``bench/bench_campaign.py``: see the README's campaign-safety
figures.

**The numbers of a chunk are parsed once** (`ChunkNumbers`): the opt-out check needs the
keys of every number of an input chunk, the duplicate check those of the lines that
reach it. `dispatcher.prepare` makes one `ChunkNumbers` per chunk; the opt-out lists read
its keys, and `dispatcher.policy.Duplicates` takes its entries' keys from them by line
(an array gather) instead of reading each entry's number and parsing it again. Both
checks of a line of ``dispatcher gen``'s 1 M lines against a 1 M-number list, in
process: 480 to 500 ns at best against 580 to 595 before (this shared machine at load 4
to 6); on 5000 entries, reading their numbers cost 45 ns each and parsing them 32. Then
459 against 517 ns (min of 6 rounds, the two versions alternated chunk by chunk in one
process at load 1.4), once the keys an opt-out list parsed skip the dict below and the
filter of the runs has its floor (`dispatcher.dedupe_runs.MIN_FILTER`).

**The caller's side.** One call per chunk (or per run of one sender code):
``firsts = dedupe.check_many(code, numbers, texts, lines)``, then the lines whose entry
is not -1 are ``DUPLICATE`` with ``first`` set to it; ``dedupe.duplicates(...)`` answers
the same as the positions of the duplicates and their first lines. A resume rebuilds the
state by feeding the finished lines again, in order, through the same calls.

Within one call, repeats are answered in order: the earliest line of each group is its
first, so the earlier line wins.
"""

from __future__ import annotations

import enum
import sys
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, cast

from dispatcher import heap, native
from dispatcher import keys as packed_words
from dispatcher.errors import ConfigError
from dispatcher.keys import is_packed, one_text, text_hash
from dispatcher.numbers import number_key

if TYPE_CHECKING:
    import numpy.typing as npt

#: Keys or lines as packed words: `dispatcher.keys.Words` (an `array.array` or a
#: memoryview of words) or a numpy array.
Packed: TypeAlias = "array[int] | memoryview | npt.NDArray[Any]"

#: The E.164 digits take the low 50 bits of a key (10^15 < 2^50), the code id the rest.
NUMBER_BITS: Final = 50
MAX_CODES: Final = (1 << (64 - NUMBER_BITS)) - 1
#: Distinct recipients kept in a dict before the packed record takes over.
SMALL = 1 << 15
MAX_LINE: Final = 0xFFFFFFFF
#: The packed record's filter's least capacity (1 MiB at 8 bits a pair): see
#: `dispatcher.dedupe_runs.Runs._rebuild_filter`.
MIN_FILTER = 1 << 20

_NO_LINE: Final = -1


class Mode(enum.StrEnum):
    """What makes a line a duplicate (``--dedupe``)."""

    NUMBER_TEXT = "number+text"
    NUMBER = "number"
    OFF = "off"


class Dedupe:
    """The job's record of who was sent what, and the check of a chunk of lines against it.

    ``check_many`` (or ``duplicates``) is the only hot call: one per chunk (or per run of
    one sender code), never one per line.
    """

    def __init__(self, mode: Mode | str = Mode.NUMBER_TEXT, *, expected: int = 0) -> None:
        """``expected``: a low estimate of the job's lines (`dispatcher.policy`: from the
        input file's size); beyond `SMALL`, the record starts packed, skipping the dict
        it would outgrow (measured: 0.34 G of a 1 M-line job's 13.4 G instructions went
        to the dict's 32 Ki lines and the move out of it)."""
        self.mode = Mode(mode)
        self._codes: dict[str, int] = {}
        #: ``key << 64 | text hash`` → first line, until the job has `SMALL` of them
        self._small: dict[int, int] = {}
        self._packed: PackedRecord | None = None
        if self.mode is not Mode.OFF and expected > SMALL:
            self._packed = _packed_record(texts=self.mode is Mode.NUMBER_TEXT)

    def __len__(self) -> int:
        """Distinct recipients recorded so far."""
        return len(self._small) if self._packed is None else len(self._packed)

    @property
    def packed(self) -> bool:
        """Whether the record is the packed one: the caller may hand numbers and lines
        as packed words at no extra cost."""
        return self._packed is not None

    @property
    def nbytes(self) -> int:
        """Bytes held by the record (what the job's memory grows by; the dict's own
        table while the job is small, not its int objects)."""
        if self._packed is not None:
            return self._packed.nbytes
        return sys.getsizeof(self._small) if self._small else 0

    @property
    def runs(self) -> int:
        return 0 if self._packed is None else self._packed.runs

    def check_many(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | Packed,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> list[int]:
        """Per line, -1 if it is the first of its kind (now recorded), else the first's line.

        ``code`` and ``texts`` are one value for every line, or one per line; ``numbers``
        are E.164 strings (as `dispatcher.numbers.normalize` returns them, never None)
        or their keys (`dispatcher.keys.number_keys`, or the numpy twin's
        `dispatcher.sorted_keys.number_keys`). ``texts`` is not read in ``number`` mode
        (None is fine there). Lines repeated within the call are answered in order: the
        earliest is the first.
        """
        positions, firsts = self.duplicates(code, numbers, texts, lines)
        out = [_NO_LINE] * len(lines)
        for position, first in zip(positions, firsts, strict=True):
            out[position] = first
        return out

    def duplicates(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | Packed,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> tuple[list[int], list[int]]:
        """`check_many`, answered as the positions of the duplicates (ascending) and their
        first lines (two empty lists, the usual answer, when there is none)."""
        count = len(lines)
        if self.mode is Mode.OFF or count == 0:
            return [], []
        if len(numbers) != count:
            raise ValueError(f"{len(numbers)} numbers for {count} lines")
        with_texts = self.mode is Mode.NUMBER_TEXT
        code_ids: int | list[int] = 0
        if with_texts:
            if texts is None:
                raise ValueError("number+text dedupe needs the texts")
            if not isinstance(texts, str) and len(texts) != count:
                raise ValueError(f"{len(texts)} texts for {count} lines")
            code_ids = self._code_ids(code)
        if self._packed is None and (len(self._small) + count > SMALL or is_packed(numbers)):
            # Keys handed packed: the caller parsed them (for an opt-out list), so the
            # dict would only cost more than the runs.
            self._packed = _packed_record(texts=with_texts)
            self._packed.load(self._small, texts=with_texts)
            self._small = {}
        if self._packed is not None:
            return self._packed.duplicates(code_ids, numbers, texts if with_texts else None, lines)
        firsts = self._small_firsts(code_ids, numbers, texts if with_texts else None, lines)
        positions = [i for i, first in enumerate(firsts) if first >= 0]
        return positions, [firsts[i] for i in positions]

    def _small_firsts(
        self,
        code_ids: int | list[int],
        numbers: Sequence[str] | Packed,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> list[int]:
        """Per line, -1 or its first line, one line at a time, in the dict (a small job)."""
        count = len(lines)
        line_numbers = lines.tolist() if hasattr(lines, "tolist") else list(lines)
        if max(line_numbers) > MAX_LINE:
            raise ConfigError(f"--dedupe handles inputs of at most {MAX_LINE} lines")
        if is_packed(numbers):  # keys already
            keys = numbers.tolist()  # type: ignore[union-attr]
        else:
            keys = [number_key(n) for n in cast("Sequence[str]", numbers)]
        if isinstance(code_ids, int):
            code_bits = [code_ids << NUMBER_BITS] * count
        else:
            code_bits = [i << NUMBER_BITS for i in code_ids]
        if texts is None:
            hashes = [0] * count
        elif isinstance(texts, str) or one_text(texts):
            hashes = [text_hash(texts if isinstance(texts, str) else texts[0])] * count
        else:
            hashes = [text_hash(text) for text in texts]
        seen, out = self._small, []
        for key, bits, digest, line in zip(keys, code_bits, hashes, line_numbers, strict=True):
            pair = (key | bits) << 64 | digest
            first = seen.get(pair)
            if first is None:
                seen[pair] = line
                out.append(_NO_LINE)
            else:
                out.append(first)
        return out

    def _code_ids(self, code: str | Sequence[str]) -> int | list[int]:
        if isinstance(code, str):
            return self._code_id(code)
        ids = self._codes
        return [ids.get(c) or self._code_id(c) for c in code]

    def _code_id(self, code: str) -> int:
        known = self._codes.get(code)
        if known is not None:
            return known
        if len(self._codes) >= MAX_CODES:
            raise ConfigError(
                f"--dedupe number+text tells at most {MAX_CODES} sender codes apart in one "
                "job; use --dedupe number or off"
            )
        # Ids start at 1, so that `ids.get(c) or ...` above never mistakes one for missing.
        new = self._codes[code] = len(self._codes) + 1
        return new


class ChunkNumbers:
    """The normalised numbers of one input chunk, and their keys (`number_keys`),
    parsed on first use and shared by every check of the chunk.

    ``first_line`` is the line of the chunk's first item when its lines follow one
    another with no gap (a chunk of the whole input, no blank line), else None: then
    `keys_at` answers None and the caller parses its own numbers. Within such a chunk a
    line number names one item, so the keys of any lines in its range are the keys of
    those items, whichever of them reached the caller.
    """

    __slots__ = ("_keys", "first_line", "numbers")

    def __init__(self, numbers: Sequence[str | None], first_line: int | None) -> None:
        self.numbers = numbers
        self.first_line = first_line
        self._keys: Packed | None = None

    @classmethod
    def of(cls, first: int, last: int, numbers: Sequence[str | None]) -> ChunkNumbers:
        """The chunk of ``numbers`` whose items' lines run from ``first`` to ``last``
        (ascending, as a chunk's do)."""
        return cls(numbers, first if last - first + 1 == len(numbers) else None)

    @property
    def parsed(self) -> bool:
        """Whether the keys are parsed already (an opt-out list asked for them)."""
        return self._keys is not None

    @property
    def keys(self) -> Packed:
        """Every number's key, 0 for None: packed words by the C part
        (`dispatcher.keys`), else by its numpy twin (`dispatcher.sorted_keys.number_keys`)."""
        if self._keys is None:
            if native.core is not None:
                self._keys = packed_words.number_keys(self.numbers)
            else:
                from dispatcher.sorted_keys import number_keys

                self._keys = number_keys(self.numbers)
        return self._keys

    def keys_at(self, lines: Packed) -> Packed | None:
        """The keys of the chunk's items at ``lines``, or None when the chunk's lines are
        not contiguous or some of ``lines`` are outside it."""
        first = self.first_line
        if first is None or not len(lines):
            return None
        keys = self.keys
        if packed_words.is_words(keys) and packed_words.is_words(lines):
            return packed_words.take_at(keys, lines, first)  # type: ignore[arg-type]
        import numpy as np

        lines = np.asarray(lines)
        keys = np.asarray(keys)
        positions = lines - first
        if int(positions.min()) < 0 or int(positions.max()) >= len(self.numbers):
            return None
        return keys.take(positions)


class PackedRecord(Protocol):
    """The packed record of a job beyond the dict: `NativeRecord`, or its numpy twin
    `dispatcher.dedupe_runs.Runs`."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def runs(self) -> int: ...

    def load(self, firsts: dict[int, int], *, texts: bool) -> None: ...

    def duplicates(
        self,
        code_ids: int | list[int],
        numbers: Sequence[str] | Packed,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> tuple[list[int], list[int]]: ...


def _packed_record(*, texts: bool) -> PackedRecord:
    """The C part's record where it is built (no numpy), else the numpy twin."""
    if native.core is not None:
        return NativeRecord(texts=texts)
    from dispatcher.dedupe_runs import Runs

    return Runs()


_LOW64: Final = (1 << 64) - 1


class NativeRecord:
    """The packed record held in C (`dispatcher.native`'s ``Record``): the sorted runs,
    filter and merges of `dispatcher.dedupe_runs.Runs` (its twin, whose docstring has
    the design and the figures), a chunk checked in one call, the columns malloc'd by
    the C part, the chunk's words those of `dispatcher.keys`: no numpy."""

    __slots__ = ("_record",)

    def __init__(self, *, texts: bool, filter_words: int = 0) -> None:
        """``filter_words`` > 0: a filter of that many words that never grows (the tests
        crowd it, so that every pair is looked up in the runs)."""
        assert native.core is not None
        heap.settle()  # its runs' columns reuse the heap, as the numpy record's arrays do
        self._record = native.core.Record(texts, min_filter=MIN_FILTER, filter_words=filter_words)

    def __len__(self) -> int:
        return int(self._record.size)

    @property
    def nbytes(self) -> int:
        return int(self._record.nbytes)

    @property
    def runs(self) -> int:
        return int(self._record.runs)

    def load(self, firsts: dict[int, int], *, texts: bool) -> None:
        """Take the record of a `Dedupe` that outgrew its dict: pairs ``key << 64 |
        text hash`` → first line (distinct pairs, so the check records each)."""
        if not firsts:
            return
        keys = array("Q", [pair >> 64 for pair in firsts])
        hashes = array("Q", [pair & _LOW64 for pair in firsts]) if texts else None
        self._record.check(keys, 0, hashes, array("q", firsts.values()))

    def duplicates(
        self,
        code_ids: int | list[int],
        numbers: Sequence[str] | Packed,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> tuple[list[int], list[int]]:
        """The positions of the duplicates among the lines and their first lines (see
        `Dedupe.duplicates`); ``texts`` is None in ``number`` mode."""
        count = len(lines)
        keys = numbers if is_packed(numbers) else packed_words.number_keys(numbers)  # type: ignore[arg-type]
        codes: int | array[int]
        if isinstance(code_ids, int):
            codes = code_ids << NUMBER_BITS
        else:
            codes = array("Q", [i << NUMBER_BITS for i in code_ids])
        hashes = None if texts is None else packed_words.text_hashes(texts, count)
        if not (is_packed(lines) and lines.itemsize == 8):  # type: ignore[union-attr]
            lines = array("q", lines)
        try:
            positions, firsts = self._record.check(keys, codes, hashes, lines)
        except OverflowError:
            raise ConfigError(f"--dedupe handles inputs of at most {MAX_LINE} lines") from None
        return positions, firsts
