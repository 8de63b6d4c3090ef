"""Duplicate detection: the modes, repeats within and across chunks against a plain dict,
the runs as they grow and merge, the stable text hash, and the limits."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import dedupe, dedupe_runs, keys, sorted_keys
from dispatcher.dedupe import Dedupe, Mode
from dispatcher.errors import ConfigError
from dispatcher.sorted_keys import SortedKeys, number_keys
from tests.support.native import built, twins

MX = "+525512345678"
US = "+12025550123"


@pytest.fixture(autouse=True, scope="module")
def packed() -> Iterator[None]:
    """The packed engine from a job's first line (the dict of a small job has tests of
    its own below: `test_a_small_job_keeps_a_dict_and_answers_the_same`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dedupe, "SMALL", 0)
        yield


class Reference:
    """The plain-dict implementation the engine must agree with."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.seen: dict[object, int] = {}

    def check_many(
        self, codes: Sequence[str], numbers: Sequence[str], texts: Sequence[str], lines: list[int]
    ) -> list[int]:
        out = []
        for code, number, text, line in zip(codes, numbers, texts, lines, strict=True):
            if self.mode == "off":
                out.append(-1)
                continue
            key = (code, number, text) if self.mode == "number+text" else number
            if key in self.seen:
                out.append(self.seen[key])
            else:
                self.seen[key] = line
                out.append(-1)
        return out


def test_number_text_mode() -> None:
    d = Dedupe()
    assert d.mode is Mode.NUMBER_TEXT
    assert d.check_many("A", [MX, US, MX], ["hi", "hi", "hi"], [1, 2, 3]) == [-1, -1, 1]
    # Another code, another text: not duplicates; the same again: duplicates of 1 and 4.
    assert d.check_many(["B", "A", "A"], [MX, MX, MX], ["hi", "bye", "hi"], [4, 5, 6]) == [
        -1,
        -1,
        1,
    ]
    assert d.check_many("B", [MX], "hi", [7]) == [4]
    assert len(d) == 4


def test_number_mode_ignores_code_and_text() -> None:
    d = Dedupe("number")
    assert d.check_many(["A", "B"], [MX, MX], ["hi", "bye"], [1, 2]) == [-1, 1]
    assert d.check_many("C", [US, MX], None, [3, 4]) == [-1, 1]
    assert len(d) == 2
    with twins():
        t = Dedupe("number")
        t.check_many(["A", "B"], [MX, MX], ["hi", "bye"], [1, 2])
        t.check_many("C", [US, MX], None, [3, 4])
        assert isinstance(t._packed, dedupe_runs.Runs)
        assert all(run.hashes is None for run in t._packed._runs)  # 12 bytes an entry
    assert d.nbytes == t.nbytes  # the C part's record: the same columns


def test_off_keeps_nothing() -> None:
    d = Dedupe("off")
    assert d.check_many("A", [MX, MX], ["a", "a"], [1, 2]) == [-1, -1]
    assert (len(d), d.nbytes, d.runs) == (0, 0, 0)


def test_repeats_within_one_call_point_at_the_earliest() -> None:
    d = Dedupe()
    lines = [10, 11, 12, 13, 14]
    got = d.check_many("A", [US, MX, US, MX, US], "same", lines)
    assert got == [-1, -1, 10, 11, 10]


def test_the_first_line_is_whatever_the_caller_numbers_it() -> None:
    # Lines need not be consecutive (only lines that passed the other checks come here).
    d = Dedupe()
    assert d.check_many("A", [MX, US], "t", [7, 3]) == [-1, -1]
    assert d.check_many("A", [US, MX], "t", [100, 200]) == [3, 7]


@pytest.mark.parametrize("cached", [0, sorted_keys.CACHED_KEYS])
def test_one_number_many_texts_across_runs(cached: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Equal keys with different text hashes sit side by side in a run: the look-up steps
    # along them (with CACHED_KEYS at 0, after the vectorised descent).
    monkeypatch.setattr(sorted_keys, "CACHED_KEYS", cached)
    d = Dedupe()
    line = 0
    for round_ in range(3):
        texts = [f"text {i}" for i in range(40)]
        lines = list(range(line + 1, line + 41))
        got = d.check_many("A", [MX] * 40, texts, lines)
        assert got == ([-1] * 40 if round_ == 0 else list(range(1, 41)))
        line += 40
    assert len(d) == 40


def test_numbers_may_come_as_keys() -> None:
    d = Dedupe()
    keys = number_keys([MX, US])
    assert d.check_many("A", keys, "t", [1, 2]) == [-1, -1]
    assert keys.tolist() == [525512345678, 12025550123]  # the caller's array is unchanged
    assert d.check_many("A", [US], "t", [3]) == [2]


def test_empty_call() -> None:
    assert Dedupe().check_many("A", [], [], []) == []


def test_text_hash_is_stable_across_processes() -> None:
    # XXH3-64 is fixed by its specification: a state could be read by another process.
    hashes = dedupe_runs._text_hashes
    assert hashes("Hola, tu código es 1234", 1).tolist() == [0x76A896C9DFDA1520]
    assert hashes(["a", "b"], 2).tolist() == [hashes("a", 1)[0], hashes("b", 1)[0]]
    assert keys.text_hash("Hola, tu código es 1234") == 0x76A896C9DFDA1520  # a small job's


def test_a_lone_surrogate_is_hashed_not_refused() -> None:
    d = Dedupe()
    assert d.check_many("A", [MX, MX], ["\ud800", "\ud800"], [1, 2]) == [-1, 1]


def test_too_many_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedupe, "MAX_CODES", 2)
    d = Dedupe()
    d.check_many(["A", "B"], [MX, MX], "t", [1, 2])
    with pytest.raises(ConfigError, match="at most 2 sender codes"):
        d.check_many("C", [MX], "t", [3])
    # number mode does not keep codes at all
    Dedupe("number").check_many(["A", "B", "C"], [MX, US, MX], None, [1, 2, 3])


def test_lines_beyond_32_bits() -> None:
    with pytest.raises(ConfigError, match="at most 4294967295 lines"):
        Dedupe().check_many("A", [MX], "t", [2**32])


@pytest.mark.parametrize(
    ("numbers", "texts", "lines"),
    [([MX, US], ["t"], [1, 2]), ([MX], ["t", "u"], [1, 2]), (np.zeros(3, np.uint64), "t", [1])],
)
def test_lengths_must_agree(numbers: object, texts: object, lines: list[int]) -> None:
    with pytest.raises(ValueError, match="for"):
        Dedupe().check_many("A", numbers, texts, lines)  # type: ignore[arg-type]


def test_number_text_needs_texts() -> None:
    with pytest.raises(ValueError, match="needs the texts"):
        Dedupe().check_many("A", [MX], None, [1])


@pytest.mark.parametrize("cached", [0, sorted_keys.CACHED_KEYS])
def test_runs_merge_like_a_counter(cached: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The numpy record's runs (the record held in C is compared with this one, step by
    # step, below).
    monkeypatch.setattr(sorted_keys, "CACHED_KEYS", cached)
    monkeypatch.setattr(dedupe, "MIN_FILTER", 0)  # the filter grows with the record
    d = Dedupe()
    d._packed = dedupe_runs.Runs()
    line = 0
    for chunk in range(200):
        numbers = [f"+5255{chunk:04d}{i:04d}" for i in range(50)]
        got = d.check_many("A", numbers, "t", list(range(line + 1, line + 51)))
        assert got == [-1] * 50
        line += 50
        assert isinstance(d._packed, dedupe_runs.Runs)
        sizes = [len(run) for run in d._packed._runs]
        # A counter in base FANOUT: fewer than FANOUT runs of each level, the older ones
        # of the higher levels, each level FANOUT times the entries of the one below.
        levels = d._packed._levels
        assert levels == sorted(levels, reverse=True)
        assert all(levels.count(level) < dedupe_runs.FANOUT for level in levels)
        assert sizes == [50 * dedupe_runs.FANOUT**level for level in levels]
        assert sum(sizes) == len(d)
    assert len(d) == 10_000
    assert d.runs <= 8
    # 20 bytes an entry, and per run the padding and the index of the keys; the filter
    # in front of the runs, 1 to 2 bytes an entry
    runs = d._packed._runs
    padding = sum(8 * (SortedKeys.STEP + len(run.keys.index)) for run in runs)
    table = d._packed._filter
    assert table is not None
    assert 10_000 <= table.nbytes <= 2 * 10_000
    assert d.nbytes == 20 * 10_000 + padding + table.nbytes
    for run in runs:
        assert (np.diff(run.keys.table[: len(run)].astype(np.int64)) > 0).all()
    # Everything recorded is still found, whichever run it went to.
    every = [f"+5255{c:04d}{i:04d}" for c in range(200) for i in range(50)]
    assert d.check_many("A", every, "t", list(range(20_001, 30_001))) == list(range(1, 10_001))


def test_the_filter_has_a_floor_and_doubles_beyond_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedupe, "MIN_FILTER", 4096)
    d = Dedupe("number")
    d._packed = dedupe_runs.Runs()
    numbers = [f"+5255{i:08d}" for i in range(10_000)]
    sizes = []
    for start in range(0, 10_000, 500):
        d.check_many("A", number_keys(numbers[start : start + 500]), None,
                     list(range(start + 1, start + 501)))  # fmt: skip
        assert isinstance(d._packed, dedupe_runs.Runs)
        assert d._packed._filter is not None
        sizes.append(d._packed._filter.nbytes)
    # 1 byte a pair of capacity: the floor until 4096 recipients, then twice the record
    # at each rebuild (at 4500: 9000; at 9500: 19000)
    assert sizes[:8] == [4096] * 8
    assert sorted(set(sizes)) == [4096, 9000, 19000]
    assert d.check_many("A", number_keys(numbers), None, list(range(10_001, 20_001))) == list(
        range(1, 10_001)
    )


_CODES = st.sampled_from(["A", "B", "12345"])
_NUMBERS = st.sampled_from([f"+5255000000{i:02d}" for i in range(12)] + [US])
_TEXTS = st.sampled_from(["hi", "ho", "hé ✓", ""])
_CHUNK = st.lists(st.tuples(_CODES, _NUMBERS, _TEXTS), max_size=40)


def columns(
    chunk: list[tuple[str, str, str]], line: int
) -> tuple[list[str], list[str], list[str], list[int]]:
    """The codes, numbers, texts and line numbers (after ``line``) of a chunk."""
    codes = [c for c, _, _ in chunk]
    numbers = [n for _, n, _ in chunk]
    texts = [t for _, _, t in chunk]
    return codes, numbers, texts, list(range(line + 1, line + len(chunk) + 1))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["number+text", "number", "off"]),
    st.lists(_CHUNK, max_size=25),
    st.booleans(),
)
def test_same_answers_as_a_dict(
    mode: str, chunks: list[list[tuple[str, str, str]]], numpy_twins: bool
) -> None:
    # The C part (dispatcher._native) or its numpy twins: the same answers.
    engine, reference = Dedupe(mode), Reference(mode)
    line = 0
    with twins(numpy_twins):
        for chunk in chunks:
            codes, numbers, texts, lines = columns(chunk, line)
            line += len(chunk)
            assert engine.check_many(codes, numbers, texts, lines) == reference.check_many(
                codes, numbers, texts, lines
            )
    assert len(engine) == len(reference.seen)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4000), st.integers(50, 3000), st.booleans())
def test_growth_under_load_against_a_dict(
    seed: int, count: int, chunk: int, numpy_twins: bool
) -> None:
    # Many distinct recipients, a share of repeats from anywhere earlier: runs grow and
    # merge many times over (in C, or in the numpy twins).
    rng = np.random.default_rng(seed)
    pool = rng.integers(10**11, 10**12, size=count // 2 + 1)
    numbers = [f"+{n}" for n in rng.choice(pool, size=count).tolist()]
    texts = [f"t{n}" for n in rng.integers(0, 3, size=count).tolist()]
    engine, reference = Dedupe(), Reference("number+text")
    with twins(numpy_twins):
        for start in range(0, count, chunk):
            part = slice(start, start + chunk)
            lines = list(range(start + 1, min(start + chunk, count) + 1))
            assert engine.check_many("A", numbers[part], texts[part], lines) == (
                reference.check_many(["A"] * len(lines), numbers[part], texts[part], lines)
            )
    assert len(engine) == len(reference.seen)
    if numpy_twins:
        assert isinstance(engine._packed, dedupe_runs.Runs)
        runs = engine._packed._runs
        keys = sum(run.keys.table.nbytes + run.keys.index.nbytes for run in runs)
        assert engine._packed._filter is not None
        # text hash and line, 12 bytes an entry
        assert engine.nbytes - keys - engine._packed._filter.nbytes == 12 * len(engine)
    else:
        assert isinstance(engine._packed, dedupe.NativeRecord)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["number+text", "number"]),
    st.integers(0, 2**32 - 1),
    st.integers(1, 3000),
    st.integers(20, 700),
    st.booleans(),
)
def test_a_crowded_filter_changes_no_answer(
    mode: str, seed: int, count: int, chunk: int, numpy_twins: bool
) -> None:
    # A filter that says "maybe" to every line (all false positives: every line is looked
    # up in every run, as without a filter), and a filter of the usual size that says it
    # to almost none: the answers are the dict's either way.
    rng = np.random.default_rng(seed)
    pool = rng.integers(10**11, 10**12, size=count // 3 + 1)
    numbers = [f"+{n}" for n in rng.choice(pool, size=count).tolist()]
    texts = [f"t{n}" for n in rng.integers(0, 2, size=count).tolist()]
    crowded, roomy, reference = Dedupe(mode), Dedupe(mode), Reference(mode)
    with twins(numpy_twins):
        if not numpy_twins:  # a filter of one word: all its bits set after a few pairs
            crowded._packed = dedupe.NativeRecord(texts=mode == "number+text", filter_words=1)
        for start in range(0, count, chunk):
            part = slice(start, start + chunk)
            lines = list(range(start + 1, min(start + chunk, count) + 1))
            expected = reference.check_many(["A"] * len(lines), numbers[part], texts[part], lines)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sorted_keys.KeyFilter, "maybe", _always)
                assert crowded.check_many("A", numbers[part], texts[part], lines) == expected
            assert roomy.check_many("A", numbers[part], texts[part], lines) == expected


def _always(self: object, keys: np.ndarray, hashes: object) -> np.ndarray:  # type: ignore[type-arg]
    return np.arange(len(keys))


def test_the_filter_never_forgets() -> None:
    rng = np.random.default_rng(1)
    keys = rng.integers(1, 2**63, size=5000, dtype=np.int64).view(np.uint64)
    hashes = rng.integers(0, 2**63, size=5000, dtype=np.int64).view(np.uint64)
    table = sorted_keys.KeyFilter(1000)  # five times over its capacity: crowded, yet exact
    table.add(keys, hashes)
    assert len(table.maybe(keys, hashes)) == len(keys)
    assert len(table.maybe(keys, None)) < len(keys)  # other pairs
    roomy = sorted_keys.KeyFilter(5000)
    roomy.add(keys, hashes)
    assert len(roomy.maybe(keys, hashes)) == len(keys)
    others = rng.integers(1, 2**63, size=100_000, dtype=np.int64).view(np.uint64)
    # At 8 bits a pair, about 3 % false positives
    assert len(roomy.maybe(others, hashes[:1].repeat(100_000))) < 5000


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["number+text", "number"]),
    st.lists(_CHUNK, max_size=12),
    st.integers(0, 60),
)
def test_a_small_job_keeps_a_dict_and_answers_the_same(
    mode: str, chunks: list[list[tuple[str, str, str]]], small: int
) -> None:
    # The dict of a small job, its move to the packed runs once it holds more than
    # SMALL recipients (anywhere in the job, or never), and the runs after it: the
    # answers are the plain dict's throughout, and numbers as keys are taken too.
    engine, reference = Dedupe(mode), Reference(mode)
    line = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dedupe, "SMALL", small)
        for chunk in chunks:
            codes, numbers, texts, lines = columns(chunk, line)
            line += len(chunk)
            expected = reference.check_many(codes, numbers, texts, lines)
            given_numbers = number_keys(numbers) if line % 2 else numbers
            assert engine.check_many(codes, given_numbers, texts, lines) == expected
            # the dict holds at most SMALL recipients; once moved, the runs hold them all
            assert len(engine._small) <= small
            assert engine._packed is None or not engine._small
    assert len(engine) == len(reference.seen)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["number+text", "number"]), st.lists(_CHUNK, max_size=8))
def test_a_job_expected_big_starts_packed_and_answers_the_same(
    mode: str, chunks: list[list[tuple[str, str, str]]]
) -> None:
    # An input expected to outgrow the dict (its file's size) skips it: packed from the
    # first call, the plain dict's answers throughout.
    engine, reference = Dedupe(mode, expected=dedupe.SMALL + 1), Reference(mode)
    assert engine.packed
    assert not Dedupe(mode, expected=dedupe.SMALL).packed
    assert not Dedupe("off", expected=dedupe.SMALL + 1).packed
    line = 0
    for chunk in chunks:
        codes, numbers, texts, lines = columns(chunk, line)
        line += len(chunk)
        expected = reference.check_many(codes, numbers, texts, lines)
        assert engine.check_many(codes, numbers, texts, lines) == expected
        assert not engine._small
    assert len(engine) == len(reference.seen)


def test_a_small_job_does_not_import_numpy() -> None:
    code = (
        "import sys\n"
        "from dispatcher.dedupe import Dedupe\n"
        "from dispatcher.policy import Duplicates\n"
        "d = Dedupe()\n"
        "assert d.check_many('A', ['+525512345678'] * 2, ['t', 't'], [1, 2]) == [-1, 1]\n"
        "assert d.duplicates('A', ['+525512345678'], 't', [3]) == ([0], [1])\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_big_job_checks_its_duplicates_without_numpy() -> None:
    # Where the C part is built, the packed record, the chunk's keys and lines and the
    # entries' gather by line are all packed words (`dispatcher.keys`): numpy is never
    # imported by the duplicate check, however big the job.
    built()
    code = (
        "import sys\n"
        "from dispatcher.dedupe import ChunkNumbers, Dedupe, NativeRecord\n"
        "from types import SimpleNamespace\n"
        "from dispatcher.models import Entry\n"
        "from dispatcher.policy import Duplicates\n"
        "d = Dedupe(expected=10**6)\n"
        "assert isinstance(d._packed, NativeRecord)\n"
        "numbers = ['+5255%08d' % i for i in range(3000)] + ['+525500000007']\n"
        "entries = [Entry(i + 1, n, [], None, 1, 'gsm', None) for i, n in enumerate(numbers)]\n"
        "check = Duplicates(d, texts=True)\n"
        "check.begin_chunk(ChunkNumbers.of(1, len(numbers), numbers))\n"
        "class Sink:\n"
        "    def local(self, line, to, status, error, **kw): self.got = (line, kw['first'])\n"
        "sink = Sink()\n"
        "group = SimpleNamespace(sender='A')  # the check reads its sender alone\n"
        "keep = check.check(group, entries, ['t'] * len(entries), sink)\n"
        "assert keep == list(range(3000)) and sink.got == (3001, 8), (keep, sink.got)\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DISPATCHER_NATIVE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_one_text_for_every_line_is_hashed_once_and_the_same() -> None:
    static = "Your code is ready"
    copy = "".join(["Your code ", "is ready"])  # equal, another object
    assert dedupe.one_text([static, static, static])
    assert dedupe.one_text([static, copy, static])
    assert not dedupe.one_text([static, copy])  # the ends are other objects: not asked
    assert not dedupe.one_text([static, "other", static])
    assert not dedupe.one_text([])
    for small in (0, 100):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dedupe, "SMALL", small)
            d = Dedupe()
            assert d.check_many("A", [MX, US, MX], [static] * 3, [1, 2, 3]) == [-1, -1, 1]
            assert d.check_many("A", [US, MX], [copy, "other"], [4, 5]) == [2, -1]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["number+text", "number"]),
    st.integers(0, 2**32 - 1),
    st.integers(1, 3000),
    st.integers(1, 700),
    st.sampled_from([2, 7, 200, 5000]),
    st.sampled_from([1, 3, 40]),
    st.sampled_from([0, 4096, 1 << 20]),
)
def test_the_record_in_c_is_its_numpy_twin_step_by_step(
    mode: str, seed: int, count: int, chunk: int, numbers_in_pool: int, texts_in_pool: int,
    min_filter: int,
) -> None:  # fmt: skip
    # The record held in C (`dispatcher.dedupe.NativeRecord`) against the numpy record
    # (`dispatcher.dedupe_runs.Runs`): the same answers chunk by chunk, and the same
    # entries, runs and bytes after each (the same columns, merges and filter sizes).
    # A small pool of numbers with many texts makes long groups of one key in a chunk
    # (sorted by hash by insertion, or by qsort from 16); three codes, one a line.
    rng = np.random.default_rng(seed)
    pool = rng.integers(10**11, 10**12, size=numbers_in_pool)
    numbers = [f"+{n}" for n in rng.choice(pool, size=count).tolist()]
    texts = [f"t{n}" for n in rng.integers(0, texts_in_pool, size=count).tolist()]
    codes = [("A", "B", "C")[n] for n in rng.integers(0, 3, size=count).tolist()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dedupe, "MIN_FILTER", min_filter)
        in_c = Dedupe(mode)
        with twins():
            in_numpy = Dedupe(mode)
        for start in range(0, count, chunk):
            part = slice(start, start + chunk)
            lines = list(range(start + 1, min(start + chunk, count) + 1))
            with twins(False):
                got = in_c.check_many(codes[part], numbers[part], texts[part], lines)
            with twins():
                assert got == in_numpy.check_many(codes[part], numbers[part], texts[part], lines)
            assert (len(in_c), in_c.runs, in_c.nbytes) == (
                len(in_numpy), in_numpy.runs, in_numpy.nbytes
            )  # fmt: skip
    assert isinstance(in_c._packed, dedupe.NativeRecord)
    assert isinstance(in_numpy._packed, dedupe_runs.Runs)


def test_the_record_in_c_takes_over_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    # A job that outgrows its dict hands it to the record in C: what the dict held is
    # found there (its first lines), and what it did not is new.
    monkeypatch.setattr(dedupe, "SMALL", 100)
    d = Dedupe()
    numbers = [f"+5255{i:08d}" for i in range(150)]
    with twins(False):
        assert d.check_many("A", numbers[:100], "t", list(range(1, 101))) == [-1] * 100
        assert not d.packed
        got = d.check_many("A", numbers[50:], "t", list(range(101, 201)))
        assert isinstance(d._packed, dedupe.NativeRecord)
        assert got == list(range(51, 101)) + [-1] * 50
        assert len(d) == 150
        assert d.check_many("B", numbers[:1], "t", [201]) == [-1]  # another code: new
