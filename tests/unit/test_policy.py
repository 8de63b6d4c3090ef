"""The chunk-level campaign policies: caps never exceeded, duplicates with their first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import dedupe
from dispatcher.dedupe import ChunkNumbers, Dedupe
from dispatcher.models import Entry, Group, Status
from dispatcher.policy import LONG_LINE, Caps, Duplicates, expected_lines, others, policies_for
from dispatcher.pricing import Pricing
from dispatcher.renderer import compile_template

GROUP = Group("g", sender="12345", template=compile_template("Hi"), options={}, capacity=1)


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[int, Status, dict[str, Any]]] = []

    def local(self, line: int, to: str | None, status: Status, error: str, **kw: Any) -> None:
        self.got.append((line, status, kw))


def entries(*segments: int, start: int = 1, to: str = "+5255000000") -> list[Entry]:
    return [
        Entry(start + i, f"{to}{start + i:02d}", [], None, n, "GSM7", None)
        for i, n in enumerate(segments)
    ]


def test_caps_stop_at_the_first_line_beyond_and_stay_reached() -> None:
    caps = Caps(max_segments=5)
    sink = Sink()
    assert caps.check(GROUP, entries(2, 2), None, sink) is None
    assert caps.check(GROUP, entries(1, 1, start=3), None, sink) == [0]
    assert caps.reached == ("max_segments", 4)
    # A later, smaller message does not slip under the cap: the job is cut at one line.
    assert caps.check(GROUP, entries(0, start=5), None, sink) == []
    assert [(line, status) for line, status, _ in sink.got] == [
        (4, Status.NOT_SENT),
        (5, Status.NOT_SENT),
    ]
    assert caps.segments == 5


def test_caps_count_what_earlier_runs_may_have_sent() -> None:
    caps = Caps(max_messages=3)
    caps.count(2, 2, 0.0)
    assert caps.check(GROUP, entries(1, 1), None, Sink()) == [0]
    assert caps.reached == ("max_messages", 2)


def test_the_cost_cap_prices_by_prefix_and_tolerates_float_sums() -> None:
    caps = Caps(max_cost=0.3, pricing=Pricing(0.1, {"52": 0.1, "1": 1.0}))
    assert caps.check(GROUP, entries(1, 1, 1), None, Sink()) is None  # 0.1+0.1+0.1
    caps = Caps(max_cost=1.5, pricing=Pricing(0.1, {"1": 1.0}))
    assert caps.check(GROUP, entries(1, 1, to="+1555000000"), None, Sink()) == [0]


def test_duplicates_name_their_first_line() -> None:
    duplicates = Duplicates(Dedupe("number+text"), texts=True)
    sink = Sink()
    first = entries(1, 1)
    assert duplicates.check(GROUP, first, ["a", "b"], sink) is None
    again = [first[0]._replace(line=7), first[1]._replace(line=8)]
    assert duplicates.check(GROUP, again, ["a", "other"], sink) == [1]
    assert sink.got == [
        (7, Status.DUPLICATE, {"ref": None, "segments": 1, "encoding": "GSM7", "first": 1,
                               "replaced": 0}),
    ]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 60).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(n - 1, 0))))
    )
)
def test_others_is_the_complement_in_order(case: tuple[int, set[int]]) -> None:
    count, positions = case
    positions = {p for p in positions if p < count}
    assert others(sorted(positions), count) == [p for p in range(count) if p not in positions]


_RUN_GROUPS = [
    Group(key, sender=code, template=compile_template("Hi"), options={}, capacity=1)
    for key, code in (("a", "12345"), ("b", "12345"), ("c", "777"))
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from(["x", "y"])),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["number+text", "number"]),
)
def test_a_chunks_runs_at_once_decide_as_one_run_at_a_time(
    lines: list[tuple[int, int, str]], mode: str
) -> None:
    """`check_runs` (a chunk's runs of several groups, one index call per code) gives
    every line the outcome, and the same `first`, as `check` run after run."""
    runs: list[tuple[Group, list[Entry], list[str] | None]] = []
    for line, (group, number, text) in enumerate(lines, 1):
        entry = Entry(line, f"+5255000000{number}", [], None, 1, "GSM7", None)
        if not runs or runs[-1][0] is not _RUN_GROUPS[group]:
            runs.append((_RUN_GROUPS[group], [], []))
        runs[-1][1].append(entry)
        runs[-1][2].append(text)  # type: ignore[union-attr]
    one_by_one, at_once = Sink(), Sink()
    policy = Duplicates(Dedupe(mode), texts=mode == "number+text")
    expected = [policy.check(group, list(e), t, one_by_one) for group, e, t in runs]
    policy = Duplicates(Dedupe(mode), texts=mode == "number+text")
    assert policy.check_runs(runs, at_once) == expected
    assert sorted(at_once.got, key=lambda got: got[0]) == one_by_one.got


# --- the chunk's numbers, parsed once (ChunkNumbers) -------------------------------------


def test_chunk_numbers_give_the_keys_of_lines_in_a_contiguous_chunk() -> None:
    numbers = ["+525500000001", None, "+12025550123", "+525500000004"]
    shared = ChunkNumbers.of(11, 14, numbers)
    assert shared.first_line == 11
    lines = np.array([14, 11, 13], dtype=np.int64)
    assert shared.keys_at(lines).tolist() == [525500000004, 525500000001, 12025550123]
    # A line outside the chunk: no answer (the caller parses its own numbers).
    assert shared.keys_at(np.array([11, 15], dtype=np.int64)) is None
    assert shared.keys_at(np.array([10], dtype=np.int64)) is None
    # A chunk with a gap (a blank line, a share, a resume's finished lines): none either.
    gapped = ChunkNumbers.of(11, 15, numbers)
    assert gapped.first_line is None
    assert gapped.keys_at(lines) is None
    assert gapped.keys.tolist() == [525500000001, 0, 12025550123, 525500000004]


def _chunk_runs(
    draw_chunks: list[list[tuple[int, int, bool]]],
) -> Iterator[tuple[ChunkNumbers, list[Entry], list[str]]]:
    """Per chunk of (number, text, reaches the check) draws: its numbers, and the entries
    and texts of the lines that reach the duplicate check (the others were invalid,
    suppressed, refused…)."""
    line = 1
    for chunk in draw_chunks:
        numbers: list[str | None] = []
        run: list[Entry] = []
        texts: list[str] = []
        for number, text, reaches in chunk:
            to = f"+52550000{number:04d}"
            numbers.append(to if reaches or number % 2 else None)
            if reaches:
                run.append(Entry(line, to, [], None, 1, "GSM7", None))
                texts.append(f"text {text}")
            line += 1
        yield ChunkNumbers.of(line - len(chunk), line - 1, numbers), run, texts


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(
        st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2), st.booleans()), max_size=30),
        max_size=12,
    ),
    mode=st.sampled_from(["number+text", "number"]),
    parsed=st.booleans(),
)
def test_duplicates_answer_the_same_with_the_chunks_keys(
    chunks: list[list[tuple[int, int, bool]]], mode: str, parsed: bool
) -> None:
    """Keys gathered from the chunk's numbers by line (the fast path) and parsed from each
    entry's number (the careful path) give the same outcomes, packed record or dict.
    When the chunk's keys are parsed already (``parsed``: an opt-out list asked for
    them), the record is the packed one from the job's first line, not the dict."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dedupe, "SMALL", 8)  # the dict for the first lines, then the runs
        _same_outcomes(chunks, mode, parsed=parsed)


