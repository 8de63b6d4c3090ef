"""Peak RSS of `dispatcher send` at 1 M and 10 M recipients streamed through a pipe.
Prints ONE JSON object.

    dispatcher gen --count N --seed 1 | dispatcher send - --results FILE ...

The emulator (``--ledger counts --no-rate-limit``) and ``gen`` share core 0; ``send``
runs alone on core 1. Its peak RSS comes from the kernel (wait4's ``ru_maxrss``), so
nothing samples it from inside. Results and the journal go to a temporary directory
(about 1.8 GB at 10 M), removed afterwards. Memory must not grow with the input:
the target is at most 100 MiB at 10 M and within 10 % of the 1 M figure.

    .venv/bin/python bench/bench_memory.py [--counts 1000000 10000000] [--mixed]
        [--send-args '--dedupe off']

``--mixed`` streams bench/_mixed.py's realistic file (issue 16) instead of `dispatcher
gen`'s; ``--send-args`` adds options to ``send``. Dedupe (on by default) keeps ~22 bytes
per distinct recipient by design (issue 13), so the constant-memory target is measured
with ``--send-args '--dedupe off'``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
from typing import Any

import _harness as h
import orjson

SENDER = "12345"
TEMPLATE = "Hi {0}, your balance is ${1}"


HERE = os.path.dirname(os.path.abspath(__file__))


def measure(
    server: h.Server, count: int, workdir: str, *, mixed: bool = False, extra: list[str]
) -> dict[str, Any]:
    server.reset()
    results = os.path.join(workdir, f"results-{count}.ndjson")
    summary = os.path.join(workdir, f"summary-{count}.json")
    source = (
        [h.PYTHON, os.path.join(HERE, "_mixed.py"), "-", "--count", str(count)]
        if mixed
        else [h.PYTHON, "-m", "dispatcher", "gen", "--count", str(count), "--seed", "1"]
    )
    gen = subprocess.Popen(
        source,
        stdout=subprocess.PIPE,
        preexec_fn=h.pin_to(h.SERVER_CORE),
    )
    send = [
        h.PYTHON, "-m", "dispatcher", "send", "-", "--from", SENDER, "--text", TEMPLATE,
        "--base-url", server.base_url, "--rate", f"{SENDER}=inf", "--results", results,
        "--summary", summary, "--no-progress", *extra,
    ]  # fmt: skip
    try:
        done = h.run_child(send, env=h.env_with_key(), stdin=gen.stdout)
    finally:
        assert gen.stdout is not None
        gen.stdout.close()
        gen.wait()
    if done.returncode != 0:
        raise SystemExit(f"send exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    with open(summary, "rb") as f:
        document = orjson.loads(f.read())
    stats = server.stats()
    for path in (results, results + ".journal", summary):
        os.unlink(path)
    return {
        "recipients": count,
        "peak_rss_mib": round(done.max_rss_mib, 1),
        "wall_s": round(done.wall_s, 2),
        "recipients_per_s": round(count / done.wall_s),
        "lines": document["lines"],
        "accepted": document["statuses"].get("QUEUE", 0),
        # The mixed file has blank lines (not counted) and lines that are not sent.
        "accepted_matches": (mixed or document["lines"] == count)
        and document["statuses"].get("QUEUE", 0) == stats["accepted"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", help="where results go (default: a temp dir)")
    parser.add_argument("--mixed", action="store_true", help="bench/_mixed.py's file")
    parser.add_argument("--send-args", default="", help="extra send options")
    args = parser.parse_args()
    machine = h.machine()
    workdir = h.workdir(args.workdir, "bench-memory-")
    server = h.start_emulator()
    try:
        extra = shlex.split(args.send_args)
        runs = [
            measure(server, count, workdir, mixed=args.mixed, extra=extra) for count in args.counts
        ]
    finally:
        server.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    first, last = runs[0], runs[-1]
    ratio = last["peak_rss_mib"] / first["peak_rss_mib"]
    h.emit(
        {
            "bench": "memory",
            **machine,
            "input": "mixed" if args.mixed else "gen",
            "send_args": args.send_args,
            "runs": runs,
            "peak_rss_mib": {str(r["recipients"]): r["peak_rss_mib"] for r in runs},
            "ratio_last_over_first": round(ratio, 3),
            "targets": {
                "under_100_mib": last["peak_rss_mib"] <= 100,
                "within_10_percent": ratio <= 1.10,
            },
            "sanity_ok": all(r["accepted_matches"] for r in runs),
        }
    )


if __name__ == "__main__":
    main()
