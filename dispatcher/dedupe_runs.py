"""The packed record of `dispatcher.dedupe` for jobs of many recipients (numpy): the
design, and the twin of the record held in C (`dispatcher.dedupe.NativeRecord`, which
runs where the C part is built and gives the same answers, entries, runs and bytes).

`dispatcher.dedupe.Dedupe` keeps its first `dispatcher.dedupe.SMALL` distinct recipients
in a dict, and takes a packed record only when a job outgrows it. Here the recipients
are kept as sorted runs of three packed numpy columns: the key (uint64: the code id and
the number, see `dispatcher.dedupe`), the text hash (uint64; absent in ``number`` mode)
and the first line (uint32, so a job of at most 2^32 - 1 lines): **20 bytes per distinct
recipient** (12 in ``number`` mode), no Python object per entry, and 1 to 2 bytes of
filter (`KeyFilter`; 1 MiB at least, see `Runs._rebuild_filter`). An open-addressing table of
the same columns that doubles at a 90 % load factor would hold 22 to 44 bytes an entry
depending on where the job's size falls.

Each call sorts its lines by key (a stable argsort; the (key, hash) pair only when a key
repeats in the call) and asks the filter which of the distinct ones it may have seen:
usually none but the true duplicates and 0.5 to 3.5 % of the others. Only those are
looked up in every run (`dispatcher.sorted_keys.SortedKeys`: the look-ups descend together,
so their cache misses overlap), reading the hashes and lines only where the key is
found; the new ones are added as one small sorted run. Runs of one level merge four at
a time into one of the next (a counter in base `FANOUT`): each entry is copied about
log4(N / chunk) times over the job (3 at 1 M recipients in chunks of 5000, 5 at 10 M),
and there are at most 3 runs a level. A merge joins the columns and orders them by one
stable argsort, which merges the sorted runs. Each run's keys carry 64 entries of
padding and an index of every 64th key (1/8 byte an entry).

Time (CPU, this project's shared machine at load 3 to 4, 1 M distinct recipients):
0.70 to 0.80 µs a line in ``bench/bench_campaign.py``'s loop (chunks of 3000, 2 %
repeats from anywhere earlier), of which XXH3 of the texts (with accents: the UTF-8
encoding is most of it) is about a third, the merges an eighth, the look-ups of the
repeats and the filter's false positives a tenth; 0.45 to 0.6 µs a line for the whole
`dispatcher.policy.Duplicates` check in ``dispatcher send``'s chunks. The version
without the filter, merging two runs at a time: 0.85 and 0.7 µs. With the filter's
floor (`dispatcher.dedupe.MIN_FILTER`), in one process with the versions alternated
chunk by chunk (load 1.1 to 1.4): the loop 443 against 496 ns a line, the check in
send's chunks 357 against 414 ns (of which XXH3 about 90, the merges 80, the line
numbers 40, the filter 60).

Those figures are this numpy code's, now the twin of the record held in C
(`dispatcher.dedupe.NativeRecord`): with this record calling the C part's loops for its
hashes, sorts, filter, look-ups and merges, ``Runs.firsts`` took 150 against 280 to
333 ns a line of send's checks (1 M lines, in process); the record wholly in C, 297 ns
a line in ``bench_campaign.py``'s loop at 1 M recipients (0.61 µs with the loops alone,
0.91 in numpy). The README's campaign-safety figures have the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat as _repeat
from typing import TYPE_CHECKING, Final, cast

import numpy as np
import numpy.typing as npt
import xxhash

from dispatcher import dedupe, heap
from dispatcher.dedupe import NUMBER_BITS
from dispatcher.errors import ConfigError
from dispatcher.keys import is_packed, one_text, text_hash
from dispatcher.sorted_keys import FILTER_BLOCK, KeyFilter, SortedKeys, number_keys

if TYPE_CHECKING:
    from dispatcher.dedupe import Packed

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]

#: Runs of one level are merged this many at a time (see `Runs._add`).
FANOUT: Final = 4
#: The largest line number a run holds (uint32).
MAX_LINE: Final = 0xFFFFFFFF

_xxh3_bytes: Final = xxhash.xxh3_64_digest  # big-endian, the canonical form
_NO_LINE: Final = -1
_LOW64: Final = (1 << 64) - 1


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
        that meet one step along until the key changes (the padding stops them). All the
        queries descend their blocks together (`SortedKeys.first_at_least`); the C
        record looks each one up through the run's index instead.
        """
        table = self.keys.table
        at = self.keys.first_at_least(keys)
        # Most queries are not here: read the hashes and lines only where the key is.
        found = np.flatnonzero(table.take(at) == keys)
        at = at[found]
        if hashes is None or self.hashes is None:
            out[found] = self.lines.take(at)
            return
        while len(found):
            hit = self.hashes.take(at) == hashes.take(found)
            out[found[hit]] = self.lines[at[hit]]
            found, at = found[~hit], at[~hit] + 1
            same_key = table.take(at) == keys.take(found)
            found, at = found[same_key], at[same_key]

    @staticmethod
    def merge(runs: list[_Run]) -> _Run:
        """One run of all of ``runs`` (they share no entry): the columns joined and
        ordered by one stable argsort, which finds the sorted runs and merges them
        (timsort): 90 ns an entry for two runs over a job of 900 k entries, against 230
        ns for placing the newer entries by ``searchsorted`` and the older ones through
        a mask. Each column is released as soon as its merged copy exists, so the peak
        while the biggest run merges is about 36 bytes an entry of it (the 20 of the
        runs, 8 of merged keys, 8 of the order). The C record merges the keys four runs
        at a time, noting which run each came from (a byte an entry: 29 bytes at the
        peak), and lays the other columns out by those bytes."""
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
            hashes = hashes.take(order)
        lines = np.concatenate([run.lines for run in runs])
        for run in runs:
            run.lines = _EMPTY_U32
        return _Run(SortedKeys(table, size), hashes, lines.take(order))


