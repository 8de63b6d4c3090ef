"""The C part (`dispatcher._native`) and its numpy twins, for tests that check both."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import strategies as st

from dispatcher import native


def built() -> ModuleType:
    """`dispatcher._native`; the test fails, and says why, where it is not built."""
    try:
        from dispatcher import _native
    except ImportError:
        pytest.fail(
            "dispatcher._native is not built: `pip install -e .` builds it where a C "
            "compiler is (setup.py)"
        )
    return _native


@contextlib.contextmanager
def twins(on: bool = True) -> Iterator[None]:
    """While ``on``, `dispatcher.native.core` is None: the numpy twins run (else the C
    part, which must be built)."""
    saved = native.core
    native.core = None if on else built()
    try:
        yield
    finally:
        native.core = saved


#: Floats as params hold them (amounts: m / 10^k, either sign), any float, and the
#: edges of the C part's own float writer (``float_text``: 1e-4 <= |x| < 1e15, at most
#: 15 digits) and of orjson's plain notation; and ints at the edges of 64 bits.
FLOAT_EDGES = [
    0.0, -0.0, 1e-4, math.nextafter(1e-4, 0), math.nextafter(1e-4, 1), 1e-5, 1e15,
    math.nextafter(1e15, 0), 999999999999999.9, 99999999999999.98, 123456789012345.0,
    0.1 + 0.2, 1 / 3, 2.5, 1e16, 5e-324, 1.7976931348623157e308, 0.000123456789012345,
    0.0001234567890123456, 9007199254740993.0, 4503599627370495.5,
]  # fmt: skip
FLOATS = st.one_of(
    st.builds(
        lambda whole, k, negative: (-whole if negative else whole) / 10**k,
        st.integers(0, 10**16),
        st.integers(0, 20),
        st.booleans(),
    ),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-5, max_value=1e16),
    st.sampled_from(FLOAT_EDGES),
)
INTS = st.one_of(
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64]),
)
