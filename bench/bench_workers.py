"""``send --workers N``: throughput and CPU per million recipients, 1 worker against N.

Prints ONE JSON object. The minimal sink (bench/_sink.py) runs pinned to core 0; the
send runs unpinned (its workers need the cores), timed from outside, launch to exit,
results and journal written to files; CPU is wait4's figure for the whole process
tree (the parent and every worker it waited for). The runs alternate (1, N, 1, N…)
``--repeat`` times so that a load that comes and goes touches both. On a 2-core
machine the sink shares a core with a second worker: CPU-seconds per million are the
figure to compare, and the scaling arithmetic is printed beside them.

    .venv/bin/python bench/bench_workers.py [--count 1000000] [--workers 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import _harness as h
import orjson

SENDER = "12345"
TEMPLATE = "Hi {0}, your balance is ${1}"


def run_send(
    server: h.Server, source: str, workdir: str, workers: int, lines: int
) -> dict[str, Any]:
    results = os.path.join(workdir, f"w{workers}.results.ndjson")
    summary = os.path.join(workdir, f"w{workers}.summary.json")
    for name in os.listdir(workdir):
        if name.startswith(f"w{workers}.results"):
            os.unlink(os.path.join(workdir, name))
    server.reset()
    cmd = [
        h.PYTHON, "-m", "dispatcher", "send", source, "--from", SENDER, "--text", TEMPLATE,
        "--base-url", server.base_url, "--rate", f"{SENDER}=inf", "--results", results,
        "--summary", summary, "--no-progress", "--workers", str(workers),
    ]  # fmt: skip
    done = h.run_child(cmd, core=None, env=h.env_with_key())
    if done.returncode not in (0, 1):
        raise SystemExit(f"send --workers {workers} failed: {done.stderr.decode()[-2000:]}")
    with open(summary, "rb") as f:
        document = orjson.loads(f.read())
    accepted = document["statuses"].get("QUEUE", 0)
    return {
        "workers": workers,
        "wall_s": round(done.wall_s, 3),
        "cpu_s": round(done.cpu_s, 3),
        "cpu_s_per_million": round(done.cpu_s / lines * 1e6, 2),
        "recipients_per_s": round(lines / done.wall_s),
        "max_rss_mib_largest_process": round(done.max_rss_mib, 1),
        "lines": document["lines"],
        "accepted_matches": accepted == server.stats()["accepted"] and document["lines"] == lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    workdir = h.workdir(args.workdir, "bench-workers-")
    os.makedirs(workdir, exist_ok=True)
    source = os.path.join(workdir, "in.ndjson")
    h.gen_file(source, args.count)
    document: dict[str, Any] = {"bench": "workers", **h.machine(), "count": args.count}
    server = h.start_sink()
    runs = []
    try:
        for _ in range(args.repeat):
            for workers in (1, args.workers):
                runs.append(run_send(server, source, workdir, workers, args.count))
    finally:
        server.stop()
    document["runs"] = runs
    best = {
        n: min((r for r in runs if r["workers"] == n), key=lambda r: r["wall_s"])
        for n in (1, args.workers)
    }
    one, many = best[1], best[args.workers]
    document["best"] = {str(n): run for n, run in best.items()}
    document["cpu_ratio"] = round(many["cpu_s"] / one["cpu_s"], 3)
    document["wall_ratio"] = round(many["wall_s"] / one["wall_s"], 3)
    document["load_after"] = round(os.getloadavg()[0], 2)
    h.emit(document)


if __name__ == "__main__":
    main()
