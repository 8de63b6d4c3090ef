"""Helpers for the chaos and crash tests: an input with unique numbers, and the checks
that prove every line has exactly one result and no message reached the ledger twice."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dispatcher.config import Config, Secret, validate

TEXT = "Hi {0}, you owe {1}"
TEST_KEY = "test-key"  # the emulator fixtures' key (tests/conftest.py)


def send_config(directory: Path, base_url: str, **changes: Any) -> Config:
    """A send to an emulator: code 12345 unlimited, results in ``directory``."""
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": Secret(TEST_KEY),
        "sender": "12345",
        "text": TEXT,
        "rates": {"12345": math.inf},
        "results": str(directory / "results.ndjson"),
        "progress": False,
    }
    values.update(changes)
    return validate(Config(**values))


def number(line: int) -> str:
    """A valid, unique number for each line."""
    return f"+5215{line:09d}"


def write_input(path: Path, count: int, *, bad_every: int = 0) -> set[int]:
    """``count`` recipient lines (every ``bad_every``-th malformed); returns the line
    numbers that are valid recipients."""
    valid: set[int] = set()
    with open(path, "wb") as f:
        for line in range(1, count + 1):
            if bad_every and line % bad_every == 0:
                f.write(b'{"to": oops}\n')
                continue
            valid.add(line)
            f.write(orjson.dumps({"to": number(line), "params": [f"n{line}", line]}) + b"\n")
    return valid


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file (each must be a complete JSON object)."""
    with open(path, "rb") as f:
        return [orjson.loads(raw) for raw in f]


@dataclass
class Account:
    """Results checked against the ledger."""

    results: list[dict[str, Any]]
    by_status: Counter[str]


def check_exactly_once(
    results: list[dict[str, Any]],
    lines: Iterable[int],
    ledger: list[dict[str, Any]],
    stats: dict[str, Any],
    *,
    idempotent: bool,
) -> Account:
    """The invariants of SPEC §5, for results and an emulator ledger.

    - every input line has exactly one result;
    - the ledger recorded no message twice;
    - every QUEUE result's id is in the ledger with the line's number;
    - with idempotency, every ledger message has a QUEUE result; without it, every
      ledger message without one belongs to an AMBIGUOUS line;
    - no FAILED line reached the ledger.
    """
    seen = Counter(r["line"] for r in results)
    repeated = [line for line, n in seen.items() if n > 1]
    assert not repeated, f"lines with more than one result: {repeated[:10]}"
    expected = set(lines)
    assert set(seen) == expected, (
        f"missing results: {sorted(expected - set(seen))[:10]}, "
        f"unexpected: {sorted(set(seen) - expected)[:10]}"
    )
    assert stats["duplicates"] == 0, f"the ledger recorded {stats['duplicates']} duplicates"
    ledger_by_id = {m["id"]: m for m in ledger}
    assert len(ledger_by_id) == len(ledger)
    by_status = Counter(r["status"] for r in results)
    queued = [r for r in results if r["status"] == "QUEUE"]
    for r in queued:
        message = ledger_by_id.get(r["id"])
        assert message is not None, f"line {r['line']}: id {r['id']} is not in the ledger"
        assert message["to"] == r["to"], f"line {r['line']}: ledger has {message['to']}"
    queued_ids = {r["id"] for r in queued}
    uncovered = [m for m in ledger if m["id"] not in queued_ids]
    if idempotent:
        assert not uncovered, f"{len(uncovered)} ledger messages have no QUEUE result"
    else:
        ambiguous = {r["to"] for r in results if r["status"] == "AMBIGUOUS"}
        strays = [m["to"] for m in uncovered if m["to"] not in ambiguous]
        assert not strays, f"ledger messages belonging to no QUEUE or AMBIGUOUS line: {strays[:5]}"
    failed = {r["to"] for r in results if r["status"] == "FAILED"}
    in_ledger = {m["to"] for m in ledger}
    assert not failed & in_ledger, (
        f"FAILED lines reached the ledger: {sorted(failed & in_ledger)[:5]}"
    )
    return Account(results, by_status)
