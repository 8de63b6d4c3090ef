"""``dispatcher loadtest``: drive a gateway at a constant arrival rate, measure latency
from each request's due time, and judge the result against k6-style thresholds.

    schedule (due times) ─▶ request (http1.Pool)    ─▶ stats (HDR histograms, per second)
                                                           └─▶ report (JSON, table) ─▶ plot

The names below load lazily, so that building the command line imports none of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatcher.loadtest.run import run_loadtest
    from dispatcher.loadtest.settings import LoadTest
    from dispatcher.loadtest.thresholds import Threshold, parse_duration, parse_threshold

__all__ = ["LoadTest", "Threshold", "parse_duration", "parse_threshold", "run_loadtest"]

_LAZY = {
    "LoadTest": "dispatcher.loadtest.settings",
    "Threshold": "dispatcher.loadtest.thresholds",
    "parse_duration": "dispatcher.loadtest.thresholds",
    "parse_threshold": "dispatcher.loadtest.thresholds",
    "run_loadtest": "dispatcher.loadtest.run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dispatcher.loadtest' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
