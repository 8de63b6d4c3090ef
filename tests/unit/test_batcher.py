"""Batching: group keys, size, units, linger on an injected clock, bounded memory, and
the idempotency key each batch gets when it closes. (The exact rebuild of a batch for
--resume is `dispatcher.resume`'s: tests/unit/test_resume.py.)"""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.batcher import Batcher
from dispatcher.models import Batch, Entry, Group, batch_key
from dispatcher.renderer import compile_template


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def group(key: str, capacity: float = math.inf) -> Group:
    return Group(
        key, sender=key, template=compile_template("Hi {0}"), options={}, capacity=capacity
    )


def entry(line: int, segments: int = 1) -> Entry:
    return Entry(line, f"+5255000{line:05d}", ["x"], None, segments, "GSM7", None)


def batcher(clock: Clock, **kw: object) -> Batcher:
    options: dict[str, object] = {
        "batch_size": 3,
        "linger": 0.05,
        "max_buffered": 100,
        "count_segments": False,
        "job": "job1",
    }
    options.update(kw)
    return Batcher(clock=clock, **options)  # type: ignore[arg-type]


def lines(batches: list[Batch]) -> list[list[int]]:
    return [b.lines for b in batches]


def test_full_batches_close_at_batch_size() -> None:
    b = batcher(Clock())
    g = group("A")
    for n in range(1, 8):
        b.add(g, entry(n))
    assert lines(b.take()) == [[1, 2, 3], [4, 5, 6]]
    assert b.buffered == 1
    b.drain()
    assert lines(b.take()) == [[7]]
    assert b.buffered == 0


def test_groups_never_mix() -> None:
    b = batcher(Clock())
    a, c = group("A"), group("C")
    for n in range(1, 7):
        b.add(a if n % 2 else c, entry(n))
    assert lines(b.take()) == [[1, 3, 5], [2, 4, 6]]
    assert [x.group.key for x in b.outbox] == []


def test_linger_closes_old_batches_only() -> None:
    clock = Clock()
    b = batcher(clock)
    b.add(group("A"), entry(1))
    clock.now = 0.03
    b.add(group("B"), entry(2))
    clock.now = 0.06
    b.expire()
    assert lines(b.take()) == [[1]]
    clock.now = 0.09
    b.expire()
    assert lines(b.take()) == [[2]]


def test_memory_bound_flushes_the_oldest_group() -> None:
    b = batcher(Clock(), batch_size=1000, max_buffered=5)
    for n in range(1, 7):
        b.add(group(f"G{n}"), entry(n))
    assert lines(b.take()) == [[1]]
    assert b.buffered == 5


def test_units_capacity_closes_before_overflow_counting_segments() -> None:
    b = batcher(Clock(), batch_size=1000, count_segments=True)
    g = group("A", capacity=5)
    for n, segments in enumerate([2, 2, 2, 1, 1, 1], start=1):
        b.add(g, entry(n, segments))
    taken = b.take()
    assert lines(taken) == [[1, 2], [3, 4, 5, 6]]  # 2+2, then 2+1+1+1 fills it exactly
    assert [x.units for x in taken] == [4, 5]
    assert b.buffered == 0


def test_a_message_larger_than_capacity_travels_alone() -> None:
    b = batcher(Clock(), batch_size=1000, count_segments=True)
    g = group("A", capacity=2)
    b.add(g, entry(1, 5))
    b.add(g, entry(2, 1))
    b.drain()
    assert lines(b.take()) == [[1], [2]]


def test_split_keeps_order_and_units() -> None:
    b = batcher(Clock(), batch_size=4, count_segments=True)
    g = group("A")
    for n, segments in enumerate([1, 2, 3, 4], start=1):
        b.add(g, entry(n, segments))
    (whole,) = b.take()
    first, second = whole.split()
    assert (first.lines, second.lines) == ([1, 2], [3, 4])
    assert (first.units, second.units) == (3, 7)


def test_a_closed_batch_carries_its_key() -> None:
    b = batcher(Clock(), batch_size=3)
    g = group("A")
    for n in (5, 3, 9, 4):
        b.add(g, entry(n))
    b.drain()
    first, second = b.take()
    assert (first.key, second.key) == (batch_key("job1", [5, 3, 9]), batch_key("job1", [4]))
    assert first.job == "job1"


def test_the_key_function_is_the_one_journals_hold() -> None:
    # Keys written by earlier versions must come out the same, or a resumed run would
    # re-send an in-flight batch under a key the gateway has never seen.
    assert batch_key("5f0c2a9e1b7d", [1, 2, 3]) == "5f0c2a9e1b7d-ab44942e43d9d2af667cb73e"
    assert batch_key("job", [1, 2, 3]) != batch_key("job", [1, 2, 4])
    assert batch_key("job", [1, 2]) != batch_key("job", [1, 2, 3])
    assert batch_key("job", [1]) != batch_key("other", [1])
    assert batch_key("job", [2, 1]) != batch_key("job", [1, 2])  # the order is part of it


def test_split_halves_have_their_own_keys() -> None:
    b = batcher(Clock(), batch_size=4)
    for n in range(1, 5):
        b.add(group("A"), entry(n))
    (whole,) = b.take()
    first, second = whole.split()
    assert (first.key, second.key) == (batch_key("job1", [1, 2]), batch_key("job1", [3, 4]))


@settings(max_examples=200)
@given(
    plan=st.lists(st.tuples(st.sampled_from("ABC"), st.integers(1, 3)), max_size=60),
    batch_size=st.integers(1, 7),
    capacity=st.sampled_from([math.inf, 1.0, 2.0, 5.0]),
    max_buffered=st.integers(1, 30),
    count_segments=st.booleans(),
)
def test_add_many_makes_the_batches_of_add_one_by_one(
    plan: list[tuple[str, int]],
    batch_size: int,
    capacity: float,
    max_buffered: int,
    count_segments: bool,
) -> None:
    groups = {key: group(key, capacity) for key in "ABC"}
    options = {
        "batch_size": batch_size,
        "max_buffered": max_buffered,
        "count_segments": count_segments,
    }
    one, many = batcher(Clock(), **options), batcher(Clock(), **options)
    runs: list[tuple[str, list[Entry]]] = []
    for line, (key, segments) in enumerate(plan, 1):
        e = entry(line, segments)
        one.add(groups[key], e)
        if runs and runs[-1][0] == key:
            runs[-1][1].append(e)
        else:
            runs.append((key, [e]))
    for key, entries in runs:
        many.add_many(groups[key], entries)
    assert [(b.group.key, b.lines, b.units) for b in many.take()] == [
        (b.group.key, b.lines, b.units) for b in one.take()
    ]
    assert many.buffered == one.buffered
    one.drain()
    many.drain()
    assert [(b.group.key, b.lines, b.units) for b in many.take()] == [
        (b.group.key, b.lines, b.units) for b in one.take()
    ]
