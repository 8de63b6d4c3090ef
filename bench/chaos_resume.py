"""kill -9 the sender again and again, resume each time, then count what was lost or
doubled. Prints one JSON object.

    python bench/chaos_resume.py [--count 200000] [--kills 20] [--no-idempotency]

The emulator runs as its own process (full ledger, light faults, added latency so that
a send lasts long enough to be cut up); the sender is the real CLI. After the last
cycle it checks: every input line has exactly one result (lost = lines without one,
doubled = lines with two), the ledger recorded no message twice, every QUEUE id is in
the ledger, and every ledger message is covered by a QUEUE (or, without idempotency,
an AMBIGUOUS) line.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.exactly_once import TEXT, write_input  # noqa: E402
from tests.support.gateway_process import gateway_process  # noqa: E402

KEY = "chaos-bench-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--no-idempotency", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    idempotent = not args.no_idempotency
    env = {**os.environ, "DISPATCHER_API_KEY": KEY}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "in.ndjson"
        lines = write_input(source, args.count)
        flags = ["--no-rate-limit", "--latency-ms", "25", "--jitter-ms", "10", "--seed", "1",
                 "--fail-429", "0.02", "--fail-500-after", "0.02", "--drop-after", "0.01",
                 "--fault-retry-after", "0"]  # fmt: skip
        started = time.monotonic()
        with gateway_process(*flags, api_key=KEY) as url:
            command = [
                sys.executable, "-m", "dispatcher", "send", str(source), "--base-url", url,
                "--from", "12345", "--text", TEXT, "--rate", "12345=inf", "--batch-size", "100",
                "--concurrency", "8", "--results", str(work / "results.ndjson"), "--no-progress",
                *(["--idempotency"] if idempotent else []),
            ]  # fmt: skip
            kills, cycles, code = 0, 0, None
            while True:
                cycles += 1
                proc = subprocess.Popen(
                    [*command, *(["--resume"] if cycles > 1 else [])],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                if kills < args.kills:
                    time.sleep(rng.uniform(0.5, 1.5))
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                        kills += 1
                        continue
                code = proc.wait(timeout=600)
                break
            root = url.removesuffix("/raven")
            with urllib.request.urlopen(f"{root}/_emulator/messages", timeout=60) as response:
                ledger = [orjson.loads(line) for line in response.read().splitlines() if line]
            with urllib.request.urlopen(f"{root}/_emulator/stats", timeout=60) as response:
                stats = orjson.loads(response.read())
        results = [orjson.loads(raw) for raw in (work / "results.ndjson").read_bytes().splitlines()]
    per_line = Counter(r["line"] for r in results)
    queued = {r["id"] for r in results if r["status"] == "QUEUE"}
    ambiguous = {r["to"] for r in results if r["status"] == "AMBIGUOUS"}
    ledger_ids = {m["id"] for m in ledger}
    uncovered = [m for m in ledger if m["id"] not in queued]
    report = {
        "recipients": args.count,
        "idempotency": idempotent,
        "kill_9": kills,
        "cycles": cycles,
        "final_exit_code": code,
        "lost_lines": len(lines - set(per_line)),
        "lines_with_two_results": sum(1 for n in per_line.values() if n > 1),
        "ledger_duplicates": stats["duplicates"],
        "queue_ids_missing_from_ledger": len(queued - ledger_ids),
        "ledger_messages_without_queue_result": len(uncovered),
        "ledger_messages_without_any_result": sum(1 for m in uncovered if m["to"] not in ambiguous),
        "statuses": dict(Counter(r["status"] for r in results)),
        "replays": stats["replays"],
        "faults": stats["faults"],
        "seconds": round(time.monotonic() - started, 1),
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
