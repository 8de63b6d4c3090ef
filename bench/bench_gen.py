"""Throughput of `dispatcher gen`: in process, and as the CLI writing into a pipe.

    python bench/bench_gen.py [--count 2000000]

Prints one JSON object. The pipe figure is what a benchmark sees when it runs
`dispatcher gen --count N | dispatcher send -`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import orjson

from dispatcher.gen import generate


def in_process(count: int) -> tuple[float, int]:
    start = time.perf_counter()
    size = 0
    for chunk in generate(count):
        size += len(chunk)
    return time.perf_counter() - start, size


def through_pipe(count: int) -> float:
    start = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "gen", "--count", str(count)],
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        while proc.stdout.read(1 << 20):
            pass
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dispatcher gen exited {proc.returncode}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2_000_000)
    count = parser.parse_args().count
    seconds, size = in_process(count)
    pipe_seconds = through_pipe(count)
    print(
        orjson.dumps(
            {
                "bench": "gen",
                "lines": count,
                "bytes_per_line": round(size / count, 1),
                "in_process_s": round(seconds, 3),
                "in_process_lines_per_s": round(count / seconds),
                "cli_pipe_s": round(pipe_seconds, 3),
                "cli_pipe_lines_per_s": round(count / pipe_seconds),
                "cli_pipe_mb_per_s": round(size / pipe_seconds / 1e6, 1),
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
