"""The results file of an earlier run, read back by a resume: which lines are
finished, and nothing taken on trust.

The results file is the truth about which lines are finished, so every line of it is
checked (`_disagreement` says what a result must be): one that is not a result, or a
second result for a line, stops the resume (`DamagedResults`, exit 2) naming the file
and the line — except after a *resumable* result (NOT_SENT, OUTSIDE_WINDOW,
CANCELLED): its line is not finished, a later run attempts it again and appends a
newer result, which replaces it. A last line cut short by a crash is the one damage
tolerated: `repair` cuts it off, with a warning, once the caller has checked
everything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from dispatcher.errors import ConfigError, OutputError
from dispatcher.models import RESUMABLE, Status
from dispatcher.summary import ACCEPTED

if TYPE_CHECKING:
    from dispatcher.pricing import Pricing

log = logging.getLogger("dispatcher")

#: Finished lines read before they are added to the set of done lines at once.
_RUN = 65536

_RESUMABLE = frozenset(map(str, RESUMABLE))
#: Outcomes that the caps count as sent: the gateway took the message, or may have.
_MAY_HAVE_SENT = frozenset({*map(str, ACCEPTED), str(Status.AMBIGUOUS)})
#: Final outcomes of lines that never reached the duplicate check as a first (a
#: duplicate, or a line an opt-out list kept back): a resume does not replay them.
_UNREGISTERED = frozenset({str(Status.DUPLICATE), str(Status.SUPPRESSED)})


class LineSet:
    """Line numbers as a growable bitmap: 5 M finished lines cost 625 KB, not 200 MB."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, line: int) -> None:
        byte, bit = divmod(line, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1 + len(self._bits) // 2))
        mask = 1 << bit
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            self.count += 1

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, int):
            return False
        byte = line >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (line & 7)))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        """The lines, in ascending order."""
        for byte, bits in enumerate(self._bits):
            while bits:
                low = bits & -bits
                yield byte * 8 + low.bit_length() - 1
                bits ^= low

    def discard(self, line: int) -> None:
        byte = line >> 3
        mask = 1 << (line & 7)
        if byte < len(self._bits) and self._bits[byte] & mask:
            self._bits[byte] &= ~mask & 0xFF
            self.count -= 1

    def update(self, lines: Iterable[int]) -> int | None:
        """Add every line; the first that was already there (or None)."""
        bits, count, repeated = self._bits, self.count, None
        for line in lines:
            byte = line >> 3
            if byte >= len(bits):
                bits.extend(bytes(byte - len(bits) + 1 + len(bits) // 2))
            mask = 1 << (line & 7)
            if bits[byte] & mask:
                if repeated is None:
                    repeated = line
            else:
                bits[byte] |= mask
                count += 1
        self.count = count
        return repeated

    def has_all(self, lines: Iterable[int]) -> bool:
        """Whether every one of ``lines`` is in the set."""
        bits = self._bits
        size = len(bits)
        for line in lines:
            byte = line >> 3
            if byte >= size or not bits[byte] & (1 << (line & 7)):
                return False
        return True

    def first_not_in(self, other: LineSet) -> int | None:
        """The smallest line of this set that ``other`` lacks, or None."""
        theirs = other._bits
        for byte, bits in enumerate(self._bits):
            extra = bits & ~(theirs[byte] if byte < len(theirs) else 0)
            if extra:
                return byte * 8 + (extra & -extra).bit_length() - 1
        return None


class DamagedResults(ConfigError):
    """A results file a resume cannot trust (exit 2); nothing is sent."""


@dataclass(slots=True)
class Finished:
    """What a results file says is finished: its lines, those of them with a gateway
    id, the counts for the summary, and a last line cut short by a crash."""

    path: str
    #: prices what was sent, for `committed` (None: no price)
    pricing: Pricing | None = None
    #: lines that have their result (a resumable one does not count)
    done: LineSet = field(default_factory=LineSet)
    #: lines whose newest result is resumable (NOT_SENT…): not finished
    pending: LineSet = field(default_factory=LineSet)
    #: resumable results a newer result of their line replaces
    superseded: int = 0
    #: what was sent, or may have been (accepted or AMBIGUOUS): messages, segments, cost
    committed: tuple[int, int, float] = (0, 0, 0.0)
    #: the cost of the billable segments (lines with an id), priced by ``pricing``
    billed: float = 0.0
    #: finished lines a resume does not replay through the duplicate check
    unregistered: LineSet = field(default_factory=LineSet)
    #: of those, the lines with a gateway id: each was sent in a batch of the journal
    with_id: LineSet = field(default_factory=LineSet)
    #: status → count of the finished lines' results (for the summary)
    statuses: dict[str, int] = field(default_factory=dict)
    #: encoding → segments of the lines with a gateway id
    segments: dict[str, int] = field(default_factory=dict)
    #: the highest line with a result (0: none)
    last_line: int = 0
    #: bytes of whole lines, and of a last line cut short (0: none)
    size: int = 0
    torn: int = 0

    @classmethod
    def read(cls, path: str, *, pricing: Pricing | None = None) -> Finished:
        """Read and check a results file (a missing one has nothing finished)."""
        finished = cls(path, pricing=pricing)
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return finished
        except OSError as exc:
            raise ConfigError(f"--resume: cannot read {path}: {exc.strerror}") from None
        with f:
            finished._read(f)
        return finished

    def check_sent(self, sent: LineSet, journal: str) -> None:
        """Every line with a gateway id must be one the journal ``sent``."""
        stray = self.with_id.first_not_in(sent)
        if stray is not None:
            raise damaged(
                self.path,
                _where(self.path, stray),
                f"it gives line {stray} a gateway id, yet no batch of the journal {journal} "
                "holds that line",
            )

    def repair(self) -> None:
        """Cut a last line left half-written by a crash, saying so."""
        if not self.torn:
            return
        log.warning(
            "%s: cut off its last line (%d bytes), left half-written by a crash; "
            "that line gets its result in this run",
            self.path,
            self.torn,
        )
        try:
            os.truncate(self.path, self.size)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None
        self.torn = 0

    def _read(self, f: Iterable[bytes]) -> None:
        path, statuses, segments, dry_run = self.path, self.statuses, self.segments, Status.DRY_RUN
        pending = self.pending
        lines: list[int] = []  # added to `done` in runs, with_id likewise
        with_id: list[int] = []
        size = last = 0
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                self.torn = len(raw)
                break
            try:
                result = orjson.loads(raw)
                line, status = result["line"], result["status"]
                message_id, count = result.get("id"), result.get("segments")
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise damaged(path, number, _disagreement(raw)) from None
            if not (
                type(line) is int
                and line > 0
                and type(status) is str
                and status
                and status != dry_run
                and (count is None or (type(count) is int and count >= 0))
            ):
                raise damaged(path, number, _disagreement(raw))
            last = max(last, line)
            size += len(raw)
            if status in _RESUMABLE:  # not finished: a later run attempts it again
                self._add(lines, with_id)  # so that `done` holds every earlier line
                self._pend(line, number)
                continue
            if pending.count and line in pending:  # a newer result of a resumable line
                pending.discard(line)
                self.superseded += 1
            lines.append(line)
            statuses[status] = statuses.get(status, 0) + 1
            if status in _MAY_HAVE_SENT:
                self._commit(result)
            elif status in _UNREGISTERED:
                self.unregistered.add(line)
            if message_id is not None:
                with_id.append(line)
                if count is not None:
                    encoding = str(result.get("encoding"))
                    segments[encoding] = segments.get(encoding, 0) + count
                    if self.pricing is not None:
                        self.billed += self.pricing.cost(str(result.get("to")), count)
            if len(lines) >= _RUN:
                self._add(lines, with_id)
        self._add(lines, with_id)
        self.size, self.last_line = size, last

    def _pend(self, line: int, number: int) -> None:
        """A resumable result: its line is pending, unless it has a final result."""
        if line in self.done:
            raise damaged(
                self.path,
                number,
                f"it is a second result for line {line}, which has a final result already",
            )
        if line in self.pending:
            self.superseded += 1
        else:
            self.pending.add(line)

    def _commit(self, result: dict[str, Any]) -> None:
        """Count a result that the gateway took, or may have taken, for the caps."""
        messages, segments, cost = self.committed
        count = result.get("segments") or 1
        if self.pricing is not None:
            cost += self.pricing.cost(str(result.get("to")), count)
        self.committed = (messages + 1, segments + count, cost)

    def _add(self, lines: list[int], with_id: list[int]) -> None:
        """Add a run of finished lines; a line with a result already is damage."""
        repeated = self.done.update(lines)
        if repeated is not None:
            raise damaged(
                self.path,
                _where(self.path, repeated, nth=2),
                f"it is a second result for line {repeated}",
            )
        self.with_id.update(with_id)
        lines.clear()
        with_id.clear()


def _disagreement(raw: bytes) -> str:
    """Why a results line is not a result that agrees with a job.

    A result agrees when it is a JSON object with a positive integer ``line`` (not
    seen before, unless with a resumable status: one result per line, checked by the
    caller), a text ``status`` other
    than DRY_RUN (a dry run's results are no job's), and ``segments``, when there are
    any, a count. A line with a gateway ``id`` must also belong to a batch the journal
    recorded as sent, which is checked once the journal is read.
    """
    try:
        result = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "it is not JSON"
    if not isinstance(result, dict):
        return "it is not a JSON object"
    line, status, count = result.get("line"), result.get("status"), result.get("segments")
    if type(line) is not int or line < 1:
        return "its line is not a positive integer"
    if not isinstance(status, str) or not status:
        return "its status is not text"
    if status == Status.DRY_RUN:
        return "it is a dry run's result, not a send's"
    if count is not None and (type(count) is not int or count < 0):
        return "its segments are not a count"
    return "it is not a result"  # pragma: no cover - the caller found a reason


def _where(path: str, line: int, *, nth: int = 1) -> int:
    """The number of the results line holding ``line``'s ``nth`` result (for a message)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                if orjson.loads(raw).get("line") == line:
                    nth -= 1
                    if not nth:
                        return number
    return 0


def damaged(path: str, number: int, why: str) -> DamagedResults:
    return DamagedResults(
        f"--resume: the results file {path} is damaged at line {number}: {why}; nothing was "
        "sent. Repair or remove that line (the journal then counts its batch in flight), "
        "or start over with --force"
    )
