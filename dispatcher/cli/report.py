"""``dispatcher report``: send results joined with delivery reports, as final counts."""

from __future__ import annotations

import argparse
import sys

from dispatcher.cli._common import ExitCode, Parser, fail

HELP = "join results and delivery reports into final counts"
DESCRIPTION = (
    "Join send results (one line per input line; those with an id were accepted "
    "by the gateway) with delivery reports (matched on id; a final status beats a "
    "non-final one, then the latest timestamp wins). Prints delivered, undelivered "
    "by status, pending, not sent by status and reports for unknown ids."
)


def options(p: Parser) -> None:
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


def run(args: argparse.Namespace) -> int:
    import orjson

    from dispatcher.delivery import join_delivery_reports
    from dispatcher.errors import FatalError

    try:
        report = join_delivery_reports(args.results, args.dr, out=args.out)
    except FatalError as exc:
        return fail(exc, exc.exit_code, command="dispatcher report")
    if args.json:
        print(report.table(), file=sys.stderr)
        sys.stdout.buffer.write(orjson.dumps(report.as_dict(), option=orjson.OPT_APPEND_NEWLINE))
    else:
        print(report.table())
    return ExitCode.OK
