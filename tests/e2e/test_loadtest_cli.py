"""``dispatcher loadtest`` end to end: the real CLI in a subprocess, short runs. (Its
usage errors are tested in process: tests/unit/test_loadtest_cli.py.)"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dispatcher.loadtest.stats import RequestOutcome
from tests.support.emulators import EmulatorFactory

LOADTEST = [sys.executable, "-m", "dispatcher", "loadtest"]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

Number = (int, float)
Maybe = (int, float, type(None))
REPORT_SCHEMA: dict[str, Any] = {
    "tool": str,
    "version": str,
    "target": {"url": str, "embedded_emulator": bool, "endpoint": str},
    "settings": {
        "rate": float,
        "rate_unit": str,
        "batch_size": int,
        "duration_s": float,
        "warmup_s": float,
        "concurrency": int,
        "timeout_s": float,
        "drain_s": float,
        "sender": str,
        "input": (str, type(None)),
        "seed": int,
        "emulator_faults": (dict, type(None)),
    },
    "duration_s": float,
    "elapsed_s": float,
    "target_rate": float,
    "achieved_rate": float,
    "rate_ratio": float,
    "target_recipients_rate": float,
    "achieved_recipients_rate": float,
    "requests": int,
    "sent": int,
    "answered": int,
    "warmup_requests": int,
    "late_starts": int,
    "quota": type(None),
    "workers": int,
    "dropped": int,
    "unfinished": int,
    "outcomes": dict.fromkeys([str(outcome) for outcome in RequestOutcome], int),
    "errors": int,
    "error_rate": (float, type(None)),
    "latency_ms": dict.fromkeys(("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"), Maybe),
    "start_lag_ms": {"p50": Maybe, "p99": Maybe, "max": Maybe},
    "series": [
        {
            "t": int,
            "seconds": float,
            "sent": int,
            "requests": int,
            "ok": int,
            "errors": int,
            "rate": Number,
            "p50_ms": Maybe,
            "p99_ms": Maybe,
        }
    ],
    "notes": list,
    "thresholds": [
        {
            "threshold": str,
            "metric": str,
            "op": str,
            "limit": Number,
            "unit": str,
            "actual": Maybe,
            "passed": bool,
        }
    ],
    "passed": bool,
    "aborted": (str, type(None)),
    "interrupted": bool,
    "exit_code": int,
}


def check_schema(value: Any, schema: Any, where: str = "report") -> None:
    if isinstance(schema, dict):
        assert isinstance(value, dict), where
        assert set(value) == set(schema), f"{where}: {sorted(set(value) ^ set(schema))}"
        for key, sub in schema.items():
            check_schema(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), where
        assert value, f"{where} is empty"
        for i, item in enumerate(value):
            check_schema(item, schema[0], f"{where}[{i}]")
    else:
        assert isinstance(value, schema), f"{where}: {value!r} is not {schema}"
        assert not (isinstance(value, bool) and schema in (int, float, Number)), where


def loadtest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOADTEST, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_passing_thresholds_exit_0_with_report_json_and_plot(tmp_path: Path) -> None:
    report_path, plot_path = tmp_path / "lt.json", tmp_path / "lt.png"
    args = ["--duration", "1s", "--rate", "50", "--latency-ms", "5", "--report", str(report_path)]
    args += ["--json", "--threshold", "p99<30s", "--threshold", "error_rate<=0%"]
    args += ["--threshold", "p(50) >= 5ms", "--threshold", "rate>=0.5"]
    if HAS_MATPLOTLIB:
        args += ["--plot", str(plot_path)]
    proc = loadtest(*args)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    written = json.loads(report_path.read_text())
    assert printed == written
    check_schema(written, REPORT_SCHEMA)
    assert written["requests"] == 50
    assert written["passed"] is True
    assert written["exit_code"] == 0
    assert [v["passed"] for v in written["thresholds"]] == [True] * 4
    assert "[     1s]" in proc.stderr  # the live line
    assert "result             PASSED" in proc.stderr
    if HAS_MATPLOTLIB:
        assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_plot_of_a_run_with_errors(tmp_path: Path) -> None:
    plot_path = tmp_path / "errors.png"
    proc = loadtest(
        "--duration", "1s", "--rate", "50", "--fail-503", "0.3", "--seed", "3",
        "--threshold", "p99<1s", "--plot", str(plot_path), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert plot_path.stat().st_size > 10_000
    assert "[     1s]" not in proc.stderr  # --quiet


def test_a_failing_threshold_exits_99(tmp_path: Path) -> None:
    report_path = tmp_path / "lt.json"
    proc = loadtest(
        "--duration", "1s", "--rate", "40", "--latency-ms", "20",
        "--threshold", "p50<5ms", "--threshold", "error_rate<1%", "--report", str(report_path),
    )  # fmt: skip
    assert proc.returncode == 99, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["exit_code"] == 99
    assert [v["passed"] for v in report["thresholds"]] == [False, True]
    assert report["thresholds"][0]["actual"] >= 20
    assert "FAILED" in proc.stderr


def test_plot_without_matplotlib_is_a_clear_usage_error(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from dispatcher.cli import main\n"
        f"sys.exit(main(['loadtest', '--duration', '1s', '--plot', {str(tmp_path / 'p.png')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pip install 'sms-dispatcher[loadtest]'" in proc.stderr
    assert not (tmp_path / "p.png").exists()


async def test_a_refused_api_key_exits_3_without_showing_it(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-wrong-key\n")
    proc = await asyncio.create_subprocess_exec(
        *LOADTEST, "--base-url", emulator.base_url, "--api-key-file", str(key_file),
        "--synthetic", "--duration", "1s", "--rate", "20", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3, stderr
    assert b"s3cret-wrong-key" not in stdout + stderr
    assert b"refused the API key" in stderr
    assert json.loads(stdout)["aborted"]
