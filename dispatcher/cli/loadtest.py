"""``dispatcher loadtest``: drive a gateway at a constant arrival rate and judge the
latency against thresholds.

Exit codes: 0 passed (or no thresholds), 99 a threshold failed (as k6 does), 2 usage,
3 aborted (the API key was refused, or an output could not be written), 128 + signal
when interrupted.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from dispatcher.cli._common import (
    ExitCode,
    Parser,
    Signals,
    bounded,
    checked,
    fail,
    usage_error,
)
from dispatcher.errors import ConfigError, FatalError

#: Options that are `LoadTest` fields of the same name.
SETTINGS = (
    *("rate", "rate_unit", "duration", "warmup", "batch_size", "concurrency", "timeout"),
    *("drain", "sender", "text", "seed", "metrics_port", "metrics_host"),
    *("quota_url", "quota_namespace", "quota_rate", "workers"),
    *("account_rate", "quota_fallback", "quota_peers", "quota_unit"),
)
STOPPING = "stopping: waiting for in-flight requests (send the signal again to exit now)"

HELP = "drive a gateway at a constant rate and check latency thresholds"
DESCRIPTION = (
    "Constant-arrival-rate load test. Request k is due at start + k/rate whatever "
    "the gateway does, and its latency counts from that due time, so a slow "
    "gateway shows as latency, not as a quietly lower rate. Drives an emulator "
    "started in this process on 127.0.0.1 unless --base-url is given. Exit codes: "
    "0 passed, 99 a threshold failed, 2 usage error, 3 aborted (API key refused, the "
    "shared quota's Redis unreachable), 130/143 interrupted."
)


def options(p: Parser) -> None:
    from dispatcher.cli._emulator import add_fault_flags
    from dispatcher.config import REDIS_PASSWORD_ENV
    from dispatcher.loadtest.settings import DEFAULT_SENDER, DEFAULT_TEXT, MAX_WORKERS
    from dispatcher.loadtest.thresholds import parse_duration, parse_threshold

    duration = checked(parse_duration)
    add = p.add_argument_group("load").add_argument
    rate = bounded(float, 0.0, math.inf, above=True)
    add("--rate", type=rate, default=100.0, metavar="N", help="arrivals per second (--rate-unit)")
    add(
        "--rate-unit",
        choices=("requests", "recipients"),
        default="requests",
        help="what --rate counts",
    )
    add("--duration", type=duration, default="10s", metavar="D", help="measured time: 500ms, 30s…")
    add("--warmup", type=duration, default="0s", metavar="D", help="first run, left out of stats")
    add(
        "--batch-size",
        type=bounded(int, 1, 1_000_000),
        default=1,
        metavar="N",
        help="1: v2/messages; more: batch",
    )
    add(
        "--concurrency",
        type=bounded(int, 1, 100_000),
        default=64,
        metavar="N",
        help="requests in flight at most; due requests beyond it wait (late starts), "
        "counting from their due time; make it at least rate × expected latency",
    )
    add("--timeout", type=duration, default="5s", metavar="D", help="per request")
    add(
        "--workers",
        type=bounded(int, 1, MAX_WORKERS),
        default=1,
        metavar="N",
        help="processes, each driving an equal share of the schedule (one report)",
    )
    add("--drain", type=duration, default="5s", metavar="D", help="wait for in-flight at the end")
    add = p.add_argument_group("recipients").add_argument
    add("--input", metavar="FILE", help="NDJSON recipients (default: generated)")
    add("--synthetic", action="store_true", help="with --base-url: send to generated numbers")
    add("--seed", type=int, default=1, metavar="N", help="seed of recipients and emulator faults")
    add("--from", dest="sender", default=DEFAULT_SENDER, metavar="CODE", help="sender code")
    add("--text", default=DEFAULT_TEXT, metavar="T", help="message template")
    add = p.add_argument_group("target").add_argument
    add("--base-url", metavar="URL", help="gateway API base URL (default: the embedded emulator)")
    add("--api-key-file", metavar="FILE", help="API key for --base-url (else DISPATCHER_API_KEY)")
    add_fault_flags(p)
    add = p.add_argument_group("shared quota").add_argument
    add(
        "--quota-url",
        metavar="URL",
        help="book every request in the sender code's bucket of the shared quota in this "
        "Redis first, as send does (redis://HOST:PORT/DB; the password from "
        f"{REDIS_PASSWORD_ENV} or --redis-password-file, never in the URL); a wait for "
        "it counts as a late start",
    )
    add(
        "--quota-namespace",
        metavar="NAME",
        help="the shared quota's keys (default: derived from the target's base URL)",
    )
    add(
        "--quota-rate",
        type=bounded(float, 0.0, math.inf, above=True),
        metavar="N",
        help="the --from code's limit per second, in messages (or segments: --quota-unit) "
        "(default: its kind's, as send has it); "
        "every process sharing the namespace must agree on it",
    )
    add_quota_keys(add)
    add(
        "--redis-password-file",
        metavar="FILE",
        help=f"file holding the quota's Redis password (else {REDIS_PASSWORD_ENV})",
    )
    add = p.add_argument_group("verdict and outputs").add_argument
    add(
        "--threshold",
        action="append",
        type=checked(parse_threshold),
        default=[],
        metavar="EXPR",
        help="repeatable: p99<250ms, p(95)<=0.2s, max<1s, mean<50ms, error_rate<0.1%%, "
        "rate>=0.95 (achieved/target); exit 99 if any fails",
    )
    add("--report", metavar="PATH", help="write the JSON report here")
    add("--json", action="store_true", help="print the JSON report on stdout")
    add("--plot", metavar="PNG", help="latency and rate over time (needs matplotlib)")
    add("--quiet", action="store_true", help="no live line each second")
    add(
        "--metrics-port",
        type=bounded(int, 0, 65535),
        metavar="PORT",
        help="serve Prometheus metrics on this port while the test runs (0: any free port)",
    )
    add("--metrics-host", default="127.0.0.1", metavar="HOST", help="where --metrics-port listens")


#: What ``--quota-unit`` says where send's ``rate_unit`` help speaks of its rates.
QUOTA_UNIT_HELP = "what a request costs in the shared quota: its recipients or their segments"


def add_quota_keys(add: Callable[..., Any]) -> None:
    """send's quota options, from send's own configuration keys (flag, choices, metavar,
    help; `dispatcher.loadtest.job` parses the values with their parsers). send's
    ``--rate-unit`` is ``--quota-unit`` here: loadtest's ``--rate-unit`` is its arrivals'."""
    from dispatcher.config import KEYS
    from dispatcher.loadtest.settings import QUOTA_KEYS

    for name, key_name in QUOTA_KEYS.items():
        key = KEYS[key_name]
        shown = key.shown_default or (f"{key.default:g}" if name == "account_rate" else key.default)
        add(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,  # not given: the test's default (send's)
            metavar=key.metavar,
            choices=key.choices or None,
            help=f"{QUOTA_UNIT_HELP if name == 'quota_unit' else key.help} (default {shown})",
        )


def run(args: argparse.Namespace) -> int:
    import orjson

    from dispatcher import logs
    from dispatcher.cli._emulator import faults_from
    from dispatcher.loadtest import job
    from dispatcher.loadtest.report import table
    from dispatcher.loadtest.run import run_loadtest

    try:
        test = job.prepare(
            base_url=args.base_url,
            api_key_file=args.api_key_file,
            input=args.input,
            synthetic=args.synthetic,
            faults=faults_from(args),
            plot=args.plot,
            report=args.report,
            redis_password_file=args.redis_password_file,
            thresholds=tuple(args.threshold),
            **{name: getattr(args, name) for name in SETTINGS},
        )
    except ValueError as exc:  # ConfigError, or fault shares that add up to more than 1
        return usage_error(exc)
    except FatalError as exc:  # an output that cannot be written
        return fail(exc, ExitCode.ABORTED)
    logs.configure("warning")
    tune_gc()
    if test.api_key is not None:
        logs.register_secret(test.api_key.reveal())
    signals = Signals(STOPPING)
    live = None if args.quiet else sys.stderr
    try:
        if test.workers > 1:
            from dispatcher.loadtest.workers import run_workers

            report = signals.run(run_workers(test, signals=signals, live=live))
        else:
            report = signals.run(run_loadtest(test, stop=signals.stop, live=live))
    except ConfigError as exc:
        return usage_error(exc)
    except FatalError as exc:  # the quota's Redis unreachable (nothing sent), a worker lost
        return fail(exc, ExitCode.ABORTED)
    if report["aborted"]:
        code: int = ExitCode.ABORTED
    else:
        code = signals.exit_code or (ExitCode.OK if report["passed"] else ExitCode.THRESHOLD)
    report["exit_code"] = int(code)
    for problem in job.write_outputs(report, json_path=args.report, plot_path=args.plot):
        code = fail(problem, ExitCode.ABORTED)
    print(table(report), file=sys.stderr)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_APPEND_NEWLINE))
        sys.stdout.flush()
    return code


def tune_gc() -> None:
    # As `send` does (its _tune_gc): what is loaded by now lives for the whole run, so it
    # leaves the collector's sight, and young collections become rare — a request frees
    # what it allocates by reference counting. With the default thresholds a full
    # collection walked every module object every few thousand requests: CPU, and a
    # pause the schedule then catches up on with late starts.
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
