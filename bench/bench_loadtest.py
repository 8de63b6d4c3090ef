"""The load tester's own capacity at batch 1, `send --batch-size 1` on the same request
path, and `send`'s start-up on a big file. Prints ONE JSON object.

Every phase runs against the minimal sink (bench/_sink.py) on core 0, the client on
core 1, one after the other in this run:

- ``wrk`` (the OS package, when it is on the PATH): ``-t1 -c CONCURRENCY`` posting the
  body the load tester sends, with its headers, for ``--seconds``: requests/s.
- ``dispatcher loadtest --rate R`` at each share of wrk's requests/s in ``--shares``
  (without wrk, at the rates of ``--rates``): achieved rate, late starts, dropped, start
  lag, CPU. The target: at 0.5 × wrk, the rate asked for achieved with nothing
  dropped (late starts allowed: they still start in the window and count).
  ``cpu_us_per_request`` leaves out the CPU of a 0.1 s run (start-up and report); below
  saturation it includes the schedule's wait for due times finer than the loop's
  millisecond timers, which spins.
- ``dispatcher send --batch-size 1`` on ``--send-count`` recipients and on a fifth of
  them: messages/s (launch to exit) and marginal CPU per message.
- ``loadtest --workers 1`` and ``--workers 2`` at ``--workers-rate`` (unpinned: the
  workers may use both cores, the sink's too): achieved rate, wall and CPU seconds of
  the whole process tree (wait4 counts the workers the parent reaped), CPU per million
  requests with and without a 0.1 s run's start-up, and the ratios 2 : 1.
- Start-up: time from launching ``send`` (batch 1000) on a ``--startup-lines`` file
  to its first request (a server in this process notes it), and that run's whole
  time against the sink: the share of a run that start-up is.

    .venv/bin/python bench/bench_loadtest.py [--seconds 5] [--shares 0.5,0.75,1.0]
        [--send-count 50000] [--startup-lines 1000000] [--workers-rate 3000]
        [--skip send,startup,workers]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from typing import Any

import _harness as h
import orjson
from bench_startup import FirstRequest, serve

from dispatcher.loadtest import workload
from dispatcher.loadtest.settings import DEFAULT_SENDER, DEFAULT_TEXT

CONCURRENCY = 64
TEMPLATE = "Hi {0}, your balance is ${1}"


def wrk_phase(server: h.Server, workdir: str, seconds: float) -> dict[str, Any] | None:
    """wrk posting the load tester's first body with its headers; None without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    bodies = asyncio.run(
        workload.build(batch_size=1, requests=1, sender=DEFAULT_SENDER, text=DEFAULT_TEXT, seed=1)
    )
    script = os.path.join(workdir, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {_lua_string(bodies.bodies[0])}\n")
        for name, value in (
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("Authorization", f"Bearer {h.KEY}"),
            ("User-Agent", "sms-dispatcher/bench"),
        ):
            f.write(f'wrk.headers["{name}"] = "{value}"\n')
    cmd = [wrk, "-t1", f"-c{CONCURRENCY}", f"-d{seconds:g}s", "-s", script]
    phase = _run(server, "wrk", [*cmd, server.base_url + "/v2/messages"])
    text = phase.pop("stdout")
    found = re.search(r"Requests/sec:\s*([0-9.]+)", text)
    if found is None:
        raise SystemExit(f"wrk printed no Requests/sec: {text[-500:]}")
    phase["requests_per_s"] = round(float(found.group(1)), 1)
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)|Socket errors:.*", text)
    phase["errors"] = errors.group(0) if errors else None
    return phase


