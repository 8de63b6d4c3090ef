"""Crashes and signals, with the real CLI against a real emulator process: kill -9 at
random points, SIGINT/SIGTERM, a full disk — then ``--resume`` finishes the job with
exactly one result per line and nothing recorded twice."""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.support.cli import wait_while_running
from tests.support.exactly_once import (
    check_exactly_once,
    ledger,
    read_results,
    send_command,
    wait_until_sending,
    write_input,
)
from tests.support.gateway_process import gateway_process

pytestmark = pytest.mark.chaos
KEY = "e2e-secret-key-4242"


def env() -> dict[str, str]:
    return {**os.environ, "DISPATCHER_API_KEY": KEY}


def set_faults(base_url: str, **faults: float) -> None:
    """Change the gateway process's faults at run time."""
    request = urllib.request.Request(
        base_url.removesuffix("/raven") + "/_emulator/faults",
        data=orjson.dumps(faults),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, env=env(), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_kill_9_and_resume_cycles(tmp_path: Path, idempotent: bool) -> None:
    rng = random.Random(20261124 + idempotent)
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 20_000)
    extra = ["--idempotency"] if idempotent else []
    # 400 batches of 50, four at a time, ~40 ms each: about 4 s of sending to cut up
    with gateway_process(
        "--no-rate-limit", "--latency-ms", "40", "--jitter-ms", "20", api_key=KEY
    ) as url:
        command = send_command(source, tmp_path, url, *extra)
        kills = 0
        for cycle in range(12):
            resume = ["--resume"] if cycle else []
            proc = subprocess.Popen(
                [*command, *resume], env=env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            if not cycle:  # a kill before the job exists would leave nothing to resume
                wait_for_journal(proc, tmp_path / "results.ndjson.journal")
            time.sleep(rng.uniform(0.4, 0.9))
            if proc.poll() is None and kills < 6:
                proc.kill()
                kills += 1
                proc.wait(timeout=10)
                proc.stderr.close()  # type: ignore[union-attr]
                continue
            _, err = proc.communicate(timeout=120)
            assert proc.returncode in (0, 1), err.decode()
            break
        else:
            pytest.fail("the job never finished")
        assert kills >= 5, f"only {kills} kills landed mid-run"
        messages, stats = ledger(url)
    account = check_exactly_once(
        read_results(tmp_path / "results.ndjson"), lines, messages, stats, idempotent=idempotent
    )
    if idempotent:
        assert account.by_status == {"QUEUE": len(lines)}
        assert proc.returncode == 0
    invalid = [orjson.loads(raw) for raw in (tmp_path / "invalid.ndjson").read_bytes().splitlines()]
    assert invalid == []


def wait_for_journal(proc: subprocess.Popen[bytes], journal: Path) -> None:
    """Wait until the first run has created its journal (a loaded machine can take
    longer than the first random pause just to start Python)."""
    wait_while_running(proc, journal.exists, "it created its journal")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_then_resume_finishes(tmp_path: Path, signum: int, code: int) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 4000, bad_every=97)
    with gateway_process("--no-rate-limit", "--latency-ms", "100", api_key=KEY) as url:
        command = send_command(source, tmp_path, url, "--idempotency", "--grace-period", "5")
        proc = subprocess.Popen(
            command,
            env=env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until_sending(proc, tmp_path / "results.ndjson")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err.decode()
        assert b"interrupted by" in err
        summary = orjson.loads((tmp_path / "summary.json").read_bytes())
        assert summary["exit_reason"].startswith("interrupted")
        partial = read_results(tmp_path / "results.ndjson")
        assert 0 < len(partial) < 4000
        done = run([*command, "--resume"], timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        messages, stats = ledger(url)
    every_line = set(range(1, 4001))
    results = read_results(tmp_path / "results.ndjson")
    account = check_exactly_once(results, every_line, messages, stats, idempotent=True)
    assert account.by_status["QUEUE"] == len(lines)
    assert account.by_status["REJECTED"] == 4000 - len(lines)
    final = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert final["resumed_lines"] == len(partial)
    assert final["lines"] == 4000


def test_second_signal_exits_at_once_and_stays_resumable(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 3000)
    # requests take 2 s, so some are surely in flight at both signals
    with gateway_process("--no-rate-limit", "--latency-ms", "2000", api_key=KEY) as url:
        command = send_command(source, tmp_path, url, "--idempotency", "--grace-period", "30")
        proc = subprocess.Popen(
            command,
            env=env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until_sending(proc, tmp_path / "results.ndjson")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)  # far less than the 30 s grace period
        assert proc.returncode == 130
        set_faults(url, latency_ms=0)
        done = run([*command, "--resume"], timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        messages, stats = ledger(url)
    check_exactly_once(
        read_results(tmp_path / "results.ndjson"), lines, messages, stats, idempotent=True
    )


def test_disk_full_aborts_with_exit_3_and_resumes(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 3000)
    limit = 40_000  # bytes: the results file (and the journal) hit it early

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    with gateway_process("--no-rate-limit", api_key=KEY) as url:
        command = send_command(source, tmp_path, url, "--idempotency", "--batch-size", "20")
        full = subprocess.run(
            command,
            env=env(),
            capture_output=True,
            timeout=60,
            preexec_fn=small_disk,
            stdin=subprocess.DEVNULL,
        )
        assert full.returncode == 3, full.stderr.decode()
        assert b"cannot write" in full.stderr
        assert b"Traceback" not in full.stderr
        done = run([*command, "--resume"], timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        messages, stats = ledger(url)
    check_exactly_once(
        read_results(tmp_path / "results.ndjson"), lines, messages, stats, idempotent=True
    )


def test_the_key_appears_in_no_output_of_a_failing_run(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    write_input(source, 200)
    (tmp_path / "key").write_text(KEY + "\n")
    with gateway_process("--no-rate-limit", api_key="the-right-key") as url:
        command = send_command(
            source, tmp_path, url, "--log-level", "debug", "--api-key-file", str(tmp_path / "key"),
            "--rejects", str(tmp_path / "rejects.ndjson"),
        )  # fmt: skip
        failed = run(command)
    assert failed.returncode == 3
    assert b"expired or revoked" in failed.stderr
    outputs = [failed.stdout, failed.stderr] + [
        p.read_bytes() for p in tmp_path.iterdir() if p.name != "key"
    ]
    for output in outputs:
        assert KEY.encode() not in output


def test_kill_9_during_the_compaction_then_resume(tmp_path: Path) -> None:
    """A resumed run is killed while it rewrites the results (after the journal's
    ``compaction start``, with the new file half written): the next ``--resume``
    throws the half-written file away, sends nothing again and compacts, and every
    line has exactly one result that the ledger agrees with."""
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 60_000)
    results = tmp_path / "results.ndjson"
    compacting = tmp_path / "results.ndjson.compacting"
    with gateway_process("--no-rate-limit", api_key=KEY) as url:
        command = [*send_command(source, tmp_path, url), "--batch-size", "1000"]
        # The cap leaves 30 000 NOT_SENT lines that the resume supersedes.
        first = run([*command, "--max-messages", "30000"], timeout=120)
        assert first.returncode == 4, first.stderr.decode()
        proc = subprocess.Popen(
            [*command, "--resume"], env=env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        while not compacting.exists():  # 90 000 result lines: ~0.1 s to rewrite
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"the resume ended (exit {proc.returncode}) before compacting: {err!r}")
            time.sleep(0.0005)
        proc.kill()
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        journal = (tmp_path / "results.ndjson.journal").read_bytes()
        assert b'"compaction":"start"' in journal
        # Killed before the rename (the usual case: the old file is whole), or — on a
        # loaded machine — just after it (the new one is in place): both must resume.
        assert len(results.read_bytes().splitlines()) in (90_000, 60_000)
        again = run([*command, "--resume"], timeout=120)
        assert again.returncode == 0, again.stderr.decode()
        assert not compacting.exists()
        assert len(results.read_bytes().splitlines()) == 60_000
        messages, stats = ledger(url)
        account = check_exactly_once(
            read_results(results), lines, messages, stats, idempotent=False
        )
        assert account.by_status == {"QUEUE": 60_000}
