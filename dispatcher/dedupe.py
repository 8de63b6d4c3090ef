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
bytes each, 3.6 MiB at most), so that a small job never imports numpy: its import is
0.15 to 0.3 s of every send's start-up, and 15 MiB. Numbers handed as keys (an array:
numpy is loaded, and an opt-out list had them parsed) skip the dict, which would only
cost more than the runs then. Beyond that the record moves to
`dispatcher.dedupe_runs`: packed sorted runs, **20 bytes per distinct recipient** (12 in
``number`` mode) and 1 to 2 bytes of filter. Resident memory measured by
``bench/bench_campaign.py``, over the same run with dedupe off (which imports numpy
too): see the README's campaign-safety figures.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import xxhash

from dispatcher.errors import ConfigError
from dispatcher.numbers import number_key

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from dispatcher.dedupe_runs import Runs

#: The E.164 digits take the low 50 bits of a key (10^15 < 2^50), the code id the rest.
NUMBER_BITS: Final = 50
MAX_CODES: Final = (1 << (64 - NUMBER_BITS)) - 1
#: Distinct recipients kept in a dict before the packed runs (and numpy) take over.
SMALL = 1 << 15
MAX_LINE: Final = 0xFFFFFFFF

_xxh3: Final = xxhash.xxh3_64_intdigest
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
        self._packed: Runs | None = None
        if self.mode is not Mode.OFF and expected > SMALL:
            from dispatcher.dedupe_runs import Runs

            self._packed = Runs()

    def __len__(self) -> int:
        """Distinct recipients recorded so far."""
        return len(self._small) if self._packed is None else len(self._packed)

    @property
    def packed(self) -> bool:
        """Whether the record is the packed one (numpy is imported): the caller may hand
        numbers and lines as arrays at no extra cost."""
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
        numbers: Sequence[str] | npt.NDArray[np.uint64],
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | npt.NDArray[np.integer[Any]],
    ) -> list[int]:
        """Per line, -1 if it is the first of its kind (now recorded), else the first's line.

        ``code`` and ``texts`` are one value for every line, or one per line; ``numbers``
        are E.164 strings (as `dispatcher.numbers.normalize` returns them, never None)
        or their keys from `dispatcher.suppress.number_keys`. ``texts`` is not read in
        ``number`` mode (None is fine there). Lines repeated within the call are
        answered in order: the earliest is the first.
        """
        firsts = self._firsts(code, numbers, texts, lines)
        return firsts if isinstance(firsts, list) else firsts.tolist()

    def duplicates(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | npt.NDArray[np.uint64],
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | npt.NDArray[np.integer[Any]],
    ) -> tuple[list[int], list[int]]:
        """`check_many`, answered as the positions of the duplicates and their first
        lines (two empty lists, the usual answer, when there is none)."""
        firsts = self._firsts(code, numbers, texts, lines)
        if not isinstance(firsts, list):
            from dispatcher.dedupe_runs import Runs

            return Runs.duplicates(firsts)
        positions = [i for i, first in enumerate(firsts) if first >= 0]
        return positions, [firsts[i] for i in positions]

    def _firsts(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | npt.NDArray[np.uint64],
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | npt.NDArray[np.integer[Any]],
    ) -> list[int] | npt.NDArray[np.int64]:
        count = len(lines)
        if self.mode is Mode.OFF or count == 0:
            return [_NO_LINE] * count
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
        if self._packed is None and (len(self._small) + count > SMALL or _is_array(numbers)):
            # Keys handed as an array: numpy is loaded and the caller parsed them (for an
            # opt-out list), so the dict would only cost more than the runs.
            from dispatcher.dedupe_runs import Runs

            self._packed = Runs()
            self._packed.load(self._small, texts=with_texts)
            self._small = {}
        if self._packed is not None:
            return self._packed.firsts(code_ids, numbers, texts if with_texts else None, lines)
        return self._small_firsts(code_ids, numbers, texts if with_texts else None, lines)

    def _small_firsts(
        self,
        code_ids: int | list[int],
        numbers: Sequence[str] | npt.NDArray[np.uint64],
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | npt.NDArray[np.integer[Any]],
    ) -> list[int]:
        """`_firsts` one line at a time, in the dict (a small job: no numpy)."""
        count = len(lines)
        line_numbers = lines.tolist() if hasattr(lines, "tolist") else list(lines)
        if max(line_numbers) > MAX_LINE:
            raise ConfigError(f"--dedupe handles inputs of at most {MAX_LINE} lines")
        if hasattr(numbers, "tolist"):  # keys already (numpy is loaded, then)
            keys = numbers.tolist()
        else:
            keys = [number_key(n) for n in numbers]
        if isinstance(code_ids, int):
            code_bits = [code_ids << NUMBER_BITS] * count
        else:
            code_bits = [i << NUMBER_BITS for i in code_ids]
        if texts is None:
            hashes = [0] * count
        elif isinstance(texts, str) or one_text(texts):
            hashes = [_text_hash(texts if isinstance(texts, str) else texts[0])] * count
        else:
            hashes = [_text_hash(text) for text in texts]
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
        self._keys: npt.NDArray[np.uint64] | None = None

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
    def keys(self) -> npt.NDArray[np.uint64]:
        """Every number's key, 0 for None (numpy is imported: a caller that asks has it)."""
        if self._keys is None:
            from dispatcher.suppress import number_keys

            self._keys = number_keys(self.numbers)
        return self._keys

    def keys_at(self, lines: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64] | None:
        """The keys of the chunk's items at ``lines``, or None when the chunk's lines are
        not contiguous or some of ``lines`` are outside it."""
        first = self.first_line
        if first is None or not len(lines):
            return None
        positions = lines - first
        if int(positions.min()) < 0 or int(positions.max()) >= len(self.numbers):
            return None
        return self.keys.take(positions)


def _is_array(numbers: object) -> bool:
    """Whether ``numbers`` are keys in a numpy array (checked without importing numpy)."""
    return hasattr(numbers, "dtype")


def one_text(texts: Sequence[str]) -> bool:
    """Whether every text is one and the same str (a template without placeholders
    renders the same object for every line): hashed once, not once a line. Free when
    the texts differ: the first and the last are seldom one object then."""
    return bool(texts) and texts[0] is texts[-1] and texts.count(texts[0]) == len(texts)


def _text_hash(text: str) -> int:
    try:
        return _xxh3(text.encode())
    except UnicodeEncodeError:  # a lone surrogate
        return _xxh3(text.encode("utf-8", "surrogatepass"))
