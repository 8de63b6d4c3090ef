"""The C part (`dispatcher._native`) and its numpy twins, for tests that check both."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

import pytest

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
