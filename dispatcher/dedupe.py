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

**Memory: 20 bytes per distinct recipient** (12 in ``number`` mode), no Python object per
entry. Entries are kept in sorted runs of three packed numpy columns: the key (uint64),
the text hash (uint64; absent in ``number`` mode) and the first line (uint32, so a job
of at most 2^32 - 1 lines). An open-addressing table of the same columns that doubles at
a 90 % load factor would hold 22 to 44 bytes an entry depending on where the job's size
falls. Each call sorts its lines by key (a stable argsort; the (key, hash) pair only
when a key repeats in the call), looks the distinct ones up in every run
(`dispatcher.suppress.SortedKeys`: every look-up of the chunk descends together, so their
cache misses overlap), reads the hashes and lines only where the key is found, and adds
the new ones as one small sorted run. After an append, the two newest runs merge while
the older is at most twice the newer (a binary counter): at most about log2(N / chunk)
runs (4 at 1 M distinct recipients in chunks of 3000, 4 to 7 at 10 M), and each entry
is copied about that many times over the job. A merge joins the columns and orders them
by one stable argsort, which merges the two sorted halves in one pass. Each run's keys
carry 64 entries of padding and an index of every 64th key (1/8 byte an entry).
Resident memory measured by ``bench/bench_campaign.py``, over the same run with dedupe
off: 21 bytes per distinct recipient at 1 M, 20 at 10 M (12 in ``number`` mode); the
peak, while the biggest run merges, 34 and 35 (see `_Run.merge` and
`_release_freed_memory`).

Time, measured on this project's shared 2-core machine (load 2 to 5, so the figures are
high and noisy; ``bench/bench_campaign.py`` has the day's): 0.55 µs a line in a tight
loop at 1 M distinct recipients, 0.75 to 1.0 µs in the bench's loop, which builds each
chunk between the calls as a pipeline would; of that, XXH3 of the text 0.09 to 0.2 µs,
the keys 0.07, the look-ups 0.15 and the merges 0.15. ``number`` mode skips the hash:
0.5 µs. Pass the keys that `dispatcher.suppress.number_keys` made for the opt-out check
instead of the numbers, and a template without placeholders as one str, to skip those
shares.

**The caller's side.** One call per chunk (or per run of one sender code):
``firsts = dedupe.check_many(code, numbers, texts, lines)``, then the lines whose entry
is not -1 are ``DUPLICATE`` with ``first`` set to it. A resume rebuilds the state by
feeding the finished lines again, in order, through the same calls.

Within one call, repeats are found by the stable sort: the earliest line of each group
is its first, so the earlier line wins.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from itertools import repeat as _repeat
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import xxhash

from dispatcher.errors import ConfigError
from dispatcher.suppress import SortedKeys, number_keys

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]

#: The E.164 digits take the low 50 bits of a key (10^15 < 2^50), the code id the rest.
NUMBER_BITS: Final = 50
MAX_CODES: Final = (1 << (64 - NUMBER_BITS)) - 1
#: Runs of one level are merged this many at a time (see `Dedupe._add`).
FANOUT: Final = 4

_xxh3: Final = xxhash.xxh3_64_intdigest
_NO_LINE: Final = -1


class Mode(enum.StrEnum):
    """What makes a line a duplicate (``--dedupe``)."""

    NUMBER_TEXT = "number+text"
    NUMBER = "number"
    OFF = "off"


