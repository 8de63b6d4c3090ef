"""Join send results with delivery reports (DRs) into final delivery counts.

Results (SPEC §6) may run to millions of lines, so they are streamed once; only the DRs
are held, as a dict from message id to a small tuple. For an id with several DRs a
final status beats a non-final one; between two of the same kind the later
``timestamp`` wins, and without timestamps the later line in the file. Malformed lines
in either file are counted and skipped.

Final statuses are the gateway's end states: ``DELIVRD`` and the failures ``UNDELIV
EXPIRED REJECTD DELETED UNKNOWN`` plus the refusals it may report after accepting a
message (``INVALID_ROUTING CODE_NOT_ALLOWED BLACKLISTED ERROR SEGMENTS_EXCEEDED
INCOMPLETE EXHAUSTED``). Anything else (``QUEUE DEQUEUED SENT ENROUTE ACCEPTD`` or a
status we do not know) leaves the message pending.
"""

from __future__ import annotations

import gzip
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from dispatcher.errors import InputError, OutputError
from dispatcher.models import Status
from dispatcher.timefmt import iso_utc

DELIVERED = Status.DELIVRD.value
FINAL_STATUSES = frozenset(
    s.value
    for s in (
        Status.DELIVRD,
        Status.UNDELIV,
        Status.EXPIRED,
        Status.REJECTD,
        Status.DELETED,
        Status.UNKNOWN,
        Status.INVALID_ROUTING,
        Status.CODE_NOT_ALLOWED,
        Status.BLACKLISTED,
        Status.ERROR,
        Status.SEGMENTS_EXCEEDED,
        Status.INCOMPLETE,
        Status.EXHAUSTED,
    )
)
#: Pending key for an accepted message that has no DR at all.
NO_DR = "NO_DR"

# What we keep per id: (status, final, timestamp ms or None, when-string or None when
# there is a timestamp, number of DRs, matched by a result).
_Entry = tuple[str, bool, int | None, str | None, int, bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryCounts:
    """Final counts of a send, from its results and the delivery reports received."""

    #: Result lines read (malformed ones excluded) and those the gateway accepted (an id).
    results: int
    accepted: int
    delivered: int
    #: Accepted messages whose final DR is a failure, by that status.
    undelivered: Mapping[str, int]
    #: Accepted messages without a final DR, by their latest DR status (or ``NO_DR``).
    pending: Mapping[str, int]
    #: Results without an id, by their result status.
    not_sent: Mapping[str, int]
    dr_lines: int
    dr_ids: int
    #: DR ids that no result carries, and the DR lines about them.
    unknown_ids: int
    unknown_id_drs: int
    malformed_results: int
    malformed_drs: int

    def as_dict(self) -> dict[str, Any]:
        """The counts as a JSON-ready dict (camelCase keys, the summary's style)."""
        return {
            "results": self.results,
            "accepted": self.accepted,
            "delivered": self.delivered,
            "undelivered": sum(self.undelivered.values()),
            "undeliveredByStatus": dict(self.undelivered),
            "pending": sum(self.pending.values()),
            "pendingByStatus": dict(self.pending),
            "notSent": sum(self.not_sent.values()),
            "notSentByStatus": dict(self.not_sent),
            "deliveryReports": self.dr_lines,
            "deliveryReportIds": self.dr_ids,
            "unknownIds": self.unknown_ids,
            "unknownIdDeliveryReports": self.unknown_id_drs,
            "malformedResults": self.malformed_results,
            "malformedDeliveryReports": self.malformed_drs,
        }

    def table(self) -> str:
        """A short human table of the counts."""
        pct = f"  ({100 * self.delivered / self.accepted:.1f} %)" if self.accepted else ""
        rows = [
            ("results", self.results, ""),
            ("  accepted", self.accepted, ""),
            ("    delivered", self.delivered, pct.strip()),
            ("    undelivered", sum(self.undelivered.values()), _by(self.undelivered)),
            ("    pending", sum(self.pending.values()), _by(self.pending)),
            ("  not sent", sum(self.not_sent.values()), _by(self.not_sent)),
            ("delivery reports", self.dr_lines, f"for {self.dr_ids} ids"),
            ("  for unknown ids", self.unknown_id_drs, f"{self.unknown_ids} ids"),
            ("malformed results", self.malformed_results, ""),
            ("malformed reports", self.malformed_drs, ""),
        ]
        return "\n".join(f"{name:<20}{count:>10}  {note}".rstrip() for name, count, note in rows)


def _by(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items(), key=_biggest))


