"""``send --workers N``: N processes on their shares, one results file, one account —
and a worker killed with ``kill -9`` finished by ``--resume`` exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.cli import wait_while_running
from tests.support.exactly_once import (
    check_exactly_once,
    ledger,
    read_results,
    send_command,
    write_input,
)
from tests.support.gateway_process import gateway_process

pytestmark = pytest.mark.chaos
KEY = "e2e-secret-key-4242"


def env() -> dict[str, str]:
    return {**os.environ, "DISPATCHER_API_KEY": KEY}


def run(command: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(command, env=env(), capture_output=True, timeout=120, **kw)  # type: ignore[call-overload, no-any-return]


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(word) for word in f.read().split()]


def test_workers_share_the_input_and_leave_one_results_file(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 3000, bad_every=101)
    with gateway_process("--no-rate-limit", api_key=KEY) as url:
        done = run([*send_command(source, tmp_path, url), "--workers", "3"])
        assert done.returncode == 0, done.stderr.decode()
        messages, stats = ledger(url)
    results = read_results(tmp_path / "results.ndjson")
    every_line = set(range(1, 3001))
    account = check_exactly_once(results, every_line, messages, stats, idempotent=False)
    assert account.by_status == {"QUEUE": len(lines), "REJECTED": 3000 - len(lines)}
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["lines"] == 3000
    assert summary["workers"] == 3
    assert summary["exit_code"] == 0
    leftovers = sorted(p.name for p in tmp_path.iterdir() if re.search(r"\.w\d+of\d+", p.name))
    assert leftovers == []  # the workers' own files are joined, then removed
    again = run([*send_command(source, tmp_path, url), "--workers", "3"])
    assert again.returncode == 2  # the job exists: --resume or --force
    assert b"--workers 3 exists" in again.stderr


def test_stdin_is_shared_and_results_stream_through_the_parent(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 2000)
    with gateway_process("--no-rate-limit", api_key=KEY) as url:
        command = send_command(Path("-"), tmp_path, url)
        command[command.index("--results") + 1] = "-"
        with source.open("rb") as stdin:
            done = run([*command, "--workers", "2"], stdin=stdin)
        assert done.returncode == 0, done.stderr.decode()
        messages, stats = ledger(url)
    results = [orjson.loads(raw) for raw in done.stdout.splitlines()]
    check_exactly_once(results, lines, messages, stats, idempotent=False)


def test_a_worker_killed_then_resume_loses_and_doubles_nothing(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 6000)
    with gateway_process("--no-rate-limit", "--latency-ms", "60", api_key=KEY) as url:
        command = [*send_command(source, tmp_path, url), "--workers", "2"]
        proc = subprocess.Popen(
            command, env=env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        first = tmp_path / "results.ndjson.w1of2"
        wait_while_running(
            proc, lambda: first.exists() and first.stat().st_size > 20_000, "it sent"
        )
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err.decode()
        assert b"killed by SIGKILL" in err
        assert b"--resume finishes it" in err
        assert not (tmp_path / "results.ndjson").exists()  # the job is unfinished

        wrong = run([*command[:-2], "--workers", "3", "--resume"])
        assert wrong.returncode == 2
        assert b"not 3" in wrong.stderr

        done = run([*command, "--resume"])
        assert done.returncode in (0, 1), done.stderr.decode()
        messages, stats = ledger(url)
    results = read_results(tmp_path / "results.ndjson")
    account = check_exactly_once(results, lines, messages, stats, idempotent=False)
    assert sum(account.by_status.values()) == len(lines)


def test_workers_split_the_rate_without_a_shared_quota(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    write_input(source, 300)
    with gateway_process("--no-rate-limit", api_key=KEY) as url:
        command = send_command(source, tmp_path, url)
        command[command.index("12345=inf")] = "12345=100"
        done = run([*command, "--workers", "2"])
        assert done.returncode == 0, done.stderr.decode()
        _, stats = ledger(url)
    # each worker at 50/s: together never above the job's bound (SPEC §4: 1.1 x 100)
    assert stats["codes"]["12345"]["max_window"] <= 110, stats["codes"]
