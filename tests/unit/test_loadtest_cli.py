"""``dispatcher loadtest`` in process: usage errors before anything runs, and the
library's side of the command (`dispatcher.loadtest.job`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.cli import main
from dispatcher.config import Secret
from dispatcher.emulator import FaultSettings
from dispatcher.errors import ConfigError
from dispatcher.loadtest import job


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "p99<<5ms"], "METRIC OP VALUE"),
        (["--threshold", "error_rate<5"], "write 5%"),
        (["--duration", "10x"], "not a duration"),
        (["--rate", "0"], "argument --rate: must be a finite number above 0"),
        (["--fail-429", "2"], "must be a share from 0 to 1"),
        (["--fail-429", "0.7", "--fail-503", "0.7"], "add up to more than 1"),
        (["--base-url", "http://127.0.0.1:9/raven", "--synthetic"], "no API key"),
        (["--base-url", "http://127.0.0.1:9/raven"], "--input FILE"),
        (["--api-key-file", "k.txt"], "only goes with --base-url"),
        (["--input", "/nonexistent/x.ndjson"], "does not exist"),
        (
            ["--base-url", "http://127.0.0.1:9/raven", "--synthetic", "--latency-ms", "5"],
            "embedded emulator",
        ),
    ],
)
def test_usage_errors_exit_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPATCHER_API_KEY", "k" if "--latency-ms" in args else "")
    try:
        code = main(["loadtest", *args])
    except SystemExit as exc:  # refused by the parser
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err


def test_faults_at_their_defaults_mean_a_healthy_emulator() -> None:
    assert job.prepare(faults=FaultSettings()).faults is None
    faults = FaultSettings(fail_429=0.1)
    assert job.prepare(faults=faults).faults == faults


def test_the_key_for_a_real_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/raven"
    monkeypatch.setenv("DISPATCHER_API_KEY", " from-env ")
    assert job.prepare(base_url=url, synthetic=True).api_key == Secret("from-env")
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    test = job.prepare(base_url=url, synthetic=True, api_key_file=str(key_file))
    assert test.api_key == Secret("from-file")
    with pytest.raises(ConfigError, match="--synthetic"):
        job.prepare(base_url=url)


def test_outputs_that_cannot_be_written_are_reported(tmp_path: Path) -> None:
    report = {"passed": True}
    assert job.write_outputs(report, json_path=str(tmp_path / "r.json"), plot_path=None) == []
    problems = job.write_outputs(report, json_path=str(tmp_path), plot_path=None)
    assert problems == [f"cannot write {tmp_path}: Is a directory"]
