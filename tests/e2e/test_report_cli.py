"""``dispatcher report`` in a subprocess: the library's counts as JSON or a table, stdin,
and exit 3 for a missing file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dispatcher.delivery import join_delivery_reports
from tests.support.cli import write_lines

RESULTS = [
    {"line": 1, "to": "+525500000001", "status": "QUEUE", "id": "m1"},
    {"line": 2, "to": "+525500000002", "status": "QUEUE", "id": "m2"},
    {"line": 3, "to": "+525500000003", "status": "QUEUE", "id": "m3"},
    {"line": 4, "to": "12ab", "status": "INVALID_NUMBER", "error": "has letters"},
]
DRS = [
    {"id": "m1", "status": "ENROUTE", "timestamp": 100},
    {"id": "m1", "status": "DELIVRD", "timestamp": 200},
    {"id": "m2", "status": "UNDELIV", "timestamp": 100},
]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_lines(tmp_path / "results.ndjson", RESULTS), write_lines(
        tmp_path / "dr.ndjson", DRS
    )


def report(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", "report", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_json_is_the_library_report(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "delivery.ndjson"
    proc = report("--results", str(files[0]), "--dr", str(files[1]), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout) == join_delivery_reports(*files).as_dict()
    assert proc.stdout.count(b"\n") == 1
    assert b"delivered" in proc.stderr  # the table
    assert out.read_bytes().count(b"\n") == len(RESULTS)


def test_table_on_stdout_and_results_from_stdin(files: tuple[Path, Path]) -> None:
    proc = report("--results", "-", "--dr", str(files[1]), stdin=files[0].read_bytes())
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.decode()
    assert "UNDELIV 1" in table
    assert "INVALID_NUMBER 1" in table
    assert "(33.3 %)" in table  # 1 delivered of 3 accepted


def test_a_missing_file_exits_3(tmp_path: Path) -> None:
    proc = report("--results", str(tmp_path / "none"), "--dr", str(tmp_path / "none"))
    assert proc.returncode == 3
    assert b"cannot read" in proc.stderr
    assert b"Traceback" not in proc.stderr
