"""The chunk-level campaign policies: caps never exceeded, duplicates with their first."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.dedupe import Dedupe
from dispatcher.models import Entry, Group, Status
from dispatcher.policy import Caps, Duplicates, others
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
