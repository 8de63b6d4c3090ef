"""Group prepared messages into batches: by group key, size, units, linger, memory.

A *group* is everything that must be equal for messages to share one batch call
(sender code, template, request options). Each group has at most one open batch. A
batch closes when it holds ``batch_size`` messages, when the next message would take
it past the units its sender code may send at once (see `dispatcher.limiter`), when it
has lingered ``linger`` seconds, or — to bound memory whatever the number of groups —
when it is the oldest open batch and the buffered total passes ``max_buffered``.

Closed batches collect in an outbox that the pipeline drains after each input chunk;
nothing here awaits, so the per-message work stays a plain method call.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Hashable
from operator import itemgetter
from typing import Any, NamedTuple, Protocol, TypeVar

from dispatcher.renderer import Template

_line_of = itemgetter(0)  # Entry.line


class _Line(Protocol):
    @property
    def line(self) -> int: ...


L = TypeVar("L", bound=_Line)


class Entry(NamedTuple):
    """One message of a batch: its input line, number, params and what it costs."""

    line: int
    to: str
    params: list[Any]
    ref: Any
    segments: int
    encoding: str
    text: str | None  # the rendered text, kept only when it is sent as such


class Group:
    """Messages that can share one batch call."""

    __slots__ = ("capacity", "key", "options", "sender", "template")

    def __init__(
        self,
        key: Hashable,
        *,
        sender: str,
        template: Template,
        options: dict[str, Any],
        capacity: float,
    ) -> None:
        self.key = key
        self.sender = sender
        self.template = template
        #: The request fields other than text and to, in the gateway's spelling.
        self.options = options
        #: The most units (messages or segments) one batch of this group may carry.
        self.capacity = capacity


class Batch:
    """Messages of one group that go to the gateway in one request."""

    __slots__ = ("count_segments", "created", "entries", "group", "skip", "units")

    def __init__(self, group: Group, created: float, *, count_segments: bool = False) -> None:
        self.group = group
        self.entries: list[Entry] = []
        #: messages, or segments when the rate limit counts segments
        self.units = 0
        self.count_segments = count_segments
        self.created = created
        #: lines whose results are already written (a batch rebuilt by --resume)
        self.skip: Container[int] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def lines(self) -> list[int]:
        """The input line numbers, in the batch's order."""
        return list(map(_line_of, self.entries))

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, for a gateway that answered 413."""
        half = len(self.entries) // 2
        halves = []
        for entries in (self.entries[:half], self.entries[half:]):
            batch = Batch(self.group, self.created, count_segments=self.count_segments)
            batch.entries = entries
            batch.units = sum(e.segments for e in entries) if self.count_segments else len(entries)
            batch.skip = self.skip
            halves.append(batch)
        return halves[0], halves[1]

    def __repr__(self) -> str:
        first = self.entries[0].line if self.entries else None
        return f"<Batch {self.group.sender} lines from {first}, {len(self)} messages>"


class _Pinned:
    """A batch being rebuilt line by line (see `Batcher.pin`)."""

    __slots__ = ("batch", "lines", "skip")

    def __init__(self, lines: list[int], skip: Container[int]) -> None:
        self.lines = lines
        self.skip = skip
        self.batch: Batch | None = None


class Batcher:
    """Collects entries per group and closes batches by size, units, time and memory."""

    def __init__(
        self,
        *,
        batch_size: int,
        linger: float,
        max_buffered: int,
        count_segments: bool,
        clock: Callable[[], float],
    ) -> None:
        self.batch_size = batch_size
        self.linger = linger
        self.max_buffered = max_buffered
        self._count_segments = count_segments
        self._clock = clock
        #: open batches, oldest first (a group's new batch moves it to the end)
        self._open: dict[Hashable, Batch] = {}
        self.buffered = 0
        self.outbox: list[Batch] = []
        #: line → the exact batch it must rejoin (batches rebuilt by --resume)
        self._pins: dict[int, _Pinned] = {}

    def pin(self, lines: list[int], *, skip: Container[int]) -> None:
        """Rebuild a batch exactly: these lines, in this order, whatever else arrives.

        Used by ``--resume`` for a batch that was in flight: re-sent with the same
        idempotency key, it must carry the same body. ``skip`` holds the lines whose
        results are already written, so they are not written twice.
        """
        pinned = _Pinned(lines, skip)
        for line in lines:
            self._pins[line] = pinned

    def unfinished(self, chunk: list[L], done: Container[int]) -> list[L]:
        """The items of a chunk that still need work on a resumed run."""
        pins = self._pins
        return [item for item in chunk if item.line not in done or item.line in pins]

    def add(self, group: Group, entry: Entry) -> None:
        """Put one message in its group's open batch; full batches go to the outbox."""
        if self._pins and entry.line in self._pins:
            self._add_pinned(group, entry)
            return
        units = entry.segments if self._count_segments else 1
        batch = self._open.get(group.key)
        if batch is not None and batch.units + units > group.capacity and batch.entries:
            self._close(group.key)
            batch = None
        if batch is None:
            batch = Batch(group, self._clock(), count_segments=self._count_segments)
            self._open[group.key] = batch
        batch.entries.append(entry)
        batch.units += units
        self.buffered += 1
        if len(batch.entries) >= self.batch_size or batch.units >= group.capacity:
            self._close(group.key)
        elif self.buffered > self.max_buffered:
            self._close(next(iter(self._open)))

    def add_many(self, group: Group, entries: list[Entry]) -> None:
        """`add` each entry in turn, with the same batches as a result.

        The usual case — no batch being rebuilt, every message one unit, room under
        ``max_buffered`` — fills batches by list slices: a tenth of the time of an
        `add` per message.
        """
        if self._pins or self._count_segments or self.buffered + len(entries) > self.max_buffered:
            for entry in entries:
                self.add(group, entry)
            return
        # One unit per message, so an open batch's units equal its length, and it
        # closes when that reaches the size or the code's capacity (a whole number).
        limit = int(min(self.batch_size, group.capacity))
        key = group.key
        start, end = 0, len(entries)
        while start < end:
            batch = self._open.get(key)
            if batch is None:
                batch = Batch(group, self._clock())
                self._open[key] = batch
            piece = entries[start : start + limit - len(batch.entries)]
            start += len(piece)
            if batch.entries:
                batch.entries += piece
            else:
                batch.entries = piece  # a new list already: no copy
            batch.units += len(piece)
            self.buffered += len(piece)
            if len(batch.entries) >= limit:
                self._close(key)

    def _add_pinned(self, group: Group, entry: Entry) -> None:
        pinned = self._pins.pop(entry.line)
        batch = pinned.batch
        if batch is None:
            batch = pinned.batch = Batch(group, self._clock(), count_segments=self._count_segments)
            batch.skip = pinned.skip
        batch.entries.append(entry)
        batch.units += entry.segments if self._count_segments else 1
        if len(batch.entries) == len(pinned.lines):
            order = {line: index for index, line in enumerate(pinned.lines)}
            batch.entries.sort(key=lambda e: order[e.line])
            self.outbox.append(batch)

    def expire(self) -> None:
        """Close the batches that have waited ``linger`` seconds without filling."""
        deadline = self._clock() - self.linger
        while self._open:
            key, batch = next(iter(self._open.items()))
            if batch.created > deadline:
                break
            self._close(key)

    def drain(self) -> None:
        """Close every open batch (end of input)."""
        while self._open:
            self._close(next(iter(self._open)))

    def take(self) -> list[Batch]:
        """The closed batches, oldest first; the outbox is empty afterwards."""
        outbox, self.outbox = self.outbox, []
        return outbox

    def _close(self, key: Hashable) -> None:
        batch = self._open.pop(key)
        self.buffered -= len(batch.entries)
        self.outbox.append(batch)
