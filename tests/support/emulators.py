"""What the emulator fixtures of ``tests/conftest.py`` share with the tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dispatcher.emulator.runner import RunningEmulator

#: The API key of every emulator the fixtures start (unless a test overrides it).
TEST_KEY = "test-key"

#: ``await start(**settings_overrides)``; ``clock=`` may be given too.
EmulatorFactory = Callable[..., Awaitable[RunningEmulator]]
