"""sms-dispatcher: bulk SMS through the Messangi Outbound SMS API, exactly once.

The public names are loaded lazily so that ``import dispatcher`` (and with it
``dispatcher --version``) does not pay for aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dispatcher._version import __version__

if TYPE_CHECKING:
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

__all__ = [
    "AuthError",
    "ConfigError",
    "DispatchError",
    "Encoding",
    "FatalError",
    "GatewayError",
    "InvalidNumber",
    "PermanentError",
    "Recipient",
    "Rejected",
    "RenderError",
    "RetryableError",
    "SegmentCount",
    "Status",
    "__version__",
]

_LAZY = {
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
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
