"""The emulator's settings: every number finite and in range, from its flags, from code
and from the control endpoint's partial updates alike."""

from __future__ import annotations

import math

import pytest

from dispatcher.emulator.settings import (
    EmulatorSettings,
    FaultSettings,
    fault_update,
    parse_code_rate,
)

BAD = [math.nan, math.inf, -math.inf, -1.0, -0.0]


@pytest.mark.parametrize("name", ["latency_ms", "jitter_ms", "fail_429", "drop_after"])
@pytest.mark.parametrize("value", [*BAD, 1e400, 86_400_001.0])
def test_fault_numbers_are_finite_and_in_range(name: str, value: float) -> None:
    if name.startswith(("fail", "drop")) and value == 86_400_001.0:
        value = 1.5
    with pytest.raises(ValueError, match=f"^{name} must be a"):
        FaultSettings(**{name: value})
    with pytest.raises(ValueError, match=f"^{name} must be a"):
        fault_update(FaultSettings(), {name: value})


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, 1.5, 86_401])
def test_retry_after_of_injected_faults(value: float) -> None:
    with pytest.raises(ValueError, match=r"^retry_after_s must be a whole number"):
        fault_update(FaultSettings(), {"retry_after_s": value})


def test_partial_updates_keep_their_types() -> None:
    settings = fault_update(FaultSettings(), {"retry_after_s": 3.0, "fail_429": 1})
    assert settings.retry_after_s == 3
    assert isinstance(settings.retry_after_s, int)
    assert settings.fail_429 == 1.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_batch", 0),
        ("max_batch", 0x10001),
        ("max_segments", 0),
        ("max_segments", 256),
        ("dr_delay_ms", math.inf),
        ("dr_delay_ms", math.nan),
        ("dr_undeliv", 1.5),
        ("dr_expired", math.nan),
        ("shortcode_rate", 0.0),
        ("longcode_rate", math.nan),
        ("alphanumeric_rate", -1.0),
        ("dr_concurrency", 0),
        ("dr_timeout_s", math.inf),
        ("dr_timeout_s", 0.0),
        ("idempotency_max_bytes", -1),
        ("max_body_bytes", 0),
    ],
)
def test_emulator_numbers_are_in_range(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be a"):
        EmulatorSettings(**{name: value})  # type: ignore[arg-type]


def test_rates_are_positive_or_inf() -> None:
    assert EmulatorSettings(rates={"1": math.inf}).rate_for("1") == math.inf
    for rate in (0.0, -1.0, math.nan, -math.inf):
        with pytest.raises(ValueError, match="rate for 1 must be"):
            EmulatorSettings(rates={"1": rate})
    for spec in ("1=nan", "1=-0", "1=0", "1=-inf", "1=x", "1="):
        with pytest.raises(ValueError, match="must look like CODE=N"):
            parse_code_rate(spec)
    assert parse_code_rate("1=1e400") == ("1", math.inf)
