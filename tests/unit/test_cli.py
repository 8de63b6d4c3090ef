"""Every command has help text; --version is fast to reach and prints the version."""

import subprocess
import sys

import pytest

from dispatcher import __version__
from dispatcher.cli import build_parser, main

COMMANDS = ["send", "gateway", "demo", "loadtest", "receiver", "report", "status", "gen"]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"dispatcher {command}" in out
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    assert sub.description, f"{command} has no description"


def test_version_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == f"dispatcher {__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
