"""Shared test set-up: a real emulator on 127.0.0.1:0 started in the test's own loop,
retry waits off, and no stray event loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from dispatcher import retry
from dispatcher.emulator import EmulatorSettings, running_emulator
from dispatcher.emulator.runner import RunningEmulator
from tests.support.emulators import TEST_KEY, EmulatorFactory


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


@pytest.fixture
async def emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """Start emulators (api_key "test-key" unless overridden); all stop after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            *, clock: Callable[[], float] | None = None, **overrides: Any
        ) -> RunningEmulator:
            overrides.setdefault("api_key", TEST_KEY)
            settings = EmulatorSettings(**overrides)
            return await stack.enter_async_context(
                running_emulator(settings, host="127.0.0.1", port=0, clock=clock)
            )

        yield start


@pytest.fixture
async def emulator(emulator_factory: EmulatorFactory) -> RunningEmulator:
    """An emulator with api_key "test-key" and no rate limits."""
    return await emulator_factory(rate_limit=False)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A real aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=["c", "numpy"])
def native_core(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once with the C part (`dispatcher._native`) and once with its numpy
    twins."""
    from tests.support.native import twins

    with twins(request.param == "numpy"):
        yield request.param