def _biggest(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def join_delivery_reports(
    results_path: str | Path,
    dr_path: str | Path,
    out: str | Path | BinaryIO | None = None,
) -> DeliveryCounts:
    """Join a results file with a DR file; optionally write one line per result to ``out``.

    ``results_path`` may be ``-`` (stdin); either file may be gzipped (``.gz``). Each
    ``out`` line is ``{"line", "to", "id", "sendStatus", "deliveryStatus"}`` plus
    ``deliveredAt`` when delivered and ``ref`` when the result has one.
    """
    drs, dr_lines, malformed_drs = _load_drs(dr_path)
    results = accepted = delivered = malformed_results = 0
    undelivered: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    not_sent: Counter[str] = Counter()
    with ExitStack() as stack:
        sink = _open_out(stack, out) if out is not None else None
        lines: list[bytes] = []
        for raw in _lines(results_path):
            try:
                result = orjson.loads(raw)
            except orjson.JSONDecodeError:
                malformed_results += 1
                continue
            if not isinstance(result, dict) or not isinstance(result.get("status"), str):
                malformed_results += 1
                continue
            results += 1
            mid = _id(result.get("id"))
            entry = drs.get(mid) if mid is not None else None
            if mid is None:
                not_sent[result["status"]] += 1
            else:
                accepted += 1
                if entry is None:
                    pending[NO_DR] += 1
                else:
                    if not entry[5]:
                        drs[mid] = (*entry[:5], True)
                    if entry[0] == DELIVERED:
                        delivered += 1
                    elif entry[1]:
                        undelivered[entry[0]] += 1
                    else:
                        pending[entry[0]] += 1
            if sink is not None:
                lines.append(_out_line(result, mid, entry))
                if len(lines) >= 4096:
                    _write(sink, lines)
        if sink is not None:
            _write(sink, lines)
    unknown = [entry for entry in drs.values() if not entry[5]]
    return DeliveryCounts(
        results=results,
        accepted=accepted,
        delivered=delivered,
        undelivered=dict(undelivered),
        pending=dict(pending),
        not_sent=dict(not_sent),
        dr_lines=dr_lines,
        dr_ids=len(drs),
        unknown_ids=len(unknown),
        unknown_id_drs=sum(entry[4] for entry in unknown),
        malformed_results=malformed_results,
        malformed_drs=malformed_drs,
    )


def _load_drs(path: str | Path) -> tuple[dict[str, _Entry], int, int]:
    drs: dict[str, _Entry] = {}
    good = malformed = 0
    for raw in _lines(path):
        try:
            dr = orjson.loads(raw)
        except orjson.JSONDecodeError:
            malformed += 1
            continue
        mid = _id(dr.get("id")) if isinstance(dr, dict) else None
        status = dr.get("status") if mid is not None else None
        if mid is None or not isinstance(status, str) or not status:
            malformed += 1
            continue
        good += 1
        ts = _timestamp(dr.get("timestamp"))
        when = None if ts is not None else _when(dr)
        final = status in FINAL_STATUSES
        old = drs.get(mid)
        if old is None:
            drs[mid] = (sys.intern(status), final, ts, when, 1, False)
        elif _newer(final, ts, old):
            drs[mid] = (sys.intern(status), final, ts, when, old[4] + 1, False)
        else:
            drs[mid] = (*old[:4], old[4] + 1, False)
    return drs, good, malformed


def _newer(final: bool, ts: int | None, old: _Entry) -> bool:
    """Whether a DR read now replaces the one kept (which came earlier in the file)."""
    if final != old[1]:
        return final
    if ts is not None and old[2] is not None and ts != old[2]:
        return ts > old[2]
    return True  # same time, or no timestamps to compare: the later line wins


def _id(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _timestamp(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _when(dr: dict[str, Any]) -> str | None:
    for key in ("date", "receivedAt"):
        value = dr.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _out_line(result: dict[str, Any], mid: str | None, entry: _Entry | None) -> bytes:
    line: dict[str, Any] = {
        "line": result.get("line"),
        "to": result.get("to"),
        "id": mid,
        "sendStatus": result["status"],
        "deliveryStatus": entry[0] if entry is not None else None,
    }
    if entry is not None and entry[0] == DELIVERED:
        ts = entry[2]
        line["deliveredAt"] = _iso_ms(ts) if ts is not None else entry[3]
    if "ref" in result:
        line["ref"] = result["ref"]
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def _iso_ms(ms: int) -> str:
    try:
        return iso_utc(ms / 1000)
    except (OverflowError, OSError, ValueError):
        return str(ms)  # a timestamp no calendar holds: shown as given


def _lines(path: str | Path) -> Iterator[bytes]:
    """Non-blank lines of a file (``.gz`` transparently, ``-`` for stdin)."""
    try:
        if str(path) == "-":
            yield from _non_blank(sys.stdin.buffer)
        elif str(path).endswith(".gz"):
            with gzip.open(path, "rb") as gz:
                yield from _non_blank(gz)
        else:
            with open(path, "rb") as f:
                yield from _non_blank(f)
    except (OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot read {path}: {reason}") from exc


def _non_blank(stream: Iterable[bytes]) -> Iterator[bytes]:
    return (raw for raw in stream if not raw.isspace())


def _open_out(stack: ExitStack, out: str | Path | BinaryIO) -> BinaryIO:
    if not isinstance(out, str | Path):
        return out
    try:
        return stack.enter_context(open(out, "wb"))
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror}") from exc


def _write(sink: BinaryIO, lines: list[bytes]) -> None:
    try:
        sink.write(b"".join(lines))
    except OSError as exc:
        raise OutputError(f"cannot write the delivery file: {exc.strerror}") from exc
    lines.clear()
