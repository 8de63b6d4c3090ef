"""Start-up: `dispatcher --version`, and the time from launching `dispatcher send` until
its first request reaches a server. Prints ONE JSON object.

The server is a tiny HTTP server in this process (on its own thread, pinned with this
process to core 0) that notes when the first request arrives (``time.monotonic``, the
clock the launch time is read from) and answers in the gateway's shape. ``send`` runs
on core 1 with 10 recipients. Medians of ``--runs`` launches.

    .venv/bin/python bench/bench_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, ClassVar

import _harness as h
import orjson


class FirstRequest(asyncio.Protocol):
    """HTTP/1.1 just enough for aiohttp's client; records the first arrival."""

    arrivals: ClassVar[list[float]] = []

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if not self.buffer and not data.startswith(b"GET"):
            FirstRequest.arrivals.append(time.monotonic())
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self.buffer[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body = orjson.loads(self.buffer[end + 4 : end + 4 + length])
        self.buffer = self.buffer[end + 4 + length :]
        ids = [{"id": f"id{i}", "mobile": r["to"]} for i, r in enumerate(body["to"])]
        reply = orjson.dumps(
            {
                "meta": {"timestamp": 0, "transactionId": "t"},
                "data": {"ids": ids, "invalidNumber": [], "status": "QUEUE"},
            }
        )
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply)
        )


def serve() -> tuple[int, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(loop.create_server(FirstRequest, "127.0.0.1", 0))
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait()
    return port[0], loop


def version_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "dispatcher")
    if os.path.exists(script):
        return [script, "--version"]
    return [h.PYTHON, "-m", "dispatcher", "--version"]


def timed(cmd: list[str], **kwargs: Any) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    machine = h.machine()
    if h.two_cores():
        os.sched_setaffinity(0, {h.SERVER_CORE})
    client = h.pin_to(h.CLIENT_CORE)

    version = version_command()
    timed(version, preexec_fn=client)  # warm the page cache and the .pyc files
    version_s = [timed(version, preexec_fn=client) for _ in range(args.runs)]

    port, _loop = serve()
    workdir = tempfile.mkdtemp(prefix="bench-startup-")
    source = os.path.join(workdir, "in.ndjson")
    with open(source, "wb") as f:
        for i in range(10):
            f.write(orjson.dumps({"to": f"+5255{i:08d}", "params": ["Ann", 1.5]}) + b"\n")
    first_s, total_s = [], []
    try:
        for n in range(args.runs + 1):
            results = os.path.join(workdir, f"results-{n}.ndjson")
            cmd = [
                h.PYTHON, "-m", "dispatcher", "send", source, "--from", "12345", "--text",
                "Hi {0}, {1}", "--base-url", f"http://127.0.0.1:{port}/raven",
                "--results", results, "--no-progress",
            ]  # fmt: skip
            before = len(FirstRequest.arrivals)
            start = time.monotonic()
            subprocess.run(
                cmd,
                check=True,
                env=h.env_with_key(),
                preexec_fn=client,
                stderr=subprocess.DEVNULL,
            )
            total = time.monotonic() - start
            if n == 0:
                continue  # the warm-up
            first_s.append(FirstRequest.arrivals[before] - start)
            total_s.append(total)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    h.emit(
        {
            "bench": "startup",
            **machine,
            "runs": args.runs,
            "version_command": " ".join(os.path.basename(c) for c in version),
            "version_s": {
                "median": round(statistics.median(version_s), 3),
                "min": round(min(version_s), 3),
                "max": round(max(version_s), 3),
            },
            "send_first_request_s": {
                "median": round(statistics.median(first_s), 3),
                "min": round(min(first_s), 3),
                "max": round(max(first_s), 3),
            },
            "send_total_10_recipients_s": round(statistics.median(total_s), 3),
            "targets": {"version_under_0.3_s": statistics.median(version_s) < 0.3},
        }
    )


if __name__ == "__main__":
    main()
