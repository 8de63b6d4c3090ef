"""What smart encoding saved travels with each message (`Entry.saved`) to the batcher —
from its chunk, or later, released by a policy that held it (`Preparer.readmit`) — so
that the summary counts it where the gateway accepts the message
(tests/unit/test_writers.py)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from dispatcher.models import Entry, Group
from dispatcher.policy import Caps, Sink
from dispatcher.segments import count
from tests.unit.test_prepare import Sink as Recorded
from tests.unit.test_prepare import drained, make, r

#: "Hi {0}" with this needs two UCS-2 segments (the apostrophe), one once GSM-7.
LONG = "Ana’s " + "x" * 70
PARAMS = [[LONG], ["Zoë ✓"], ["plain"], [LONG], [LONG + "y"], [LONG], [LONG + "z"], ["plain"]]


class Hold:
    """A policy that holds the lines of even number, as a closed window would."""

    def __init__(self) -> None:
        self.held: list[tuple[Hashable, list[Entry]]] = []
        self.again = False

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None:
        if self.again:
            return None
        held = [e for e in entries if e.line % 2 == 0]
        if held:
            self.held.append((group.key, held))
        return [i for i, e in enumerate(entries) if e.line % 2]


def carried(batches: list[Any]) -> tuple[int, int]:
    """Segments saved, and on how many messages, as the entries themselves say."""
    entries = [e for batch in batches for e in batch.entries]
    return sum(e.saved for e in entries), sum(1 for e in entries if e.replaced)


def saved_on(batches: list[Any]) -> tuple[int, int]:
    """Segments saved, and on how many messages, in what went to the batcher."""
    entries = [e for batch in batches for e in batch.entries]
    texts = {n: f"Hi {p[0]}" for n, p in enumerate(PARAMS, 1)}
    saved = sum(count(texts[e.line]).segments - e.segments for e in entries)
    return saved, sum(1 for e in entries if e.replaced)


def test_held_lines_carry_their_saving_when_released() -> None:
    preparer, batcher, sink, _ = make(smart_encoding=True)
    hold = Hold()
    caps = Caps(max_messages=7)
    preparer.policies = [hold, caps]
    items = [r(n, to=f"+52550000000{n}", params=p) for n, p in enumerate(PARAMS, 1)]
    preparer.feed(list(items), batcher, sink)
    first = drained(batcher)
    assert saved_on(first) == (3, 3)  # lines 1, 5 and 7 (3 is plain)
    assert carried(first) == (3, 3)

    hold.again = True
    for key, entries in hold.held:
        preparer.readmit(hold, key, entries, batcher, sink)
    released = drained(batcher)
    # Released: 2 (the check mark: no saving), 4 and 6; 8 reaches the cap.
    assert sorted(e.line for b in released for e in b.entries) == [2, 4, 6]
    assert isinstance(sink, Recorded)
    assert [(x.line, x.status) for x in sink.locals] == [(8, "NOT_SENT")]
    assert saved_on(first + released) == (5, 5)
    assert carried(first + released) == (5, 5)


def test_a_line_a_cap_refuses_in_its_chunk_never_reaches_the_batcher() -> None:
    preparer, batcher, sink, _ = make(smart_encoding=True)
    preparer.policies = [Caps(max_messages=4)]
    items = [r(n, to=f"+52550000000{n}", params=p) for n, p in enumerate(PARAMS, 1)]
    preparer.feed(items, batcher, sink)
    batches = drained(batcher)
    assert saved_on(batches) == carried(batches) == (2, 2)  # lines 1 and 4; then the cap
