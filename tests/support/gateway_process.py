"""Run ``dispatcher gateway`` as a real process for end-to-end tests of other commands."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

LISTENING = "listening on "


@contextlib.contextmanager
def gateway_process(
    *flags: str, api_key: str = "test-key", startup_timeout: float = 20.0
) -> Iterator[str]:
    """Start ``python -m dispatcher gateway --port 0 FLAGS``; yield its base URL (…/raven).

    The process is terminated (SIGTERM) on exit; its stderr is shown if it fails to start.
    """
    env = {**os.environ, "DISPATCHER_API_KEY": api_key}
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "gateway", "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        try:
            line = first_line(proc, startup_timeout)
            if not line.startswith(LISTENING):
                stderr.seek(0)
                raise RuntimeError(f"gateway did not start: {line!r}\n{stderr.read()}")
            yield line[len(LISTENING) :].strip() + "/raven"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's first stdout line, or "" if it exits or stays silent too long."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return ""
    return ""