_NO_KEYS: Final = SortedKeys(SortedKeys.empty(0), 0)
_EMPTY_U32: Final[npt.NDArray[np.uint32]] = np.empty(0, dtype=np.uint32)


#: A merge whose result has this many entries hands freed memory back (see `Runs._add`).
TRIM_FROM: Final = 1 << 16


class Runs:
    """The packed record: sorted runs behind a filter (see the module docstring)."""

    def __init__(self) -> None:
        heap.settle()
        self._runs: list[_Run] = []
        self._levels: list[int] = []  # per run: how many merges of FANOUT made it
        self._size = 0
        self._filter: KeyFilter | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        held = sum(run.nbytes for run in self._runs)
        return held + (self._filter.nbytes if self._filter is not None else 0)

    @property
    def runs(self) -> int:
        return len(self._runs)

    def load(self, firsts: dict[int, int], *, texts: bool) -> None:
        """Take the record of a `dispatcher.dedupe.Dedupe` that outgrew its dict: pairs
        ``key << 64 | text hash`` → first line."""
        if not firsts:
            return
        count = len(firsts)
        keys = np.fromiter((pair >> 64 for pair in firsts), dtype=np.uint64, count=count)
        hashes = None
        if texts:
            hashes = np.fromiter((pair & _LOW64 for pair in firsts), dtype=np.uint64, count=count)
            order = np.lexsort((hashes, keys))
            hashes = hashes[order]
        else:
            order = np.argsort(keys, kind="stable")
        lines = np.fromiter(firsts.values(), dtype=np.uint32, count=count)[order]
        self._add(_Run.of(keys[order], hashes, lines))
        self._rebuild_filter()

    def firsts(
        self,
        code_ids: int | list[int],
        numbers: Sequence[str] | Packed,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> _I64:
        """Per line, -1 or the first line of its kind (`dispatcher.dedupe.Dedupe`): in
        ``number+text`` mode ``texts`` is not None and ``code_ids`` are the codes' ids
        (one, or one per line); in ``number`` mode ``texts`` is None."""
        count = len(lines)
        keys = _keys(numbers, count)
        hashes = None
        if texts is not None:
            if isinstance(code_ids, int):
                keys |= np.uint64(code_ids << NUMBER_BITS)
            else:
                keys |= np.array(code_ids, dtype=np.uint64) << np.uint64(NUMBER_BITS)
            hashes = _text_hashes(texts, count)
        if is_packed(lines):
            line_numbers = np.asarray(lines).astype(np.int64, copy=False)
        else:
            line_numbers = np.fromiter(lines, dtype=np.int64, count=count)
        if int(line_numbers.max()) > MAX_LINE:
            raise ConfigError(f"--dedupe handles inputs of at most {MAX_LINE} lines")
        return self._check(keys, hashes, line_numbers)

    def duplicates(
        self,
        code_ids: int | list[int],
        numbers: Sequence[str] | Packed,
        texts: str | Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> tuple[list[int], list[int]]:
        """`firsts`, answered as the positions of the duplicates and their first lines."""
        return self._positions(self.firsts(code_ids, numbers, texts, lines))

    @staticmethod
    def _positions(firsts: _I64) -> tuple[list[int], list[int]]:
        """The positions of `firsts` that are duplicates, and their first lines."""
        positions = np.flatnonzero(firsts >= 0)
        if not len(positions):
            return [], []
        return positions.tolist(), firsts[positions].tolist()

    def _check(self, keys: _U64, hashes: _U64 | None, lines: _I64) -> _I64:
        count = len(keys)
        # Group equal (key, hash) pairs; the sorts are stable, so a group starts with its
        # earliest line. Sorting on the key alone is half the cost of both (12 against
        # 23 ns a line): the pair is sorted only when the chunk has a key twice.
        order, sorted_keys = _argsort(keys)
        starts = np.empty(count, dtype=bool)
        starts[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
        if hashes is not None and not starts.all():
            order = np.lexsort((hashes, keys))
            sorted_keys = keys.take(order)
            np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
        keys = sorted_keys
        if hashes is not None:
            hashes = hashes.take(order)
            starts[1:] |= hashes[1:] != hashes[:-1]
        if starts.all():  # no repeat within the call (the usual case): no group to map
            leaders = None
            group_keys, group_hashes, own_lines = keys, hashes, lines.take(order)
        else:
            leaders = np.flatnonzero(starts)
            group_keys = keys.take(leaders)
            group_hashes = hashes.take(leaders) if hashes is not None else None
            own_lines = lines.take(order.take(leaders))
        found = np.full(len(group_keys), _NO_LINE, dtype=np.int64)
        table = self._filter
        if table is not None:
            # Only the groups the filter may have seen are looked up in the runs. Each
            # group's pair goes into the filter as it is asked about: one found in the
            # runs was in it already, and every other one is recorded below.
            asked = table.maybe_add(group_keys, group_hashes)
            if len(asked):
                answers = np.full(len(asked), _NO_LINE, dtype=np.int64)
                asked_hashes = group_hashes.take(asked) if group_hashes is not None else None
                asked_keys = group_keys.take(asked)
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
            if table is None or self._size > table.capacity:
                self._rebuild_filter()
        return answer

    def _rebuild_filter(self) -> None:
        """A filter of every recorded pair, with room for as many again (and for
        `dispatcher.dedupe.MIN_FILTER` pairs at least).

        Each rebuild reads every recorded pair again: a filter grown from a job's first
        chunk re-added 1.3 M pairs over a job of 1 M recipients. With the floor, a job
        of up to a million recipients never rebuilds it; a small job holds 1 MiB of
        filter (its dict of 32 Ki recipients held 3.6), with fewer false positives. In
        send's checks of 1 M lines: 347 against 384 ms (min of 4, rounds alternated in
        one process, load 1.2).
        """
        self._filter = None  # released before its successor is made
        table = KeyFilter(max(2 * self._size, dedupe.MIN_FILTER))
        for run in self._runs:
            for start in range(0, len(run), FILTER_BLOCK):
                end = min(start + FILTER_BLOCK, len(run))
                run_hashes = run.hashes[start:end] if run.hashes is not None else None
                table.add(run.keys.table[start:end], run_hashes)
        self._filter = table

    def _add(self, run: _Run) -> None:
        """Append a new run at level 0; `FANOUT` runs of one level merge into one of the
        next (a counter in base `FANOUT`).

        A merge whose result has `TRIM_FROM` entries or more (about 50 per 1 M entries)
        hands the heap's free pages back (`dispatcher.heap.release`): glibc keeps what
        a merge freed, ready for the next one, and at 1 M entries the process held 34
        bytes per entry for 20 of runs; trimmed, 21. Anonymous maps of their own for
        every array were measured too: the page faults of fresh memory made the merges
        twice as slow.
        """
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
                heap.release()


def _argsort(keys: _U64) -> tuple[_I64, _U64]:
    """The stable order of ``keys`` and the keys in it. (The C record sorts by radix,
    which compares nothing: 15 against 53 ns a key for this timsort on 5000 fresh keys
    of random numbers; the same array sorted again took timsort 16.5 ns a key — the
    difference is its comparisons' branches, which the processor learns only for keys
    it has seen.)"""
    order = np.argsort(keys, kind="stable")
    # Gathers by ``take``, not ``[]``: 4.3 against 4.8 µs for 5000 keys, 8.1 against
    # 11.8 ms for a merge's 1 M (a filter's words by uint64 positions: 9 against 15 µs).
    return order, keys.take(order)


def _keys(numbers: Sequence[str] | Packed, count: int) -> _U64:
    if is_packed(numbers):
        if len(numbers) != count:
            raise ValueError(f"{len(numbers)} numbers for {count} lines")
        return np.array(numbers, dtype=np.uint64)  # a copy: the caller's is not changed
    keys = number_keys(cast("Sequence[str]", numbers))
    if len(keys) != count:
        raise ValueError(f"{len(keys)} numbers for {count} lines")
    return keys


def _text_hashes(texts: str | Sequence[str] | None, count: int) -> _U64:
    if texts is None:
        raise ValueError("number+text dedupe needs the texts")
    if not isinstance(texts, str) and len(texts) != count:
        raise ValueError(f"{len(texts)} texts for {count} lines")
    if isinstance(texts, str) or one_text(texts):  # a template without placeholders
        text = texts if isinstance(texts, str) else texts[0]
        return np.full(count, text_hash(text), dtype=np.uint64)
    # The digests' bytes joined and read as big-endian words: the same values as the int
    # digests, without a Python int converted a text (75 against 93 ns a text).
    try:
        digests = b"".join(map(_xxh3_bytes, map(str.encode, texts)))
    except UnicodeEncodeError:  # a lone surrogate (35 % slower for every text if asked)
        encoded = map(str.encode, texts, _repeat("utf-8"), _repeat("surrogatepass"))
        digests = b"".join(map(_xxh3_bytes, encoded))
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)
