"""``dispatcher gen``: synthetic recipients as NDJSON on stdout."""

from __future__ import annotations

import argparse
import os
import sys

from dispatcher.cli._common import ExitCode, Parser, bounded, usage_error
from dispatcher.errors import ConfigError

#: flag, default, what it is a share of.
SHARES = (
    ("--invalid-share", 0.02, "invalid numbers"),
    ("--unicode-share", 0.05, "lines whose params are outside GSM-7"),
    ("--ref-share", 0.1, 'lines with a "ref"'),
    ("--overrides-share", 0.0, 'lines with a per-line "text" or "from"'),
)


HELP = "generate synthetic recipients as NDJSON on stdout"
DESCRIPTION = (
    "Generate realistic synthetic recipients (SPEC §2 NDJSON) on stdout: valid "
    "mobile numbers of a dozen countries in varied layouts, a share of invalid "
    "numbers, of non-GSM-7 params, of refs and of per-line overrides. The same "
    "seed gives the same bytes; each share is exact (round(count * share) lines)."
)


def options(p: Parser) -> None:
    p.add_argument(
        "--count",
        type=bounded(int, 0, 10**12),
        required=True,
        metavar="N",
        help="number of lines to write",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed")
    share = bounded(float, 0.0, 1.0, words="a share from 0 to 1")
    for flag, default, what in SHARES:
        p.add_argument(flag, type=share, default=default, metavar="F", help=what)


def run(args: argparse.Namespace) -> int:
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
        return usage_error(exc, command="dispatcher gen")
    except BrokenPipeError:
        # The reader went away (`gen | head`): that is how pipes end, not an error.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return ExitCode.OK
