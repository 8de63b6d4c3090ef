"""``dispatcher send --metrics-port``: the real CLI against the real emulator, its
Prometheus endpoint scraped over HTTP while the job runs and checked against the
results file; a port that cannot be served stops the job at the door (exit 2)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.metrics import PUSH_FD_ENV, WorkerMetrics, serving
from tests.support.cli import CODE, KEY, dispatcher, env, ndjson, send_args
from tests.support.emulators import EmulatorFactory

GATEWAY_INVALID = "+525599000000"


def recipients_input() -> bytes:
    lines = []
    for n in range(1, 301):
        if n % 17 == 0:
            lines.append(b"[not an object]")
        elif n % 7 == 0:
            lines.append(orjson.dumps({"to": f"12ab{n}", "params": ["x", n]}))
        elif n % 13 == 0:
            lines.append(orjson.dumps({"to": GATEWAY_INVALID, "params": ["x", n]}))
        else:
            lines.append(orjson.dumps({"to": f"+5255{n:08d}", "params": [f"p{n}", n]}))
    return b"\n".join(lines) + b"\n"


async def scrape(http: aiohttp.ClientSession, url: str) -> tuple[Counter[tuple[str, str]], str]:
    """The endpoint's recipients by (status, code), and its whole text."""
    async with http.get(url) as response:
        assert response.status == 200
        text = await response.text()
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "dispatcher_recipients":
            for sample in family.samples:
                if sample.name == "dispatcher_recipients_total":
                    counts[sample.labels["status"], sample.labels["code"]] = int(sample.value)
    return counts, text


async def test_the_endpoint_counts_what_the_results_file_holds(
    emulator_factory: EmulatorFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, invalid_prefixes=(GATEWAY_INVALID[1:],)
    )
    args = send_args(
        emulator.base_url,
        "-",
        *("--results", "results.ndjson", "--summary", "summary.json"),
        *("--rate", f"{CODE}=inf", "--batch-size", "9", "--dedupe", "off"),
        *("--metrics-port", "0", "--log-level", "info"),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher",
        *map(str, args),
        cwd=tmp_path,
        env=env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stderr is not None
    logged: list[str] = []
    url = None
    while url is None and (raw := await proc.stderr.readline()):
        logged.append(raw.decode())
        if found := re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", logged[-1]):
            url = found.group(1)
    assert url is not None, "".join(logged)
    drained = asyncio.create_task(proc.stderr.read())
    data = recipients_input()
    proc.stdin.write(data)
    await proc.stdin.drain()
    results = tmp_path / "results.ndjson"
    lines = data.count(b"\n")
    # stdin stays open, so the job runs (and serves) until every line has its result in
    # the file and on the endpoint; the test's timeout bounds the wait, not a clock.
    while True:
        counts, text = await scrape(http, url)
        written = ndjson(results) if results.exists() else []
        if len(written) == lines and counts.total() == lines:
            break
        await asyncio.sleep(0.05)
    expected = Counter((r["status"], CODE if "attempts" in r else "") for r in written)
    assert counts == expected
    assert {
        ("QUEUE", CODE),
        ("INVALID_NUMBER", CODE),
        ("INVALID_NUMBER", ""),
        ("REJECTED", ""),
    } <= set(counts)
    assert KEY not in text
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 60)
    stderr = "".join(logged) + (await drained).decode()
    assert proc.returncode == 0, stderr
    assert KEY not in stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["statuses"] == dict(Counter(r["status"] for r in written))


