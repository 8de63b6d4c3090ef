"""``send --workers N --progress``: the parent shows one progress line for the job, the
workers' counts summed (from the numbers they push it), as a single ``send`` does."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.cli import dispatcher, send_args, write_lines
from tests.support.emulators import EmulatorFactory

KEY = "e2e-Kq7vX2pLw9ZtR4mN"
#: tqdm's postfix as `dispatcher.progress.Progress` writes it
LINE = re.compile(r"lines=([\d,]+) sent=([\d,]+) failed=([\d,]+)")


def _input(tmp_path: Path) -> Path:
    lines: list[object] = [{"to": f"+52550000{i:04d}", "params": ["Ana", i]} for i in range(1, 121)]
    lines[9] = {"to": "12", "params": ["x", 0]}  # invalid: a result, not sent
    return write_lines(tmp_path / "in.ndjson", lines)


def _states(stderr: str) -> list[tuple[int, ...]]:
    return [tuple(int(n.replace(",", "")) for n in m.groups()) for m in LINE.finditer(stderr)]


async def _send(
    emulator_factory: EmulatorFactory, tmp_path: Path, *extra: str
) -> list[tuple[int, ...]]:
    """``send --workers 2`` (stderr a pipe, not a terminal); the progress states shown."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = _input(tmp_path)
    args = send_args(emulator.base_url, source, "--results", tmp_path / "out.ndjson")
    args = [a for a in args if a != "--no-progress"]
    run = await dispatcher(*args, "--workers", "2", *extra, cwd=tmp_path)
    assert run.code == 0, run.stderr
    return _states(run.stderr)


async def test_the_parent_shows_the_job_s_progress_summed_over_its_workers(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    states = await _send(emulator_factory, tmp_path, "--progress")
    assert states
    # the last state is the whole job's: every line of both workers, one line for it
    assert states[-1] == (120, 119, 0)
    assert states == sorted(states)  # counts only grow


async def test_no_progress_line_when_stderr_is_not_a_terminal(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    assert await _send(emulator_factory, tmp_path) == []
