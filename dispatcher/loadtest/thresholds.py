"""Pass/fail criteria in the k6 style, and the duration syntax the flags share.

A threshold is ``METRIC OP VALUE``:

- latency: ``p50 p90 p95 p99 p99.9`` (any ``pN``, also spelt ``p(N)``), ``max``,
  ``mean``, ``min``; the value in ``ms`` or ``s`` (a bare number is milliseconds);
- ``error_rate``: non-ok outcomes over all requests, as a fraction (``0.001``) or a
  percentage (``0.1%``);
- ``rate``: achieved over target rate, as a fraction (``0.95``) or a percentage;

and ``OP`` one of ``< <= > >=``. ``p99<250ms`` passes when the 99th percentile is
below 250 ms. A metric with no data (no request measured) fails every threshold.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from dispatcher.errors import ConfigError

_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_THRESHOLD: Final = re.compile(
    r"\s*(?P<metric>[a-z_]+|p\(?[0-9]+(?:\.[0-9]+)?\)?)\s*"
    r"(?P<op><=|>=|<|>)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|%)?\s*",
    re.IGNORECASE,
)
_PERCENTILE: Final = re.compile(r"p\(?([0-9]+(?:\.[0-9]+)?)\)?")
_LATENCY_NAMES: Final = ("max", "mean", "min")
_RATIOS: Final = ("error_rate", "rate")
_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """One criterion. ``limit`` is in the report's unit: milliseconds for latency
    metrics, a fraction for ``error_rate`` and ``rate``."""

    text: str
    metric: str
    op: str
    limit: float

    def check(self, actual: float | None) -> bool:
        """Whether ``actual`` (None: no data) meets the threshold."""
        return actual is not None and _OPS[self.op](actual, self.limit)

    @property
    def percentile(self) -> float | None:
        """The percentile a ``pN`` metric names, else None."""
        match = _PERCENTILE.fullmatch(self.metric)
        return float(match[1]) if match else None


def parse_threshold(text: str) -> Threshold:
    """``'p99<250ms'`` → `Threshold`; `ConfigError` saying what is wrong otherwise."""
    match = _THRESHOLD.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"threshold {text!r} must look like METRIC OP VALUE, e.g. 'p99<250ms', "
            "'error_rate<0.1%' or 'rate>=0.95'"
        )
    metric, op = match["metric"].lower(), match["op"]
    value, unit = float(match["value"]), (match["unit"] or "").lower()
    percentile = _PERCENTILE.fullmatch(metric)
    if percentile is not None:
        share = float(percentile[1])
        if not 0 < share <= 100:
            raise ConfigError(f"threshold {text!r}: a percentile must be above 0 and at most 100")
        metric = f"p{share:g}"
    if percentile is not None or metric in _LATENCY_NAMES:
        if unit == "%":
            raise ConfigError(f"threshold {text!r}: {metric} is a latency; give ms or s")
        limit = value * 1000 if unit == "s" else value
    elif metric in _RATIOS:
        if unit in ("ms", "s"):
            raise ConfigError(f"threshold {text!r}: {metric} is a ratio; give a fraction or %")
        limit = value / 100 if unit == "%" else value
        if unit != "%" and limit > 1:
            raise ConfigError(
                f"threshold {text!r}: {metric} as a fraction is at most 1; "
                f"write {value:g}% for a percentage"
            )
    else:
        known = "p50, p90, p95, p99, p99.9 (any pN), max, mean, min, error_rate, rate"
        raise ConfigError(f"threshold {text!r}: unknown metric {metric!r}; known: {known}")
    return Threshold(text=text.strip(), metric=metric, op=op, limit=limit)


def evaluate(
    thresholds: tuple[Threshold, ...], metric: Callable[[Threshold], float | None]
) -> list[dict[str, Any]]:
    """The verdict of each threshold; ``metric`` gives a threshold's actual value."""
    verdicts = []
    for threshold in thresholds:
        actual = metric(threshold)
        verdicts.append(
            {
                "threshold": threshold.text,
                "metric": threshold.metric,
                "op": threshold.op,
                "limit": threshold.limit,
                "unit": "fraction" if threshold.metric in _RATIOS else "ms",
                "actual": actual,
                "passed": threshold.check(actual),
            }
        )
    return verdicts


def parse_duration(text: str) -> float:
    """``500ms``, ``30s``, ``2m``, ``1h``, ``1m30s`` or plain seconds → seconds."""
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        seconds = math.nan
        position, total = 0, 0.0
        for part in _DURATION_PART.finditer(cleaned):
            if part.start() != position:
                break
            total += float(part[1]) * _UNIT_SECONDS[part[2]]
            position = part.end()
        else:
            if position == len(cleaned) and position > 0:
                seconds = total
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{text!r} is not a duration: use e.g. 500ms, 30s, 2m or 1m30s")
    return seconds
