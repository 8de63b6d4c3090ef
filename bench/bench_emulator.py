"""How fast is the emulator? Prints one JSON object.

Starts ``dispatcher gateway`` in its own process (pinned to core 0 when there are two),
then a minimal aiohttp client (pinned to core 1) posts pre-built bodies with
concurrency 16: the single endpoint (batch 1) and the batch endpoint (batch 1000,
personalised ``Hi {0}, your balance is ${1}`` with a name and an amount). A request
counter is patched into each body's numbers (one bytes.replace) so that, as in a real
send, no number gets the same text twice. Each phase warms up, resets the emulator,
runs for ``--seconds``, then checks the emulator's stats: accepted must equal what the
client was told was accepted. ``server_cpu_share`` near 1 means the emulator was the
bottleneck; ``recipients_per_server_cpu_s`` is its throughput per CPU-second.

    .venv/bin/python bench/bench_emulator.py [--seconds 5] [--ledger full|counts]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson

KEY = "bench-key"
CONCURRENCY = 16


def start_gateway(ledger: str, pin: set[int] | None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "dispatcher", "gateway", "--port", "0", "--api-key", KEY,
            "--no-rate-limit", "--ledger", ledger,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    if pin:
        os.sched_setaffinity(proc.pid, pin)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"gateway did not start: {line!r}")
    return proc, line.removeprefix("listening on ").strip()


#: Each request's numbers get a 6-digit request counter in place of this marker, so
#: no two requests text the same numbers (as in a real send: no duplicates).
MARK = b"999999"


def single_body() -> bytes:
    return orjson.dumps(
        {"from": "12345", "text": "Hi Joshua, your balance is $20.5", "to": "+52999999000"}
    )


def batch_body(size: int) -> bytes:
    to = [
        {"to": f"+52999999{i:04d}", "params": [f"Name{i}", round(i * 1.37, 2)]} for i in range(size)
    ]
    text = "Hi {0}, your balance is ${1}"
    return orjson.dumps({"from": "12345", "text": text, "to": to, "type": "MT"})


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    template: bytes,
    per_body: int,
    seconds: float,
    keys: bool,
) -> dict[str, Any]:
    """Post bodies round-robin from CONCURRENCY workers for ``seconds``."""
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    sent = [0]
    errors = [0]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    async def worker() -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            h = {**headers, "Idempotency-Key": f"bench-{n}"} if keys else headers
            body = template.replace(MARK, b"%06d" % (n % 1_000_000))
            async with session.post(url, data=body, headers=h) as resp:
                await resp.read()
                if resp.status == 200:
                    sent[0] += per_body
                else:
                    errors[0] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    return {
        "recipients": sent[0],
        "requests": next(counter),
        "errors": errors[0],
        "elapsed_s": round(elapsed, 3),
        "recipients_per_s": round(sent[0] / elapsed),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase(
    session: aiohttp.ClientSession,
    server_pid: int,
    root: str,
    path: str,
    template: bytes,
    per_body: int,
    seconds: float,
    keys: bool,
) -> dict[str, Any]:
    url = root + path
    await drive(session, url, template, per_body, min(1.0, seconds / 4), keys)  # warm-up
    async with session.post(f"{root}/_emulator/reset") as resp:
        resp.raise_for_status()
    cpu_before = cpu_seconds(server_pid)
    result = await drive(session, url, template, per_body, seconds, keys)
    server_cpu = cpu_seconds(server_pid) - cpu_before
    # Below ~0.95 the client, not the emulator, was the bottleneck.
    result["server_cpu_share"] = round(server_cpu / result["elapsed_s"], 2)
    result["recipients_per_server_cpu_s"] = round(result["recipients"] / max(server_cpu, 1e-9))
    async with session.get(f"{root}/_emulator/stats") as resp:
        stats = orjson.loads(await resp.read())
    result["emulator_accepted"] = stats["accepted"]
    result["accepted_matches_sent"] = stats["accepted"] == result["recipients"]
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # Other work on the machine skews everything; say how busy it was.
    load_before = round(os.getloadavg()[0], 2)
    two_cores = len(os.sched_getaffinity(0)) >= 2
    server_core, client_core = ({0}, {1}) if two_cores else (None, None)
    proc, root = start_gateway(args.ledger, server_core)
    if client_core:
        os.sched_setaffinity(0, client_core)
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            batch1 = batch1000 = None
            if args.only in (None, "batch1"):
                batch1 = await phase(
                    session, proc.pid, root, "/raven/v2/messages", single_body(), 1,
                    args.seconds, args.keys,
                )  # fmt: skip
            if args.only in (None, "batch1000"):
                batch1000 = await phase(
                    session, proc.pid, root, "/raven/v3/messages/batch", batch_body(1000),
                    1000, args.seconds, args.keys,
                )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "bench": "emulator",
        "load_before": load_before,
        "pinned": two_cores,
        "loop": loop_name(),
        "ledger": args.ledger,
        "idempotency_keys": args.keys,
        "concurrency": CONCURRENCY,
        "batch1": batch1,
        "batch1000": batch1000,
        "sanity_ok": all(p["accepted_matches_sent"] for p in (batch1, batch1000) if p),
    }


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ledger", choices=["full", "counts"], default="full")
    parser.add_argument("--only", choices=["batch1", "batch1000"], help="run one phase")
    parser.add_argument("--no-keys", dest="keys", action="store_false", help="no Idempotency-Key")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(main(args))
    except ImportError:
        result = asyncio.run(main(args))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    run()
