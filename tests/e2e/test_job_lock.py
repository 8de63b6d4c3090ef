"""One job, one process (issue 12): a job (named by its results file) is locked for
the whole run, so a second ``send``, ``--resume`` or ``--force`` of it exits 2 naming
the process that runs it, and the running job is unharmed; the lock dies with its
process, so ``kill -9`` then ``--resume`` still works.

Real CLI processes against a real gateway process that gets no idempotency keys (the
client sends none), as a gateway that ignores them would: a second run of one job
would show as duplicates in its ledger."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

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
KEY = "e2e-lock-key-5151"


def env() -> dict[str, str]:
    """The key, and no Idempotency-Key header: the gateway cannot tell a batch sent twice."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    return {**clean, "DISPATCHER_API_KEY": KEY, "DISPATCHER_IDEMPOTENCY_HEADER": ""}


def start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def run(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, env=env(), capture_output=True, timeout=120, stdin=subprocess.DEVNULL
    )


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def test_two_resumes_of_one_interrupted_job_run_one_at_a_time(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 3000)
    # 60 batches of 50, four in flight, 300 ms each: several seconds of sending
    with gateway_process("--no-rate-limit", "--latency-ms", "300", api_key=KEY) as url:
        command = send_command(source, tmp_path, url)
        first = start(command)
        wait_until_sending(first, tmp_path / "results.ndjson")
        first.kill()
        first.wait(timeout=10)
        assert first.stderr is not None
        first.stderr.close()
        both = [start([*command, "--resume"]) for _ in range(2)]
        outcomes = {proc.pid: finish(proc) for proc in both}
        messages, stats = ledger(url)
    refused = {pid: err for pid, (code, err) in outcomes.items() if code == 2}
    ran = {pid: (code, err) for pid, (code, err) in outcomes.items() if code != 2}
    assert len(refused) == 1, outcomes
    assert len(ran) == 1, outcomes
    [(runner, (code, err))] = ran.items()
    assert code in (0, 1), err  # 1: the batches in flight at the kill are AMBIGUOUS
    [message] = refused.values()
    assert f"being run by process {runner} on host " in message
    assert "Traceback" not in message
    account = check_exactly_once(
        read_results(tmp_path / "results.ndjson"), lines, messages, stats, idempotent=False
    )
    assert stats["duplicates"] == 0
    assert sum(account.by_status.values()) == len(lines)


@pytest.mark.parametrize(
    "second",
    [[], ["--resume"], ["--force"], ["--dry-run", "--force"]],
    ids=["send", "resume", "force", "dry-run"],
)
def test_a_second_run_of_a_running_job_is_refused_and_the_job_unharmed(
    tmp_path: Path, second: list[str]
) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 2000)
    journal = tmp_path / "results.ndjson.journal"
    with gateway_process("--no-rate-limit", "--latency-ms", "500", api_key=KEY) as url:
        command = send_command(source, tmp_path, url)
        running = start(command)
        wait_until_sending(running, tmp_path / "results.ndjson")
        before = journal.read_bytes()
        other = run([*command, *second])
        after = journal.read_bytes()
        code, err = finish(running)
        messages, stats = ledger(url)
    assert other.returncode == 2, other.stderr.decode()
    assert f"being run by process {running.pid} on host " in other.stderr.decode()
    assert after.startswith(before), "the second run changed the running job's journal"
    assert code == 0, err
    account = check_exactly_once(
        read_results(tmp_path / "results.ndjson"), lines, messages, stats, idempotent=False
    )
    assert account.by_status == {"QUEUE": len(lines)}


def test_kill_9_leaves_the_lock_file_but_not_the_lock(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 2000)
    lock = tmp_path / "results.ndjson.lock"
    with gateway_process("--no-rate-limit", "--latency-ms", "200", api_key=KEY) as url:
        command = send_command(source, tmp_path, url)
        running = start(command)
        wait_until_sending(running, tmp_path / "results.ndjson")
        holder = orjson.loads(lock.read_bytes())
        assert holder["pid"] == running.pid
        assert {"host", "since"} <= set(holder)
        running.kill()
        running.wait(timeout=10)
        assert running.stderr is not None
        running.stderr.close()
        assert lock.exists()  # left behind by the killed run: no obstacle
        done = run([*command, "--resume"])
        messages, stats = ledger(url)
    assert done.returncode in (0, 1), done.stderr.decode()
    assert not lock.exists()  # a run that ends removes its lock file
    check_exactly_once(
        read_results(tmp_path / "results.ndjson"), lines, messages, stats, idempotent=False
    )
