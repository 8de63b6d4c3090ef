"""What the emulated gateway accepted, and the counters behind ``GET /_emulator/stats``.

Messages are stored per accepted batch (the lists the request already built), not per
message. An id is a random 8-hex prefix, a 12-hex batch number and a 4-hex position in
the batch: made by one string concatenation each, and it leads straight back to its
message. In ``counts`` mode nothing per message is kept, only counters and windows.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from dispatcher.emulator.settings import FAULT_KINDS, MAX_BATCH

_HEX = frozenset("0123456789abcdef")

#: "0000", "0001", …: the position part of ids, grown on demand up to MAX_BATCH.
_POSITIONS: list[str] = []


def _positions(n: int) -> list[str]:
    if n > len(_POSITIONS):
        _POSITIONS.extend(f"{i:04x}" for i in range(len(_POSITIONS), n))
    return _POSITIONS


class SlidingWindow:
    """The most messages (and segments) seen in any window of ``span`` seconds.

    A window is half-open, (t - span, t]: a maximum can always be taken to end at an
    accept event, so checking at each event is exact. Events must come in time order.
    """

    __slots__ = ("_count", "_events", "_segments", "max_count", "max_segments", "span")

    def __init__(self, span: float = 1.0) -> None:
        self.span = span
        self._events: deque[tuple[float, int, int]] = deque()
        self._count = 0
        self._segments = 0
        self.max_count = 0
        self.max_segments = 0

    def add(self, t: float, count: int, segments: int) -> None:
        """Record ``count`` messages of ``segments`` segments accepted at time ``t``."""
        events = self._events
        horizon = t - self.span
        while events and events[0][0] <= horizon:
            _, c, s = events.popleft()
            self._count -= c
            self._segments -= s
        events.append((t, count, segments))
        self._count += count
        self._segments += segments
        if self._count > self.max_count:
            self.max_count = self._count
        if self._segments > self.max_segments:
            self.max_segments = self._segments


class CodeTally:
    """Accepted messages of one sender code."""

    __slots__ = ("accepted", "first", "last", "segments", "window")

    def __init__(self, t: float) -> None:
        self.accepted = 0
        self.segments = 0
        self.first = t
        self.last = t
        self.window = SlidingWindow()

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "segments": self.segments,
            "max_window": self.window.max_count,
            "max_window_segments": self.window.max_segments,
            "first": self.first,
            "last": self.last,
        }


class Stats:
    """The counters of ``GET /_emulator/stats``; keys may be added, never renamed."""

    def __init__(self) -> None:
        self.requests = {"single": 0, "batch": 0, "status": 0}
        self.responses: Counter[int] = Counter()
        self.accepted = 0
        self.accepted_segments = 0
        self.duplicates = 0
        self.replays = 0
        self.idempotency_conflicts = 0
        self.idempotency_evicted = 0
        self.rate_limited = 0
        self.invalid_numbers = 0
        self.faults = dict.fromkeys(FAULT_KINDS, 0)
        self.codes: dict[str, CodeTally] = {}
        self.dr_sent = 0
        self.dr_failed = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "accepted": self.accepted,
            "accepted_segments": self.accepted_segments,
            "duplicates": self.duplicates,
            "replays": self.replays,
            "idempotency_conflicts": self.idempotency_conflicts,
            "idempotency_evicted": self.idempotency_evicted,
            "rate_limited": self.rate_limited,
            "invalid_numbers": self.invalid_numbers,
            "faults": dict(self.faults),
            "codes": {code: c.as_dict() for code, c in self.codes.items()},
            "dr": {"sent": self.dr_sent, "failed": self.dr_failed},
        }


@dataclass(slots=True, kw_only=True)
class LedgerBatch:
    """One accepted request as stored: shared fields once, per-message lists."""

    #: The ids of this batch's messages are this head plus their 4-hex position.
    head: str
    sender: str
    tos: tuple[str, ...]
    texts: tuple[str, ...] | str
    encodings: tuple[str, ...] | str
    segments: tuple[int, ...] | int
    t: float
    date: str
    key: str | None
    external_id: str | None
    client_id: str | None
    request_dr: bool

    def message(self, i: int, statuses: dict[str, tuple[str, str]]) -> dict[str, Any]:
        """Message ``i`` of the batch as a dump line; ``statuses`` from delivery reports."""
        texts, encodings, segments = self.texts, self.encodings, self.segments
        id_ = self.head + _POSITIONS[i]
        status = statuses.get(id_)
        return {
            "id": id_,
            "from": self.sender,
            "to": self.tos[i],
            "text": texts if isinstance(texts, str) else texts[i],
            "segments": segments if isinstance(segments, int) else segments[i],
            "encoding": encodings if isinstance(encodings, str) else encodings[i],
            "status": status[0] if status else "QUEUE",
            "date": status[1] if status else self.date,
            "requestDR": self.request_dr,
            "idempotencyKey": self.key,
            "t": self.t,
            "externalId": self.external_id,
            "clientId": self.client_id,
        }


def _each(texts: Sequence[str] | str, n: int) -> Iterable[str]:
    return repeat(texts, n) if isinstance(texts, str) else texts


def _count_duplicates(
    seen: dict[str, str | tuple[str, ...]], tos: Sequence[str], texts: Sequence[str] | str
) -> int:
    """Record (to, text) pairs one by one; how many had been recorded already."""
    duplicates = 0
    for to, text in zip(tos, _each(texts, len(tos)), strict=True):
        before = seen.get(to)
        if before is None:
            seen[to] = text
        elif before == text or (isinstance(before, tuple) and text in before):
            duplicates += 1
        else:
            seen[to] = (*before, text) if isinstance(before, tuple) else (before, text)
    return duplicates


class Ledger:
    """Accepted messages (``full``) or only their counts (``counts``), plus the stats."""

    def __init__(self, mode: str = "full") -> None:
        self.full = mode == "full"
        self.stats = Stats()
        #: Ids are this random prefix and a hex counter: unique, cheap, and reversible.
        self._prefix = secrets.token_hex(4)
        self._next_batch = 0
        self._batches: dict[int, LedgerBatch] = {}
        # Duplicate detection, per sender. While no number has come twice, a set of
        # numbers is all it takes (one C-level update per batch, the cheapest thing
        # measured at millions of entries). At the first repeat it becomes a dict
        # number -> text (a tuple of texts once there are several), built from the
        # stored batches, and the texts are compared from then on.
        self._numbers: dict[str, set[str]] = {}
        self._texts: dict[str, dict[str, str | tuple[str, ...]]] = {}
        self._status: dict[str, tuple[str, str]] = {}

    def reset(self) -> None:
        """Forget every message and counter (ids keep counting, so none is reused)."""
        self.stats = Stats()
        self._batches.clear()
        self._numbers.clear()
        self._texts.clear()
        self._status.clear()

    def accept(
        self,
        *,
        sender: str,
        tos: list[str],
        texts: list[str] | str,
        encodings: list[str] | str,
        segments: list[int] | int,
        t: float,
        date: str,
        key: str | None = None,
        external_id: str | None = None,
        client_id: str | None = None,
        request_dr: bool = False,
    ) -> list[str]:
        """Record one accepted request's messages; returns their ids in order.

        ``texts``/``encodings``/``segments`` are a single value when the same for all.
        """
        n = len(tos)
        if n > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} messages per accepted request")
        number = self._next_batch
        self._next_batch = number + 1
        head = f"{self._prefix}{number:012x}"
        ids = [head + position for position in _positions(n)[:n]]
        seg_total = segments * n if isinstance(segments, int) else sum(segments)
        stats = self.stats
        stats.accepted += n
        stats.accepted_segments += seg_total
        code = stats.codes.get(sender)
        if code is None:
            code = stats.codes[sender] = CodeTally(t)
        code.accepted += n
        code.segments += seg_total
        code.last = t
        code.window.add(t, n, seg_total)
        if self.full:
            stats.duplicates += self._duplicates(sender, tos, texts)
            # Tuples of strings and ints, unlike lists, drop out of the garbage collector's
            # sight; with millions of messages, traversing lists made every full
            # collection cost as much as the whole ledger (measured: half the CPU).
            self._batches[number] = LedgerBatch(
                head=head,
                sender=sender,
                tos=tuple(tos),
                texts=texts if isinstance(texts, str) else tuple(texts),
                encodings=encodings if isinstance(encodings, str) else tuple(encodings),
                segments=segments if isinstance(segments, int) else tuple(segments),
                t=t,
                date=date,
                key=key,
                external_id=external_id,
                client_id=client_id,
                request_dr=request_dr,
            )
        return ids

    def _duplicates(self, sender: str, tos: list[str], texts: list[str] | str) -> int:
        """Record these messages for duplicate detection; how many are duplicates."""
        by_number = self._texts.get(sender)
        if by_number is None:
            numbers = self._numbers.get(sender)
            if numbers is None:
                numbers = self._numbers[sender] = set()
            before = len(numbers)
            numbers.update(tos)
            if len(numbers) - before == len(tos):
                return 0  # the usual case: numbers this sender never texted
            # The first repeat: index every earlier message of this sender by number.
            del self._numbers[sender]
            by_number = self._texts[sender] = {}
            for batch in self._batches.values():
                if batch.sender == sender:
                    _count_duplicates(by_number, batch.tos, batch.texts)
        fresh = dict(zip(tos, _each(texts, len(tos)), strict=True))
        if len(fresh) == len(tos) and by_number.keys().isdisjoint(fresh):
            by_number.update(fresh)
            return 0
        return _count_duplicates(by_number, tos, texts)

    def _locate(self, id_: str) -> tuple[LedgerBatch, int] | None:
        # Hex digits only: int(…, 16) would also take "_", a sign or spaces, so that an
        # id never issued could name a stored message.
        if len(id_) != 24 or not id_.startswith(self._prefix) or not _HEX.issuperset(id_):
            return None
        number, position = int(id_[8:20], 16), int(id_[20:], 16)
        batch = self._batches.get(number)
        if batch is None or position >= len(batch.tos):
            return None
        return batch, position

    def get(self, id_: str) -> dict[str, Any] | None:
        """The stored message with this id, or None (always None in ``counts`` mode)."""
        found = self._locate(id_.lower())
        if found is None:
            return None
        batch, position = found
        return batch.message(position, self._status)

    def set_status(self, id_: str, status: str, date: str) -> None:
        """A delivery report fired: the message now has this status."""
        if self.full:
            self._status[id_] = (status, date)

    def messages(self) -> Iterator[dict[str, Any]]:
        """Every stored message in acceptance order."""
        statuses = self._status
        for batch in list(self._batches.values()):
            for i in range(len(batch.tos)):
                yield batch.message(i, statuses)
