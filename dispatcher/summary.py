"""The run's account, aggregated as results arrive (never by holding the results).

Counts per status, segments billed per encoding, requests, retries by cause, request
latency in an HDR histogram, and per sender code what was sent and how fast.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dispatcher.histogram import LatencyHistogram
from dispatcher.models import POLICY_FINAL, RESUMABLE, Status

if TYPE_CHECKING:
    from dispatcher.models import Entry
    from dispatcher.pricing import Pricing

#: Statuses the gateway gives to a message it accepted: these segments are billed.
ACCEPTED = frozenset(
    {
        Status.QUEUE,
        Status.DEQUEUED,
        Status.SENT,
        Status.ENROUTE,
        Status.DELIVRD,
        Status.ACCEPTD,
        Status.EXPIRED,
        Status.DELETED,
        Status.UNDELIV,
        Status.UNKNOWN,
        Status.REJECTD,
    }
)
#: Statuses that make the run unsuccessful (exit 1): the gateway did not take them
#: (a refused sender code, its own error), or we cannot tell whether it did.
UNSUCCESSFUL = frozenset({Status.FAILED, Status.AMBIGUOUS, Status.CODE_NOT_ALLOWED, Status.ERROR})
#: Statuses that are data, not errors, unless ``--strict``.
INVALID_INPUT = frozenset({Status.INVALID_NUMBER, Status.REJECTED, Status.SEGMENTS_EXCEEDED})
#: Lines a policy kept from being sent for good: data, not errors, unless ``--strict``.
FINAL_POLICY = POLICY_FINAL


@dataclass(slots=True)
class CodeStats:
    """What one sender code sent: accepted messages and segments, first and last time."""

    messages: int = 0
    segments: int = 0
    requests: int = 0
    first: float | None = None
    last: float | None = None
    rate: float | None = None


class Summary:
    """Running totals of a send; `as_dict` is the summary JSON of SPEC §6."""

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.started = clock()
        self.finished: float | None = None
        self.statuses: Counter[str] = Counter()
        #: the result lines of batches by (status, sender code), for the metrics; lines
        #: decided before any batch (rejected, invalid, a policy) are in statuses only
        self.by_code: Counter[tuple[str, str]] = Counter()
        self.segments: Counter[str] = Counter()
        self.ambiguous_segments = 0
        self.requests = 0
        self.retries: Counter[str] = Counter()
        self.latency = LatencyHistogram()
        self.codes: dict[str, CodeStats] = {}
        self.exit_reason = "completed"
        self.resumed_lines = 0
        #: an abort (auth, unwritable output, unreadable input), when there was one
        self.fatal: Exception | None = None
        #: the signal that stopped the run, when one did
        self.interrupted: int | None = None
        #: a dry run's estimate: seconds under the rate limits, per code
        self.estimate: dict[str, Any] | None = None
        #: price of one segment, to report the cost
        self.price_per_segment: float | None = None
        #: the price table (``--price``, ``[output.prices]``), when there is one: the
        #: cost is then summed per message (`charge`), not ``billable × price``
        self.table: Pricing | None = None
        self.cost = 0.0
        #: segments smart encoding saved on the messages the gateway accepted (a dry
        #: run: would send), and how many of them it changed — this run's, like
        #: ``requests``: a resume does not recount the earlier runs'
        self.segments_saved = 0
        self.smart_encoded = 0
        #: the cap reached and the first line it kept back (`dispatcher.policy.Caps`)
        self.cap_reached: tuple[str, int] | None = None
        #: result lines of earlier runs that a newer outcome of their line replaced
        self.superseded = 0
        #: what the send windows did (`dispatcher.windows.Windows.report`), with --window
        self.windows: dict[str, Any] | None = None
        #: control actions (``dispatcher ctl``, SIGUSR1) by action: pause, cancel, rate…
        self.controls: Counter[str] = Counter()

    def absorb(self, statuses: dict[str, int], segments: dict[str, int], cost: float = 0.0) -> None:
        """Count the results an earlier run of the same job already wrote (``cost``:
        of its billable segments, priced by the table)."""
        self.statuses.update(statuses)
        self.segments.update(segments)
        self.cost += cost
        self.resumed_lines = sum(statuses.values())

    @property
    def lines(self) -> int:
        """Result lines written so far."""
        return sum(self.statuses.values())

    def request(self, seconds: float) -> None:
        """One HTTP request made, whatever its outcome, and how long it took."""
        self.requests += 1
        self.latency.record(seconds)

    def retry(self, cause: str) -> None:
        """One retry, counted by its cause (429, 503, 5xx, timeout, disconnect…)."""
        self.retries[cause] += 1

    def charge(self, entries: Iterable[Entry]) -> None:
        """Add the cost of billable messages, when a price table prices them apart
        (without one the cost is ``billable × price_per_segment``: nothing to add)."""
        table = self.table
        if table is not None:
            price = table.price
            self.cost += sum([price(entry.to) * entry.segments for entry in entries])

    def smart(self, messages: int, saved: int) -> None:
        """Smart encoding changed ``messages`` the gateway accepted (or a dry run would
        send), and saved ``saved`` segments on them (`dispatcher.models.Entry.saved`)."""
        self.smart_encoded += messages
        self.segments_saved += saved

    def sent(self, code: str, messages: int, segments: int, started: float) -> None:
        """The gateway accepted ``messages`` of ``code`` from a request begun at ``started``."""
        if not messages:
            return
        stats = self.codes.get(code)
        if stats is None:
            stats = self.codes[code] = CodeStats()
        stats.messages += messages
        stats.segments += segments
        stats.requests += 1
        now = self._clock()
        if stats.first is None:
            stats.first = started
        stats.last = now

    def finish(self, reason: str | None = None) -> None:
        """Stop the clock; ``reason`` replaces "completed" when the run did not finish."""
        self.finished = self._clock()
        if reason is not None:
            self.exit_reason = reason

    @property
    def elapsed(self) -> float:
        """Seconds from start to finish (or to now while running)."""
        end = self.finished if self.finished is not None else self._clock()
        return max(end - self.started, 1e-9)

    @property
    def resumable(self) -> int:
        """Lines left unfinished by a policy (a cap, a window, a cancel): resumable."""
        return sum(self.statuses[s] for s in RESUMABLE)

    def exit_code(self, *, strict: bool = False) -> int:
        """4 resumable lines are left (the job is unfinished, whatever else happened);
        1 some lines failed or are ambiguous (or invalid or kept back by a final
        policy, with strict); 0 all done."""
        if self.resumable:
            return 4
        if any(self.statuses[s] for s in UNSUCCESSFUL):
            return 1
        if strict and any(self.statuses[s] for s in INVALID_INPUT | FINAL_POLICY):
            return 1
        return 0

    def percentile_ms(self, percentile: float) -> float:
        """Request latency at a percentile, in milliseconds."""
        return self.latency.percentile_ms(percentile) or 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary JSON: counts, segments, requests, retries, latency, per code."""
        billable = sum(self.segments.values())
        codes = {}
        for code, stats in sorted(self.codes.items()):
            span = (stats.last or 0.0) - (stats.first or 0.0)
            codes[code] = {
                "messages": stats.messages,
                "segments": stats.segments,
                # one request's latency is no measure of a rate
                "achieved_rate": round(stats.messages / span, 2)
                if span > 0 and stats.requests > 1
                else None,
                "configured_rate": stats.rate,
            }
        latency = {
            "p50": self.percentile_ms(50),
            "p90": self.percentile_ms(90),
            "p99": self.percentile_ms(99),
            "max": self.latency.max_ms() or 0.0,
        }
        return {
            "lines": self.lines,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items()) if v},
            "segments": {
                "billable": billable,
                "by_encoding": {str(k): v for k, v in sorted(self.segments.items()) if v},
                "ambiguous": self.ambiguous_segments,
            },
            "requests": self.requests,
            "retries": {
                "total": sum(self.retries.values()),
                **{str(k): v for k, v in sorted(self.retries.items())},
            },
            "elapsed_s": round(self.elapsed, 3),
            "recipients_per_s": round((self.lines - self.resumed_lines) / self.elapsed, 1),
            "latency_ms": latency,
            "codes": codes,
            "resumed_lines": self.resumed_lines,
            "exit_reason": self.exit_reason,
        } | self._extras(billable)

    def _extras(self, billable: int) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if self.table is not None:
            extras["cost"] = round(self.cost, 6)
        elif self.price_per_segment is not None:
            extras["cost"] = round(billable * self.price_per_segment, 6)
        if self.estimate is not None:
            extras["estimate"] = self.estimate
        if self.windows is not None:
            extras["windows"] = self.windows
        extras["policy"] = {
            "suppressed": self.statuses[Status.SUPPRESSED],
            "duplicates": self.statuses[Status.DUPLICATE],
            "not_sent": self.statuses[Status.NOT_SENT],
            "resumable": self.resumable,
            "cap_reached": (
                {"cap": self.cap_reached[0], "line": self.cap_reached[1]}
                if self.cap_reached is not None
                else None
            ),
            "smart_encoded": self.smart_encoded,
            "segments_saved": self.segments_saved,
            "superseded": self.superseded,
        }
        if self.controls:
            extras["controls"] = dict(sorted(self.controls.items()))
        return extras
