"""Helpers for the chaos and crash tests: a send config, the command line of a send
run as a real process and the ledger of a gateway process, and (from
`dispatcher.emulator.audit`) an input with unique numbers and the checks that prove
every line has exactly one result and no message reached the ledger twice."""

from __future__ import annotations

import math
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from dispatcher.config import Config, Secret, validate
from dispatcher.emulator.audit import TEXT, Account, check_exactly_once, number, write_input
from tests.support.cli import wait_while_running

__all__ = [
    "TEST_KEY",
    "TEXT",
    "Account",
    "check_exactly_once",
    "ledger",
    "number",
    "read_results",
    "send_command",
    "send_config",
    "wait_until_sending",
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


def send_command(source: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    """``dispatcher send`` as a process: batches of 50, four in flight, outputs in ``out``."""
    return [
        sys.executable, "-m", "dispatcher", "send", str(source),
        "--base-url", base_url, "--from", "12345", "--text", TEXT, "--rate", "12345=inf",
        "--batch-size", "50", "--concurrency", "4", "--timeout", "5",
        "--results", str(out / "results.ndjson"), "--invalid", str(out / "invalid.ndjson"),
        "--summary", str(out / "summary.json"), "--no-progress", *extra,
    ]  # fmt: skip


def ledger(base_url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What a gateway process recorded: its messages and its stats."""
    root = base_url.removesuffix("/raven")
    with urllib.request.urlopen(f"{root}/_emulator/messages", timeout=10) as response:
        messages = [orjson.loads(line) for line in response.read().splitlines() if line]
    with urllib.request.urlopen(f"{root}/_emulator/stats", timeout=10) as response:
        stats = orjson.loads(response.read())
    return messages, stats


def wait_until_sending(proc: subprocess.Popen[bytes], results: Path) -> None:
    """Wait until the send has results on disk, so a signal lands mid-run (not before
    the process has even installed its handlers, as happens on a loaded machine)."""
    wait_while_running(
        proc, lambda: results.exists() and results.stat().st_size > 0, "it was interrupted"
    )
