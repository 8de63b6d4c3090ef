"""Command line: argparse → library calls → exit code. Each command body stays thin.

Heavy modules (aiohttp, the pipeline, the emulator) are imported inside the command
that needs them, so ``dispatcher --version`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from dispatcher._version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3

Command = Callable[[argparse.Namespace], int]


def _not_built(name: str) -> Command:
    def run(args: argparse.Namespace) -> int:
        print(f"dispatcher {name}: not built yet in this version", file=sys.stderr)
        return EXIT_USAGE

    return run


# --- send ----------------------------------------------------------------------------


def _add_send(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="send the recipients of an NDJSON file (or stdin) through the gateway",
        description="Send SMS to every recipient of an NDJSON file or stdin ('-').",
    )
    p.add_argument("input", nargs="?", default="-", help="NDJSON file, .gz, or - for stdin")
    p.set_defaults(run=_not_built("send"))


# --- gateway (the emulator) ----------------------------------------------------------


def _add_gateway(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateway",
        help="run the emulator of the Messangi gateway",
        description="Run the gateway emulator as an HTTP server. Its first stdout line is "
        "'listening on http://HOST:PORT'; clients use that URL plus /raven as base URL.",
    )

    def share(value: str) -> float:
        number = float(value)
        if not 0.0 <= number <= 1.0:
            raise argparse.ArgumentTypeError(f"{value} is not a share between 0 and 1")
        return number

    def rate(value: str) -> tuple[str, float]:
        from dispatcher.emulator.settings import parse_rate

        try:
            return parse_rate(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    p.add_argument(
        "--api-key",
        help="Bearer key clients must send (else $DISPATCHER_API_KEY, else a random key "
        "printed on stderr)",
    )
    p.add_argument("--owner", default="owner@example.com", help="owner/username in answers")
    p.add_argument(
        "--flat-single",
        action="store_true",
        help="answer v2/messages with the flat {status, messageId, description} shape",
    )
    p.add_argument("--max-batch", type=int, default=1000, help="recipients per batch (413)")
    p.add_argument("--max-segments", type=int, default=10, help="segments per message")
    p.add_argument(
        "--deny-code", action="append", default=[], metavar="CODE", help="CODE_NOT_ALLOWED"
    )
    p.add_argument(
        "--invalid-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="numbers starting with these digits are invalid at the gateway",
    )
    p.add_argument(
        "--rate",
        action="append",
        type=rate,
        default=[],
        metavar="CODE=N",
        help="messages/s for a sender code (N may be inf); defaults: shortcode 100, "
        "longcode 1, alphanumeric 100",
    )
    p.add_argument("--no-rate-limit", action="store_true", help="no rate limits at all")
    p.add_argument(
        "--ledger",
        choices=["full", "counts"],
        default="full",
        help="full keeps every message; counts only counters (for huge benchmarks)",
    )
    p.add_argument("--seed", type=int, help="seed of the fault and delivery-report draws")
    for flag, what in (
        ("--fail-429", "answer 429 (nothing recorded)"),
        ("--fail-500-before", "answer 500 before recording"),
        ("--fail-500-after", "answer 500 after recording"),
        ("--fail-503", "answer 503 (nothing recorded)"),
        ("--drop-before", "close the connection before recording"),
        ("--drop-after", "close the connection after recording"),
    ):
        p.add_argument(flag, type=share, default=0.0, metavar="SHARE", help=f"share: {what}")
    p.add_argument("--latency-ms", type=float, default=0.0, help="mean added latency")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- jitter")
    p.add_argument("--dr-delay-ms", type=float, default=200.0, help="delay of delivery reports")
    for flag in ("--dr-undeliv", "--dr-expired", "--dr-rejectd"):
        p.add_argument(flag, type=share, default=0.0, metavar="SHARE", help="share of reports")
    p.add_argument("--access-log", action="store_true", help="log each request on stderr")
    p.set_defaults(run=_cmd_gateway)


def _cmd_gateway(args: argparse.Namespace) -> int:
    import os
    import secrets

    from dispatcher.emulator import EmulatorSettings, FaultSettings
    from dispatcher.emulator.runner import serve

    key = args.api_key or os.environ.get("DISPATCHER_API_KEY")
    if not key:
        key = secrets.token_urlsafe(24)
        print(f"dispatcher gateway: generated API key: {key}", file=sys.stderr, flush=True)
    try:
        faults = FaultSettings(
            fail_429=args.fail_429,
            fail_500_before=args.fail_500_before,
            fail_500_after=args.fail_500_after,
            fail_503=args.fail_503,
            drop_before=args.drop_before,
            drop_after=args.drop_after,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
        )
        settings = EmulatorSettings(
            api_key=key,
            owner=args.owner,
            operator=args.owner,
            flat_single=args.flat_single,
            max_batch=args.max_batch,
            max_segments=args.max_segments,
            deny_codes=frozenset(args.deny_code),
            invalid_prefixes=tuple(p.lstrip("+") for p in args.invalid_prefix),
            rates=dict(args.rate),
            rate_limit=not args.no_rate_limit,
            ledger=args.ledger,
            faults=faults,
            seed=args.seed,
            dr_delay_ms=args.dr_delay_ms,
            dr_undeliv=args.dr_undeliv,
            dr_expired=args.dr_expired,
            dr_rejectd=args.dr_rejectd,
            access_log=args.access_log,
        )
    except ValueError as exc:
        print(f"dispatcher gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return serve(settings, host=args.host, port=args.port)
    except OSError as exc:
        print(
            f"dispatcher gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return EXIT_ABORTED


# --- demo ----------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="send generated recipients through the embedded emulator",
        description="Start the emulator in process, generate recipients and send them.",
    )
    p.set_defaults(run=_not_built("demo"))


# --- loadtest ------------------------------------------------------------------------


def _add_loadtest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "loadtest",
        help="drive a gateway at a constant rate and check latency thresholds",
        description="Constant-arrival-rate load test with latency percentiles.",
    )
    p.set_defaults(run=_not_built("loadtest"))


# --- receiver ------------------------------------------------------------------------


def _add_receiver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "receiver",
        help="receive delivery reports on a webhook and append them to NDJSON",
        description=(
            "A webhook server for delivery reports (the URL for send --callbacks). Accepts "
            "JSON POSTs on any path (an object or an array of objects) and appends each "
            "object as one NDJSON line with an added receivedAt. GET /_receiver/stats "
            "gives the counts. SIGINT/SIGTERM write everything and exit 0."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port; 0 picks a free one (default 8090)")
    p.add_argument("--out", required=True, help="NDJSON file the reports are appended to")
    p.add_argument(
        "--malformed",
        metavar="PATH",
        help="where refused bodies are kept (default OUT.malformed.ndjson)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds between writes to OUT (default 0.5)",
    )
    p.set_defaults(run=_cmd_receiver)


def _cmd_receiver(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from dispatcher.errors import OutputError
    from dispatcher.receiver import serve

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

    def listening(line: str) -> None:
        print(line, flush=True)

    try:
        stats = asyncio.run(
            serve(
                args.out,
                host=args.host,
                port=args.port,
                on_listening=listening,
                malformed_out=args.malformed,
                flush_interval=args.flush_interval,
            )
        )
    except OutputError as exc:
        print(f"dispatcher receiver: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    except OSError as exc:  # the port is taken or the address is not ours
        print(
            f"dispatcher receiver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return EXIT_USAGE
    print(
        f"dispatcher receiver: {stats.written} delivery reports written to {args.out}"
        f" ({stats.malformed} malformed bodies refused)",
        file=sys.stderr,
    )
    return EXIT_OK


# --- report --------------------------------------------------------------------------


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="join results and delivery reports into final counts",
        description=(
            "Join send results (one line per input line; those with an id were accepted "
            "by the gateway) with delivery reports (matched on id; a final status beats a "
            "non-final one, then the latest timestamp wins). Prints delivered, undelivered "
            "by status, pending, not sent by status and reports for unknown ids."
        ),
    )
    p.add_argument("--results", required=True, help="results NDJSON of send (.gz, or - for stdin)")
    p.add_argument("--dr", required=True, help="delivery reports NDJSON (from the receiver)")
    p.add_argument(
        "--out",
        metavar="PATH",
        help="write one line per result: line, to, id, sendStatus, deliveryStatus, deliveredAt",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the counts as one JSON object on stdout (the table goes to stderr)",
    )
    p.set_defaults(run=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    import orjson

    from dispatcher.errors import FatalError
    from dispatcher.report import build_report

    try:
        report = build_report(args.results, args.dr, out=args.out)
    except FatalError as exc:
        print(f"dispatcher report: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(report.table(), file=sys.stderr)
        sys.stdout.buffer.write(orjson.dumps(report.as_dict(), option=orjson.OPT_APPEND_NEWLINE))
    else:
        print(report.table())
    return EXIT_OK


# --- status --------------------------------------------------------------------------


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="ask the gateway for the status of message ids",
        description="Look up message statuses with GET v2/messages/{id}.",
    )
    p.set_defaults(run=_not_built("status"))


# --- gen -----------------------------------------------------------------------------


def _add_gen(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gen",
        help="generate synthetic recipients as NDJSON on stdout",
        description=(
            "Generate realistic synthetic recipients (SPEC §2 NDJSON) on stdout: valid "
            "mobile numbers of a dozen countries in varied layouts, a share of invalid "
            "numbers, of non-GSM-7 params, of refs and of per-line overrides. The same "
            "seed gives the same bytes; each share is exact (round(count * share) lines)."
        ),
    )
    p.add_argument("--count", type=int, required=True, help="number of lines to write")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    shares = (
        ("--invalid-share", 0.02, "invalid numbers"),
        ("--unicode-share", 0.05, "lines whose params are outside GSM-7"),
        ("--ref-share", 0.1, 'lines with a "ref"'),
        ("--overrides-share", 0.0, 'lines with a per-line "text" or "from"'),
    )
    for flag, default, what in shares:
        p.add_argument(
            flag, type=float, default=default, metavar="F", help=f"{what} (default {default:g})"
        )
    p.set_defaults(run=_cmd_gen)


def _cmd_gen(args: argparse.Namespace) -> int:
    import os

    from dispatcher.errors import ConfigError
    from dispatcher.gen import write

    try:
        write(
            args.count,
            sys.stdout.buffer,
            seed=args.seed,
            invalid_share=args.invalid_share,
            unicode_share=args.unicode_share,
            ref_share=args.ref_share,
            overrides_share=args.overrides_share,
        )
        sys.stdout.buffer.flush()
    except ConfigError as exc:
        print(f"dispatcher gen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`gen | head`): that is how pipes end, not an error.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


# --- main ----------------------------------------------------------------------------

_COMMANDS = (
    _add_send,
    _add_gateway,
    _add_demo,
    _add_loadtest,
    _add_receiver,
    _add_report,
    _add_status,
    _add_gen,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-command per entry of SPEC §7."""
    parser = argparse.ArgumentParser(
        prog="dispatcher",
        description="Bulk SMS through the Messangi Outbound SMS API, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"dispatcher {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command = args.run
    return run(args)