def _lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal: every byte but letters and digits as ``\\ddd``."""
    text = "".join(chr(b) if chr(b).isalnum() and b < 128 else f"\\{b:03d}" for b in data)
    return f'"{text}"'


def loadtest_phase(
    server: h.Server, rate: float, seconds: float, *, workers: int | None = None
) -> dict[str, Any]:
    cmd = [
        h.PYTHON, "-m", "dispatcher", "loadtest", "--base-url", server.base_url,
        "--synthetic", "--rate", f"{rate:.1f}", "--duration", f"{seconds:g}s",
        "--concurrency", str(CONCURRENCY), "--quiet", "--json",
    ]  # fmt: skip
    if workers is not None:  # unpinned: the workers may spread over the cores
        cmd += ["--workers", str(workers)]
    core = h.CLIENT_CORE if workers is None else None
    phase = _run(server, f"loadtest at {rate:.0f}/s", cmd, core=core)
    report = orjson.loads(phase.pop("stdout").splitlines()[-1])
    phase.update(
        target_rate=report["target_rate"],
        achieved_rate=report["achieved_rate"],
        requests=report["requests"],
        answered=report["answered"],
        ok=report["outcomes"]["ok"],
        late_starts=report["late_starts"],
        dropped=report["dropped"],
        start_lag_ms=report["start_lag_ms"],
        latency_ms={k: report["latency_ms"][k] for k in ("p50", "p99", "max")},
    )
    # Late starts (every slot busy for a moment: the machine's other work can stall this
    # process for milliseconds) are allowed: they still start in the window and count.
    phase["nothing_dropped"] = (
        report["dropped"] == 0 and report["outcomes"]["ok"] == report["requests"]
    )
    return phase


def send_phase(server: h.Server, source: str, workdir: str, lines: int) -> dict[str, Any]:
    results = os.path.join(workdir, f"send-b1-{lines}.results.ndjson")
    summary = os.path.join(workdir, f"send-b1-{lines}.summary.json")
    for leftover in (results, results + ".journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    cmd = [
        h.PYTHON, "-m", "dispatcher", "send", source, "--from", DEFAULT_SENDER,
        "--text", TEMPLATE, "--base-url", server.base_url, "--rate", f"{DEFAULT_SENDER}=inf",
        "--results", results, "--summary", summary, "--batch-size", "1", "--no-progress",
    ]  # fmt: skip
    phase = _run(server, f"send --batch-size 1 ({lines})", cmd)
    phase.pop("stdout")
    with open(summary, "rb") as f:
        accepted = orjson.loads(f.read())["statuses"].get("QUEUE", 0)
    phase["lines"] = lines
    phase["requests"] = accepted  # one per message sent (the invalid lines send nothing)
    phase["accepted_matches"] = phase["server_accepted"] == accepted
    phase["messages_per_s"] = round(accepted / phase["wall_s"])
    return phase


def startup_phase(server: h.Server, source: str, workdir: str, lines: int) -> dict[str, Any]:
    """Launch to first request on the big file (a server in this process, on the server
    core, notes the arrival), then the whole run of the same command at the sink."""
    port, _loop = serve()

    def command(base_url: str, name: str) -> list[str]:
        results = os.path.join(workdir, f"startup-{name}.results.ndjson")
        for leftover in (results, results + ".journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        return [
            h.PYTHON, "-m", "dispatcher", "send", source, "--from", DEFAULT_SENDER,
            "--text", TEMPLATE, "--base-url", base_url, "--rate", f"{DEFAULT_SENDER}=inf",
            "--results", results, "--batch-size", "1000", "--no-progress",
        ]  # fmt: skip

    before = len(FirstRequest.arrivals)
    start = time.monotonic()
    proc = subprocess.Popen(
        command(f"http://127.0.0.1:{port}/raven", "first"),
        env=h.env_with_key(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=h.pin_to(h.CLIENT_CORE),
    )
    while len(FirstRequest.arrivals) == before and proc.poll() is None:
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    if len(FirstRequest.arrivals) == before:
        raise SystemExit("send ended before its first request")
    first = FirstRequest.arrivals[before] - start
    whole = _run(server, "send 1 M", command(server.base_url, "whole"))
    whole.pop("stdout")
    return {
        "lines": lines,
        "first_request_s": round(first, 3),
        "whole_run": whole,
        "startup_share": round(first / whole["wall_s"], 3),
    }


def workers_phase(server: h.Server, rate: float, seconds: float) -> dict[str, Any]:
    """The same test in one process and in two: what the second process costs and buys."""
    phases: dict[str, Any] = {}
    for n in (1, 2):
        idle = loadtest_phase(server, 10.0, 0.1, workers=n)
        run = loadtest_phase(server, rate, seconds, workers=n)
        answered = max(1, run["answered"])
        run["startup_cpu_s"] = idle["cpu_s"]
        run["cpu_s_per_million"] = round(1e6 * run["cpu_s"] / answered, 1)
        run["cpu_s_per_million_after_startup"] = round(
            1e6 * (run["cpu_s"] - idle["cpu_s"]) / answered, 1
        )
        phases[f"workers_{n}"] = run
    one, two = phases["workers_1"], phases["workers_2"]
    phases["ratio_2_to_1"] = {
        key: round(two[key] / one[key], 3) if one[key] else None
        for key in ("achieved_rate", "wall_s", "cpu_s", "cpu_s_per_million_after_startup")
    }
    return phases


def _run(
    server: h.Server, name: str, cmd: list[str], *, core: int | None = h.CLIENT_CORE
) -> dict[str, Any]:
    server.reset()
    load = round(os.getloadavg()[0], 2)
    cpu_before = server.cpu()
    done = h.run_child(cmd, core=core, env=h.env_with_key(), timeout=600)
    server_cpu = server.cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"{name} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return {
        "load_before": load,
        "wall_s": round(done.wall_s, 3),
        "cpu_s": round(done.cpu_s, 3),
        "server_accepted": server.stats()["accepted"],
        "server_cpu_share": round(server_cpu / done.wall_s, 2),
        "stdout": done.stdout.decode(),
    }


def _marginal_us(small: dict[str, Any], big: dict[str, Any], count: str) -> float | None:
    """CPU µs per unit between two runs of the same command: start-up cancels out."""
    extra = big[count] - small[count]
    return round(1e6 * (big["cpu_s"] - small["cpu_s"]) / extra, 1) if extra > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="of wrk and each loadtest")
    parser.add_argument("--shares", default="0.5,0.75,1.0", help="loadtest rates, × wrk's")
    parser.add_argument("--rates", default="5000,10000", help="loadtest rates without wrk")
    parser.add_argument("--send-count", type=int, default=50_000)
    parser.add_argument("--startup-lines", type=int, default=1_000_000)
    parser.add_argument("--workers-rate", type=float, default=3000.0, help="of --workers 1 and 2")
    parser.add_argument(
        "--skip", default="", help="phases to leave out: loadtest, send, startup, workers"
    )
    parser.add_argument("--workdir", help="keep inputs and outputs here (default: a temp dir)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    machine = h.machine()
    if h.two_cores():
        os.sched_setaffinity(0, {h.SERVER_CORE})  # this process serves `startup`
    workdir = h.workdir(args.workdir, "bench-loadtest-")
    os.makedirs(workdir, exist_ok=True)
    sink = h.start_sink()
    document: dict[str, Any] = {"bench": "loadtest", **machine, "concurrency": CONCURRENCY}
    try:
        if "workers" not in skip:
            document["workers"] = workers_phase(sink, args.workers_rate, args.seconds)
        if "loadtest" not in skip:
            wrk = wrk_phase(sink, workdir, args.seconds)
            if wrk is not None:
                rates = [float(s) * wrk["requests_per_s"] for s in args.shares.split(",")]
            else:
                rates = [float(r) for r in args.rates.split(",")]
            idle = loadtest_phase(sink, 10.0, 0.1)  # start-up and report: CPU not per request
            runs = [loadtest_phase(sink, rate, args.seconds) for rate in rates]
            for run in runs:
                run["cpu_us_per_request"] = round(
                    1e6 * (run["cpu_s"] - idle["cpu_s"]) / max(1, run["answered"]), 1
                )
            kept_up = [r for r in runs if r["nothing_dropped"]]
            document["wrk"] = wrk
            document["loadtest"] = runs
            document["loadtest_best_rate_nothing_dropped"] = max(
                (r["achieved_rate"] for r in kept_up), default=None
            )
            document["loadtest_most_answered_per_s"] = max(r["achieved_rate"] for r in runs)
            document["loadtest_startup_cpu_s"] = idle["cpu_s"]
            if wrk is not None:
                half = runs[0]
                document["loadtest_over_wrk_at_half"] = round(
                    half["achieved_rate"] / wrk["requests_per_s"], 3
                )
                document["targets"] = {
                    "half_of_wrk_nothing_dropped": half["nothing_dropped"]
                    and half["achieved_rate"] >= 0.5 * wrk["requests_per_s"] * 0.995
                }
        if "send" not in skip:
            source = os.path.join(workdir, "recipients-send.ndjson")
            h.gen_file(source, args.send_count)
            small = send_phase(sink, _head(source, args.send_count // 5, workdir), workdir,
                               args.send_count // 5)  # fmt: skip
            big = send_phase(sink, source, workdir, args.send_count)
            document["send_b1"] = [small, big]
            document["send_b1_messages_per_s"] = big["messages_per_s"]
            document["send_b1_cpu_us_per_message"] = _marginal_us(small, big, "requests")
        if "startup" not in skip:
            source = os.path.join(workdir, f"recipients-{args.startup_lines}.ndjson")
            h.gen_file(source, args.startup_lines)
            document["startup"] = startup_phase(sink, source, workdir, args.startup_lines)
    finally:
        sink.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    h.emit(document)


def _head(source: str, lines: int, workdir: str) -> str:
    path = os.path.join(workdir, f"recipients-head-{lines}.ndjson")
    with open(source, "rb") as f, open(path, "wb") as out:
        for _ in range(lines):
            out.write(f.readline())
    return path


if __name__ == "__main__":
    main()
