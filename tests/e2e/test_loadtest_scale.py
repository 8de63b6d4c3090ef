"""``dispatcher loadtest`` at scale (issue 15), through the real CLI: the shared quota
(``--quota-url``, a real Redis or Valkey on loopback) and ``--workers``.

What the quota assertions read is the emulator's ledger (its rate limiting off, so only
the senders keep the rate) and the report's counts, never the test's clock.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import CODE, KEY, by_line, dispatcher, env, send_args, write_lines
from tests.support.emulators import EmulatorFactory
from tests.support.redis_server import RedisServer, free_port
from tests.unit.quota import conftest as quota_fixtures

redis_server = quota_fixtures.redis_server

RATE = 50
LINES = 100


def against(base_url: str, *extra: str) -> list[str]:
    """``loadtest`` against the emulator at ``base_url``, generated numbers."""
    return ["loadtest", "--base-url", base_url, "--synthetic", *extra]


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
        *against(emulator.base_url),
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
    closed = f"redis://127.0.0.1:{free_port()}/0"
    run = await dispatcher(
        *against(emulator.base_url, "--duration", "1s", "--quota-url", closed), cwd=tmp_path
    )
    assert run.code == 3, run.stderr
    assert "cannot reach the shared quota's Redis" in run.stderr
    assert "Traceback" not in run.stderr
    stats = await emulator.stats()
    assert sum(stats["requests"].values()) == 0


async def test_the_redis_password_is_refused_in_the_url_and_never_shown(tmp_path: Path) -> None:
    secret = "Loadtest-Redis-Pw-4471"
    (tmp_path / "pw").write_text(secret + "\n")
    closed = f"redis://127.0.0.1:{free_port()}/0"
    in_url = ["--quota-url", f"redis://:{secret}@127.0.0.1:6379/0"]  # refused: exit 2
    in_file = ["--quota-url", closed, "--redis-password-file", "pw"]  # unreachable: 3
    for flags, code in ((in_url, 2), (in_file, 3)):
        run = await dispatcher("loadtest", *flags, cwd=tmp_path, environ=env(None))
        assert run.code == code, run.stderr
        assert secret not in run.stderr + run.stdout.decode()
        assert "Traceback" not in run.stderr


# --- --workers ----------------------------------------------------------------------------


async def test_two_workers_make_one_report_of_the_whole_schedule(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    run = await dispatcher(
        *against(emulator.base_url),
        "--workers",
        "2",
        "--rate",
        "101",  # odd: the workers' shares differ by one request a second
        "--duration",
        "2s",
        "--threshold",
        "p99<30s",
        "--threshold",
        "error_rate<=0",
        "--json",
        "--quiet",
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr
    report = orjson.loads(run.stdout)
    assert report["workers"] == 2
    assert report["requests"] == 202  # the schedule's total, exactly
    assert report["sent"] + report["dropped"] == report["requests"]
    assert report["outcomes"]["ok"] == report["answered"]
    assert sum(row["requests"] for row in report["series"]) == report["requests"]
    assert sum(row["sent"] for row in report["series"]) == report["sent"]
    assert [row["t"] for row in report["series"]] == list(range(len(report["series"])))
    assert [v["passed"] for v in report["thresholds"]] == [True, True]
    stats = await emulator.stats()
    assert sum(stats["requests"].values()) == report["sent"]  # nothing sent twice


async def test_a_threshold_fails_on_the_merged_numbers(tmp_path: Path) -> None:
    run = await dispatcher(
        "loadtest",
        "--workers",
        "2",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--latency-ms",
        "20",  # the embedded emulator, started once by the parent, answers no sooner
        "--threshold",
        "min<15ms",
        "--json",
        "--quiet",
        cwd=tmp_path,
        environ=env(None),
    )
    assert run.code == 99, run.stderr
    report = orjson.loads(run.stdout)
    assert report["target"]["embedded_emulator"] is True
    assert report["requests"] == 50
    assert report["latency_ms"]["min"] >= 20
    assert report["thresholds"][0]["passed"] is False


async def test_workers_serve_one_endpoint_and_stop_together_on_sigint(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    flags = ["--rate", "40", "--duration", "60s", "--workers", "2", "--metrics-port", "0"]
    pipe = asyncio.subprocess.PIPE
    command = [sys.executable, "-m", "dispatcher", "loadtest", *flags, "--quiet", "--json"]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, env=env(None), stdin=asyncio.subprocess.DEVNULL, stdout=pipe,
        stderr=pipe,
    )  # fmt: skip
    assert proc.stderr is not None
    url = re.search(r"metrics on (http://\S+/metrics)", (await proc.stderr.readline()).decode())
    assert url, "no metrics URL"
    ok = ("dispatcher_loadtest_requests_total", (("outcome", "ok"),))
    samples = await _scrape(http, url[1])
    while samples.get(ok, 0) < 6:  # until both workers' answers show on the one endpoint
        await asyncio.sleep(0.05)
        samples = await _scrape(http, url[1])
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err
    requests = samples[("dispatcher_requests_total", ())]
    assert samples[("dispatcher_request_duration_seconds_count", ())] == requests
    report = orjson.loads(out)
    assert report["interrupted"] is True
    assert report["workers"] == 2
    assert 6 <= report["requests"] < 40 * 60
    assert sum(row["requests"] for row in report["series"]) == report["requests"]
    assert "Traceback" not in err.decode()


async def _scrape(
    http: aiohttp.ClientSession, url: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by name and labels."""
    async with http.get(url) as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
