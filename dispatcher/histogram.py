"""Latency histograms for the send summary and the load tester: one wrapper over hdrh.

An HDR histogram records in constant time and constant memory however many values
come, so latencies are aggregated as they arrive and never held. Values are whole
microseconds from 0 to an hour; they are read back in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from hdrh.histogram import HdrHistogram

#: The longest duration kept apart (an hour, in microseconds); longer ones count as it.
HIGHEST_US: Final = 3_600_000_000


class LatencyHistogram:
    """Durations in seconds in, milliseconds (to the microsecond) out.

    ``significant_digits`` is the precision of every value read back: 3 keeps them
    within 0.1 %. Every reading is None while nothing has been recorded.
    """

    __slots__ = ("_histogram", "total_seconds")

    def __init__(self, significant_digits: int = 3) -> None:
        self._histogram = HdrHistogram(1, HIGHEST_US, significant_digits)
        #: the exact sum of the durations recorded (a Prometheus histogram's ``_sum``)
        self.total_seconds = 0.0

    def record(self, seconds: float) -> None:
        """Record one duration, clamped into 0 µs … an hour."""
        self._histogram.record_value(min(HIGHEST_US, max(0, round(seconds * 1e6))))
        self.total_seconds += seconds

    def record_counts(self, counts: Mapping[int, int]) -> None:
        """Record durations in whole microseconds, each as often as ``counts`` says (a
        `collections.Counter` of them): many at the cost of the distinct ones, and of
        at most a few thousand per power of two, since values the histogram cannot
        tell apart are recorded together."""
        histogram = self._histogram
        self.total_seconds += sum(us * times for us, times in counts.items()) / 1e6
        exact = histogram.sub_bucket_count  # below it every value has its own count
        if len(counts) > exact:
            counts = _alike(counts, exact.bit_length() - 1)
        record = histogram.record_value
        for microseconds, times in counts.items():
            record(min(HIGHEST_US, max(0, microseconds)), times)

    def copy(self) -> LatencyHistogram:
        """An independent histogram with the same counts and sum (its minimum may read
        lower: hdrh's add into an empty histogram does not keep it exactly)."""
        twin = LatencyHistogram(self._histogram.significant_figures)
        twin._histogram.add(self._histogram)
        twin.total_seconds = self.total_seconds
        return twin

    def add(self, other: LatencyHistogram) -> None:
        """Add ``other``'s durations to these: HDR histograms of one layout add exactly
        (counts, sum, minimum and maximum), so the processes of one test merge into the
        histogram one process would have recorded."""
        if not other.count:
            self.total_seconds += other.total_seconds
            return
        empty = not self.count
        self._histogram.add(other._histogram)
        if empty:  # hdrh's add takes an empty histogram's minimum as 0
            self._histogram.min_value = other._histogram.min_value
        self.total_seconds += other.total_seconds

    def encode(self) -> str:
        """The counts as hdrh's compressed base64 text (the sum apart: `decode`)."""
        text: bytes = self._histogram.encode()
        return text.decode("ascii")

    @classmethod
    def decode(cls, text: str, total_seconds: float = 0.0) -> LatencyHistogram:
        """The histogram `encode` wrote, with its sum; `ValueError` for other text."""
        try:
            decoded = HdrHistogram.decode(text.encode("ascii"))
        except Exception as exc:  # hdrh raises its own classes, zlib's and TypeError
            raise ValueError(f"not an encoded histogram: {exc}") from None
        histogram = cls(decoded.significant_figures)
        histogram._histogram = decoded
        histogram.total_seconds = total_seconds
        return histogram

    @property
    def count(self) -> int:
        """How many durations were recorded."""
        count: int = self._histogram.get_total_count()
        return count

    def counts_up_to(self, bounds: Sequence[float]) -> list[int]:
        """How many durations were at most each of ``bounds`` (seconds, ascending): a
        Prometheus histogram's cumulative buckets, read off the HDR counts (a duration
        within the precision of a bound counts as at most it). One pass over the
        counts, on demand: recording stays one `record` per duration."""
        histogram = self._histogram
        counts = histogram.counts
        size = histogram.counts_len
        cumulative: list[int] = []
        total = start = 0
        for bound in bounds:
            value = min(HIGHEST_US, max(0, round(bound * 1e6)))
            end = min(size, histogram.get_counts_array_index(value) + 1)
            if end > start:
                total += sum(counts[start:end])
                start = end
            cumulative.append(total)
        return cumulative

    def percentile_ms(self, percentile: float) -> float | None:
        """The duration at ``percentile`` (0–100) in milliseconds."""
        if not self.count:
            return None
        return _ms(self._histogram.get_value_at_percentile(percentile))

    def percentiles_ms(self, percentiles: Iterable[float]) -> dict[float, float | None]:
        """Several percentiles at once (one pass over the histogram)."""
        wanted = list(percentiles)
        if not self.count:
            return dict.fromkeys(wanted)
        values = self._histogram.get_percentile_to_value_dict(wanted)
        return {p: _ms(values[p]) for p in wanted}

    def min_ms(self) -> float | None:
        """The shortest duration recorded, in milliseconds."""
        return _ms(self._histogram.get_min_value()) if self.count else None

    def max_ms(self) -> float | None:
        """The longest duration recorded, in milliseconds."""
        return _ms(self._histogram.get_max_value()) if self.count else None

    def mean_ms(self) -> float | None:
        """The mean duration, in milliseconds."""
        return _ms(self._histogram.get_mean_value()) if self.count else None


def _alike(counts: Mapping[int, int], bits: int) -> dict[int, int]:
    """``counts`` with each value cut to its top ``bits`` bits: the lowest value of its
    bucket in an HDR histogram whose buckets hold ``2 ** bits`` values."""
    merged: dict[int, int] = {}
    for value, times in counts.items():
        shift = value.bit_length() - bits
        if shift > 0:
            value = value >> shift << shift
        merged[value] = merged.get(value, 0) + times
    return merged


def _ms(microseconds: float) -> float:
    return round(microseconds / 1000, 3)
