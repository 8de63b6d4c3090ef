"""``dispatcher gateway``: the emulator of the Messangi gateway as a server."""

from __future__ import annotations

import argparse
import secrets
import sys

from dispatcher.cli._common import ExitCode, Parser, Signals, add_listen_options, api_key, fail

COMMAND = "dispatcher gateway"

HELP = "run the emulator of the Messangi gateway"
DESCRIPTION = (
    "Run the gateway emulator as an HTTP server. Its first stdout line is "
    "'listening on http://HOST:PORT'; clients use that URL plus /raven as base "
    "URL. SIGINT/SIGTERM stop it (exit 0); a second signal exits at once."
)


def options(p: Parser) -> None:
    from dispatcher.cli._emulator import add_emulator_flags

    add_listen_options(p, port=8080)
    p.add_argument(
        "--api-key",
        metavar="K",
        help="Bearer key clients must send (else $DISPATCHER_API_KEY, else a random key "
        "printed on stderr)",
    )
    add_emulator_flags(p)


def run(args: argparse.Namespace) -> int:
    from dispatcher.cli._emulator import emulator_from
    from dispatcher.emulator.runner import serve

    try:
        key = args.api_key or _key_from_env()
    except ValueError as exc:  # DISPATCHER_API_KEY holds what no header can carry
        return fail(exc, ExitCode.USAGE, command=COMMAND)
    if not key:
        key = secrets.token_urlsafe(24)
        print(f"{COMMAND}: generated API key: {key}", file=sys.stderr, flush=True)
    try:
        settings = emulator_from(args, api_key=key)
    except ValueError as exc:
        return fail(exc, ExitCode.USAGE, command=COMMAND)
    signals = Signals()
    try:
        signals.run(serve(settings, host=args.host, port=args.port, stop=signals.stop))
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        return fail(f"cannot listen on {where}: {exc}", ExitCode.ABORTED, command=COMMAND)
    return ExitCode.OK


def _key_from_env() -> str | None:
    secret = api_key(None)
    return None if secret is None else secret.reveal()
