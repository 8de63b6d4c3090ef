"""The API key: a 401 aborts with exit 3 and a hint that the key may be expired or
revoked; the key never appears in stdout, stderr, results, summary, journal or any
other file the run writes, whatever the log level or format."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.support.cli import CODE, KEY, Run, dispatcher, env, write_lines
from tests.support.emulators import EmulatorFactory

LINES = [
    {"to": "+525500000001", "params": ["a"]},
    {"to": "bad", "params": ["b"]},
    "{oops",
    {"to": "+525500000004", "params": ["d"]},
]


def assert_key_nowhere(run: Run, directory: Path, key: str) -> None:
    needle = key.encode()
    assert needle not in run.stdout
    assert key not in run.stderr
    written = [p for p in directory.rglob("*") if p.is_file() and p.suffix != ".py"]
    assert written, "the run wrote no file at all"
    for path in written:
        if path.name in ("key.txt", "in.ndjson"):
            continue
        assert needle not in path.read_bytes(), f"the API key is in {path.name}"


@pytest.mark.parametrize("how", ["env", "file"])
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_401_aborts_with_exit_3_and_the_key_appears_nowhere(
    emulator_factory: EmulatorFactory, tmp_path: Path, how: str, log_format: str
) -> None:
    emulator = await emulator_factory(api_key="the-gateway-wants-another-key", rate_limit=False)
    source = write_lines(tmp_path / "in.ndjson", LINES)
    key_args: list[str] = []
    environ = env(api_key=KEY)
    if how == "file":
        (tmp_path / "key.txt").write_text(KEY + "\n")
        key_args = ["--api-key-file", "key.txt"]
        environ = env(api_key=None)
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi {0}",
        "--base-url", emulator.base_url, *key_args,
        "--results", "results.ndjson", "--invalid", "invalid.ndjson",
        "--rejects", "rejects.ndjson", "--summary", "summary.json",
        "--log-level", "debug", "--log-format", log_format,
        cwd=tmp_path,
        environ=environ,
    )  # fmt: skip
    assert run.code == 3, run.stderr
    assert "expired or revoked" in run.stderr
    assert "Traceback" not in run.stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["exit_code"] == 3
    assert "expired or revoked" in summary["exit_reason"]
    assert emulator.messages() == []
    assert (tmp_path / "results.ndjson.journal").exists()
    assert_key_nowhere(run, tmp_path, KEY)


async def test_a_successful_run_never_shows_the_key(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(tmp_path / "in.ndjson", LINES)
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi {0}",
        "--base-url", emulator.base_url,
        "--results", "results.ndjson", "--invalid", "invalid.ndjson",
        "--rejects", "rejects.ndjson", "--summary", "summary.json",
        "--log-level", "debug", "--progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert len(emulator.messages()) == 2
    assert_key_nowhere(run, tmp_path, KEY)
