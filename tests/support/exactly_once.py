"""Helpers for the chaos and crash tests: a send config, and (from
`dispatcher.emulator.audit`) an input with unique numbers and the checks that prove
every line has exactly one result and no message reached the ledger twice."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from dispatcher.config import Config, Secret, validate
from dispatcher.emulator.audit import TEXT, Account, check_exactly_once, number, write_input

__all__ = [
    "TEST_KEY",
    "TEXT",
    "Account",
    "check_exactly_once",
    "number",
    "read_results",
    "send_config",
    "write_input",
]

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


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file (each must be a complete JSON object)."""
    with open(path, "rb") as f:
        return [orjson.loads(raw) for raw in f]
