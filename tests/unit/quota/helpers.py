"""Window arithmetic shared by the shared-quota tests."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


def bound(rate: float) -> float:
    """The most units a sliding second may carry (SPEC §4)."""
    return rate + 1 if rate < 10 else 1.1 * rate


def max_window(sends: Iterable[tuple[float, float]], width: float = 1.0) -> float:
    """The most units in any window [t, t + width) of ``(time, units)`` sends."""
    window: deque[tuple[float, float]] = deque()
    total = best = 0.0
    for t, n in sorted(sends):
        window.append((t, n))
        total += n
        while window[0][0] <= t - width:
            total -= window.popleft()[1]
        best = max(best, total)
    return best
