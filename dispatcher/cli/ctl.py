"""``dispatcher ctl``: pause, resume, cancel, re-rate or ask the status of a running send."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys

from dispatcher.cli._common import ExitCode, Parser, fail, usage_error

HELP = "control a running send: pause, resume, cancel, rate CODE=N, status"
DESCRIPTION = (
    "Reach the send whose results file is JOB (it must be running, with --results "
    "naming a file: results on stdout have no journal, so no control). pause: no new "
    "request starts, those in flight finish; resume: sending again; cancel: the run "
    "ends, the lines not sent are CANCELLED (exit 4; send --resume sends them); rate "
    "CODE=N: the code's limit from now on (N per second, or inf; with a shared quota, "
    "for every job sharing it); status: JSON with counts by status, per-code rate and "
    "limit, paused or not, lines waiting for a window. SIGUSR1 to the send also toggles "
    "pause. Exit 0 when the job answered, 1 when no running job answers, 2 for bad "
    "arguments."
)
ACTIONS = ("pause", "resume", "cancel", "rate", "status")


def options(p: Parser) -> None:
    p.add_argument("job", metavar="JOB", help="the job's results path (as given to send --results)")
    p.add_argument("action", metavar="ACTION", help=f"what to do: {', '.join(ACTIONS)}")
    p.add_argument("setting", nargs="?", metavar="CODE=N", help="for rate: the code and its rate")


def run(args: argparse.Namespace) -> int:
    from dispatcher.control import ControlError, request
    from dispatcher.logs import redact

    try:
        message = _request(args.action, args.setting)
    except ValueError as exc:
        return usage_error(exc, command="dispatcher ctl")
    try:
        answer = request(args.job, message)
    except ControlError as exc:
        return fail(exc, ExitCode.FAILED, command="dispatcher ctl")
    if not answer.get("ok"):
        return usage_error(redact(str(answer.get("error"))), command="dispatcher ctl")
    if args.action == "status":
        import orjson

        out = orjson.dumps(answer.get("status"), option=orjson.OPT_INDENT_2) + b"\n"
    else:
        out = redact(str(answer.get("message"))).encode() + b"\n"
    with contextlib.suppress(BrokenPipeError):  # ctl … status | head
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    return ExitCode.OK


def _request(action: str, setting: str | None) -> dict[str, object]:
    """The request for ``action``; ValueError for a missing or stray ``CODE=N``."""
    # Neither is echoed: a value typed in the wrong place may be a secret.
    from dispatcher.config import parse_rate

    if action not in ACTIONS:
        raise ValueError(f"unknown action (choose from {', '.join(ACTIONS)})")
    if action != "rate":
        if setting is not None:
            raise ValueError(f"{action} takes no argument")
        return {"action": action}
    usage = "rate takes CODE=N (N messages per second, at least 0.001, or inf)"
    code, sep, value = (setting or "").partition("=")
    if not sep or not code:
        raise ValueError(usage)
    try:
        rate = parse_rate("rate", value)
    except ValueError:
        raise ValueError(usage) from None
    return {"action": "rate", "code": code, "rate": None if math.isinf(rate) else rate}
