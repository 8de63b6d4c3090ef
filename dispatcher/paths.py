"""Where a command reads and writes, checked before anything is opened for writing.

Two rules every command that writes files follows (issue 12):

- **Outputs never touch inputs or each other.** Every output is compared with every
  input and with every other output by *file identity*: the device and inode of what
  exists (so a hard link, a symlink or ``./x`` vs ``x`` cannot hide a clash), and the
  resolved real path of what does not exist yet. Character devices (``/dev/null``,
  ``/dev/stdout`` on a terminal) are shared freely. ``-`` stands for stdin among the
  inputs and stdout among the outputs: when the shell redirected either to a regular
  file, that file takes part. A clash is a `ConfigError` (exit 2) naming both options.
- **Every output location is writable before the first request** (`check_writable`):
  found out after sending, an unwritable summary loses the account of a send that
  happened. Tried for real (an append-open that creates nothing it does not remove),
  because permission bits lie to root and to read-only mounts.

`send` and `loadtest` say which places they read and write in one function each
(`dispatcher.job.places`, `dispatcher.loadtest.job.prepare`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from dispatcher.errors import ConfigError, OutputError

#: What a file is, for comparing: (device, inode) when it exists, else its real path.
Identity = tuple[int, int] | str


@dataclass(frozen=True, slots=True)
class Place:
    """One path a command reads or writes, with the option that named it."""

    option: str
    path: str


def identity(path: str, *, stream: int | None = None) -> Identity | None:
    """What ``path`` is on disk; None when it cannot clash with anything (a character
    device, or ``-`` when the stream is a terminal or a pipe)."""
    try:
        if path == "-":
            if stream is None:
                return None
            status = os.fstat(stream)
        else:
            status = os.stat(path)
    except FileNotFoundError:
        return os.path.realpath(path)
    except OSError:
        return None if path == "-" else os.path.realpath(path)
    if stat.S_ISCHR(status.st_mode) or (path == "-" and not stat.S_ISREG(status.st_mode)):
        return None
    return status.st_dev, status.st_ino


def check_distinct(inputs: Iterable[Place], outputs: Iterable[Place]) -> None:
    """Refuse (`ConfigError`) an output that is an input or another output."""
    seen: dict[Identity, Place] = {}
    for place in inputs:
        key = identity(place.path, stream=0)
        if key is not None:
            seen.setdefault(key, place)
    for place in outputs:
        key = identity(place.path, stream=1)
        if key is None:
            continue
        other = seen.get(key)
        if other is not None:
            what = "is the same file as" if isinstance(other, _Output) else "would overwrite"
            raise ConfigError(
                f"{place.option} {place.path} {what} {other.option} {other.path}: "
                "give each output its own file"
            )
        seen[key] = _Output(place.option, place.path)


class _Output(Place):
    """A place already claimed by an output (to word the clash message)."""

    __slots__ = ()


def check_writable(outputs: Iterable[Place]) -> None:
    """Raise `OutputError` (exit 3) for the first output that cannot be written.

    An existing file is opened for appending (its content untouched). For a missing one
    its directory is tried with a file of another name, created and removed again: the
    output's own name is never created, so a run that writes it meanwhile loses nothing.
    Character devices, pipes and sockets, and ``-`` (stdout), are taken as writable:
    opening a pipe with no reader would wait for one.
    """
    for place in outputs:
        if place.path == "-":
            continue
        try:
            mode = os.stat(place.path).st_mode
        except FileNotFoundError:
            _try_directory(place)
            continue
        except OSError as exc:
            raise _unwritable(place, exc) from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            continue
        try:
            os.close(os.open(place.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
        except OSError as exc:
            raise _unwritable(place, exc) from None


def _try_directory(place: Place) -> None:
    """Create and remove a file beside where ``place`` will be."""
    directory = os.path.dirname(place.path) or "."
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-", suffix=".tmp")
    except OSError as exc:
        raise _unwritable(place, exc) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _unwritable(place: Place, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EISDIR:
        reason = "it is a directory"
    return OutputError(f"cannot write {place.option} {place.path}: {reason}")
