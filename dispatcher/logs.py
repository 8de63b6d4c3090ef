"""Logging to stderr (text or JSON lines), with every registered secret redacted.

The API key is registered once at start (and by every `GatewayClient` that holds it).
`redact` masks in a text not only each whole secret but **any run of 8 or more
characters of one**: what is left of a key that a cut (a 120-character snippet of an
error body, a truncated log line) went through is masked too. The formatter applies it
to every message and formatted traceback, so not even an unexpected error can print a
secret; `redact_document` does the same to every string of a JSON document (summaries,
reports).

What a gateway answers is a special case: it may echo the ``Authorization`` header
into an id, a transaction id, an explanation, an invalid number. Scanning every field
of every result line would cost the hot path dearly, so `scrub_answer` looks once at
the raw bytes of each answer and only when they may hold a run of a secret takes the
careful path, masking each string of the parsed document.

The look costs a few `bytes` searches. Any run of 8 bytes of a secret contains one of
its 5-byte pieces that start at a multiple of 4 (the *probes*), so those are searched
— a quarter of the searches the 8-byte windows would take — and a probe is searched
only when every one of its bytes occurs in the answer at all (one ``memchr`` per
byte, cached): a key's piece usually holds a byte that a clean answer lacks. A probe
that is found is confirmed with the exact 8-byte windows before the careful path.
Measured with timeit on a 1000-id answer of 59 KB (tests/unit/test_logs.py prints
it): 10–50 µs for random keys, 0.13 ms for a UUID, 0.25 ms for a hex key among hex ids
(every byte of the key occurs in the answer), where reading the answer
(`api.check_answer` and `api.parse_batch`) takes 0.23 ms; all 8-byte windows searched
instead would take 0.6 ms even for a random key.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

from dispatcher.timefmt import iso_utc

MASK = "********"
#: Runs of a secret at least this long are masked wherever they appear.
RUN = 8
#: Shorter secrets are masked whole only: masking one or two characters would garble
#: every line.
MIN_SECRET = 4

#: Probes cannot be shorter than this (see the module docstring), nor start further apart.
_PROBE, _STEP = 5, 4

_SECRETS: set[str] = set()
#: (probe, its distinct bytes) of every secret: the first look at an answer.
_PROBES: tuple[tuple[bytes, tuple[bytes, ...]], ...] = ()
#: Every 8-byte window of every secret: what confirms a probe that was found.
_WINDOWS: tuple[bytes, ...] = ()


#: The JSON escapes that could spell a secret's character (see `may_hold_secret`).
_HIDDEN = re.compile(rb"\\u00[2-7][0-9a-fA-F]")


def register_secret(value: str) -> None:
    """Never let ``value`` (nor any run of 8 of its characters) reach any output."""
    global _PROBES, _WINDOWS, _HIDDEN
    if len(value) < MIN_SECRET or value in _SECRETS:
        return
    _SECRETS.add(value)
    if not (value.isascii() and value.isprintable()) or "/" in value:
        _HIDDEN = re.compile(rb"\\u|\\/")  # any escape may spell this secret
    probes = dict(_PROBES)
    windows = set(_WINDOWS)
    # The raw UTF-8 form, and the form JSON gives it when it holds '"', '\' or a
    # control character: a run of 8 characters is at least 8 bytes of one of them.
    for form in {value.encode(), orjson.dumps(value)[1:-1]}:
        windows.update(_pieces(form, RUN, 1))
        for probe in _pieces(form, _PROBE, _STEP):
            probes[probe] = tuple(dict.fromkeys(probe[i : i + 1] for i in range(len(probe))))
    _PROBES = tuple(sorted(probes.items()))
    _WINDOWS = tuple(sorted(windows))


def _pieces(data: bytes, size: int, step: int) -> list[bytes]:
    """The pieces of ``size`` bytes starting every ``step`` bytes, and the last one
    (the whole of ``data`` when it is no longer than 8 bytes: masked whole only)."""
    if len(data) <= RUN:
        return [data]
    last = len(data) - size
    return [data[i : i + size] for i in range(0, last, step)] + [data[last:]]


def redact(text: str) -> str:
    """``text`` with every registered secret, and every run of 8 or more characters of
    one, masked (each masked stretch becomes one ``********``)."""
    if not _SECRETS:
        return text
    spans: list[tuple[int, int]] = []
    for secret in _SECRETS:
        width = min(RUN, len(secret))
        for start in range(len(secret) - width + 1):
            piece = secret[start : start + width]
            at = text.find(piece)
            while at != -1:
                spans.append((at, at + width))
                at = text.find(piece, at + 1)
    if not spans:
        return text
    spans.sort()
    parts: list[str] = []
    done = 0
    end = -1
    for start, stop in spans:
        if start > end:  # a new masked stretch
            if end >= 0:
                parts.append(MASK)
            parts.append(text[done:start])
        end = max(end, stop)
        done = end
    parts.append(MASK)
    parts.append(text[done:])
    return "".join(parts)


def redact_document(document: Any) -> Any:
    """A JSON-like document with `redact` applied to every string (keys too)."""
    if isinstance(document, str):
        return redact(document)
    if isinstance(document, dict):
        return {redact(str(k)): redact_document(v) for k, v in document.items()}
    if isinstance(document, list | tuple):
        return [redact_document(item) for item in document]
    return document


def may_hold_secret(payload: bytes) -> bool:
    """Whether ``payload`` may hold a run of 8 characters of a secret: the cheap look at
    every answer (see the module docstring).

    JSON may spell a character with an escape the raw bytes do not show: ``\\uXXXX``
    (any character) or ``\\/``. Only then — not for the ``\\n`` or ``\\"`` of a
    text the gateway echoes, which the escaped form of each secret covers — is the
    answer decoded, encoded again (canonical JSON escapes nothing but quotes,
    backslashes and control characters) and searched again.
    """
    if not _PROBES:
        return False
    if _found(payload):
        return True
    if b"\\" not in payload or not _HIDDEN.search(payload):
        return False
    try:
        canonical = orjson.dumps(orjson.loads(payload))
    except orjson.JSONDecodeError:
        return True  # not JSON: let the careful path decode what it can
    return _found(canonical)


def _found(data: bytes) -> bool:
    present: dict[bytes, bool] = {}
    for probe, chars in _PROBES:
        for char in chars:
            there = present.get(char)
            if there is None:
                there = present[char] = char in data  # one memchr
            if not there:
                break
        else:
            if probe in data:
                return any(window in data for window in _WINDOWS)
    return False


def scrub_answer(payload: bytes) -> bytes:
    """A gateway's answer with every run of a secret masked in every field; the same
    bytes when it holds none (the usual case, and a cheap one)."""
    if not may_hold_secret(payload):
        return payload
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return redact(payload.decode("utf-8", "replace")).encode()
    return orjson.dumps(redact_document(document))


class RedactingFormatter(logging.Formatter):
    """Formats a record (text or JSON), then masks secrets in the whole line."""

    def __init__(self, fmt: str) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return redact(super().format(record))
        # Masked before JSON escapes it: a secret holding a quote would not match after.
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return redact(orjson.dumps(entry).decode())


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send the dispatcher's logs to stderr at ``level`` in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt))
    root = logging.getLogger("dispatcher")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # Other loggers (asyncio's "Task exception was never retrieved", aiohttp's) have no
    # handler of their own: Python's last resort would print them unmasked.
    last = logging.StreamHandler(sys.stderr)
    last.setLevel(logging.WARNING)
    last.setFormatter(RedactingFormatter(fmt))
    logging.lastResort = last
