"""Command line: argparse → library calls → exit code, one module per command.

Each command module is a `_common.Command`: ``HELP``, ``DESCRIPTION``,
``options(parser)`` (called only when that command runs) and ``run(args) -> int``;
`_common` holds what they share.
Heavy modules (aiohttp, the pipeline, the emulator) are imported inside the command
that needs them, so ``dispatcher --version`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

from dispatcher._version import __version__
from dispatcher.cli._common import (
    Command,
    ExitCode,
    Parser,
    add_command,
    add_commands,
    signal_handlers_restored,
)

__all__ = ["COMMANDS", "build_parser", "main"]

#: The commands of SPEC §7, in the order ``--help`` lists them; each is a module here.
COMMANDS = (
    "send",
    "gateway",
    "demo",
    "loadtest",
    "receiver",
    "report",
    "status",
    "gen",
    "preview",
    "merge",
    "ctl",
)


def build_parser() -> Parser:
    """The whole command line: one sub-command per entry of `COMMANDS`."""
    parser = Parser(
        prog="dispatcher",
        description="Bulk SMS through the Messangi Outbound SMS API, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"dispatcher {__version__}")
    commands = add_commands(parser)
    for name in COMMANDS:
        module: Command = importlib.import_module(f"dispatcher.cli.{name}")
        add_command(commands, name, module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    # numpy (the campaign checks load it) starts OpenBLAS, which nothing here uses, with
    # a thread per core: one, unless the user says otherwise (its import took 0.12 to
    # 0.16 CPU-s on two cores, 0.06 to 0.08 with one thread).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: for --workers
    run: Callable[[argparse.Namespace], int] = args.run
    with signal_handlers_restored():
        try:
            return int(run(args))
        except KeyboardInterrupt:
            return ExitCode.interrupted(signal.SIGINT)
        except Exception:
            # A bug: say so, with a traceback that cannot carry the API key.
            import traceback

            from dispatcher.logs import redact

            print(redact(traceback.format_exc()), file=sys.stderr, end="")
            print(
                "dispatcher: internal error (the traceback above); please report it",
                file=sys.stderr,
            )
            return ExitCode.ABORTED