def _same_outcomes(
    chunks: list[list[tuple[int, int, bool]]], mode: str, *, parsed: bool = False
) -> None:
    index = Dedupe(mode)
    fast = Duplicates(index, texts=mode == "number+text")
    careful = Duplicates(Dedupe(mode), texts=mode == "number+text")
    fast_sink, careful_sink = Sink(), Sink()
    for shared, run, texts in _chunk_runs(chunks):
        if parsed:
            assert len(shared.keys) == len(shared.numbers)
        fast.begin_chunk(shared)
        if not run:
            continue
        assert fast.check(GROUP, run, texts, fast_sink) == careful.check(
            GROUP, run, texts, careful_sink
        )
        if parsed:
            assert index.packed
    assert fast_sink.got == careful_sink.got


def test_duplicates_parse_entries_outside_the_chunk_they_were_told() -> None:
    """A run whose lines are not the told chunk's (a caller that did not say) is read
    from its entries: the stale chunk's keys are never used for them."""
    index = Dedupe("number")
    index.check_many("A", [f"+5255000{i:05d}" for i in range(dedupe.SMALL + 1)], None,
                     list(range(1, dedupe.SMALL + 2)))  # fmt: skip
    assert index.packed
    duplicates = Duplicates(index, texts=False)
    duplicates.begin_chunk(ChunkNumbers.of(1, 2, ["+525500000001", "+525500000002"]))
    later = [Entry(100_000, "+525500000001", [], None, 1, "GSM7", None)]
    sink = Sink()
    assert duplicates.check(GROUP, later, None, sink) == []
    assert [(line, status, kw["first"]) for line, status, kw in sink.got] == [
        (100_000, Status.DUPLICATE, 2)
    ]