async def test_a_busy_metrics_port_stops_the_job_before_anything_is_sent(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    (tmp_path / "in.ndjson").write_bytes(recipients_input())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = await dispatcher(
            *send_args(emulator.base_url, "in.ndjson", "--results", "results.ndjson"),
            *("--metrics-port", str(port)),
            cwd=tmp_path,
        )
    assert run.code == 2, run.stderr
    assert f"--metrics-port {port} on --metrics-host 127.0.0.1: cannot serve" in run.stderr
    assert "Traceback" not in run.stderr
    assert KEY not in run.stderr
    assert not (tmp_path / "results.ndjson").exists()
    assert sum((await emulator.stats())["requests"].values()) == 0


@pytest.mark.parametrize("port", ["65536", "-1", "http"])
async def test_a_metrics_port_out_of_range_is_a_usage_error(tmp_path: Path, port: str) -> None:
    (tmp_path / "in.ndjson").write_bytes(recipients_input())
    run = await dispatcher(
        *send_args("http://127.0.0.1:9/raven", "in.ndjson", "--metrics-port", port), cwd=tmp_path
    )
    assert run.code == 2
    assert "--metrics-port must be a whole number from 0 to 65535" in run.stderr


async def test_workers_push_their_numbers_and_the_parent_serves_the_job_s(
    emulator_factory: EmulatorFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # Two CLI processes stand for the workers of one job; the test is their parent.
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, invalid_prefixes=(GATEWAY_INVALID[1:],)
    )
    (tmp_path / "in.ndjson").write_bytes(recipients_input())
    gathered = WorkerMetrics()
    with socket.socket() as taken:  # the parent's port: a worker must never bind it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        async with serving("127.0.0.1", 0, gathered.snapshot) as url:
            procs = []
            for k in (1, 2):
                pipe = await gathered.pipe(k)
                args = send_args(
                    emulator.base_url,
                    "in.ndjson",
                    *("--results", f"results{k}.ndjson", "--rate", f"{CODE}=inf"),
                    *("--batch-size", "9", "--dedupe", "off", "--metrics-port", port),
                )
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "dispatcher",
                        *map(str, args),
                        cwd=tmp_path,
                        env=env(**{PUSH_FD_ENV: str(pipe)}),
                        pass_fds=(pipe,),
                        stdin=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE,
                    )
                )
                os.close(pipe)
            runs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
            assert [proc.returncode for proc in procs] == [0, 0], runs
            await asyncio.wait_for(gathered.wait(), 60)  # each sent its last snapshot
            counts, text = await scrape(http, url)
    written = ndjson(tmp_path / "results1.ndjson") + ndjson(tmp_path / "results2.ndjson")
    assert counts == Counter((r["status"], CODE if "attempts" in r else "") for r in written)
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
    assert samples["dispatcher_lines_read_total"] == recipients_input().count(b"\n")
    assert samples["dispatcher_requests_total"] == sum(
        (await emulator.stats())["requests"].values()
    )
    assert (
        samples["dispatcher_request_duration_seconds_count"] == samples["dispatcher_requests_total"]
    )


async def test_loadtest_serves_its_numbers_while_it_runs(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "dispatcher", "loadtest", "--rate", "40", "--duration", "60s"),
        *("--metrics-port", "0", "--quiet"),
        cwd=tmp_path,
        env=env(api_key=None),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    first = (await proc.stderr.readline()).decode()
    found = re.search(r"loadtest: metrics on (http://127\.0\.0\.1:\d+/metrics)", first)
    assert found, first
    while True:  # until some requests have been answered; then stop it (SIGINT)
        async with http.get(found.group(1)) as response:
            text = await response.text()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        if samples.get(("dispatcher_loadtest_requests_total", (("outcome", "ok"),)), 0) >= 3:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err
    requests = samples[("dispatcher_requests_total", ())]
    assert samples[("dispatcher_request_duration_seconds_count", ())] == requests
    by_outcome = "dispatcher_loadtest_requests_total"
    assert sum(v for (name, _), v in samples.items() if name == by_outcome) == requests
    assert ("dispatcher_loadtest_late_starts_total", ()) in samples
    assert "dispatcher_recipients_total" not in text  # send's metrics are not a load test's


async def test_loadtest_on_a_busy_metrics_port_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        run = await dispatcher(
            *("loadtest", "--rate", "10", "--duration", "1s", "--metrics-port", port),
            cwd=tmp_path,
            environ=env(api_key=None),
        )
    assert run.code == 2, run.stderr
    assert f"--metrics-port {port} on --metrics-host 127.0.0.1: cannot serve" in run.stderr


async def test_a_workers_job_serves_one_endpoint_for_every_worker(
    emulator_factory: EmulatorFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    args = send_args(
        emulator.base_url,
        "-",
        *("--results", "results.ndjson", "--workers", "2", "--dedupe", "off"),
        *("--rate", f"{CODE}=inf", "--batch-size", "9", "--metrics-port", "0"),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", *map(str, args),
        cwd=tmp_path, env=env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stderr is not None
    url = None
    while url is None and (raw := await proc.stderr.readline()):
        if found := re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", raw.decode()):
            url = found.group(1)
    assert url is not None
    drained = asyncio.create_task(proc.stderr.read())
    data = recipients_input()
    proc.stdin.write(data)
    await proc.stdin.drain()
    lines = data.count(b"\n")
    while (await scrape(http, url))[0].total() < lines:  # both workers' numbers, merged
        await asyncio.sleep(0.05)
    counts, _ = await scrape(http, url)
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 60)
    assert proc.returncode == 0, (await drained).decode()
    written = ndjson(tmp_path / "results.ndjson")
    assert counts == Counter((r["status"], CODE if "attempts" in r else "") for r in written)
