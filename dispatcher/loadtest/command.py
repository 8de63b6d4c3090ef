"""The body of ``dispatcher loadtest``: flags → `LoadTest`, run with signals, outputs,
exit code. Kept here so that ``cli.py`` stays a thin skin.

Exit codes: 0 passed (or no thresholds), 99 a threshold failed (as k6 does), 2 usage,
3 aborted (the API key was refused, or an output could not be written), 128 + signal
when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson

from dispatcher.errors import ConfigError
from dispatcher.loadtest.settings import LoadTest
from dispatcher.writers import write_json

T = TypeVar("T")

EXIT_OK = 0
EXIT_ABORTED = 3
EXIT_THRESHOLD = 99

_FAULT_FLAGS = (
    "fail_429",
    "fail_503",
    "fail_500_before",
    "fail_500_after",
    "drop_before",
    "drop_after",
    "latency_ms",
    "jitter_ms",
)


def loadtest_settings(args: argparse.Namespace) -> LoadTest:
    """The test the flags describe; `ConfigError` for anything a user must fix."""
    from dispatcher.config import API_KEY_ENV, Secret, read_api_key

    api_key = None
    if args.base_url is None:
        if args.api_key_file is not None:
            raise ConfigError("--api-key-file only goes with --base-url")
    else:
        if args.api_key_file is not None:
            api_key = read_api_key(args.api_key_file)
        elif os.environ.get(API_KEY_ENV, "").strip():
            api_key = Secret(os.environ[API_KEY_ENV].strip())
        if args.input is None and not args.synthetic:
            raise ConfigError(
                "against a real gateway, give --input FILE with your test numbers, or "
                "--synthetic to send to generated numbers (a live gateway would text them)"
            )
    faults = None
    if any(getattr(args, name) for name in _FAULT_FLAGS):
        from dispatcher.emulator.settings import FaultSettings

        try:
            faults = FaultSettings(**{name: getattr(args, name) for name in _FAULT_FLAGS})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if args.input is not None and args.input != "-" and not os.path.exists(args.input):
        raise ConfigError(f"--input {args.input} does not exist")
    if args.plot is not None:
        from dispatcher.loadtest.plot import check_available

        check_available()
    return LoadTest(
        rate=args.rate,
        rate_unit=args.rate_unit,
        duration=args.duration,
        warmup=args.warmup,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        timeout=args.timeout,
        drain=args.drain,
        sender=args.sender,
        text=args.text,
        input=args.input,
        seed=args.seed,
        base_url=args.base_url,
        api_key=api_key,
        faults=faults,
        thresholds=tuple(args.threshold),
    )


def run_loadtest_command(
    test: LoadTest,
    args: argparse.Namespace,
    *,
    run_async: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]],
) -> int:
    """Run the test with signal handling, write the outputs, return the exit code."""
    from dispatcher import logs
    from dispatcher.loadtest.report import table
    from dispatcher.loadtest.run import run_loadtest

    logs.configure("warning")
    if test.api_key is not None:
        logs.register_secret(test.api_key.reveal())
    received: list[int] = []

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if received:
                os._exit(128 + signum)
            received.append(signum)
            print(
                "stopping: waiting for in-flight requests (send the signal again to exit now)",
                file=sys.stderr,
            )
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        return await run_loadtest(test, stop=stop, live=None if args.quiet else sys.stderr)

    try:
        report = run_async(main())
    except ConfigError as exc:
        print(f"dispatcher: {exc}", file=sys.stderr)
        return 2
    if report["aborted"]:
        code = EXIT_ABORTED
    elif received:
        code = 128 + received[0]
    else:
        code = EXIT_OK if report["passed"] else EXIT_THRESHOLD
    report["exit_code"] = code
    code = _write_outputs(report, args, code)
    print(table(report), file=sys.stderr)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_APPEND_NEWLINE))
        sys.stdout.flush()
    return code


def _write_outputs(report: dict[str, Any], args: argparse.Namespace, code: int) -> int:
    if args.report and (problem := write_json(args.report, report)):
        print(f"dispatcher: {problem}", file=sys.stderr)
        code = EXIT_ABORTED
    if args.plot:
        from dispatcher.loadtest.plot import plot

        try:
            plot(report, args.plot)
        except OSError as exc:
            print(f"dispatcher: cannot write {args.plot}: {exc.strerror}", file=sys.stderr)
            code = EXIT_ABORTED
    return code