def test_expected_lines_from_the_input_file(tmp_path: Path) -> None:
    """The duplicate record's hint (`dispatcher.dedupe.Dedupe`'s ``expected``): a file's
    size over LONG_LINE; nothing for stdin, a stream or a path that is not there."""
    big = tmp_path / "big.ndjson"
    big.write_bytes(b"x" * (LONG_LINE * 7 + 5))
    assert expected_lines(str(big)) == 7
    assert expected_lines(big) == 7
    assert expected_lines("-") == 0
    assert expected_lines(str(tmp_path / "missing.ndjson")) == 0
    with big.open("rb") as stream:
        assert expected_lines(stream) == 0


def test_a_big_input_file_starts_the_duplicate_record_packed(tmp_path: Path) -> None:
    from dispatcher.config import Config
    from dispatcher.halt import Halt

    big = tmp_path / "big.ndjson"
    with big.open("wb") as f:
        f.truncate(LONG_LINE * (dedupe.SMALL + 1))  # sparse: the size is what counts
    small = tmp_path / "small.ndjson"
    small.write_bytes(b'{"to": "+525512345678"}\n')
    config = Config(sender="12345", text="Hi")

    def index(source: object) -> Any:
        policies = policies_for(config, None, Halt(), None, source=source)
        return next(p for p in policies if isinstance(p, Duplicates)).index

    assert index(str(big)).packed
    assert not index(str(small)).packed
    assert not index("-").packed


def test_the_halt_over_a_chunks_runs_as_over_each_run() -> None:
    """`Halted.check_runs` (one call for a chunk's runs) answers what `check` answers
    run by run: every line passes while the job runs; once it is halted, none does and
    each gets the halt's status."""
    from dispatcher.halt import Halt, Halted

    halt = Halt()
    policy = Halted(halt)
    runs = [(GROUP, entries(1, 1), None), (GROUP, entries(2, start=3), ["t"])]
    sink = Sink()
    assert policy.check_runs(runs, sink) == [None, None]
    assert sink.got == []
    halt.set(Status.CANCELLED, "cancelled by ctl")
    assert policy.check_runs(runs, sink) == [[], []]
    one_by_one = Sink()
    for group, run, texts in runs:
        assert policy.check(group, run, texts, one_by_one) == []
    assert sink.got == one_by_one.got
    assert [(line, status) for line, status, _ in sink.got] == [
        (1, Status.CANCELLED),
        (2, Status.CANCELLED),
        (3, Status.CANCELLED),
    ]
