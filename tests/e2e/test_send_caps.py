"""Job-wide caps counted in Redis (``--quota-url`` with ``--max-messages``…) through the
real CLI: shards on "hosts" and workers together never exceed a cap — the emulator's
ledger proves it — and a ``--resume`` with a higher cap continues from the job's count.

A real Redis (or Valkey) server on loopback (no fake, no skip)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dispatcher.shares import share_of
from tests.support.cli import dispatcher, ndjson, send_args, wait_while_running, write_lines
from tests.support.emulators import EmulatorFactory, RunningEmulator
from tests.support.exactly_once import (
    TEST_KEY,
    check_exactly_once,
    ledger,
    read_results,
    send_command,
    write_input,
)
from tests.support.gateway_process import gateway_process
from tests.support.redis_server import RedisServer, free_port
from tests.unit.quota import conftest as quota_fixtures

redis_server = quota_fixtures.redis_server

KEY = "e2e-Kq7vX2pLw9ZtR4mN"


def recipients(count: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"to": f"+52550000{i:04d}", "params": ["Ana", i]} for i in range(start, start + count)]


async def shards(
    emulator: RunningEmulator, redis: RedisServer, tmp_path: Path, source: Path, *extra: str
) -> list[Any]:
    """Both shards of ``source`` at once, each in its own directory (its own "host")."""
    runs = []
    for k in (1, 2):
        host = tmp_path / f"host{k}"
        host.mkdir(exist_ok=True)
        runs.append(
            dispatcher(
                *send_args(emulator.base_url, source, "--results", host / "out.ndjson"),
                "--shard",
                f"{k}/2",
                "--quota-url",
                redis.url,
                *extra,
                cwd=host,
            )
        )
    return list(await asyncio.gather(*runs))


def newest(tmp_path: Path) -> dict[int, str]:
    """Each line's newest outcome across the shards' results."""
    out: dict[int, str] = {}
    for k in (1, 2):
        for result in ndjson(tmp_path / f"host{k}" / "out.ndjson"):
            out[result["line"]] = result["status"]
    return out


async def test_two_shards_with_one_cap_never_exceed_it_and_resume_from_its_count(
    emulator_factory: EmulatorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(tmp_path / "in.ndjson", recipients(60))
    first = await shards(emulator, redis_server, tmp_path, source, "--max-messages", "25")
    codes = sorted(run.code for run in first)
    assert codes in ([0, 4], [4, 4]), [run.stderr for run in first]
    assert (await emulator.stats())["accepted"] == 25  # the ledger: together, the cap
    statuses = newest(tmp_path)
    assert sorted(statuses) == list(range(1, 61))  # every line has its one result
    assert list(statuses.values()).count("NOT_SENT") == 35
    assert any(
        "max_messages 25 reached" in r.get("error", "")
        for k in (1, 2)
        for r in ndjson(tmp_path / f"host{k}" / "out.ndjson")
    )

    # Both shards resumed with a higher cap: they go on from the job's 25, not from 0
    # (which would send 40 more) and not from 25 counted twice (which would send none).
    again = await shards(
        emulator, redis_server, tmp_path, source, "--max-messages", "40", "--resume"
    )
    assert 4 in {run.code for run in again}, [run.stderr for run in again]
    messages = emulator.messages()
    assert len(messages) == 40
    assert len({m["to"] for m in messages}) == 40  # nothing sent twice
    statuses = newest(tmp_path)
    assert list(statuses.values()).count("NOT_SENT") == 20


async def test_a_cap_without_a_quota_url_is_still_refused_with_shards(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", recipients(2))
    run = await dispatcher(
        *send_args("http://127.0.0.1:9", source, "--shard", "1/2", "--max-messages", "1"),
        cwd=tmp_path,
    )
    assert run.code == 2
    assert "--quota-url" in run.stderr
    assert "Traceback" not in run.stderr


async def test_workers_with_a_quota_url_share_one_count(
    emulator_factory: EmulatorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Worker 1's share holds 2 lines and worker 2's 10: a cap of 8 split 4 + 4 would
    send 6; counted in Redis it sends 8, neither split nor stranded."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    lines: list[dict[str, Any]] = []
    small = large = 0
    i = 1
    while small < 2 or large < 10:
        number = f"+52550000{i:04d}"
        if share_of(number, 0, 2) == 0 and small < 2:
            small += 1
            lines.append({"to": number, "params": ["Ana", i]})
        elif share_of(number, 0, 2) == 1 and large < 10:
            large += 1
            lines.append({"to": number, "params": ["Ana", i]})
        i += 1
    source = write_lines(tmp_path / "in.ndjson", lines)
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--results", tmp_path / "out.ndjson"),
        "--workers", "2", "--quota-url", redis_server.url, "--max-messages", "8",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 4, run.stderr
    assert (await emulator.stats())["accepted"] == 8
    # unfinished (resumable): the results stay in the workers' files until a --resume
    statuses = [r["status"] for k in (1, 2) for r in ndjson(tmp_path / f"out.ndjson.w{k}of2")]
    assert sorted(statuses) == ["NOT_SENT"] * 4 + ["QUEUE"] * 8


async def test_caps_with_an_unreachable_redis_send_nothing(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(tmp_path / "in.ndjson", recipients(5))
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--results", tmp_path / "out.ndjson"),
        "--shard", "1/2", "--max-messages", "3",
        "--quota-url", f"redis://127.0.0.1:{free_port()}/0",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 3
    assert "nothing was sent" in run.stderr
    assert "Traceback" not in run.stderr
    assert (await emulator.stats())["accepted"] == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [("a b", "--caps-key"), ("x" * 65, "--caps-key"), ("fine", "give --quota-url")],
)
async def test_a_bad_caps_key_is_a_usage_error(tmp_path: Path, name: str, message: str) -> None:
    source = write_lines(tmp_path / "in.ndjson", recipients(1))
    quota = [] if message == "give --quota-url" else ["--quota-url", "redis://127.0.0.1:9/0"]
    run = await dispatcher(
        *send_args("http://127.0.0.1:9", source, "--caps-key", name, *quota), cwd=tmp_path
    )
    assert run.code == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.chaos
def test_a_shard_killed_then_resumed_counts_each_message_once_against_the_cap(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """kill -9 mid-run leaves lines reserved and never sent, and batches in flight; the
    resume recounts this shard's part from its results (the in-flight lines at their
    most until read again, then exactly): the job ends exactly at the cap, and a
    second resume with a higher cap exactly at that one — nothing counted twice, and
    the ledger never above a cap."""
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 3000)
    with gateway_process("--no-rate-limit", "--latency-ms", "60", api_key=TEST_KEY) as url:
        command = [
            *send_command(source, tmp_path, url),
            "--shard", "1/1", "--quota-url", redis_server.url, "--idempotency",
        ]  # fmt: skip
        environ = {**os.environ, "DISPATCHER_API_KEY": TEST_KEY}
        proc = subprocess.Popen(
            [*command, "--max-messages", "2000"], env=environ, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        results = tmp_path / "results.ndjson"
        wait_while_running(
            proc, lambda: results.exists() and results.stat().st_size > 20_000, "it sent"
        )
        proc.kill()
        proc.communicate(timeout=60)
        for cap, left in ((2000, 1000), (2500, 500)):
            done = subprocess.run(
                [*command, "--max-messages", str(cap), "--resume"],
                env=environ, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 4, done.stderr.decode()
            messages, stats = ledger(url)
            account = check_exactly_once(
                read_results(results), lines, messages, stats, idempotent=True
            )
            assert stats["accepted"] == cap  # exactly: never above, nothing counted twice
            assert account.by_status["NOT_SENT"] == left
