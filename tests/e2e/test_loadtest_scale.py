"""``dispatcher loadtest`` at scale (issue 15), through the real CLI: the shared quota
(``--quota-url``, a real Redis or Valkey on loopback) and ``--workers``.

What the quota assertions read is the emulator's ledger (its rate limiting off, so only
the senders keep the rate) and the report's counts, never the test's clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from tests.support.cli import CODE, KEY, by_line, dispatcher, env, send_args, write_lines
from tests.support.emulators import EmulatorFactory
from tests.support.redis_server import RedisServer, free_port
from tests.unit.quota import conftest as quota_fixtures

redis_server = quota_fixtures.redis_server

RATE = 50
LINES = 100


async def test_a_loadtest_and_a_send_share_one_code_within_its_rate(
    emulator_factory: EmulatorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    lines = [{"to": f"+52550{k:07d}", "params": [k, 1]} for k in range(1, LINES + 1)]
    write_lines(tmp_path / "in.ndjson", lines)
    send = dispatcher(
        *send_args(emulator.base_url, tmp_path / "in.ndjson", "--rate", f"{CODE}={RATE}"),
        "--quota-url",
        redis_server.url,
        "--results",
        tmp_path / "results.ndjson",
        cwd=tmp_path,
    )
    # Alone, 40 requests/s would fit in the code's 50/s; with the send beside it they
    # do not: both default to the namespace of the same base URL.
    loadtest = dispatcher(
        "loadtest",
        "--base-url",
        emulator.base_url,
        "--synthetic",
        "--from",
        CODE,
        "--rate",
        "40",
        "--duration",
        "3s",
        "--quota-url",
        redis_server.url,
        "--quota-rate",
        str(RATE),
        "--json",
        "--quiet",
        cwd=tmp_path,
    )
    sent, tested = await asyncio.gather(send, loadtest)
    assert sent.code == 0, sent.stderr
    assert tested.code == 0, tested.stderr
    results = [orjson.loads(line) for line in (tmp_path / "results.ndjson").read_bytes().split()]
    assert {r["status"] for r in by_line(results).values()} == {"QUEUE"}
    report = orjson.loads(tested.stdout)
    assert report["requests"] == 120
    assert report["quota"]["late_starts"] > 0  # the send's share made the test wait
    assert report["late_starts"] >= report["quota"]["late_starts"]
    assert "for the shared quota" in tested.stderr

    stats = await emulator.stats()
    ledger = stats["codes"][CODE]
    assert ledger["accepted"] == LINES + report["sent"]
    # Together, never more than the code's bound of SPEC §4 in any 1-second window
    # (without the shared quota the two reach 90/s).
    assert ledger["max_window"] <= 1.1 * RATE, ledger
    assert stats["responses"].get("429", 0) == 0


async def test_a_redis_that_cannot_be_reached_exits_3_before_any_request(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    run = await dispatcher(
        "loadtest",
        "--base-url",
        emulator.base_url,
        "--synthetic",
        "--duration",
        "1s",
        "--quota-url",
        f"redis://127.0.0.1:{free_port()}/0",
        cwd=tmp_path,
    )
    assert run.code == 3, run.stderr
    assert "cannot reach the shared quota's Redis" in run.stderr
    assert "Traceback" not in run.stderr
    stats = await emulator.stats()
    assert sum(stats["requests"].values()) == 0


async def test_the_redis_password_is_refused_in_the_url_and_never_shown(tmp_path: Path) -> None:
    secret = "Loadtest-Redis-Pw-4471"
    for where in ("flag", "file"):
        args = ["loadtest", "--duration", "1s"]
        if where == "flag":
            args += ["--quota-url", f"redis://:{secret}@127.0.0.1:6379/0"]
        else:
            (tmp_path / "pw").write_text(secret + "\n")
            closed = f"redis://127.0.0.1:{free_port()}/0"
            args += ["--quota-url", closed, "--redis-password-file", "pw"]
        run = await dispatcher(*args, cwd=tmp_path, environ=env(None))
        assert run.code == (2 if where == "flag" else 3), run.stderr
        assert secret not in run.stderr
        assert secret.encode() not in run.stdout
        assert "Traceback" not in run.stderr
