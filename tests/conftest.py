"""Shared test set-up: retry waits off, and no stray event loops."""

import asyncio
from collections.abc import Iterator

import pytest

from dispatcher import retry


def pytest_configure(config: pytest.Config) -> None:
    # Mark the main thread's loop as explicitly unset: otherwise the first
    # get_event_loop() of a sync test (looptime asks for one) creates a loop that is
    # never closed, and filterwarnings=error turns its ResourceWarning into a failure.
    asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    """Retry waits are zero in tests (stamina's set_testing); tests that check the
    real waits switch them back on themselves."""
    retry.set_testing(True)
    yield
    retry.set_testing(False)
