"""``dispatcher merge``: the results of a job's shards into one account, checked."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from dispatcher.cli._common import ExitCode, Parser, fail, run_async, usage_error
from dispatcher.errors import ConfigError, InputError, OutputError

if TYPE_CHECKING:
    from dispatcher.merge import Merged

HELP = "join the results of a job's shards (--shard K/N) into one, checked line by line"
DESCRIPTION = (
    "Join the results files of the shards of one job (each host ran send --shard K/N on "
    "the same input) into one results file, and check that every non-blank line of the "
    "input has exactly one result across the shards. Exit 0 when the account is exact "
    "(the summary's job_exit_code tells how the job went); 1, writing nothing, when a "
    "line is missing or doubled (the lines are named); 2 for a bad input or a file that "
    "is not a results file; 3 when the output cannot be written."
)


def options(p: Parser) -> None:
    p.add_argument("input", metavar="INPUT", help="the job's input (NDJSON, .gz, - for stdin)")
    p.add_argument("shards", nargs="+", metavar="SHARD_RESULTS", help="each shard's results file")
    p.add_argument("--results", required=True, metavar="OUT", help="the merged results")
    p.add_argument("--summary", metavar="OUT", help="the merged summary JSON")


def run(args: argparse.Namespace) -> int:
    from dispatcher.paths import Place, check_distinct, check_writable

    written = [Place("--results", args.results)]
    if args.summary:
        written.append(Place("--summary", args.summary))
    read = [Place("INPUT", args.input), *(Place("SHARD_RESULTS", p) for p in args.shards)]
    try:
        if args.results == "-" or args.summary == "-":
            raise ConfigError("merge writes files: give --results (and --summary) a path")
        check_distinct(read, written)
        check_writable(written)
        merged = run_async(_merge(args))
    except (ConfigError, InputError) as exc:
        return usage_error(exc, command="dispatcher merge")
    except OutputError as exc:
        return fail(exc, ExitCode.ABORTED, command="dispatcher merge")
    if merged.problems:
        return fail(
            f"the shards do not account for the input exactly, nothing written: "
            f"{merged.problems.describe()}",
            ExitCode.FAILED,
            command="dispatcher merge",
        )
    counts = ", ".join(f"{n} {status}" for status, n in sorted(merged.statuses.items()))
    print(
        f"dispatcher merge: {merged.lines} lines from {len(args.shards)} shards into "
        f"{args.results}: {counts or 'no results'}",
        file=sys.stderr,
    )
    return ExitCode.OK


async def _merge(args: argparse.Namespace) -> Merged:
    import orjson

    from dispatcher.merge import expected_lines, merge_shards, write_atomically

    expected, count = await expected_lines(args.input)
    merged = write_atomically(
        args.results,
        lambda out: merge_shards(expected, count, args.shards, out),
        keep=lambda merged: not merged.problems,
    )
    if args.summary and not merged.problems:
        summary = orjson.dumps(merged.as_dict(), option=orjson.OPT_INDENT_2) + b"\n"
        write_atomically(args.summary, lambda out: out.write(summary))
    return merged
