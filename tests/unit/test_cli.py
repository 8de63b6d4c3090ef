"""The command line in process: every command has help; options come from the settings'
dataclasses; no abbreviations; no value of an unknown option is echoed; the two-stage
signal handling."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Iterator
from dataclasses import fields

import pytest

from dispatcher import __version__
from dispatcher.cli import COMMANDS, build_parser, main
from dispatcher.cli._common import ExitCode, Parser, Signals, signal_handlers_restored
from dispatcher.config import KEYS

SECRET = "sk-Zq81-never-echo"


def parsers() -> Iterator[tuple[str, Parser]]:
    """Every command's parser, its options added."""
    top = build_parser()
    yield "dispatcher", top
    action = top._subparsers._group_actions[0]  # type: ignore[union-attr]
    for name, sub in action.choices.items():
        assert isinstance(sub, Parser)
        yield name, sub.populate()


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)`` → (exit code, stdout + stderr), whether it returns or exits."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def flat(text: str) -> str:
    """Help text with its line wrapping undone."""
    return " ".join(text.split())


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["--help"], capsys)
    assert code == 0
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run([command, "--help"], capsys)
    assert code == 0
    assert f"dispatcher {command}" in out
    assert "(default: None)" not in out
    assert "(default: True)" not in out
    assert "(default: False)" not in out
    sub = dict(parsers())[command]
    assert sub.description, f"{command} has no description"
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["--version"], capsys)
    assert (code, out.strip()) == (0, f"dispatcher {__version__}")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["frobnicate"], capsys)
    assert code == ExitCode.USAGE
    assert "unknown command" in out


def test_exit_codes() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 99]
    assert ExitCode.interrupted(signal.SIGINT) == 130
    assert ExitCode.interrupted(signal.SIGTERM) == 143


# --- abbreviations and secrets -----------------------------------------------------------


