"""Validation at the door, the same in flags, environment and TOML: every bad value —
a URL without a scheme or a host, a number that is NaN, infinite, negative (``-0``
too), out of range, a port above 65535 — exits 2 with a message naming the option
(the variable, the file's section and key), no traceback, and nothing sent: the
emulator's ledger stays empty and no server starts listening."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import CODE, dispatcher, env, write_lines
from tests.support.emulators import EmulatorFactory

#: (flag or variable, bad value, words the error must hold)
SEND_FLAGS = [
    ("--base-url", "http://", ["--base-url", "host"]),
    ("--base-url", "http:///x", ["--base-url", "host"]),
    ("--base-url", "https://:80", ["--base-url", "host"]),
    ("--base-url", "http://127.0.0.1:99999/raven", ["--base-url", "port"]),
    ("--base-url", "ftp://127.0.0.1/raven", ["--base-url", "http://"]),
    ("--timeout", "nan", ["--timeout"]),
    ("--timeout", "inf", ["--timeout"]),
    ("--timeout", "1e400", ["--timeout"]),
    ("--timeout", "-0", ["--timeout"]),
    ("--timeout", "0", ["--timeout"]),
    ("--concurrency", "0", ["--concurrency"]),
    ("--concurrency", "1e3", ["--concurrency"]),
    ("--batch-size", "-1", ["--batch-size"]),
    ("--max-attempts", "inf", ["--max-attempts"]),
    ("--max-segments", "nan", ["--max-segments"]),
    ("--linger-ms", "-5", ["--linger-ms"]),
    ("--grace-period", "inf", ["--grace-period"]),
    ("--price-per-segment", "nan", ["--price-per-segment"]),
    ("--rate", f"{CODE}=nan", ["--rate", CODE]),
    ("--rate", f"{CODE}=-0", ["--rate", CODE]),
    ("--callbacks", "http://", ["--callbacks", "host"]),
]
SEND_ENV = [
    ("DISPATCHER_TIMEOUT", "inf"),
    ("DISPATCHER_CONCURRENCY", "nan"),
    ("DISPATCHER_BASE_URL", "http://"),
    ("DISPATCHER_RETRY_DEADLINE", "1e400"),
    ("DISPATCHER_MAX_BATCH", "-0"),
    ("DISPATCHER_GRACE_PERIOD", "-1"),
]
#: (TOML text, words the error must hold)
SEND_TOML = [
    ("[gateway]\ntimeout = inf\n", ["[gateway] timeout"]),
    ("[gateway]\nconnect_timeout = -0.0\n", ["[gateway] connect_timeout"]),
    ("[sending]\nconcurrency = 1e400\n", ["[sending] concurrency"]),
    ("[retry]\nmax_attempts = nan\n", ["[retry] max_attempts"]),
    ("[retry]\nretry_max_wait = inf\n", ["[retry] retry_max_wait"]),
    ("[input]\nmax_line_bytes = 99999999999999999999\n", ["[input] max_line_bytes"]),
    (f'[sending.rates]\n"{CODE}" = nan\n', ["[sending.rates]", CODE]),
    ("[sending.kind_rates]\nlongcode = -1\n", ["[sending.kind_rates] longcode"]),
    ('[gateway]\nbase_url = "http:///x"\n', ["[gateway] base_url", "host"]),
    ("gateway = 5\n", ["[gateway] must be a section"]),
    ("timeout = 5\n", ["timeout", "[gateway]"]),
    ("[sending]\ntimeout = 5\n", ["timeout", "[gateway]", "[sending]"]),
]


def _check(code: int, stdout: bytes, stderr: str, words: list[str]) -> None:
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr
    assert b"listening on" not in stdout
    for word in words:
        assert word in stderr, (word, stderr)


async def _send(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    args: list[str],
    *,
    environ: dict[str, str] | None = None,
    toml: str | None = None,
) -> tuple[int, bytes, str]:
    emulator = await emulator_factory(rate_limit=False)
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["a"]}])
    config: list[str] = []
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        config = ["--config", "c.toml"]
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi {0}", "--base-url", emulator.base_url,
        *config, *args, "--results", "results.ndjson",
        cwd=tmp_path,
        environ=env(api_key=emulator.api_key, **(environ or {})),
    )  # fmt: skip
    assert emulator.messages() == []
    assert sum((await emulator.stats())["requests"].values()) == 0
    assert not (tmp_path / "results.ndjson").exists()
    return run.code, run.stdout, run.stderr


@pytest.mark.parametrize(("flag", "value", "words"), SEND_FLAGS)
async def test_send_flag(
    emulator_factory: EmulatorFactory, tmp_path: Path, flag: str, value: str, words: list[str]
) -> None:
    _check(*await _send(emulator_factory, tmp_path, [flag, value]), words)


@pytest.mark.parametrize(("variable", "value"), SEND_ENV)
async def test_send_environment(
    emulator_factory: EmulatorFactory, tmp_path: Path, variable: str, value: str
) -> None:
    result = await _send(emulator_factory, tmp_path, [], environ={variable: value})
    _check(*result, [f"environment {variable}"])


@pytest.mark.parametrize(("toml", "words"), SEND_TOML)
async def test_send_config_file(
    emulator_factory: EmulatorFactory, tmp_path: Path, toml: str, words: list[str]
) -> None:
    _check(*await _send(emulator_factory, tmp_path, [], toml=toml), ["c.toml", *words])


STATUS = [
    (["--rate", "nan"], {}, ["--rate"]),
    (["--rate", "inf"], {}, ["--rate"]),
    (["--rate", "0"], {}, ["--rate"]),
    (["--sample", "-0", "--results", "r.ndjson"], {}, ["--sample"]),
    (["--base-url", "http://"], {}, ["--base-url"]),
    ([], {"DISPATCHER_TIMEOUT": "nan"}, ["DISPATCHER_TIMEOUT"]),
    ([], {"DISPATCHER_BASE_URL": "https://:80"}, ["DISPATCHER_BASE_URL"]),
]


@pytest.mark.parametrize(("args", "environ", "words"), STATUS)
async def test_status(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    args: list[str],
    environ: dict[str, str],
    words: list[str],
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    (tmp_path / "r.ndjson").write_text('{"line": 1, "id": "abc"}\n')
    base = [] if "--base-url" in args or "DISPATCHER_BASE_URL" in environ else [emulator.base_url]
    run = await dispatcher(
        "status", "id-1", *(["--base-url", *base] if base else []), *args,
        cwd=tmp_path,
        environ=env(api_key=emulator.api_key, **environ),
    )  # fmt: skip
    _check(run.code, run.stdout, run.stderr, words)
    assert (await emulator.stats())["requests"]["status"] == 0


#: Commands that start a server or an emulator of their own: (argv, words).
OTHERS = [
    (["gateway", "--port", "70000"], ["--port", "65535"]),
    (["gateway", "--port", "-1"], ["--port"]),
    (["gateway", "--port", "nan"], ["--port"]),
    (["gateway", "--latency-ms", "nan"], ["--latency-ms"]),
    (["gateway", "--latency-ms", "inf"], ["--latency-ms"]),
    (["gateway", "--jitter-ms", "1e400"], ["--jitter-ms"]),
    (["gateway", "--fail-429", "nan"], ["--fail-429"]),
    (["gateway", "--fault-retry-after", "-1"], ["--fault-retry-after"]),
    (["gateway", "--max-batch", "0"], ["--max-batch"]),
    (["gateway", "--dr-delay-ms", "inf"], ["--dr-delay-ms"]),
    (["gateway", "--rate", "1=nan"], ["--rate"]),
    (["receiver", "--port", "65536", "--out", "dr.ndjson"], ["--port"]),
    (["loadtest", "--rate", "nan"], ["--rate"]),
    (["loadtest", "--rate", "inf"], ["--rate"]),
    (["loadtest", "--batch-size", "0"], ["--batch-size"]),
    (["loadtest", "--concurrency", "-0"], ["--concurrency"]),
    (["loadtest", "--duration", "99999999h"], ["--duration"]),
    (["loadtest", "--timeout", "0s"], ["--timeout"]),
    (["loadtest", "--latency-ms", "nan"], ["--latency-ms"]),
    (["loadtest", "--threshold", "p99<" + "9" * 400], ["threshold"]),
    (["loadtest", "--base-url", "http://", "--synthetic"], ["--base-url", "host"]),
    (["demo", "--count", "-1"], ["--count"]),
    (["demo", "--count", "nan"], ["--count"]),
    (["demo", "--latency-ms", "inf"], ["--latency-ms"]),
    (["gen", "--count", "-0"], ["--count"]),
    (["gen", "--count", "1", "--invalid-share", "nan"], ["--invalid-share"]),
    (["gen", "--count", "1", "--ref-share", "1.5"], ["--ref-share"]),
]


@pytest.mark.parametrize(("argv", "words"), OTHERS, ids=[" ".join(a) for a, _ in OTHERS])
async def test_servers_and_generators(tmp_path: Path, argv: list[str], words: list[str]) -> None:
    run = await dispatcher(*argv, cwd=tmp_path, environ=env(), timeout=20)
    _check(run.code, run.stdout, run.stderr, words)
    assert not (tmp_path / "dr.ndjson").exists()
    assert not (tmp_path / "demo-out").exists()
