"""Unwritable outputs abort the run with exit 3 and a clear message (SPEC §6), never a
traceback, and leave nothing behind that would stand in the way of the next run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import CODE, dispatcher, env, write_lines

BASE = "http://127.0.0.1:9/raven"
FULL = Path("/dev/full")


def message_args(source: Path) -> list[str | Path]:
    return ["send", source, "--from", CODE, "--text", "Hi {0}", "--base-url", BASE]


def one_line(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["a"]}])


async def test_an_unwritable_summary_is_exit_3(tmp_path: Path) -> None:
    run = await dispatcher(
        *message_args(one_line(tmp_path)),
        "--dry-run", "--summary", tmp_path / "no" / "summary.json",
        cwd=tmp_path,
        environ=env(api_key=None),
    )  # fmt: skip
    assert run.code == 3, run.stderr
    assert "cannot write" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("dry_run", [False, True], ids=["send", "dry-run"])
async def test_results_in_a_missing_directory_is_exit_3(tmp_path: Path, dry_run: bool) -> None:
    run = await dispatcher(
        *message_args(one_line(tmp_path)),
        *(["--dry-run"] if dry_run else []),
        "--results", tmp_path / "no" / "results.ndjson",
        cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in run.stderr
    assert "cannot write" in run.stderr
    assert run.code == 3


async def test_an_unwritable_invalid_file_is_exit_3_and_leaves_no_journal(
    tmp_path: Path,
) -> None:
    run = await dispatcher(
        *message_args(one_line(tmp_path)),
        "--results", "results.ndjson",
        "--invalid", tmp_path / "no" / "invalid.ndjson",
        cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in run.stderr
    assert run.code == 3
    assert not (tmp_path / "results.ndjson.journal").exists()


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full")
async def test_a_full_disk_is_exit_3(tmp_path: Path) -> None:
    run = await dispatcher(
        *message_args(one_line(tmp_path)),
        "--dry-run", "--results", FULL,
        cwd=tmp_path,
        environ=env(api_key=None),
    )  # fmt: skip
    assert "Traceback" not in run.stderr
    assert "No space left" in run.stderr
    assert run.code == 3
