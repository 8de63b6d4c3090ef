"""``dispatcher receiver``: a webhook for delivery reports, appending them to NDJSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from dispatcher.cli._common import (
    ExitCode,
    Parser,
    Signals,
    add_listen_options,
    bounded,
    fail,
    usage_error,
)

COMMAND = "dispatcher receiver"

HELP = "receive delivery reports on a webhook and append them to NDJSON"
DESCRIPTION = (
    "A webhook server for delivery reports (the URL for send --callbacks). With a "
    "secret (--secret-file or DISPATCHER_RECEIVER_SECRET) it takes JSON POSTs whose "
    "URL path ends in the secret (http://HOST:PORT/dr/<secret>) and answers 401 to "
    "others; without one it listens on loopback only. Each report (an object, or an "
    "array of objects) is appended as one NDJSON line with an added receivedAt, and "
    "acknowledged only once written (503 when it cannot be, so the gateway retries). "
    "GET /_receiver/stats[/<secret>] gives the counts. SIGINT/SIGTERM finish the writes "
    "and exit 0; a second signal exits at once."
)
NO_SECRET = "no secret: listening on loopback only; anyone on this host can post reports"


#: A number of seconds above 0 (at most a day) and a count from ``least`` on, checked as
#: every other command's numbers are (`_common.bounded`: no nan, no inf, no -0).
_seconds = bounded(float, 0, 86400, above=True, unit="seconds")


def _at_least(least: int) -> Callable[[str], int]:
    return bounded(int, least, 10**12)


def options(p: Parser) -> None:
    add_listen_options(p, port=8090)
    p.add_argument("--out", required=True, help="NDJSON file the reports are appended to")
    p.add_argument(
        "--malformed",
        metavar="PATH",
        help="where refused bodies are kept (default OUT.malformed.ndjson)",
    )
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="the secret callback URLs must end with (first line; 16-256 characters of "
        "A-Z a-z 0-9 - . _ ~); else DISPATCHER_RECEIVER_SECRET",
    )
    p.add_argument(
        "--fsync", action="store_true", help="acknowledge a report only once synced to disk"
    )
    seconds = _seconds
    p.add_argument(
        "--flush-interval",
        type=seconds,
        default=0.5,
        metavar="S",
        help="without --fsync, sync the file to disk every S seconds",
    )
    p.add_argument(
        "--read-timeout",
        type=seconds,
        default=10.0,
        metavar="S",
        help="close a connection whose headers, or whose body, take longer than S seconds",
    )
    p.add_argument(
        "--max-body",
        type=_at_least(1),
        default=1 << 20,
        metavar="BYTES",
        help="largest body; 413 beyond",
    )
    p.add_argument(
        "--max-reports", type=_at_least(1), default=1000, metavar="N", help="per POST; 413 beyond"
    )
    p.add_argument(
        "--max-malformed",
        type=_at_least(0),
        default=1000,
        metavar="N",
        help="refused bodies kept per run (each cut to 64 KiB); the rest are counted",
    )
    p.add_argument(
        "--max-malformed-bytes",
        type=_at_least(0),
        default=16 << 20,
        metavar="BYTES",
        help="bytes of refused bodies kept per run",
    )


def run(args: argparse.Namespace) -> int:
    from dispatcher.errors import ConfigError, OutputError
    from dispatcher.paths import Place, check_distinct, check_writable
    from dispatcher.receiver import Limits, check_host, find_secret, serve

    _log_to_stderr()
    if not 0 <= args.port <= 65535:
        return usage_error(f"--port {args.port} is not a port (0-65535)", command=COMMAND)
    malformed = args.malformed or f"{args.out}.malformed.ndjson"
    outputs = [Place("--out", args.out), Place("--malformed", malformed)]
    try:
        inputs = [Place("--secret-file", args.secret_file)] if args.secret_file else []
        check_distinct(inputs, outputs)
        secret = find_secret(args.secret_file)
        check_host(args.host, secret)
        limits = Limits(
            max_body=args.max_body,
            max_reports=args.max_reports,
            read_timeout=args.read_timeout,
            max_malformed=args.max_malformed,
            max_malformed_bytes=args.max_malformed_bytes,
        )
        check_writable(outputs)
    except ConfigError as exc:
        return usage_error(exc, command=COMMAND)
    except OutputError as exc:
        return fail(exc, ExitCode.ABORTED, command=COMMAND)
    if secret is None:
        print(f"{COMMAND}: {NO_SECRET}", file=sys.stderr, flush=True)

    def listening(line: str) -> None:
        print(line, flush=True)

    signals = Signals()
    try:
        stats = signals.run(
            serve(
                args.out,
                host=args.host,
                port=args.port,
                stop=signals.stop,
                on_listening=listening,
                malformed_out=malformed,
                secret=secret,
                limits=limits,
                fsync=args.fsync,
                flush_interval=args.flush_interval,
            )
        )
    except OutputError as exc:
        return fail(exc, ExitCode.ABORTED, command=COMMAND)
    except OSError as exc:  # the port is taken or the address is not ours
        where = f"{args.host}:{args.port}"
        return fail(f"cannot listen on {where}: {exc}", ExitCode.USAGE, command=COMMAND)
    extra = [
        f"{count} {what}"
        for count, what in (
            (stats.unauthorized, "requests without the secret"),
            (stats.timed_out, "requests timed out"),
            (stats.unavailable, "requests answered 503 (could not write)"),
        )
        if count
    ]
    print(
        f"{COMMAND}: {stats.written} delivery reports written to {args.out}"
        f" ({stats.malformed} malformed bodies refused, {stats.malformed_dropped} not kept)"
        + "".join(f"; {item}" for item in extra),
        file=sys.stderr,
    )
    return ExitCode.OK


def _log_to_stderr() -> None:
    """Every logger (aiohttp's too) to stderr, with every registered secret masked."""
    import logging

    from dispatcher.logs import RedactingFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("text"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
