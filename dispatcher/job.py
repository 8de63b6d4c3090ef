"""A send job on disk: every file it reads and writes.

The job is named by its results path: its journal, lock file and control pointer sit
beside it (`dispatcher.journal.journal_path`, `dispatcher.lock.lock_path`,
`dispatcher.control.control_path`). `places` lists what
a send reads and writes so that `dispatcher.paths` can refuse clashes (an output that
is an input, two outputs that are one file) and unwritable outputs before anything is
opened; `settings_files` lists the files its settings came from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO

from dispatcher.config import Config, read_toml
from dispatcher.control import control_path
from dispatcher.journal import journal_path
from dispatcher.lock import lock_path
from dispatcher.paths import Place
from dispatcher.resume import job_results

#: What can be read: a path, "-" for stdin, or an open binary file.
Source = str | os.PathLike[str] | BinaryIO


def places(
    source: Source, config: Config, inputs: Iterable[Place] = ()
) -> tuple[list[Place], list[Place]]:
    """Every file a send reads and every file it writes (for `dispatcher.paths`): the
    input, then ``inputs`` (what the CLI read the configuration from) and the opt-out
    lists; the outputs the configuration names, and the job's own journal and lock."""
    read = [_input_place(source), *inputs, *(Place("--suppress", p) for p in config.suppress)]
    if config.redis_password_file:
        read.append(Place("--redis-password-file", config.redis_password_file))
    written = [Place("--results", config.results)]
    for option, path in (
        ("--invalid", config.invalid),
        ("--rejects", config.rejects),
        ("--summary", config.summary),
    ):
        if path:
            written.append(Place(option, path))
    results = job_results(config)
    if results is not None:
        written.append(Place("the journal", journal_path(results)))
        written.append(Place("the lock file", lock_path(results)))
        written.append(Place("the control pointer", control_path(results)))
    return read, written


def settings_files(
    *,
    config_file: str | None = None,
    text_file: str | None = None,
    api_key_file: str | None = None,
) -> list[Place]:
    """The files a send's settings were read from, as `run` takes them (``inputs``):
    the config file, the text file and the API key file — the one ``--api-key-file``
    names, else the config file's ``api_key_file``."""
    files = [Place("--config", config_file)] if config_file else []
    if text_file:
        files.append(Place("--text-file", text_file))
    if api_key_file:
        files.append(Place("--api-key-file", api_key_file))
    elif config_file and isinstance(key_file := read_toml(config_file).get("api_key_file"), str):
        files.append(Place(f"api_key_file of {config_file}", key_file))
    return files


def _input_place(source: Source) -> Place:
    if isinstance(source, str | os.PathLike):
        return Place("INPUT", os.fspath(source))
    try:
        return Place("INPUT", f"/dev/fd/{source.fileno()}")
    except (AttributeError, OSError, ValueError):  # not backed by a file
        return Place("INPUT", "-")
