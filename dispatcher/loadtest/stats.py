"""What a load test measures: outcomes by kind and latency from each due time.

Results are aggregated as they arrive (HDR histograms, counters, one open per-second
bucket); nothing holds more than a second of requests. Latencies are recorded in
microseconds, up to an hour, with three significant digits.

A request costs the recorder two appends of a machine integer to the open second's
arrays; when the second closes, each distinct value goes into the second's and the
run's histograms once, with its count (hdrh records in Python, ~2 µs a value: three
of them per request were a sixth of the load tester's time at 15 k requests/s).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from dispatcher.errors import (
    BadResponse,
    ConnectError,
    ConnectionLost,
    GatewayError,
    RateLimited,
    RequestTimeout,
)
from dispatcher.histogram import LatencyHistogram

#: The percentiles every report holds, by name.
PERCENTILES: Final = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}


class RequestOutcome(StrEnum):
    """How one request ended."""

    OK = "ok"
    CLIENT_ERROR = "4xx"
    RATE_LIMITED = "429"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    CONNECTION_LOST = "connection_lost"
    BAD_RESPONSE = "bad_response"
    #: A 2xx answer in the flat shape that refuses the message.
    REFUSED = "refused"
    #: Due, but never sent: every slot was still busy when the schedule ended.
    DROPPED = "dropped"
    #: Sent, but still unanswered when the drain time ran out.
    UNFINISHED = "unfinished"


_UNANSWERED: Final = frozenset({RequestOutcome.DROPPED, RequestOutcome.UNFINISHED})


def classify(error: GatewayError) -> RequestOutcome:
    """The outcome kind of a failed request, from the gateway client's error classes."""
    if isinstance(error, RateLimited):
        return RequestOutcome.RATE_LIMITED
    if isinstance(error, RequestTimeout):
        return RequestOutcome.TIMEOUT
    if isinstance(error, ConnectError):
        return RequestOutcome.CONNECT_ERROR
    if isinstance(error, ConnectionLost):
        return RequestOutcome.CONNECTION_LOST
    if isinstance(error, BadResponse):
        return RequestOutcome.BAD_RESPONSE
    status = error.status
    if status is None:
        return RequestOutcome.REFUSED
    if status >= 500:
        return RequestOutcome.SERVER_ERROR
    if status >= 400:
        return RequestOutcome.CLIENT_ERROR
    return RequestOutcome.BAD_RESPONSE


def latency_summary(histogram: LatencyHistogram) -> dict[str, float | None]:
    """min, mean, the usual percentiles and max, in milliseconds."""
    summary = {"min": histogram.min_ms(), "mean": histogram.mean_ms()}
    values = histogram.percentiles_ms(PERCENTILES.values())
    for name, percentile in PERCENTILES.items():
        summary[name] = values[percentile]
    summary["max"] = histogram.max_ms()
    return summary


@dataclass(slots=True)
class _Bucket:
    sent: int = 0
    requests: int = 0
    answered: int = 0
    ok: int = 0
    #: Microseconds from due to done, of the requests accounted for in this second.
    latencies: array[int] = field(default_factory=lambda: array("q"))