class _Run:
    """One sorted run: keys ascending (equal keys adjacent), their text hashes and lines."""

    __slots__ = ("hashes", "keys", "lines")

    def __init__(
        self, keys: SortedKeys, hashes: _U64 | None, lines: npt.NDArray[np.uint32]
    ) -> None:
        self.keys = keys
        self.hashes = hashes
        self.lines = lines

    @classmethod
    def of(cls, keys: _U64, hashes: _U64 | None, lines: npt.NDArray[np.uint32]) -> _Run:
        """A run of sorted ``keys`` (copied into a padded table)."""
        table = SortedKeys.empty(len(keys))
        table[: len(keys)] = keys
        return cls(SortedKeys(table, len(keys)), hashes, lines)

    def __len__(self) -> int:
        return self.keys.size

    @property
    def nbytes(self) -> int:
        extra = 0 if self.hashes is None else self.hashes.nbytes
        return self.keys.table.nbytes + self.keys.index.nbytes + self.lines.nbytes + extra

    def find(self, keys: _U64, hashes: _U64 | None, out: _I64) -> None:
        """Set ``out[i]`` to the first line of ``(keys[i], hashes[i])`` where it is here.

        Equal keys of a run with different text hashes sit side by side: the few queries
        that meet one step along until the key changes (the padding stops them).
        """
        table = self.keys.table
        at = self.keys.first_at_least(keys)
        # Most queries are not here: read the hashes and lines only where the key is.
        found = np.flatnonzero(table[at] == keys)
        at = at[found]
        if hashes is None or self.hashes is None:
            out[found] = self.lines[at]
            return
        while len(found):
            hit = self.hashes[at] == hashes[found]
            out[found[hit]] = self.lines[at[hit]]
            found, at = found[~hit], at[~hit] + 1
            same_key = table[at] == keys[found]
            found, at = found[same_key], at[same_key]

    @staticmethod
    def merge(runs: list[_Run]) -> _Run:
        """One run of all of ``runs`` (they share no entry).

        The columns are joined and put in key order by a stable argsort, which finds the
        sorted runs and merges them (timsort): 90 ns an entry for two runs over a job of
        900 k entries, against 230 ns for placing the newer entries by ``searchsorted``
        and the older ones through a mask. A column is released as soon as its merged
        copy exists, so the peak while the biggest run merges is about 36 bytes an
        entry of it (the 20 of the runs, the 8-byte order and one column's copy).
        """
        size = sum(len(run) for run in runs)
        keys = np.concatenate([run.keys.table[: len(run)] for run in runs])
        for run in runs:
            run.keys = _NO_KEYS
        order = np.argsort(keys, kind="stable")
        table = SortedKeys.empty(size)
        # mode="clip": with "raise", take buffers its output.
        np.take(keys, order, out=table[:size], mode="clip")
        del keys
        hashes = None
        if runs[0].hashes is not None:
            hashes = np.concatenate([run.hashes for run in runs])
            for run in runs:
                run.hashes = None
            hashes = hashes[order]
        lines = np.concatenate([run.lines for run in runs])
        for run in runs:
            run.lines = _EMPTY_U32
        return _Run(SortedKeys(table, size), hashes, lines[order])


_NO_KEYS: Final = SortedKeys(SortedKeys.empty(0), 0)
_EMPTY_U32: Final[npt.NDArray[np.uint32]] = np.empty(0, dtype=np.uint32)


#: Entries of a run added to a rebuilt filter at a time (bounds the temporary arrays).
_FILTER_BLOCK: Final = 1 << 16
#: A merge whose result has this many entries hands freed memory back (see below).
TRIM_FROM: Final = 1 << 16


def _release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``).

    Merges allocate and free arrays of a few MiB; glibc serves those from its heap
    (above 32 MiB, from maps of their own) and keeps them once freed, ready for the next
    merge: at 1 M entries the process held 34 bytes per entry for 20 of runs. Trimming
    after each merge whose result has `TRIM_FROM` entries or more (about 50 times per 1 M
    entries, no cost that the figures show) brings that back to 21. Anonymous maps of
    their own for every array were measured too: the page faults of fresh memory made
    the merges twice as slow. Where there is no ``malloc_trim`` (not glibc): nothing.
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = _find_malloc_trim()
    _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], object]:
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, ImportError):
        return lambda pad: None


_malloc_trim: Callable[[int], object] | None = None


class _Filter:
    """A blocked Bloom filter over the recorded (key, text hash) pairs: most lines of a
    job are new, and a line the filter has never seen needs no look-up in any run.

    Each pair sets 4 bits of one 64-bit word (a "split block" filter: one cache miss a
    query). Sized for `capacity` pairs at 8 bits each, rebuilt from the runs for twice
    as many pairs as it holds when the job outgrows it: 8 to 16 bits a recorded pair,
    1 to 2 bytes. False positives, by the arithmetic of 4 bits among 64 in a word that
    holds 8 to 4 pairs: 3 to 0.3 % (a false positive only costs the look-ups the line
    would have had anyway); never a false negative.
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
        (scaled to the size by a multiply), 4 bit positions from its low 24."""
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

    def might_hold(self, word: _U64, bits: _U64) -> npt.NDArray[np.bool_]:
        """Per pair of `spots`: whether it may have been added (False: certainly not)."""
        return (self.words[word] & bits) == bits  # type: ignore[no-any-return]

    def add(self, word: _U64, bits: _U64) -> None:
        """Add the pairs of `spots`."""
        np.bitwise_or.at(self.words, word, bits)


