"""Outputs never touch inputs or each other (issue 12): every file ``send`` and
``loadtest`` write is compared by file identity with every file they read and with
every other file they write, before anything is opened for writing (exit 2); every
output location is tried before the first request (exit 3). The real CLI, real files,
a real emulator whose ledger must stay empty."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from dispatcher.emulator.runner import RunningEmulator
from tests.support.cli import CODE, KEY, Run, dispatcher, env, send_args, write_lines

RECIPIENTS = [{"to": f"+52550000000{n}", "params": [f"n{n}", n]} for n in range(1, 4)]


def job(tmp_path: Path) -> tuple[Path, bytes]:
    """An input file and its bytes, to prove it was never touched."""
    source = write_lines(tmp_path / "in.ndjson", RECIPIENTS)
    return source, source.read_bytes()


def alias(tmp_path: Path, target: Path, how: str) -> Path:
    """Another name for ``target``: itself, a dotted spelling, a symlink, a hard link."""
    if how == "same":
        return target
    if how == "dotted":
        (tmp_path / "sub").mkdir(exist_ok=True)
        return tmp_path / "sub" / ".." / target.name
    other = tmp_path / f"{how}-{target.name}"
    if how == "symlink":
        other.symlink_to(target)
    else:
        os.link(target, other)
    return other


async def send(emulator: RunningEmulator, cwd: Path, *args: str | os.PathLike[str]) -> Run:
    """``send ARGS`` against the emulator, with its key."""
    return await dispatcher(
        *send_args(emulator.base_url, *args), cwd=cwd, environ=env(api_key=emulator.api_key)
    )


def beside_results(option: str) -> list[str]:
    """``--results out.ndjson`` when the option under test is another output."""
    return [] if option == "--results" else ["--results", "out.ndjson"]


def assert_refused(code: int, stderr: str, emulator: RunningEmulator, expected: int = 2) -> None:
    assert code == expected, stderr
    assert "Traceback" not in stderr
    assert emulator.messages() == [], "a request left before the check"


def left_behind(tmp_path: Path) -> set[str]:
    """Journal and lock files: a refused run creates neither."""
    return {p.name for p in tmp_path.iterdir() if p.name.endswith((".journal", ".lock"))}


# --- send: an output on an input ------------------------------------------------------


@pytest.mark.parametrize("how", ["same", "dotted", "symlink", "hardlink"])
@pytest.mark.parametrize("option", ["--results", "--invalid", "--rejects", "--summary"])
async def test_an_output_on_the_input_is_refused_and_the_input_kept(
    tmp_path: Path, emulator: RunningEmulator, option: str, how: str
) -> None:
    source, before = job(tmp_path)
    run = await send(
        emulator, tmp_path, source, *beside_results(option), option, alias(tmp_path, source, how)
    )
    assert_refused(run.code, run.stderr, emulator)
    assert f"{option} " in run.stderr
    assert "would overwrite INPUT" in run.stderr
    assert source.read_bytes() == before
    assert left_behind(tmp_path) == set()
    assert not (tmp_path / "out.ndjson").exists()


@pytest.mark.parametrize("which", ["--text-file", "--config", "--api-key-file", "api_key_file"])
async def test_an_output_on_another_file_the_run_reads_is_refused(
    tmp_path: Path, emulator: RunningEmulator, which: str
) -> None:
    source, _ = job(tmp_path)
    text = tmp_path / "text.txt"
    text.write_text("Hi {0}\n")
    key = tmp_path / "key.txt"
    key.write_text(emulator.api_key + "\n")
    config = tmp_path / "c.toml"
    config.write_text(f'api_key_file = "{key}"\n' if which == "api_key_file" else "")
    victim = {"--text-file": text, "--config": config}.get(which, key)
    before = victim.read_bytes()
    args = ["send", source, "--from", CODE, "--base-url", emulator.base_url, "--no-progress"]
    args += ["--text-file", text, "--config", config, "--results", "out.ndjson"]
    if which == "--api-key-file":
        args += ["--api-key-file", key]
    from_env = None if victim == key else emulator.api_key
    run = await dispatcher(*args, "--summary", victim, cwd=tmp_path, environ=env(api_key=from_env))
    assert_refused(run.code, run.stderr, emulator)
    assert "--summary" in run.stderr
    assert victim.read_bytes() == before


async def test_stdin_redirected_from_a_file_is_an_input(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    source, before = job(tmp_path)
    code, stderr = await run_redirected(
        send_args(emulator.base_url, "-", "--results", source), emulator, tmp_path, stdin=source
    )
    assert_refused(code, stderr, emulator)
    assert source.read_bytes() == before


async def test_results_on_stdout_appended_to_the_input_are_refused(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    source, before = job(tmp_path)
    code, stderr = await run_redirected(
        send_args(emulator.base_url, source), emulator, tmp_path, stdout=source
    )
    assert_refused(code, stderr, emulator)
    assert source.read_bytes() == before


async def run_redirected(
    args: list[str | os.PathLike[str]],
    emulator: RunningEmulator,
    cwd: Path,
    *,
    stdin: Path | None = None,
    stdout: Path | None = None,
) -> tuple[int, str]:
    """The CLI with stdin read from a file, or stdout appended to one (``>>``)."""
    with (
        open(stdin or os.devnull, "rb") as fin,
        open(stdout or os.devnull, "ab") as fout,
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", *map(str, args),
            cwd=cwd, env=env(api_key=emulator.api_key), stdin=fin, stdout=fout,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


# --- send: two outputs on one file ----------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("--results", "out.ndjson"), ("--invalid", "out.ndjson")),
        (("--invalid", "bad.ndjson"), ("--rejects", "bad.ndjson")),
        (("--rejects", "bad.ndjson"), ("--summary", "./bad.ndjson")),
        (("--results", "out.ndjson"), ("--summary", "out.ndjson.journal")),
        (("--results", "out.ndjson"), ("--invalid", "out.ndjson.lock")),
    ],
    ids=["results-invalid", "invalid-rejects", "rejects-summary", "journal", "lock"],
)
async def test_two_outputs_on_one_file_are_refused(
    tmp_path: Path, emulator: RunningEmulator, first: tuple[str, str], second: tuple[str, str]
) -> None:
    source, _ = job(tmp_path)
    run = await send(emulator, tmp_path, source, *first, *second)
    assert_refused(run.code, run.stderr, emulator)
    assert "same file" in run.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"in.ndjson"}


async def test_the_journal_may_not_overwrite_the_input(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    source = write_lines(tmp_path / "out.ndjson.journal", RECIPIENTS)
    before = source.read_bytes()
    run = await send(emulator, tmp_path, source, "--results", "out.ndjson")
    assert_refused(run.code, run.stderr, emulator)
    assert source.read_bytes() == before


async def test_character_devices_are_shared_freely(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    source, _ = job(tmp_path)
    run = await send(emulator, tmp_path, source, "--invalid", os.devnull, "--rejects", os.devnull)
    assert run.code == 0, run.stderr
    assert len(emulator.messages()) == 3


# --- send: unwritable output locations, found before the first request ---------------


def unwritable(tmp_path: Path, where: str) -> Path:
    (tmp_path / "file").write_text("")
    if where == "read-only":
        if os.geteuid() == 0:  # root writes through permission bits; /proc takes no files
            return Path("/proc/summary.json")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked / "out"
    return {
        "missing-dir": tmp_path / "nope" / "out",
        "under-a-file": tmp_path / "file" / "out",
        "a-directory": tmp_path,
    }[where]


@pytest.mark.parametrize("where", ["missing-dir", "under-a-file", "a-directory", "read-only"])
@pytest.mark.parametrize("option", ["--results", "--invalid", "--summary"])
async def test_an_unwritable_output_stops_the_run_before_the_first_request(
    tmp_path: Path, emulator: RunningEmulator, option: str, where: str
) -> None:
    source, _ = job(tmp_path)
    run = await send(
        emulator, tmp_path, source, *beside_results(option), option, unwritable(tmp_path, where)
    )
    assert_refused(run.code, run.stderr, emulator, expected=3)
    assert f"cannot write {option}" in run.stderr
    assert left_behind(tmp_path) == set()
    assert not (tmp_path / "out.ndjson").exists()


# --- loadtest ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clash", ["report-input", "report-plot", "report-key", "plot-input", "report-symlink-input"]
)
async def test_loadtest_outputs_never_touch_its_inputs(
    tmp_path: Path, emulator: RunningEmulator, clash: str
) -> None:
    source, before = job(tmp_path)
    key = tmp_path / "key.txt"
    key.write_text(emulator.api_key + "\n")
    key_before = key.read_bytes()
    (tmp_path / "link.ndjson").symlink_to(source)
    report, plot = {
        "report-input": (source, None),
        "report-plot": (tmp_path / "r.json", tmp_path / "r.json"),
        "report-key": (key, None),
        "plot-input": (None, source),
        "report-symlink-input": (tmp_path / "link.ndjson", None),
    }[clash]
    args = ["loadtest", "--duration", "1h", "--rate", "1", "--quiet", "--input", source]
    args += ["--base-url", emulator.base_url, "--api-key-file", key]
    args += ["--report", report] if report else []
    args += ["--plot", plot] if plot else []
    run = await dispatcher(*args, cwd=tmp_path, environ=env(api_key=None))
    assert_refused(run.code, run.stderr, emulator)
    assert source.read_bytes() == before
    assert key.read_bytes() == key_before
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("option", ["--report", "--plot"])
async def test_loadtest_unwritable_outputs_are_exit_3_before_the_test_runs(
    tmp_path: Path, option: str
) -> None:
    # an hour-long test: only a check made before it starts can end this run
    run = await dispatcher(
        "loadtest", "--duration", "1h", "--rate", "1", "--quiet",
        option, tmp_path / "nope" / "out",
        cwd=tmp_path, environ=env(api_key=KEY),
    )  # fmt: skip
    assert run.code == 3, run.stderr
    assert f"cannot write {option}" in run.stderr
    assert "Traceback" not in run.stderr
