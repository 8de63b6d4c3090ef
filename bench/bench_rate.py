"""Rate-limit accuracy, measured at the gateway: one send per rate, each with its own
sender code and ``--rate CODE=R``. Prints ONE JSON object.

The emulator runs with ``--no-rate-limit`` (it accepts everything and only measures),
so what it sees is what the client's limiter let through. From its
``/_emulator/stats`` per code: ``max_window`` (most messages in any sliding second,
the first included) must stay within 1.1 x R (R + 1 below 10/s); the sustained rate,
messages after the first accept over the time from first to last accept, must be at
least 95 % of R. Each send carries about ``--seconds`` worth of messages.

    .venv/bin/python bench/bench_rate.py [--rates 1 10 100 1000] [--seconds 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from typing import Any

import _harness as h
import orjson

TEMPLATE = "Your code is {0}"


def bound(rate: float) -> float:
    """The most a sliding second may carry (SPEC §4)."""
    return rate + 1 if rate < 10 else 1.1 * rate


def measure(server: h.Server, rate: int, seconds: float, workdir: str) -> dict[str, Any]:
    code = f"RATE{rate}"
    count = max(2, round(rate * seconds))
    source = os.path.join(workdir, f"in-{rate}.ndjson")
    with open(source, "wb") as f:
        for i in range(count):
            f.write(orjson.dumps({"to": f"+5255{i:08d}", "params": [f"{i:04d}"]}) + b"\n")
    results = os.path.join(workdir, f"results-{rate}.ndjson")
    cmd = [
        h.PYTHON, "-m", "dispatcher", "send", source, "--from", code, "--text", TEMPLATE,
        "--base-url", server.base_url, "--rate", f"{code}={rate}", "--results", results,
        "--no-progress",
    ]  # fmt: skip
    done = h.run_child(cmd, env=h.env_with_key())
    if done.returncode != 0:
        raise SystemExit(f"send exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    stats = server.stats()["codes"][code]
    # The messages of the first accepted request are not part of a rate measured from
    # its arrival: count the rest over the span. Ledger "full" keeps the accept times.
    first_batch = sum(1 for m in messages(server) if m["from"] == code and m["t"] == stats["first"])
    span = stats["last"] - stats["first"]
    sustained = (stats["accepted"] - first_batch) / span if span > 0 else 0.0
    limit = bound(rate)
    return {
        "rate": rate,
        "code": code,
        "messages": count,
        "accepted": stats["accepted"],
        "max_window": stats["max_window"],
        "bound": round(limit, 1),
        "first_batch": first_batch,
        "span_s": round(span, 3),
        "sustained_rate": round(sustained, 2),
        "sustained_share": round(sustained / rate, 3),
        "wall_s": round(done.wall_s, 2),
        "ok": stats["accepted"] == count
        and stats["max_window"] <= limit
        and sustained >= 0.95 * rate,
    }


def messages(server: h.Server) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(server.root + "/_emulator/messages", timeout=60) as resp:
        return [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    machine = h.machine()
    workdir = tempfile.mkdtemp(prefix="bench-rate-")
    server = h.start_emulator(ledger="full")
    try:
        runs = []
        for rate in args.rates:
            server.reset()
            runs.append(measure(server, rate, args.seconds, workdir))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    h.emit(
        {
            "bench": "rate",
            **machine,
            "seconds_per_rate": args.seconds,
            "runs": runs,
            "all_ok": all(r["ok"] for r in runs),
        }
    )


if __name__ == "__main__":
    main()
