"""``dispatcher status``: the gateway's view of message ids (``GET v2/messages/{id}``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING, Any, cast

from dispatcher.cli._common import ExitCode, Parser, Signals, bounded, usage_error
from dispatcher.errors import ConfigError, InputError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncGenerator

    from dispatcher.config import Config


HELP = "ask the gateway for the status of message ids"
DESCRIPTION = (
    "Look up message statuses with GET v2/messages/{id}, rate-limited; one JSON "
    "line per id on stdout. Ids from the command line or from a results file."
)


def options(p: Parser) -> None:
    from dispatcher.config import API_KEY_ENV, DEFAULT_BASE_URL, MIN_RATE

    p.add_argument("ids", nargs="*", metavar="ID", help="gateway message ids")
    p.add_argument("--results", metavar="PATH", help="take the ids of a results file")
    p.add_argument(
        "--sample",
        type=bounded(int, 1, 100_000_000),
        metavar="N",
        help="check only N random ids of --results",
    )
    p.add_argument("--config", metavar="TOML", help="configuration file (base URL, timeout)")
    p.add_argument(
        "--base-url",
        help=f"API base URL including its path prefix (default: the file's, else "
        f"DISPATCHER_BASE_URL, else {DEFAULT_BASE_URL})",
    )
    p.add_argument(
        "--api-key-file", metavar="FILE", help=f"file holding the API key (else {API_KEY_ENV})"
    )
    p.add_argument(
        "--rate",
        type=bounded(float, MIN_RATE, 10_000.0),
        default=10.0,
        metavar="N",
        help="lookups per second",
    )


def run(args: argparse.Namespace) -> int:
    from dispatcher import config as cfg
    from dispatcher.lookup import ids_from_results

    try:
        config = cfg.load(
            flags={"base_url": args.base_url},
            config_file=args.config,
            api_key_file=args.api_key_file,
        )
        if config.api_key is None:
            raise ConfigError("no API key: set DISPATCHER_API_KEY or give --api-key-file FILE")
        if args.sample is not None and not args.results:
            raise ConfigError("--sample goes with --results")
        ids = list(args.ids)
        if "" in ids:
            raise ConfigError("a message id must not be empty")
        if args.results:
            ids += ids_from_results(args.results, sample=args.sample)
        if not ids:
            raise ConfigError("give message ids, or --results PATH")
    except ConfigError as exc:
        return usage_error(exc)
    except InputError as exc:  # the results file cannot be read
        return usage_error(exc)
    signals = Signals()  # the first signal ends the look-ups after the current answer
    failed = signals.run(_status(config, ids, args.rate, signals.stop))
    return signals.exit_code or (ExitCode.FAILED if failed else ExitCode.OK)


async def _status(config: Config, ids: list[str], rate: float, stop: asyncio.Event) -> int:
    """Print one line per id until done or ``stop``; the number of failed look-ups."""
    import orjson

    from dispatcher.gateway import GatewayClient
    from dispatcher.lookup import lookup

    failed = 0
    async with GatewayClient(
        config.base_url,
        config.api_key,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
    ) as gateway:  # lookup's four at a time: four connections at most
        # An async generator (typed as an iterator): closed at once when we stop early.
        lookups = cast("AsyncGenerator[dict[str, Any], None]", lookup(gateway, ids, rate=rate))
        async with contextlib.aclosing(lookups) as answers:
            async for answer in answers:
                failed += "error" in answer
                sys.stdout.buffer.write(orjson.dumps(answer, option=orjson.OPT_APPEND_NEWLINE))
                if stop.is_set():
                    break
    sys.stdout.flush()
    return failed