class Recorder:
    """Outcomes and latencies of the measured requests (due at or after ``start``),
    with one row per second of the run for the series and the live line: requests
    accounted for in that second (every outcome, by when it ended), sent, ok, errors,
    ``rate`` (answers per second: not dropped, not unfinished) and p50/p99. Row ``t``
    covers ``[t, t + seconds)``: ``seconds`` is 1 except for the drain's tail.

    A second is closed when time has moved past it — at the next event or `tick` —
    and handed to ``on_second`` (the live line). ``latency`` and ``lag`` hold the
    closed seconds: all of them after `finish`.
    """

    def __init__(
        self,
        *,
        start: float,
        on_second: Callable[[dict[str, Any]], None] | None = None,
        keep_seconds: bool = False,
    ) -> None:
        self.start = start
        self.latency = LatencyHistogram()
        #: How late requests started after their due time (a slot wait, a busy loop).
        self.lag = LatencyHistogram()
        self.outcomes = dict.fromkeys(RequestOutcome, 0)
        self.sent = 0
        self.warmup = 0
        self.series: list[dict[str, Any]] = []
        self._on_second = on_second
        self._index = 0
        self._bucket = _Bucket()
        #: When the open second ends.
        self._closes = start + 1.0
        #: Microseconds from due to start, of the requests started since the last close.
        self._lags: array[int] = array("q")
        #: With ``keep_seconds`` (a worker of ``--workers``): each closed second's latency
        #: histogram (encoded) and answers, so that the seconds of workers merge exactly.
        self.seconds: list[tuple[str, int]] | None = [] if keep_seconds else None

    @property
    def requests(self) -> int:
        """Measured requests accounted for so far (every outcome)."""
        return sum(self.outcomes.values())

    @property
    def errors(self) -> int:
        """Measured requests that did not end ok."""
        return self.requests - self.outcomes[RequestOutcome.OK]

    def started(self, due: float, at: float) -> None:
        """A request due at ``due`` left at ``at``."""
        if due < self.start:
            return
        if at >= self._closes:
            self._advance(at)
        self.sent += 1
        self._bucket.sent += 1
        self._lags.append(round((at - due) * 1e6))

    def add(self, due: float, done: float, outcome: RequestOutcome) -> None:
        """A request due at ``due`` ended at ``done``; warm-up requests only count."""
        if due < self.start:
            self.warmup += 1
            return
        if done >= self._closes:
            self._advance(done)
        self.outcomes[outcome] += 1
        bucket = self._bucket
        bucket.requests += 1
        bucket.ok += outcome is RequestOutcome.OK
        bucket.answered += outcome not in _UNANSWERED
        bucket.latencies.append(round((done - due) * 1e6))

    def latency_now(self) -> LatencyHistogram:
        """The latencies so far: the closed seconds' and the open one's (a scrape must
        agree with `requests`, which counts as requests end)."""
        pending = self._bucket.latencies
        if not pending:
            return self.latency
        now = self.latency.copy()
        now.record_counts(Counter(pending))
        return now

    def tick(self, now: float) -> None:
        """Close the seconds that have ended by ``now``."""
        self._advance(now)

    def finish(self, now: float, end: float) -> None:
        """Close the last second: partial when the run ended past ``end`` (the measured
        window's end) in the middle of a second, whole when it ended inside the window."""
        self._advance(now)
        opened = self.start + self._index
        span = max(now - opened, min(1.0, end - opened))
        if self._bucket.requests or self._bucket.sent:
            self._close(max(span, 1e-3))
        self._flush_lags()

    def _flush_lags(self) -> None:
        self.lag.record_counts(Counter(self._lags))
        self._lags = array("q")

    def _advance(self, now: float) -> None:
        index = int(now - self.start)
        while self._index < index:
            self._close(1.0)

    def _close(self, span: float) -> None:
        bucket = self._bucket
        counts = Counter(bucket.latencies)
        histogram = LatencyHistogram()
        histogram.record_counts(counts)
        # Not hdrh's `add` of the second's histogram: into an empty one it loses the min.
        self.latency.record_counts(counts)
        row = {
            "t": self._index,
            "seconds": round(span, 3),
            "sent": bucket.sent,
            "requests": bucket.requests,
            "ok": bucket.ok,
            "errors": bucket.requests - bucket.ok,
            "rate": round(bucket.answered / span, 3),
            "p50_ms": histogram.percentile_ms(50),
            "p99_ms": histogram.percentile_ms(99),
        }
        self.series.append(row)
        if self.seconds is not None:
            self.seconds.append((histogram.encode(), bucket.answered))
        self._flush_lags()
        self._index += 1
        self._closes = self.start + self._index + 1.0
        self._bucket = _Bucket()
        if self._on_second is not None:
            self._on_second(row)


def export(recorder: Recorder) -> dict[str, Any]:
    """A finished recorder's numbers as JSON-ready data that `merged` adds up exactly
    (its ``seconds`` must have been kept)."""
    assert recorder.seconds is not None, "a worker's recorder keeps its seconds"
    return {
        "outcomes": {str(kind): n for kind, n in recorder.outcomes.items()},
        "sent": recorder.sent,
        "warmup": recorder.warmup,
        "latency": recorder.latency.encode(),
        "latency_sum": recorder.latency.total_seconds,
        "lag": recorder.lag.encode(),
        "series": [
            {**row, "latency": latency, "answered": answered}
            for row, (latency, answered) in zip(recorder.series, recorder.seconds, strict=True)
        ],
    }


def merged(parts: list[dict[str, Any]]) -> Recorder:
    """One recorder holding the numbers of the `export` of each process of a test:
    counts add, histograms add (exactly: HDR), and the seconds add by their index (the
    processes share one measured start), their percentiles read off the merged
    second. `ValueError` for data that is not an export."""
    recorder = Recorder(start=0.0)
    seconds: dict[int, dict[str, Any]] = {}
    try:
        for part in parts:
            for kind, n in part["outcomes"].items():
                recorder.outcomes[RequestOutcome(kind)] += int(n)
            recorder.sent += int(part["sent"])
            recorder.warmup += int(part["warmup"])
            recorder.latency.add(LatencyHistogram.decode(part["latency"], part["latency_sum"]))
            recorder.lag.add(LatencyHistogram.decode(part["lag"]))
            for row in part["series"]:
                second = seconds.setdefault(
                    int(row["t"]), {"latency": LatencyHistogram(), "seconds": 0.0}
                )
                second["latency"].add(LatencyHistogram.decode(row["latency"]))
                second["seconds"] = max(second["seconds"], float(row["seconds"]))
                for name in ("sent", "requests", "ok", "answered"):
                    second[name] = second.get(name, 0) + int(row[name])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a load test's numbers: {exc!r}") from None
    for t in sorted(seconds):
        second = seconds[t]
        histogram = second["latency"]
        recorder.series.append(
            {
                "t": t,
                "seconds": second["seconds"],
                "sent": second["sent"],
                "requests": second["requests"],
                "ok": second["ok"],
                "errors": second["requests"] - second["ok"],
                "rate": round(second["answered"] / second["seconds"], 3),
                "p50_ms": histogram.percentile_ms(50),
                "p99_ms": histogram.percentile_ms(99),
            }
        )
    return recorder
