"""An emulator of the Messangi Outbound SMS gateway (SPEC §8).

``create_app`` builds the aiohttp application; ``running_emulator`` serves it in the
current event loop (tests, ``dispatcher demo``); ``dispatcher gateway`` serves it as a
process. Its checks are its own, independent of the client's, so it can judge it.
"""

from dispatcher.emulator.app import create_app
from dispatcher.emulator.runner import RunningEmulator, running_emulator
from dispatcher.emulator.settings import EmulatorSettings, FaultSettings

__all__ = [
    "EmulatorSettings",
    "FaultSettings",
    "RunningEmulator",
    "create_app",
    "running_emulator",
]
