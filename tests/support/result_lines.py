"""The result lines `dispatcher.writers.Outputs` writes, spelled out as orjson of one
dict per line: the careful specification its text templates are checked against."""

from __future__ import annotations

from typing import Any

import orjson

from dispatcher.models import Entry, Status

NL = orjson.OPT_APPEND_NEWLINE


def with_extras(result: dict[str, Any], entry: Entry) -> bytes:
    if entry.replaced:
        result["replaced"] = entry.replaced
    if entry.ref is not None:
        result["ref"] = entry.ref
    return orjson.dumps(result, option=NL)


def accepted_line(entry: Entry, status: str, message_id: str, attempts: int, tid: Any) -> bytes:
    result = {
        "line": entry.line,
        "to": entry.to,
        "status": status,
        "id": message_id,
        "segments": entry.segments,
        "encoding": entry.encoding,
        "attempts": attempts,
        "transactionId": tid,
    }
    return with_extras(result, entry)


def unsent_line(entry: Entry, status: str, error: str, attempts: int) -> bytes:
    result = {
        "line": entry.line,
        "to": entry.to,
        "status": status,
        "segments": entry.segments,
        "encoding": entry.encoding,
        "attempts": attempts,
        "error": error,
    }
    return with_extras(result, entry)


def dry_run_line(entry: Entry) -> bytes:
    result = {
        "line": entry.line,
        "to": entry.to,
        "status": Status.DRY_RUN,
        "segments": entry.segments,
        "encoding": entry.encoding,
    }
    return with_extras(result, entry)
