"""``dispatcher preview``: what the first (or a sample of) lines would be, before sending.

The message options are ``send``'s own, declared from the same `Config` keys (with
``send``'s helper), and resolve the same way: flags > environment > ``--config`` file.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from typing import TYPE_CHECKING

from dispatcher.cli._common import ExitCode, Parser, fail, usage_error
from dispatcher.errors import ConfigError, InputError

if TYPE_CHECKING:
    from dispatcher.config import Config, Key
    from dispatcher.preview import Explainer, Previewer

COMMAND = "dispatcher preview"
#: The `Config` keys that decide what a line becomes, besides the [message] section...
MESSAGE_KEYS = ("strict_numbers", "price_per_segment", "prices", "smart_encoding", "transliterate")
#: ...whose keys all do, but these, which only go into the request.
REQUEST_KEYS = ("request_dr", "callbacks", "connection", "email", "external_id", "client_id")
HELP = "show what the first lines (or a sample) would be: text, encoding, segments, cost"
DESCRIPTION = (
    "Preview the lines of an NDJSON file, a .gz file or stdin ('-') as send would "
    "make them, with no network and no API key: the number as written and normalised "
    "(or why it is invalid), the rendered text (or why the line is REJECTED), its "
    "encoding and segments, which characters made it UCS-2 and where, what smart "
    "encoding would save, and the cost with --price-per-segment (and --price "
    "PREFIX=X). A table for people, or --json: one JSON object per line, NDJSON, "
    "the totals then going to stderr."
)


def options(p: Parser) -> None:
    """The input, what to preview, and send's message options from their `Config` keys."""
    from dispatcher.cli.send import _add_option
    from dispatcher.config import KEYS
    from dispatcher.preview import DEFAULT_LIMIT

    p.add_argument("input", nargs="?", default="-", help="NDJSON recipients: a path, .gz, or -")
    shown = p.add_argument_group("what to preview")
    which = shown.add_mutually_exclusive_group()
    which.add_argument(
        "--limit", type=int, metavar="N", help=f"the first N lines (default {DEFAULT_LIMIT})"
    )
    which.add_argument("--sample", type=int, metavar="N", help="a random sample of N lines")
    shown.add_argument("--seed", type=int, metavar="S", help="the sample's seed (default: random)")
    shown.add_argument(
        "--json", action="store_true", help="one JSON object per line (NDJSON; totals on stderr)"
    )
    p.add_argument("--config", metavar="TOML", help="configuration file (see configs/default.toml)")
    group = p.add_argument_group("message")
    for key in KEYS.values():
        if _declared(key):
            _add_option(group, key)
            if key.name == "text":
                group.add_argument(
                    "--text-file", metavar="FILE", help="read the template from a file"
                )


def run(args: argparse.Namespace) -> int:
    from dispatcher.preview import explain_lines, read_records
    from dispatcher.reader import CHUNK_SIZE
    from dispatcher.sources import open_source

    try:
        config = _config(args)
        explainer = _explainer(args, config)
    except ConfigError as exc:
        return usage_error(exc, command=COMMAND)
    if args.input != "-" and not os.path.isfile(args.input):
        what = "is not a file" if os.path.exists(args.input) else "does not exist"
        return usage_error(f"input {args.input} {what}", command=COMMAND)
    try:
        stream = open_source(args.input, CHUNK_SIZE)
    except InputError as exc:
        return usage_error(exc, command=COMMAND)
    try:
        explain_lines(read_records(stream, max_line_bytes=config.max_line_bytes), explainer)
    except InputError as exc:
        return fail(exc, ExitCode.ABORTED, command=COMMAND)
    except BrokenPipeError:
        # The reader went away (`preview | head`): how pipes end, not an error. Point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        stream.close()
    return ExitCode.OK


def _declared(key: Key) -> bool:
    """Whether preview takes this `Config` key's flag: it decides what a line becomes."""
    if key.flag is None or key.name in REQUEST_KEYS:
        return False
    return key.section == "message" or key.name in MESSAGE_KEYS


def _config(args: argparse.Namespace) -> Config:
    """The message options from the flags, the environment and the file, as send reads them."""
    from dispatcher import config as cfg
    from dispatcher.cli.send import flags_from

    config = cfg.load(flags=flags_from(args, _declared), config_file=args.config)
    if config.sender is None:
        raise ConfigError("a sender code is needed: --from CODE (or from = … in [message])")
    if config.text is None:
        raise ConfigError("a text is needed: --text T or --text-file F (or text = … in [message])")
    return config


def _explainer(args: argparse.Namespace, config: Config) -> Explainer:
    """The `Explainer` the options describe, writing to stdout."""
    from dispatcher.preview import DEFAULT_LIMIT, Explainer

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.sample is not None and args.sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {args.sample}")
    if args.seed is not None and args.sample is None:
        raise ConfigError("--seed goes with --sample N")

    previewer = previewer_for(config)
    # NDJSON is UTF-8 whatever the locale; a table in an ASCII terminal gets '?'s.
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.encoding.lower() != "utf-8":
        sys.stdout.reconfigure(encoding="utf-8", errors="strict" if args.json else "replace")
    return Explainer(
        previewer,
        sys.stdout,
        limit=args.limit or DEFAULT_LIMIT,
        sample=args.sample,
        seed=args.seed,
        json=args.json,
        width=shutil.get_terminal_size((120, 24)).columns,
        footer=sys.stderr if args.json else None,
    )


def previewer_for(config: Config) -> Previewer:
    """The `Previewer` of a configuration: its prices, smart encoding, transliteration."""
    from dispatcher.preview import Previewer
    from dispatcher.pricing import Pricing

    return Previewer(
        config,
        pricing=Pricing.from_config(config.price_per_segment, config.prices),
        smart_encoding=config.smart_encoding,
        transliterate=config.transliterate,
    )
