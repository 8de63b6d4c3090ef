"""The command-line options of ``dispatcher loadtest`` (kept light: parsed at start-up)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from dispatcher.errors import ConfigError
from dispatcher.loadtest.settings import DEFAULT_SENDER, DEFAULT_TEXT

T = TypeVar("T")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the load test's options to its sub-command parser."""

    def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
        def convert(value: str) -> T:
            try:
                return parse(value)
            except ConfigError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        convert.__name__ = parse.__name__.removeprefix("parse_")
        return convert

    def share(value: str) -> float:
        number = float(value)
        if not 0.0 <= number <= 1.0:
            raise argparse.ArgumentTypeError(f"{value} is not a share between 0 and 1")
        return number

    def parse_duration(value: str) -> float:
        from dispatcher.loadtest.thresholds import parse_duration

        return parse_duration(value)

    def parse_threshold(value: str) -> object:
        from dispatcher.loadtest.thresholds import parse_threshold

        return parse_threshold(value)

    duration = checked(parse_duration)
    add = p.add_argument_group("load").add_argument
    add(
        "--rate",
        type=float,
        default=100.0,
        metavar="N",
        help="arrivals per second (see --rate-unit)",
    )
    add("--rate-unit", choices=("requests", "recipients"), default="requests")
    add(
        "--duration",
        type=duration,
        default="10s",
        metavar="D",
        help="measured time: 500ms, 30s, 2m, …",
    )
    add(
        "--warmup",
        type=duration,
        default="0s",
        metavar="D",
        help="run first at the rate, left out of stats",
    )
    add(
        "--batch-size",
        type=int,
        default=1,
        metavar="N",
        help="1: v2/messages; more: the batch endpoint",
    )
    add(
        "--concurrency",
        type=int,
        default=64,
        metavar="N",
        help="requests in flight at most; due requests beyond it wait (late starts), "
        "counting from their due time; make it at least rate × expected latency",
    )
    add("--timeout", type=duration, default="5s", metavar="D", help="per request")
    add(
        "--drain",
        type=duration,
        default="5s",
        metavar="D",
        help="wait for in-flight requests at the end",
    )
    add = p.add_argument_group("recipients").add_argument
    add("--input", metavar="FILE", help="NDJSON recipients (default: generated)")
    add("--synthetic", action="store_true", help="with --base-url: send to generated numbers")
    add(
        "--seed",
        type=int,
        default=1,
        metavar="N",
        help="seed of generated recipients and emulator faults",
    )
    add("--from", dest="sender", default=DEFAULT_SENDER, metavar="CODE", help="sender code")
    add("--text", default=DEFAULT_TEXT, metavar="T", help="message template")
    add = p.add_argument_group("target").add_argument
    add("--base-url", metavar="URL", help="gateway API base URL (default: the embedded emulator)")
    add("--api-key-file", metavar="FILE", help="API key for --base-url (else DISPATCHER_API_KEY)")
    add = p.add_argument_group("embedded emulator").add_argument
    add("--latency-ms", type=float, default=0.0, metavar="MS", help="added latency")
    add("--jitter-ms", type=float, default=0.0, metavar="MS", help="uniform +/- jitter")
    for flag, what in (
        ("--fail-429", "answer 429"),
        ("--fail-503", "answer 503"),
        ("--fail-500-before", "answer 500 before recording"),
        ("--fail-500-after", "answer 500 after recording"),
        ("--drop-before", "close the connection before recording"),
        ("--drop-after", "close the connection after recording"),
    ):
        add(flag, type=share, default=0.0, metavar="SHARE", help=f"share of requests: {what}")
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
