"""Threshold and duration syntax: what parses to what, and what is refused."""

import pytest

from dispatcher.errors import ConfigError
from dispatcher.loadtest.thresholds import Threshold, evaluate, parse_duration, parse_threshold


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("p99<250ms", "p99", "<", 250.0),
        ("p99 < 0.25s", "p99", "<", 250.0),
        ("p(95)<=200", "p95", "<=", 200.0),
        ("p99.9<1s", "p99.9", "<", 1000.0),
        ("P50>=1.5ms", "p50", ">=", 1.5),
        ("max<2s", "max", "<", 2000.0),
        ("mean<50ms", "mean", "<", 50.0),
        ("min>0", "min", ">", 0.0),
        ("error_rate<0.1%", "error_rate", "<", 0.001),
        ("error_rate<=0.001", "error_rate", "<=", 0.001),
        ("rate>=0.95", "rate", ">=", 0.95),
        ("rate>95%", "rate", ">", 0.95),
        ("p75<.5s", "p75", "<", 500.0),
    ],
)
def test_good_thresholds(text: str, metric: str, op: str, limit: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.limit == pytest.approx(limit)
    assert threshold.text == text.strip()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("p99", "METRIC OP VALUE"),
        ("p99<", "METRIC OP VALUE"),
        ("p99=250ms", "METRIC OP VALUE"),
        ("p99<<250ms", "METRIC OP VALUE"),
        ("p99<250us", "METRIC OP VALUE"),
        ("p99<-1ms", "METRIC OP VALUE"),
        ("<250ms", "METRIC OP VALUE"),
        ("p99<250%", "latency"),
        ("error_rate<5", "write 5%"),
        ("error_rate<1ms", "ratio"),
        ("rate>=2", "at most 1"),
        ("p0<1ms", "percentile"),
        ("p101<1ms", "percentile"),
        ("latency<1ms", "unknown metric"),
        ("", "METRIC OP VALUE"),
    ],
)
def test_malformed_thresholds(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_threshold(text)


def test_check_and_evaluate() -> None:
    below = parse_threshold("p99<250ms")
    assert below.check(249.9)
    assert not below.check(250.0)
    assert not below.check(None)  # no data fails
    assert parse_threshold("p99<=250ms").check(250.0)
    assert parse_threshold("rate>=0.95").check(0.95)
    assert not parse_threshold("rate>0.95").check(0.95)
    actual = {"p99": 300.0, "error_rate": 0.0}
    verdicts = evaluate((below, parse_threshold("error_rate<0.1%")), lambda t: actual.get(t.metric))
    assert [v["passed"] for v in verdicts] == [False, True]
    assert verdicts[0] == {
        "threshold": "p99<250ms",
        "metric": "p99",
        "op": "<",
        "limit": 250.0,
        "unit": "ms",
        "actual": 300.0,
        "passed": False,
    }
    assert verdicts[1]["unit"] == "fraction"


def test_percentile_property() -> None:
    assert parse_threshold("p99.9<1s").percentile == 99.9
    assert parse_threshold("max<1s").percentile is None
    assert Threshold(text="x", metric="p50", op="<", limit=1).percentile == 50


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("10", 10.0),
        ("0.25", 0.25),
        (" 2S ", 2.0),
        ("0s", 0.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "-5", "1s2", "inf", "nan", "ms10", "1 s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)
