"""Helpers for the property test of the whole command line (tests/e2e/test_cli_property.py):
run the real CLI in a bounded subprocess, run a server command until it listens and
stop it, and judge what any run left behind.

Everything is synchronous (``subprocess``) so that hypothesis drives plain functions;
the emulator the runs talk to is a `gateway_process` of its own.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import KEY
from tests.support.gateway_process import LISTENING

#: SPEC §6 and the README: every exit code a command may end with.
DOCUMENTED_EXIT_CODES = frozenset({0, 1, 2, 3, 4, 99, 130, 143})
#: A run that takes longer is a hang (every generated run is short by construction).
RUN_TIMEOUT = 40.0
#: Address space of one CLI run: a run that tries to read /dev/zero into memory, or to
#: schedule a billion requests, fails instead of taking the shared machine down.
MEMORY_LIMIT = 3 << 30


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished run: its argv (for the failure message), exit code and outputs."""

    argv: Sequence[str]
    code: int
    stdout: bytes
    stderr: str
    #: Text of the server's stop, when the test stopped it (SIGTERM).
    stopped: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"argv: {list(self.argv)!r}\nexit code: {self.code}\n"
            f"stderr (last 3000 chars): {self.stderr[-3000:]}\n"
            f"stdout (first 500 bytes): {self.stdout[:500]!r}\n" + "\n".join(self.notes)
        )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrubbed_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without DISPATCHER_*, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(extra)
    return env


def _limits() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: bytes | None = None,
    timeout: float = RUN_TIMEOUT,
) -> Outcome:
    """``python -m dispatcher ARGV`` to completion; a hang is a test failure."""
    command = [sys.executable, "-m", "dispatcher", *argv]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=dict(env),
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=timeout,
            preexec_fn=_limits,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode("utf-8", "replace") if exc.stderr else ""
        raise AssertionError(f"no exit within {timeout}s (a hang)\nargv: {argv!r}\n{err}") from None
    return Outcome(argv, done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))


def run_server(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    startup_timeout: float = 20.0,
    poke: str | None = None,
) -> Outcome:
    """Start a server command; if it prints its ``listening on`` line, optionally POST
    one body to it (``poke``: a path), then SIGTERM it and collect its exit."""
    command = [sys.executable, "-m", "dispatcher", *argv]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
        preexec_fn=_limits,
    )
    stopped = False
    try:
        assert proc.stdout is not None
        line = _first_line(proc, startup_timeout)
        if line.startswith(LISTENING.encode()):
            if poke is not None:
                _poke(line[len(LISTENING) :].decode().strip() + poke)
            proc.send_signal(signal.SIGTERM)
            stopped = True
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(
                f"server did not exit (stopped: {stopped})\nargv: {argv!r}\n"
                f"{err.decode('utf-8', 'replace')[-3000:]}"
            ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Outcome(argv, proc.returncode, line + out, err.decode("utf-8", "replace"), stopped)


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first stdout line, or b"" when the process exits first or stays silent."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return b""
    return b""


def _poke(url: str) -> None:
    """POST one delivery report (best effort: the check is the server's exit)."""
    request = urllib.request.Request(
        url,
        data=b'{"id": "abc", "status": "DELIVRD"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()
    except OSError:
        pass


def check_common(outcome: Outcome, workdir: Path, *, secret_files: Sequence[str] = ()) -> None:
    """What every run must do: a documented exit code, no traceback, no key anywhere."""
    why = outcome.describe()
    assert outcome.code in DOCUMENTED_EXIT_CODES, f"undocumented exit code\n{why}"
    assert "Traceback (most recent call last)" not in outcome.stderr, f"a traceback\n{why}"
    assert "internal error" not in outcome.stderr, f"an internal error\n{why}"
    key = KEY.encode()
    assert key not in outcome.stdout, f"the API key on stdout\n{why}"
    assert KEY not in outcome.stderr, f"the API key on stderr\n{why}"
    skip = {workdir / name for name in secret_files}
    for path in workdir.rglob("*"):
        if path in skip or not path.is_file():
            continue
        assert key not in path.read_bytes(), f"the API key in {path.name}\n{why}"


def expected_lines(data: bytes) -> list[int]:
    """SPEC §2: the 1-based numbers of the non-blank lines (a BOM at the start and a
    CR before the newline ignored; blank is whitespace-only)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    return [n for n, line in enumerate(pieces, 1) if line.strip()]


def results_in(data: bytes) -> list[int]:
    """The line numbers of the result records in an NDJSON stream (records with a
    ``status``; an invalid-numbers record sharing the stream has none)."""
    import orjson

    lines = []
    for raw in data.splitlines():
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and "status" in record and "line" in record:
            lines.append(record["line"])
    return lines