def test_no_parser_takes_abbreviations(capsys: pytest.CaptureFixture[str]) -> None:
    for name, parser in parsers():
        assert parser.allow_abbrev is False, name
    for argv in (
        ["send", "--concurren", "4"],
        ["gateway", "--ra", "1=2"],
        ["gen", "--count", "1", "--se", "2"],
    ):
        code, out = run(argv, capsys)
        assert code == ExitCode.USAGE, argv
        assert f"unrecognized arguments: {argv[-2]}" in out


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["send", "--api-key", SECRET], "send: error: unrecognized arguments: --api-key"),
        (["send", "--api-key", SECRET, "--from", "1"], "unrecognized arguments: --api-key"),
        (["send", f"--api-key={SECRET}"], "unrecognized arguments: --api-key"),
        (["send", "in.ndjson", SECRET], "unrecognized arguments: 1 more value (not shown)"),
        (["--api-key", SECRET, "send"], "unknown command (choose from send, gateway"),
        (["loadtest", "--password", SECRET], "loadtest: error: unrecognized arguments: --password"),
        (["status", "--token", SECRET, "id1"], "unrecognized arguments: --token"),
        (["gen", "--count", "1", "--secret", SECRET], "--secret, 1 more value (not shown)"),
    ],
)
def test_an_unknown_option_s_value_is_never_echoed(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(argv, capsys)
    assert code == ExitCode.USAGE
    assert SECRET not in out
    assert error in out


def long_options() -> Iterator[tuple[str, str, argparse.Action]]:
    """(command, option string, action) for every long option of every parser."""
    for name, parser in parsers():
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    yield name, option, action


def argv_for(command: str, *args: str) -> list[str]:
    return list(args) if command == "dispatcher" else [command, *args]


@pytest.mark.parametrize(
    ("command", "option"),
    [(c, o) for c, o, _ in long_options() if len(o) > 4],
    ids=lambda value: str(value),
)
def test_no_option_of_any_command_may_be_abbreviated(
    command: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each option of each command, cut short (by one character, and to half), is
    refused whichever way its value is attached, and the value is never shown."""
    known = {o for c, o, _ in long_options() if c == command}
    for cut in {option[:-1], option[: max(3, len(option) // 2 + 1)]}:
        if cut in known or len(cut) < 3:
            continue
        for args in ([cut, SECRET], [f"{cut}={SECRET}"]):
            code, out = run(argv_for(command, *args), capsys)
            assert code == ExitCode.USAGE, (command, args, out)
            assert SECRET not in out, (command, args)
            assert "Traceback" not in out


@pytest.mark.parametrize("command", ["dispatcher", *COMMANDS])
@pytest.mark.parametrize(
    "args",
    [
        ["--api-key", SECRET],
        [f"--api-key={SECRET}"],
        ["--token", SECRET],
        ["--api-key", f"-{SECRET}"],
        [f"-{SECRET}"],
        [f"-x{SECRET}"],
        [f"-h{SECRET}"],
        ["--unknown", "x", SECRET],
    ],
    ids=lambda args: " ".join(a.replace(SECRET, "K") for a in args),
)
def test_no_command_echoes_a_value_it_does_not_know(
    command: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    if any(c == command and o == args[0].partition("=")[0] for c, o, _ in long_options()):
        return  # gateway --api-key K is the emulator's own key
    code, out = run(argv_for(command, *args), capsys)
    assert code == ExitCode.USAGE, out
    assert SECRET not in out
    assert SECRET[3:11] not in out


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (c, o)
        for c, o, action in long_options()
        if action.nargs == 0 and o not in ("--help", "--version")
    ],
)
def test_a_switch_given_a_value_does_not_show_it(
    command: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(argv_for(command, f"{option}={SECRET}"), capsys)
    assert code == ExitCode.USAGE
    assert SECRET not in out
    assert "takes no value" in out


def test_no_option_uses_argparse_s_float() -> None:
    """argparse's ``float`` takes nan, inf and 1e400: every number needs a type with
    bounds (`_common.bounded`). (A bare ``int`` refuses those; its range is checked.)"""
    options = list(long_options())
    assert options, "no options found: the check below would pass vacuously"
    loose = [f"{c} {o}" for c, o, action in options if action.type is float]
    assert loose == [], f"these take argparse's float, so nan and inf pass: {loose}"


@pytest.mark.parametrize(("command", "extra"), [("gateway", []), ("receiver", ["--out", "o"])])
@pytest.mark.parametrize("port", ["70000", "65536", "-1", "-0", "nan", "8080.5", "http"])
def test_ports_are_0_to_65535(
    command: str, extra: list[str], port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run([command, "--port", port, *extra], capsys)
    assert code == ExitCode.USAGE
    assert "argument --port: must be a port from 0 to 65535" in out


# --- send: options from Config ---------------------------------------------------------


def test_every_config_key_with_a_flag_is_a_send_option() -> None:
    send = dict(parsers())["send"]
    by_flag = {flag: action for action in send._actions for flag in action.option_strings}
    own = {"-h", "--help", "--config", "--api-key-file", "--text-file"}
    from_keys = set()
    for key in KEYS.values():
        if key.flag is None:
            continue
        flag = key.flag or "--" + key.name.replace("_", "-")
        assert by_flag[flag].dest == key.name
        from_keys.add(flag)
    negative = {f for f in by_flag if f.startswith("--no-")}
    assert set(by_flag) - negative == own | from_keys
    assert "--api-key" not in by_flag


def test_send_help_shows_defaults_and_where_they_come_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_CONCURRENCY", "32")
    monkeypatch.setenv("DISPATCHER_API_KEY", SECRET)
    monkeypatch.delenv("DISPATCHER_BATCH_SIZE", raising=False)
    code, out = run(["send", "--help"], capsys)
    assert code == 0
    text = flat(out)
    for shown in (
        "recipients per batch request (default 1000; env DISPATCHER_BATCH_SIZE; "
        "file [sending] batch_size)",
        "(now '32' from DISPATCHER_CONCURRENCY; built-in 16; file [sending] concurrency)",
        "longcode 1/s, shortcode 100/s, alphanumeric 100/s",
        "file [sending.rates]",
        "seconds before a request times out (default 30;",
        "attempts per batch, the first included (default 5;",
        "--progress, --no-progress progress on stderr (default when stderr is a terminal;",
        "--from CODE sender code: short, long or alphanumeric (env DISPATCHER_FROM; "
        "file [message] from)",
    ):
        assert shown in text
    assert SECRET not in out
    assert "default None" not in text


def test_switches_read_both_ways() -> None:
    assert parse("send").progress is None
    assert parse("send", "--progress").progress is True
    assert parse("send", "--no-progress").progress is False
    assert parse("send", "--no-idempotency").idempotency is False
    assert parse("send", "--resume").resume is True
    with pytest.raises(SystemExit):
        parse("send", "--no-resume")  # a switch of this run only has no negative


def test_repeatable_rates_become_one_table() -> None:
    from dispatcher.cli.send import config_from

    args = parse("send", "--from", "1", "--text", "t", "--dry-run", "--rate", "1=5")
    args.rates.append("ACME=inf")
    config = config_from(args)
    assert dict(config.rates) == {"1": 5.0, "ACME": float("inf")}


# --- the emulator's flags: declared once --------------------------------------------


@pytest.mark.parametrize("command", ["gateway", "loadtest", "demo"])
def test_every_fault_setting_is_a_flag(command: str) -> None:
    from dispatcher.emulator import FaultSettings

    parser = dict(parsers())[command]
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in fields(FaultSettings)} <= dests


def test_fault_flags_and_their_defaults() -> None:
    from dispatcher.cli._emulator import emulator_from, faults_from
    from dispatcher.demo import DEMO_FAULTS
    from dispatcher.emulator import FaultSettings

    assert faults_from(parse("demo")) == DEMO_FAULTS
    assert faults_from(parse("loadtest")) == FaultSettings()
    assert faults_from(parse("loadtest", "--fail-503", "0.25")).fail_503 == 0.25
    args = parse(
        "gateway", "--deny-code", "666", "--invalid-prefix", "+999", "--rate", "1=inf",
        "--no-rate-limit", "--owner", "o@x", "--seed", "7", "--fault-retry-after", "0",
    )  # fmt: skip
    settings = emulator_from(args, api_key="k")
    assert settings.deny_codes == frozenset({"666"})
    assert settings.invalid_prefixes == ("999",)
    assert dict(settings.rates) == {"1": float("inf")}
    assert settings.rate_limit is False
    assert (settings.owner, settings.operator, settings.seed) == ("o@x", "o@x", 7)
    assert settings.faults.retry_after_s == 0
    assert emulator_from(parse("gateway"), api_key="k").rate_limit is True


def test_a_bad_fault_flag_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["gateway", "--rate", "12345"], capsys)
    assert code == ExitCode.USAGE
    assert "argument --rate: rate '12345' must look like CODE=N" in out
    code, out = run(["demo", "--drop-after", "1.5"], capsys)
    assert code == ExitCode.USAGE
    assert "argument --drop-after: must be a share from 0 to 1, got '1.5'" in out


# --- two-stage signals ---------------------------------------------------------------


def test_first_signal_stops_second_exits_with_last_words() -> None:
    exits: list[int] = []
    events: list[str] = []
    signals = Signals("stopping", exit=exits.append)
    signals.on_stop(lambda signum: events.append(f"stop {signum}"))
    signals.on_force(lambda: events.append("last words"))
    signals.on_force(lambda: 1 / 0)  # a failing hook does not prevent the exit
    assert signals.exit_code is None
    signals.handle(signal.SIGTERM)
    assert signals.stop.is_set()
    assert (events, exits, signals.exit_code) == ([f"stop {signal.SIGTERM}"], [], 143)
    signals.handle(signal.SIGINT)
    assert events[-1] == "last words"
    assert exits == [130]


def test_run_installs_the_handling_on_the_loop() -> None:
    exits: list[int] = []
    signals = Signals(exit=exits.append)

    async def until_stopped() -> str:
        os.kill(os.getpid(), signal.SIGINT)
        await signals.stop.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(500):
            if exits:
                break
            await asyncio.sleep(0.01)
        return "stopped"

    with signal_handlers_restored():
        assert signals.run(until_stopped()) == "stopped"
    assert signals.exit_code == 130
    assert exits == [143]


def test_help_never_shows_a_password_put_in_an_env_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``send --help`` shows an option's value from the environment; a Redis URL that
    (wrongly) carries a password shows with its user name and password masked."""
    monkeypatch.setenv("DISPATCHER_QUOTA_URL", "redis://user:hunter2secret@127.0.0.1:6379/0")
    code, out = run(["send", "--help"], capsys)
    assert code == ExitCode.OK
    assert "127.0.0.1:6379" in out
    assert "hunter2" not in out
    assert "user:" not in out
