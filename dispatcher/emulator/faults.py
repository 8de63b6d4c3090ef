"""Seeded fault injection for the send endpoints.

Each send request takes exactly one uniform draw, and the fault shares are laid side by
side on [0, 1): with a seed, the same sequence of requests meets the same faults, so
tests can assert exact counts. Latency takes its own draws from a second generator, so
turning jitter on does not change which requests fail.
"""

from __future__ import annotations

import math
import random
from typing import Final

from aiohttp import web

from dispatcher.emulator.settings import FaultSettings

BEFORE: Final = frozenset({"429", "503", "500_before", "drop_before"})
AFTER: Final = frozenset({"500_after", "drop_after"})


class FaultInjector:
    """Decides, per send request, which fault (if any) hits it and how long it waits."""

    def __init__(self, settings: FaultSettings, seed: int | None) -> None:
        self._seed = seed
        self.settings = settings
        self.reseed()

    def reseed(self) -> None:
        """Start the draws over, as a freshly started emulator would."""
        self._faults = random.Random(self._seed)
        self._latency = random.Random(None if self._seed is None else self._seed + 1)
        self._bounds: list[tuple[float, str]] = []
        self.update(self.settings)

    def update(self, settings: FaultSettings) -> None:
        self.settings = settings
        bounds = []
        edge = 0.0
        for kind, share in settings.shares():
            if share > 0:
                edge += share
                bounds.append((edge, kind))
        self._bounds = bounds
        self.active = bool(bounds) or settings.latency_ms > 0 or settings.jitter_ms > 0

    def draw(self) -> str | None:
        """The fault for the next request, or None."""
        if not self._bounds:
            return None
        u = self._faults.random()
        for edge, kind in self._bounds:
            if u < edge:
                return kind
        return None

    def delay(self) -> float:
        """Seconds to wait before answering: mean ± uniform jitter, never negative."""
        s = self.settings
        if s.latency_ms <= 0 and s.jitter_ms <= 0:
            return 0.0
        jitter = self._latency.uniform(-s.jitter_ms, s.jitter_ms) if s.jitter_ms else 0.0
        return max(0.0, s.latency_ms + jitter) / 1000.0


#: Bounds of the fault controls that FaultSettings leaves open.
_MAX_LATENCY_MS = 3_600_000.0
_MAX_RETRY_AFTER_S = 86_400


def check_fault_change(name: str, value: object) -> None:
    """ValueError unless ``value`` is a number in range for fault setting ``name``.

    FaultSettings checks the shares; this adds what it leaves open: finite numbers,
    latency and jitter up to an hour, Retry-After in whole seconds up to a day.
    """
    if type(value) not in (int, float):
        raise ValueError(f"{name} must be a number, got {repr(value)[:100]}")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if name in ("latency_ms", "jitter_ms") and not 0 <= number <= _MAX_LATENCY_MS:
        raise ValueError(f"{name} must be between 0 and {_MAX_LATENCY_MS:.0f}, got {value}")
    if name == "retry_after_s" and (
        not number.is_integer() or not 0 <= number <= _MAX_RETRY_AFTER_S
    ):
        raise ValueError(
            f"retry_after_s must be a whole number of seconds, 0 to {_MAX_RETRY_AFTER_S}, "
            f"got {value}"
        )


def drop(request: web.Request) -> web.Response:
    """Close the connection without answering.

    The returned response is never written: aiohttp finds the transport closing,
    treats it as a client disconnect and ends the connection quietly.
    """
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)
