"""sms-dispatcher: bulk SMS through the Messangi Outbound SMS API, exactly once.

    import asyncio, dispatcher
    config = dispatcher.load_config(flags={"sender": "12345", "text": "Hi {0}"})
    summary = asyncio.run(dispatcher.run("recipients.ndjson", config))

The public names are loaded lazily so that ``import dispatcher`` (and with it
``dispatcher --version``) does not pay for aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dispatcher._version import __version__

if TYPE_CHECKING:
    from dispatcher.config import Config, Secret
    from dispatcher.config import load as load_config
    from dispatcher.errors import (
        AuthError,
        ConfigError,
        DispatchError,
        FatalError,
        GatewayError,
        InvalidNumber,
        PermanentError,
        RenderError,
        RetryableError,
    )
    from dispatcher.models import Encoding, Recipient, Rejected, SegmentCount, Status
    from dispatcher.pipeline import Shutdown, run
    from dispatcher.reader import Reader
    from dispatcher.summary import Summary

__all__ = [
    "AuthError",
    "Config",
    "ConfigError",
    "DispatchError",
    "Encoding",
    "FatalError",
    "GatewayError",
    "InvalidNumber",
    "PermanentError",
    "Reader",
    "Recipient",
    "Rejected",
    "RenderError",
    "RetryableError",
    "Secret",
    "SegmentCount",
    "Shutdown",
    "Status",
    "Summary",
    "__version__",
    "load_config",
    "run",
]

_LAZY = {
    "Config": "dispatcher.config",
    "Secret": "dispatcher.config",
    "load_config": "dispatcher.config:load",
    "Shutdown": "dispatcher.pipeline",
    "run": "dispatcher.pipeline",
    "Reader": "dispatcher.reader",
    "Summary": "dispatcher.summary",
    "AuthError": "dispatcher.errors",
    "ConfigError": "dispatcher.errors",
    "DispatchError": "dispatcher.errors",
    "FatalError": "dispatcher.errors",
    "GatewayError": "dispatcher.errors",
    "InvalidNumber": "dispatcher.errors",
    "PermanentError": "dispatcher.errors",
    "RenderError": "dispatcher.errors",
    "RetryableError": "dispatcher.errors",
    "Encoding": "dispatcher.models",
    "Recipient": "dispatcher.models",
    "Rejected": "dispatcher.models",
    "SegmentCount": "dispatcher.models",
    "Status": "dispatcher.models",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
    module, _, attribute = where.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
