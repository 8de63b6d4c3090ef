"""A load test's settings: rates, durations and thresholds finite and in range; the
error names the flag."""

from __future__ import annotations

import math

import pytest

from dispatcher.config import Secret
from dispatcher.errors import ConfigError
from dispatcher.loadtest import LoadTest, parse_threshold


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("rate", math.nan),
        ("rate", math.inf),
        ("rate", 0.0),
        ("rate", -0.0),
        ("duration", 0.0),
        ("duration", math.inf),
        ("duration", 86_401.0),
        ("warmup", -0.0),
        ("warmup", math.nan),
        ("drain", math.inf),
        ("timeout", 0.0),
        ("timeout", -1.0),
        ("batch_size", 0),
        ("batch_size", 1.5),
        ("concurrency", 0),
        ("concurrency", True),
    ],
)
def test_numbers_name_their_flag(name: str, value: float) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ConfigError, match=f"^{flag} must be a"):
        LoadTest(**{name: value})  # type: ignore[arg-type]


def test_zero_where_it_means_none() -> None:
    test = LoadTest(warmup=0.0, drain=0.0)
    assert (test.warmup, test.drain) == (0.0, 0.0)


def test_a_threshold_s_limit_is_finite() -> None:
    huge = parse_threshold("p99<" + "9" * 400 + "ms")
    with pytest.raises(ConfigError, match="not a finite number"):
        LoadTest(thresholds=(huge,))


@pytest.mark.parametrize("url", ["http://", "http:///x", "https://:80", "ftp://h/raven"])
def test_the_base_url_needs_a_scheme_and_a_host(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^--base-url "):
        LoadTest(base_url=url, api_key=Secret("k" * 12))
