"""``dispatcher merge``: the shards of one job (``--shard K/N`` on N hosts) into one
account, checked line by line.

The input says which lines need a result: every line the reader yields a record for
(blank lines have none), read by the same `dispatcher.reader.Reader` as ``send`` so
that the two never disagree. Each shard's results file is read once, streaming: every
result must be a JSON object naming an input line, and every such line must get
exactly one result across all the shards. The merged results are the shards' result
lines as they are (byte for byte, shard after shard), written to a temporary file
beside the output and renamed into place only when the account is exact: a merge
that finds a line missing or doubled writes nothing and names the lines.

Memory is two bitmaps over the line numbers (about 2 bits per input line: 12 MB for
50 M lines), whatever the size of the results.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import orjson

from dispatcher.errors import ConfigError, InputError, OutputError
from dispatcher.finished import LineSet
from dispatcher.models import RESUMABLE, Status
from dispatcher.reader import Reader
from dispatcher.summary import ACCEPTED, FINAL_POLICY, INVALID_INPUT, UNSUCCESSFUL

T = TypeVar("T")

#: Lines named in full in a report of missing or doubled lines; the rest are counted.
SHOWN = 20

_ACCEPTED = frozenset(map(str, ACCEPTED))


class DamagedShard(ConfigError):
    """A shard's results file holds something that is not a result (exit 2)."""


@dataclass(slots=True)
class Problems:
    """Lines of the input without a result, with more than one, or results for lines
    the input does not have; the first `SHOWN` of each, and how many in all."""

    missing: list[int] = field(default_factory=list)
    missing_count: int = 0
    doubled: list[tuple[int, str]] = field(default_factory=list)
    doubled_count: int = 0
    unknown: list[tuple[int, str]] = field(default_factory=list)
    unknown_count: int = 0

    def __bool__(self) -> bool:
        return bool(self.missing_count or self.doubled_count or self.unknown_count)

    def describe(self) -> str:
        """What is wrong, one sentence per kind, for the error message."""
        parts = []
        if self.missing_count:
            parts.append(
                f"{self.missing_count} input lines have no result in any shard: "
                f"{_lines(self.missing, self.missing_count)}"
            )
        if self.doubled_count:
            shown = ", ".join(f"{line} (again in {path})" for line, path in self.doubled)
            more = self.doubled_count - len(self.doubled)
            parts.append(
                f"{self.doubled_count} lines have more than one result: {shown}"
                + (f" and {more} more" if more else "")
            )
        if self.unknown_count:
            shown = ", ".join(f"{line} (in {path})" for line, path in self.unknown)
            more = self.unknown_count - len(self.unknown)
            parts.append(
                f"{self.unknown_count} results name a line the input does not have "
                f"(blank or past its end): {shown}" + (f" and {more} more" if more else "")
            )
        return "; ".join(parts)


def _lines(shown: list[int], count: int) -> str:
    more = count - len(shown)
    return ", ".join(map(str, shown)) + (f" and {more} more" if more else "")


@dataclass(slots=True)
class Merged:
    """The account of a merge: what the input holds and what the shards answered."""

    lines: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    billable_segments: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    problems: Problems = field(default_factory=Problems)

    def job_exit(self) -> int:
        """The exit the job as a whole would have had (`dispatcher.summary.Summary`)."""
        if any(self.statuses[str(s)] for s in RESUMABLE):
            return 4
        if any(self.statuses[str(s)] for s in UNSUCCESSFUL):
            return 1
        return 0

    def as_dict(self) -> dict[str, Any]:
        """The merge's summary JSON."""
        statuses = dict(sorted((k, v) for k, v in self.statuses.items() if v))
        return {
            "lines": self.lines,
            "statuses": statuses,
            "segments": {"billable": self.billable_segments},
            "policy": {
                "resumable": sum(self.statuses[str(s)] for s in RESUMABLE),
                "suppressed": self.statuses[str(Status.SUPPRESSED)],
                "duplicates": self.statuses[str(Status.DUPLICATE)],
            },
            "invalid_input": sum(self.statuses[str(s)] for s in INVALID_INPUT),
            "kept_back": sum(self.statuses[str(s)] for s in FINAL_POLICY),
            "shards": self.shards,
            "job_exit_code": self.job_exit(),
            "exit_reason": "merged" if not self.problems else self.problems.describe(),
        }


async def expected_lines(source: str) -> tuple[LineSet, int]:
    """The lines of ``source`` that need a result (its records), and their count."""
    expected = LineSet()
    reader = Reader(source)
    async for chunk in reader:
        expected.update(item.line for item in chunk)
    return expected, len(expected)


def _results(path: str) -> Iterator[tuple[int, bytes]]:
    """Each non-blank line of a results file: (its ordinal, its bytes)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; an open error is reported)
    except FileNotFoundError:
        raise ConfigError(f"shard results {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read shard results {path}: {exc.strerror}") from None
    with f:
        try:
            for ordinal, raw in enumerate(f, 1):
                stripped = raw.strip()
                if stripped:
                    yield ordinal, stripped
        except OSError as exc:
            raise InputError(f"reading shard results {path} failed: {exc.strerror}") from None


def _parse(path: str, ordinal: int, raw: bytes) -> tuple[int, str, Any]:
    try:
        result = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise DamagedShard(f"{path}, line {ordinal}: not JSON: it is not a results file") from None
    if not isinstance(result, dict):
        raise DamagedShard(f"{path}, line {ordinal}: not a result (a JSON object)")
    line, status = result.get("line"), result.get("status")
    if type(line) is not int or line < 1 or not isinstance(status, str):
        raise DamagedShard(
            f"{path}, line {ordinal}: a result needs a line number and a status: "
            "is this a send's results file?"
        )
    return line, status, result.get("segments")


def merge_shards(
    expected: LineSet, count: int, shard_paths: Sequence[str], out: BinaryIO
) -> Merged:
    """Copy every shard's results to ``out`` (a binary file), checking the account."""
    merged = Merged(lines=count)
    seen = LineSet()
    problems = merged.problems
    for path in shard_paths:
        results = 0
        for ordinal, raw in _results(path):
            line, status, segments = _parse(path, ordinal, raw)
            results += 1
            if line not in expected:
                problems.unknown_count += 1
                if len(problems.unknown) < SHOWN:
                    problems.unknown.append((line, path))
                continue
            if line in seen:
                problems.doubled_count += 1
                if len(problems.doubled) < SHOWN:
                    problems.doubled.append((line, path))
                continue
            seen.add(line)
            merged.statuses[status] += 1
            if status in _ACCEPTED and type(segments) is int:
                merged.billable_segments += segments
            out.write(raw)
            out.write(b"\n")
        merged.shards.append({"results": path, "results_lines": results})
    problems.missing_count = count - len(seen)
    if problems.missing_count:
        problems.missing = _first_missing(expected, seen, SHOWN)
    return merged


def _first_missing(expected: LineSet, seen: LineSet, limit: int) -> list[int]:
    missing: list[int] = []
    for line in expected:
        if line not in seen:
            missing.append(line)
            if len(missing) == limit:
                break
    return missing


def write_atomically(
    path: str, fill: Callable[[BinaryIO], T], keep: Callable[[T], bool] = lambda _: True
) -> T:
    """Run ``fill`` on a temporary file beside ``path`` and return its answer; the file
    is synced and renamed into place when ``keep(answer)``, else removed."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".merge-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            answer = fill(out)
            out.flush()
            os.fsync(out.fileno())
        if keep(answer):
            os.replace(temporary, path)
        else:
            os.unlink(temporary)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return answer
