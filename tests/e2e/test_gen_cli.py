"""``dispatcher gen`` in a subprocess: the library's bytes, quiet closed pipes, usage errors."""

from __future__ import annotations

import subprocess
import sys

import orjson

from dispatcher.gen import generate


def test_cli_writes_the_library_output() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher", "gen", "--count", "300", "--seed", "4"],
        capture_output=True,
        check=True,
    )
    assert proc.stdout == b"".join(generate(300, seed=4))
    assert proc.stderr == b""


def test_cli_closed_pipe_exits_quietly() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "gen", "--count", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    assert stderr == b""
    assert orjson.loads(first)["to"]


def test_cli_bad_share_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher", "gen", "--count", "3", "--ref-share", "1.5"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "--ref-share" in proc.stderr
    assert proc.stdout == ""
