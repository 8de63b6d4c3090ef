"""The command line as a process: ``python -m dispatcher`` and its version."""

from __future__ import annotations

import subprocess
import sys

from dispatcher import __version__


def test_version_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == f"dispatcher {__version__}"


def test_a_usage_error_exits_2_with_the_command_s_usage() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher", "send", "--api-key", "sk-secret"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: dispatcher send")
    assert "unrecognized arguments: --api-key" in proc.stderr
    assert "sk-secret" not in proc.stderr
