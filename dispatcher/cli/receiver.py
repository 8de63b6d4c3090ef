"""``dispatcher receiver``: a webhook for delivery reports, appending them to NDJSON."""

from __future__ import annotations

import argparse
import sys

from dispatcher.cli._common import ExitCode, Parser, Signals, add_listen_options, fail

COMMAND = "dispatcher receiver"

HELP = "receive delivery reports on a webhook and append them to NDJSON"
DESCRIPTION = (
    "A webhook server for delivery reports (the URL for send --callbacks). Accepts "
    "JSON POSTs on any path (an object or an array of objects) and appends each "
    "object as one NDJSON line with an added receivedAt. GET /_receiver/stats "
    "gives the counts. SIGINT/SIGTERM write everything and exit 0; a second "
    "signal exits at once."
)


def options(p: Parser) -> None:
    add_listen_options(p, port=8090)
    p.add_argument("--out", required=True, help="NDJSON file the reports are appended to")
    p.add_argument(
        "--malformed",
        metavar="PATH",
        help="where refused bodies are kept (default OUT.malformed.ndjson)",
    )
    p.add_argument("--flush-interval", type=float, default=0.5, metavar="S", help="write every S")


def run(args: argparse.Namespace) -> int:
    import logging

    from dispatcher.errors import OutputError
    from dispatcher.receiver import serve

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

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
                malformed_out=args.malformed,
                flush_interval=args.flush_interval,
            )
        )
    except OutputError as exc:
        return fail(exc, ExitCode.ABORTED, command=COMMAND)
    except OSError as exc:  # the port is taken or the address is not ours
        where = f"{args.host}:{args.port}"
        return fail(f"cannot listen on {where}: {exc}", ExitCode.USAGE, command=COMMAND)
    print(
        f"{COMMAND}: {stats.written} delivery reports written to {args.out}"
        f" ({stats.malformed} malformed bodies refused)",
        file=sys.stderr,
    )
    return ExitCode.OK
