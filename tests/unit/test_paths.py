"""Outputs never touch inputs or each other; outputs are writable before sending."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatcher.errors import ConfigError, OutputError
from dispatcher.paths import Place, check_distinct, check_writable


def test_an_output_that_is_the_input_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "s.ndjson"
    source.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"--results .* would overwrite INPUT"):
        check_distinct([Place("INPUT", str(source))], [Place("--results", str(source))])
    assert source.read_text() == "{}\n"


@pytest.mark.parametrize("how", ["symlink", "hardlink", "dotted"])
def test_links_and_spellings_do_not_hide_a_clash(tmp_path: Path, how: str) -> None:
    source = tmp_path / "s.ndjson"
    source.write_text("{}\n")
    other = tmp_path / "alias.ndjson"
    if how == "symlink":
        other.symlink_to(source)
    elif how == "hardlink":
        os.link(source, other)
    else:
        other = tmp_path / "." / "sub" / ".." / "s.ndjson"
        (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError):
        check_distinct([Place("INPUT", str(source))], [Place("--invalid", str(other))])


def test_two_outputs_that_do_not_exist_yet_clash_by_real_path(tmp_path: Path) -> None:
    a = str(tmp_path / "out.ndjson")
    b = str(tmp_path / "sub" / ".." / "out.ndjson")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError, match=r"--rejects .* is the same file as --results"):
        check_distinct([], [Place("--results", a), Place("--rejects", b)])


def test_character_devices_and_distinct_files_pass(tmp_path: Path) -> None:
    check_distinct(
        [Place("INPUT", str(tmp_path / "in.ndjson"))],
        [
            Place("--results", os.devnull),
            Place("--invalid", os.devnull),
            Place("--summary", str(tmp_path / "summary.json")),
        ],
    )


def test_writable_outputs_leave_nothing_behind(tmp_path: Path) -> None:
    existing = tmp_path / "existing.json"
    existing.write_text("keep")
    check_writable([Place("--summary", str(existing)), Place("--results", str(tmp_path / "new"))])
    assert existing.read_text() == "keep"
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["missing-dir", "directory", "under-a-file"])
def test_unwritable_outputs_are_named(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("")
    path = {
        "missing-dir": tmp_path / "nope" / "summary.json",
        "directory": tmp_path,
        "under-a-file": tmp_path / "file" / "summary.json",
    }[where]
    with pytest.raises(OutputError, match="cannot write --summary"):
        check_writable([Place("--summary", str(path))])


def test_a_pipe_output_is_taken_as_writable_without_waiting_for_a_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    check_writable([Place("--results", str(fifo))])  # opening it would block: no reader


def test_stdin_and_stdout_redirected_to_files_take_part(tmp_path: Path) -> None:
    source = tmp_path / "s.ndjson"
    source.write_text("{}\n")
    saved = os.dup(0)
    try:
        with open(source, "rb") as f:
            os.dup2(f.fileno(), 0)
        with pytest.raises(ConfigError, match=r"--results .* would overwrite INPUT -"):
            check_distinct([Place("INPUT", "-")], [Place("--results", str(source))])
    finally:
        os.dup2(saved, 0)
        os.close(saved)
