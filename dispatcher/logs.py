"""Logging to stderr (text or JSON lines), with every registered secret redacted.

The API key is registered once at start; the filter replaces it in every message and
in formatted tracebacks, so not even an unexpected error can print it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from dispatcher.timefmt import iso_utc

_SECRETS: set[str] = set()
MASK = "********"


def register_secret(value: str) -> None:
    """Never let ``value`` reach any output."""
    if len(value) >= 4:  # masking one or two characters would garble every line
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret masked."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats a record (text or JSON), then masks secrets in the whole line."""

    def __init__(self, fmt: str) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return redact(super().format(record))
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry).decode())


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send the dispatcher's logs to stderr at ``level`` in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt))
    root = logging.getLogger("dispatcher")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
