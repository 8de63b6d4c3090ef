"""Helpers for the end-to-end tests: the real CLI in a subprocess, outputs, an oracle.

The CLI runs as ``python -m dispatcher`` with ``asyncio.create_subprocess_exec``, so an
emulator started in the test's own event loop keeps serving while the CLI talks to it.
The environment is scrubbed of every ``DISPATCHER_*`` variable so that a developer's
settings cannot leak into a test.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

#: A key distinctive enough to grep for in every output.
KEY = "e2e-Kq7vX2pLw9ZtR4mN"
#: Sender codes used by the tests (a shortcode and an alphanumeric).
CODE = "12345"
ALPHA = "COMPANY"
RUN_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Run:
    """What one CLI run gave: exit code, raw stdout, decoded stderr."""

    code: int
    stdout: bytes
    stderr: str

    def results(self) -> list[dict[str, Any]]:
        """stdout parsed as NDJSON; fails the test on any line that is not an object."""
        return parse_ndjson(self.stdout, where="stdout")


def env(api_key: str | None = KEY, **extra: str) -> dict[str, str]:
    """The process environment without any DISPATCHER_* variable, plus the key."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    if api_key is not None:
        clean["DISPATCHER_API_KEY"] = api_key
    clean.update(extra)
    return clean


async def dispatcher(
    *args: str | os.PathLike[str],
    cwd: Path,
    stdin: bytes | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> Run:
    """Run ``python -m dispatcher ARGS`` to completion without blocking the loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher",
        *map(str, args),
        cwd=cwd,
        env=dict(environ if environ is not None else env()),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out, err.decode("utf-8", "replace"))


def send_args(
    emulator_base_url: str, *extra: str | os.PathLike[str], text: str = "Hi {0}, you owe {1}"
) -> list[str | os.PathLike[str]]:
    """The usual ``send`` flags against an emulator."""
    return [
        "send",
        "--from",
        CODE,
        "--text",
        text,
        "--base-url",
        emulator_base_url,
        "--no-progress",
        *extra,
    ]


def parse_ndjson(data: bytes, *, where: str = "output") -> list[dict[str, Any]]:
    """Every line must be a JSON object; an empty input is an empty list."""
    out = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{where} line {number} is not JSON: {line[:200]!r}") from exc
        assert isinstance(value, dict), f"{where} line {number} is not an object: {line!r}"
        out.append(value)
    return out


def ndjson(path: Path) -> list[dict[str, Any]]:
    """An NDJSON file, parsed; a missing file is a test failure."""
    return parse_ndjson(path.read_bytes(), where=str(path))


def write_lines(path: Path, lines: Iterable[bytes | str | Mapping[str, Any]]) -> Path:
    """Write input lines: dicts as JSON, str/bytes verbatim; each gets a newline."""
    parts = []
    for line in lines:
        if isinstance(line, Mapping):
            parts.append(orjson.dumps(dict(line)))
        elif isinstance(line, str):
            parts.append(line.encode())
        else:
            parts.append(line)
    path.write_bytes(b"".join(p + b"\n" for p in parts))
    return path


def by_line(results: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Results keyed by line number; fails if any line has two results."""
    seen: dict[int, Mapping[str, Any]] = {}
    for result in results:
        line = result["line"]
        assert line not in seen, f"line {line} has two results: {seen[line]} and {result}"
        seen[line] = result
    return seen


# --- the test's own oracle (independent of dispatcher.renderer / segments) ------------

_PLACEHOLDER = re.compile(r"\{([0-9]+)\}")


def render(template: str, params: Sequence[object]) -> str:
    """SPEC §3 rendering, written from the contract: strings as given, integers in
    decimal, floats in their shortest form (Python's repr, which matches JSON's for
    the plain values these tests use), booleans true/false; other braces literal."""

    def one(match: re.Match[str]) -> str:
        value = params[int(match[1])]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return str(value)
        assert isinstance(value, float)
        return repr(value)

    return _PLACEHOLDER.sub(one, template)


def e164(raw: str) -> str:
    """SPEC §3 normalisation for the valid numbers the tests use."""
    digits = re.sub(r"[ \-.()]", "", raw)
    return digits if digits.startswith("+") else "+" + digits


def check_against_ledger(
    results: Sequence[Mapping[str, Any]],
    messages: Sequence[Mapping[str, Any]],
    expected: Mapping[int, tuple[str, str, str]],
) -> None:
    """Every QUEUE result is one ledger message with the right number, sender and text;
    the ledger holds nothing else. ``expected``: line → (to, from, rendered text)."""
    ledger = {m["id"]: m for m in messages}
    assert len(ledger) == len(messages), "the emulator gave two messages the same id"
    queued = [r for r in results if r["status"] == "QUEUE"]
    assert {r["line"] for r in queued} == set(expected)
    ids = [r["id"] for r in queued]
    assert len(set(ids)) == len(ids), "two results carry the same gateway id"
    assert set(ids) == set(ledger), (
        f"ids without a ledger message: {set(ids) - set(ledger)}; "
        f"ledger messages without a QUEUE result: {set(ledger) - set(ids)}"
    )
    for result in queued:
        message = ledger[result["id"]]
        to, sender, text = expected[result["line"]]
        assert (message["to"], message["from"], message["text"]) == (to, sender, text), (
            f"line {result['line']}: ledger has {message['to']} {message['from']} "
            f"{message['text']!r}, expected {to} {sender} {text!r}"
        )
        assert result["to"] == to
        # The client's own count must agree with the gateway's (flat model).
        assert (result["segments"], result["encoding"]) == (
            message["segments"],
            message["encoding"],
        ), f"line {result['line']}: segments disagree with the gateway"


def wait_while_running(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    """Poll until ``ready()`` while ``proc`` runs; fail if it ends first. No clock: the
    test's own timeout (pytest-timeout) bounds the wait, so a slow machine is not a
    failure and a stuck process still is."""
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: {err!r}")
        time.sleep(0.02)
