"""Shared fixtures: a real emulator on 127.0.0.1:0, started in the test's own loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from dispatcher.emulator import EmulatorSettings, running_emulator
from dispatcher.emulator.runner import RunningEmulator

TEST_KEY = "test-key"

#: ``await start(**settings_overrides)``; ``clock=`` may be given too.
EmulatorFactory = Callable[..., Awaitable[RunningEmulator]]


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