_MIX1: Final = np.uint64(0x9E3779B97F4A7C15)
_MIX2: Final = np.uint64(0xBF58476D1CE4E5B9)
_S32: Final = np.uint64(32)
_S29: Final = np.uint64(29)
_LOW6: Final = np.uint64(63)
_ONE: Final = np.uint64(1)
_BIT_SHIFTS: Final = (np.uint64(6), np.uint64(12), np.uint64(18))


class Dedupe:
    """The job's record of who was sent what, and the check of a chunk of lines against it.

    ``check_many`` is the only hot call: one per chunk (or per run of one sender code),
    never one per line.
    """

    def __init__(self, mode: Mode | str = Mode.NUMBER_TEXT) -> None:
        self.mode = Mode(mode)
        self._runs: list[_Run] = []
        self._levels: list[int] = []  # per run: how many merges of FANOUT made it
        self._codes: dict[str, int] = {}
        self._size = 0
        self._filter: _Filter | None = None

    def __len__(self) -> int:
        """Distinct recipients recorded so far."""
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed runs and their filter (what the job's memory grows by)."""
        held = sum(run.nbytes for run in self._runs)
        return held + (self._filter.nbytes if self._filter is not None else 0)

    @property
    def runs(self) -> int:
        return len(self._runs)

    def check_many(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | _U64,
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
        return self._firsts(code, numbers, texts, lines).tolist()  # type: ignore[no-any-return]

    def duplicates(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | _U64,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | npt.NDArray[np.integer[Any]],
    ) -> tuple[list[int], list[int]]:
        """`check_many`, answered as the positions of the duplicates and their first
        lines (two empty lists, the usual answer, when there is none)."""
        firsts = self._firsts(code, numbers, texts, lines)
        positions = np.flatnonzero(firsts >= 0)
        if not len(positions):
            return [], []
        return positions.tolist(), firsts[positions].tolist()

    def _firsts(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | _U64,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | npt.NDArray[np.integer[Any]],
    ) -> _I64:
        count = len(lines)
        if self.mode is Mode.OFF or count == 0:
            return np.full(count, _NO_LINE, dtype=np.int64)
        keys = _keys(numbers, count)
        if self.mode is Mode.NUMBER_TEXT:
            keys |= self._code_bits(code, count)
            hashes: _U64 | None = _text_hashes(texts, count)
        else:
            hashes = None
        if isinstance(lines, np.ndarray):
            line_numbers = lines.astype(np.int64, copy=False)
        else:
            line_numbers = np.fromiter(lines, dtype=np.int64, count=count)
        if int(line_numbers.max()) > 0xFFFFFFFF:
            raise ConfigError("--dedupe handles inputs of at most 4294967295 lines")
        return self._check(keys, hashes, line_numbers)

    def _check(self, keys: _U64, hashes: _U64 | None, lines: _I64) -> _I64:
        count = len(keys)
        # Group equal (key, hash) pairs; the sorts are stable, so a group starts with its
        # earliest line. Sorting on the key alone is half the cost of both (12 against
        # 23 ns a line): the pair is sorted only when the chunk has a key twice.
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.empty(count, dtype=bool)
        starts[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
        if hashes is not None and not starts.all():
            order = np.lexsort((hashes, keys))
            sorted_keys = keys[order]
            np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
        keys = sorted_keys
        if hashes is not None:
            hashes = hashes[order]
            starts[1:] |= hashes[1:] != hashes[:-1]
        if starts.all():  # no repeat within the call (the usual case): no group to map
            leaders = None
            group_keys, group_hashes, own_lines = keys, hashes, lines[order]
        else:
            leaders = np.flatnonzero(starts)
            group_keys = keys[leaders]
            group_hashes = hashes[leaders] if hashes is not None else None
            own_lines = lines[order[leaders]]
        found = np.full(len(group_keys), _NO_LINE, dtype=np.int64)
        table = self._filter
        if table is not None:
            # Only the groups the filter may have seen are looked up in the runs.
            word, bits = table.spots(group_keys, group_hashes)
            asked = np.flatnonzero(table.might_hold(word, bits))
            if len(asked):
                answers = np.full(len(asked), _NO_LINE, dtype=np.int64)
                asked_hashes = group_hashes[asked] if group_hashes is not None else None
                asked_keys = group_keys[asked]
                for run in self._runs:
                    run.find(asked_keys, asked_hashes, answers)
                found[asked] = answers
        new = found < 0
        # The first line of each group: recorded earlier, or the group's own first line.
        first = np.where(new, own_lines, found)
        if leaders is None:
            first[new] = _NO_LINE
            answer_sorted = first
        else:
            answer_sorted = first[np.cumsum(starts) - 1]
            answer_sorted[leaders[new]] = _NO_LINE
        answer = np.empty(count, dtype=np.int64)
        answer[order] = answer_sorted
        if new.any():
            added_keys = group_keys[new]
            added_hashes = group_hashes[new] if group_hashes is not None else None
            self._add(_Run.of(added_keys, added_hashes, own_lines[new].astype(np.uint32)))
            if table is not None and self._size <= table.capacity:
                table.add(word[new], bits[new])
            else:
                self._rebuild_filter()
        return answer

    def _rebuild_filter(self) -> None:
        """A filter of every recorded pair, with room for as many again."""
        self._filter = None  # released before its successor is made
        table = _Filter(2 * self._size)
        for run in self._runs:
            for start in range(0, len(run), _FILTER_BLOCK):
                end = min(start + _FILTER_BLOCK, len(run))
                run_hashes = run.hashes[start:end] if run.hashes is not None else None
                table.add(*table.spots(run.keys.table[start:end], run_hashes))
        self._filter = table

    def _add(self, run: _Run) -> None:
        """Append a new run at level 0; `FANOUT` runs of one level merge into one of the
        next (a counter in base `FANOUT`)."""
        runs, levels = self._runs, self._levels
        runs.append(run)
        levels.append(0)
        self._size += len(run)
        while len(levels) >= FANOUT and levels[-FANOUT] == levels[-1]:
            merged = _Run.merge(runs[-FANOUT:])
            level = levels[-1] + 1
            del runs[-FANOUT:], levels[-FANOUT:]
            runs.append(merged)
            levels.append(level)
            if len(merged) >= TRIM_FROM:
                _release_freed_memory()

    def _code_bits(self, code: str | Sequence[str], count: int) -> _U64:
        if isinstance(code, str):
            return np.full(count, self._code_id(code) << NUMBER_BITS, dtype=np.uint64)
        ids = self._codes
        bits = np.fromiter(
            (ids.get(c) or self._code_id(c) for c in code), dtype=np.uint64, count=count
        )
        return bits << np.uint64(NUMBER_BITS)

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


def _keys(numbers: Sequence[str] | _U64, count: int) -> _U64:
    if isinstance(numbers, np.ndarray):
        if len(numbers) != count:
            raise ValueError(f"{len(numbers)} numbers for {count} lines")
        return numbers.astype(np.uint64)  # a copy: the caller's array is not changed
    keys = number_keys(numbers)
    if len(keys) != count:
        raise ValueError(f"{len(keys)} numbers for {count} lines")
    return keys


def _text_hashes(texts: str | Sequence[str] | None, count: int) -> _U64:
    if texts is None:
        raise ValueError("number+text dedupe needs the texts")
    if isinstance(texts, str):
        return np.full(count, _xxh3(texts.encode("utf-8", "surrogatepass")), dtype=np.uint64)
    if len(texts) != count:
        raise ValueError(f"{len(texts)} texts for {count} lines")
    try:
        return np.fromiter(map(_xxh3, map(str.encode, texts)), dtype=np.uint64, count=count)
    except UnicodeEncodeError:  # a lone surrogate (35 % slower for every text if asked)
        encoded = map(str.encode, texts, _repeat("utf-8"), _repeat("surrogatepass"))
        return np.fromiter(map(_xxh3, encoded), dtype=np.uint64, count=count)
