"""kill -9 the sender again and again, resume each time, then count what was lost or
doubled. Prints one JSON object.

    python bench/chaos_resume.py [--count 200000] [--kills 20] [--no-idempotency]

The emulator runs as its own process (full ledger, light faults, added latency so that
a send lasts long enough to be cut up); the sender is the real CLI. After the last
cycle, `dispatcher.emulator.audit` checks the results against the ledger: every input
line has exactly one result (lost = lines without one, doubled = lines with two), the
ledger recorded no message twice, every QUEUE id is in the ledger, and every ledger
message is covered by a QUEUE (or, without idempotency, an AMBIGUOUS) line.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

import _harness as h
import orjson

from dispatcher.emulator import audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--no-idempotency", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    idempotent = not args.no_idempotency
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "in.ndjson"
        lines = audit.write_input(source, args.count)
        flags = ["--latency-ms", "25", "--jitter-ms", "10", "--seed", "1",
                 "--fail-429", "0.02", "--fail-500-after", "0.02", "--drop-after", "0.01",
                 "--fault-retry-after", "0"]  # fmt: skip
        started = time.monotonic()
        gateway = h.start_emulator(*flags, ledger="full")
        try:
            command = [
                h.PYTHON, "-m", "dispatcher", "send", str(source), "--base-url",
                gateway.base_url, "--from", "12345", "--text", audit.TEXT,
                "--rate", "12345=inf", "--batch-size", "100", "--concurrency", "8",
                "--results", str(work / "results.ndjson"), "--no-progress",
                *(["--idempotency"] if idempotent else []),
            ]  # fmt: skip
            kills, cycles, code = 0, 0, None
            while True:
                cycles += 1
                proc = subprocess.Popen(
                    [*command, *(["--resume"] if cycles > 1 else [])],
                    env=h.env_with_key(),
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
            ledger = gateway.messages()
            stats = gateway.stats()
        finally:
            gateway.stop()
        results = [orjson.loads(raw) for raw in (work / "results.ndjson").read_bytes().splitlines()]
    account = audit.audit(results, lines, ledger, stats, idempotent=idempotent)
    report = {
        "recipients": args.count,
        "idempotency": idempotent,
        "kill_9": kills,
        "cycles": cycles,
        "final_exit_code": code,
        **account.figures,
        "exactly_once": not account.problems,
        "problems": account.problems,
        "statuses": dict(account.by_status),
        "replays": stats["replays"],
        "faults": stats["faults"],
        "seconds": round(time.monotonic() - started, 1),
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
