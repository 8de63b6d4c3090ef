"""Command line: argparse → library calls → exit code. Each command body stays thin.

Heavy modules (aiohttp, the pipeline, the emulator) are imported inside the command
that needs them, so ``dispatcher --version`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dispatcher._version import __version__
from dispatcher.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from dispatcher.config import Config
    from dispatcher.summary import Summary

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3

Command = Callable[[argparse.Namespace], int]


# --- send ----------------------------------------------------------------------------


def _add_send(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="send the recipients of an NDJSON file (or stdin) through the gateway",
        description=(
            "Send SMS to every recipient of an NDJSON file, a .gz file or stdin ('-'). "
            "Writes exactly one result per input line (stdout unless --results), the "
            "invalid numbers, and a summary. The API key comes from DISPATCHER_API_KEY "
            "or --api-key-file, never from a flag."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_send_options(p)
    p.set_defaults(run=_cmd_send)


def add_send_options(p: argparse.ArgumentParser) -> None:
    """The options of ``send`` (``demo`` shares them). Unset flags stay None so that
    the config file and the environment can fill them (flags > env > file)."""
    p.add_argument("input", nargs="?", default="-", help="NDJSON recipients: a path, .gz, or -")
    add = p.add_argument_group("message").add_argument
    add("--from", dest="sender", metavar="CODE", help="sender code (short, long or alphanumeric)")
    add("--text", help="message template with {0}, {1}… placeholders")
    add("--text-file", metavar="FILE", help="read the template from a file")
    add("--request-dr", action="store_true", default=None, help="ask for delivery reports")
    add("--callbacks", metavar="URLS", help="comma-separated delivery-report webhook URLs")
    add("--connection", help="carrier connection name")
    add("--external-id", help="externalId for every message")
    add("--client-id", help="clientId for every message")
    add("--email", help="email associated with every destination")
    add("--segment-model", choices=("flat", "3gpp"), help="how segments are counted")
    add("--max-segments", type=int, help="refuse messages above this many segments")
    add("--strict-numbers", action="store_true", default=None, help="validate with libphonenumber")
    add = p.add_argument_group("gateway").add_argument
    add("--config", metavar="TOML", help="configuration file (see configs/)")
    add("--base-url", help="API base URL including its path prefix")
    add("--api-key-file", metavar="FILE", help="file holding the API key")
    add("--endpoint", choices=("batch", "single"), help="batch endpoint or one request per message")
    add(
        "--idempotency",
        action="store_true",
        default=None,
        help="the gateway honours Idempotency-Key",
    )
    add("--timeout", type=float, metavar="S", help="seconds before a request times out")
    add = p.add_argument_group("sending").add_argument
    add("--batch-size", type=int, metavar="N", help="recipients per batch request")
    add(
        "--linger-ms", type=float, metavar="MS", help="flush a batch that has not filled after this"
    )
    add("--concurrency", type=int, metavar="N", help="requests in flight at most")
    add("--rate", action="append", metavar="CODE=N", help="rate limit per sender code (N or inf)")
    add("--rate-unit", choices=("messages", "segments"), help="what the rate limits count")
    add("--max-attempts", type=int, metavar="N", help="attempts per batch, the first included")
    add(
        "--retry-ambiguous",
        action="store_true",
        default=None,
        help="retry even when the gateway may have acted",
    )
    add = p.add_argument_group("outputs and run").add_argument
    add("--results", metavar="PATH", help="results NDJSON (default stdout)")
    add("--invalid", metavar="PATH", help="invalid numbers NDJSON")
    add("--rejects", metavar="PATH", help="malformed input lines NDJSON")
    add("--summary", metavar="PATH", help="summary JSON")
    add("--resume", action="store_true", default=None, help="finish the job the journal describes")
    add("--force", action="store_true", default=None, help="start over despite an existing journal")
    add("--fsync", action="store_true", default=None, help="fsync results and journal")
    add(
        "--dry-run",
        action="store_true",
        default=None,
        help="validate, count and estimate; send nothing",
    )
    add(
        "--price-per-segment",
        type=float,
        metavar="X",
        help="report the cost of the billable segments",
    )
    add(
        "--progress",
        action="store_true",
        default=None,
        help="show progress even when not a terminal",
    )
    add("--no-progress", dest="progress", action="store_false", help="never show progress")
    add(
        "--strict",
        action="store_true",
        default=None,
        help="exit 1 when any line is invalid or rejected",
    )
    add(
        "--grace-period",
        type=float,
        metavar="S",
        help="seconds in-flight requests get after a stop",
    )
    add("--log-level", choices=("debug", "info", "warning", "error"), help="log level on stderr")
    add("--log-format", choices=("text", "json"), help="log format on stderr")


def send_config(args: argparse.Namespace) -> Config:
    """The run's configuration from the parsed flags, the environment and the file."""
    from dispatcher import config as cfg

    flags = {
        name: getattr(args, name)
        for name in (
            "sender", "text", "request_dr", "callbacks", "connection", "external_id", "client_id",
            "email", "segment_model", "max_segments", "strict_numbers", "base_url", "endpoint",
            "idempotency", "timeout", "batch_size", "linger_ms", "concurrency", "rate_unit",
            "max_attempts", "retry_ambiguous", "results", "invalid", "rejects", "summary",
            "resume", "force", "fsync", "dry_run", "price_per_segment", "progress", "strict",
            "grace_period", "log_level", "log_format",
        )
    }  # fmt: skip
    if args.text_file is not None:
        if args.text is not None:
            raise ConfigError("give --text or --text-file, not both")
        flags["text"] = _read_text(args.text_file)
    flags["rates"] = dict(_parse_rate(item) for item in args.rate or ())
    config = cfg.load(flags=flags, config_file=args.config, api_key_file=args.api_key_file)
    if config.sender is None:
        raise ConfigError("send needs a sender code: --from CODE (or from = … in [message])")
    if config.text is None:
        raise ConfigError("send needs a text: --text T or --text-file F (or text = … in [message])")
    if config.api_key is None and not config.dry_run:
        raise ConfigError("no API key: set DISPATCHER_API_KEY or give --api-key-file FILE")
    return config


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().removesuffix("\n")
    except OSError as exc:
        raise ConfigError(f"cannot read --text-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--text-file {path} is not UTF-8 text") from None


def _parse_rate(item: str) -> tuple[str, float]:
    from dispatcher.config import parse_rate

    code, sep, value = item.partition("=")
    if not sep or not code:
        raise ConfigError(f"--rate takes CODE=N (messages per second, or inf), got {item!r}")
    return code, parse_rate(f"--rate {code}", value)


def _cmd_send(args: argparse.Namespace) -> int:
    try:
        config = send_config(args)
    except ConfigError as exc:
        return _usage_error(exc)
    if args.input != "-" and not os.path.exists(args.input):
        return _usage_error(f"input {args.input} does not exist")
    return run_send(args.input, config, tune_gc=True)


def _tune_gc() -> None:
    # Measured on 1 M recipients (bench/bench_pipeline.py): the default thresholds run
    # a young collection every 700 allocations, and each one also walks the chunk of
    # recipients being prepared: 21 % of the CPU. The modules loaded by now live for
    # the whole run, so they leave the collector's sight (freeze, no collect: that
    # would cost start-up time); the hot path frees almost everything it allocates by
    # reference counting, so young collections can be rare. 20 % more recipients/s.
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_send(source: str, config: Config, *, tune_gc: bool = False) -> int:
    """Run the pipeline with signal handling; print and write the summary; exit code.

    ``tune_gc`` (the CLI's own process only) sets the collector up for the run.
    """
    from dispatcher import logs, pipeline

    if tune_gc:
        _tune_gc()
    logs.configure(config.log_level, config.log_format)
    if config.api_key is not None:
        logs.register_secret(config.api_key.reveal())

    async def main() -> Summary:
        shutdown = pipeline.Shutdown()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if shutdown.requested:
                shutdown.force()
                os._exit(128 + signum)
            print(
                "stopping: finishing in-flight requests (send the signal again to exit now)",
                file=sys.stderr,
            )
            shutdown.request(signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        return await pipeline.run(source, config, shutdown=shutdown)

    try:
        summary = run_async(main())
    except ConfigError as exc:
        return _usage_error(exc)
    except FatalError as exc:  # outputs or journal cannot even be opened
        print(f"dispatcher: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    finally:
        # The loop's handlers are gone with the loop: a signal now (a second Ctrl-C
        # while the summary is written) still means "exit at once", with our code.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda received, _: os._exit(128 + received))
    return report_summary(summary, config)


def report_summary(summary: Summary, config: Config) -> int:
    """Write the summary JSON, print the table on stderr, return the exit code."""
    from dispatcher.logs import redact
    from dispatcher.progress import summary_table
    from dispatcher.writers import write_json

    document = summary.as_dict()
    code = EXIT_OK
    if summary.fatal is not None:
        print(f"dispatcher: {redact(str(summary.fatal))}", file=sys.stderr)
        code = EXIT_ABORTED
    elif summary.interrupted is not None:
        code = 128 + summary.interrupted
    else:
        code = summary.exit_code(strict=config.strict)
    document["exit_code"] = code
    if config.summary and (problem := write_json(config.summary, document)):
        print(f"dispatcher: {problem}", file=sys.stderr)
        code = EXIT_ABORTED
    print(summary_table(document), file=sys.stderr)
    return code


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _usage_error(error: object) -> int:
    print(f"dispatcher: {error}", file=sys.stderr)
    return EXIT_USAGE


# --- gateway (the emulator) ----------------------------------------------------------


def _add_gateway(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateway",
        help="run the emulator of the Messangi gateway",
        description="Run the gateway emulator as an HTTP server. Its first stdout line is "
        "'listening on http://HOST:PORT'; clients use that URL plus /raven as base URL.",
    )

    def share(value: str) -> float:
        number = float(value)
        if not 0.0 <= number <= 1.0:
            raise argparse.ArgumentTypeError(f"{value} is not a share between 0 and 1")
        return number

    def rate(value: str) -> tuple[str, float]:
        from dispatcher.emulator.settings import parse_rate

        try:
            return parse_rate(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    p.add_argument(
        "--api-key",
        help="Bearer key clients must send (else $DISPATCHER_API_KEY, else a random key "
        "printed on stderr)",
    )
    p.add_argument("--owner", default="owner@example.com", help="owner/username in answers")
    p.add_argument(
        "--flat-single",
        action="store_true",
        help="answer v2/messages with the flat {status, messageId, description} shape",
    )
    p.add_argument("--max-batch", type=int, default=1000, help="recipients per batch (413)")
    p.add_argument("--max-segments", type=int, default=10, help="segments per message")
    p.add_argument(
        "--deny-code", action="append", default=[], metavar="CODE", help="CODE_NOT_ALLOWED"
    )
    p.add_argument(
        "--invalid-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="numbers starting with these digits are invalid at the gateway",
    )
    p.add_argument(
        "--rate",
        action="append",
        type=rate,
        default=[],
        metavar="CODE=N",
        help="messages/s for a sender code (N may be inf); defaults: shortcode 100, "
        "longcode 1, alphanumeric 100",
    )
    p.add_argument("--no-rate-limit", action="store_true", help="no rate limits at all")
    p.add_argument(
        "--ledger",
        choices=["full", "counts"],
        default="full",
        help="full keeps every message; counts only counters (for huge benchmarks)",
    )
    p.add_argument("--seed", type=int, help="seed of the fault and delivery-report draws")
    for flag, what in (
        ("--fail-429", "answer 429 (nothing recorded)"),
        ("--fail-500-before", "answer 500 before recording"),
        ("--fail-500-after", "answer 500 after recording"),
        ("--fail-503", "answer 503 (nothing recorded)"),
        ("--drop-before", "close the connection before recording"),
        ("--drop-after", "close the connection after recording"),
    ):
        p.add_argument(flag, type=share, default=0.0, metavar="SHARE", help=f"share: {what}")
    p.add_argument("--latency-ms", type=float, default=0.0, help="mean added latency")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- jitter")
    p.add_argument(
        "--fault-retry-after",
        type=int,
        default=1,
        metavar="S",
        help="Retry-After seconds of injected 429/503 answers",
    )
    p.add_argument("--dr-delay-ms", type=float, default=200.0, help="delay of delivery reports")
    for flag in ("--dr-undeliv", "--dr-expired", "--dr-rejectd"):
        p.add_argument(flag, type=share, default=0.0, metavar="SHARE", help="share of reports")
    p.add_argument("--access-log", action="store_true", help="log each request on stderr")
    p.set_defaults(run=_cmd_gateway)


def _cmd_gateway(args: argparse.Namespace) -> int:
    import os
    import secrets

    from dispatcher.emulator import EmulatorSettings, FaultSettings
    from dispatcher.emulator.runner import serve

    key = args.api_key or os.environ.get("DISPATCHER_API_KEY")
    if not key:
        key = secrets.token_urlsafe(24)
        print(f"dispatcher gateway: generated API key: {key}", file=sys.stderr, flush=True)
    try:
        faults = FaultSettings(
            fail_429=args.fail_429,
            fail_500_before=args.fail_500_before,
            fail_500_after=args.fail_500_after,
            fail_503=args.fail_503,
            drop_before=args.drop_before,
            drop_after=args.drop_after,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            retry_after_s=args.fault_retry_after,
        )
        settings = EmulatorSettings(
            api_key=key,
            owner=args.owner,
            operator=args.owner,
            flat_single=args.flat_single,
            max_batch=args.max_batch,
            max_segments=args.max_segments,
            deny_codes=frozenset(args.deny_code),
            invalid_prefixes=tuple(p.lstrip("+") for p in args.invalid_prefix),
            rates=dict(args.rate),
            rate_limit=not args.no_rate_limit,
            ledger=args.ledger,
            faults=faults,
            seed=args.seed,
            dr_delay_ms=args.dr_delay_ms,
            dr_undeliv=args.dr_undeliv,
            dr_expired=args.dr_expired,
            dr_rejectd=args.dr_rejectd,
            access_log=args.access_log,
        )
    except ValueError as exc:
        print(f"dispatcher gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return serve(settings, host=args.host, port=args.port)
    except OSError as exc:
        print(
            f"dispatcher gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return EXIT_ABORTED


# --- demo ----------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="send generated recipients through the embedded emulator",
        description=(
            "Start the gateway emulator in this process, generate recipients, send them "
            "through the real pipeline over real HTTP, write demo-out/ (results, invalid "
            "numbers, summary) and check the emulator's ledger: nothing lost, nothing twice."
        ),
    )
    p.add_argument("--count", type=int, default=100_000, help="recipients to generate")
    p.add_argument("--out", default="demo-out", help="directory for the outputs")
    p.add_argument("--seed", type=int, default=1, help="seed for recipients and faults")
    p.add_argument("--no-faults", action="store_true", help="a perfectly healthy gateway")
    p.add_argument("--progress", action="store_true", default=None, help="show progress")
    p.set_defaults(run=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from dispatcher import demo, logs, pipeline
    from dispatcher.config import Config

    if args.count < 0:
        return _usage_error("--count must not be negative")
    logs.configure("warning")

    async def main() -> demo.DemoResult:
        shutdown = pipeline.Shutdown()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, shutdown.request, signum)
        return await demo.run_demo(
            count=args.count,
            out=args.out,
            seed=args.seed,
            faults=not args.no_faults,
            progress=args.progress,
            shutdown=shutdown,
        )

    result = run_async(main())
    code = report_summary(result.summary, Config(summary=f"{args.out}/summary.json"))
    demo.write_ledger(result, args.out)
    print(demo.ledger_lines(result), file=sys.stderr)
    print(f"outputs            {args.out}/", file=sys.stderr)
    return EXIT_FAILED if result.problems and code == EXIT_OK else code


# --- loadtest ------------------------------------------------------------------------


def _add_loadtest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    class Formatter(argparse.ArgumentDefaultsHelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str | None:
            if action.default in (None, False, []):  # nothing worth showing (0.0 too)
                return action.help
            return super()._get_help_string(action)

    p = sub.add_parser(
        "loadtest",
        help="drive a gateway at a constant rate and check latency thresholds",
        description=(
            "Constant-arrival-rate load test. Request k is due at start + k/rate whatever "
            "the gateway does, and its latency counts from that due time, so a slow "
            "gateway shows as latency, not as a quietly lower rate. Drives an emulator "
            "started in this process on 127.0.0.1 unless --base-url is given. Exit codes: "
            "0 passed, 99 a threshold failed, 2 usage error, 3 aborted (API key refused), "
            "130/143 interrupted."
        ),
        formatter_class=Formatter,
    )

    from dispatcher.loadtest.options import add_arguments

    add_arguments(p)
    p.set_defaults(run=_cmd_loadtest)


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from dispatcher.loadtest.command import loadtest_settings, run_loadtest_command

    try:
        test = loadtest_settings(args)
    except ConfigError as exc:
        return _usage_error(exc)
    return run_loadtest_command(test, args, run_async=run_async)


# --- receiver ------------------------------------------------------------------------


def _add_receiver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "receiver",
        help="receive delivery reports on a webhook and append them to NDJSON",
        description=(
            "A webhook server for delivery reports (the URL for send --callbacks). Accepts "
            "JSON POSTs on any path (an object or an array of objects) and appends each "
            "object as one NDJSON line with an added receivedAt. GET /_receiver/stats "
            "gives the counts. SIGINT/SIGTERM write everything and exit 0."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port; 0 picks a free one (default 8090)")
    p.add_argument("--out", required=True, help="NDJSON file the reports are appended to")
    p.add_argument(
        "--malformed",
        metavar="PATH",
        help="where refused bodies are kept (default OUT.malformed.ndjson)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds between writes to OUT (default 0.5)",
    )
    p.set_defaults(run=_cmd_receiver)


def _cmd_receiver(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from dispatcher.errors import OutputError
    from dispatcher.receiver import serve

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

    def listening(line: str) -> None:
        print(line, flush=True)

    try:
        stats = asyncio.run(
            serve(
                args.out,
                host=args.host,
                port=args.port,
                on_listening=listening,
                malformed_out=args.malformed,
                flush_interval=args.flush_interval,
            )
        )
    except OutputError as exc:
        print(f"dispatcher receiver: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    except OSError as exc:  # the port is taken or the address is not ours
        print(
            f"dispatcher receiver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return EXIT_USAGE
    print(
        f"dispatcher receiver: {stats.written} delivery reports written to {args.out}"
        f" ({stats.malformed} malformed bodies refused)",
        file=sys.stderr,
    )
    return EXIT_OK


# --- report --------------------------------------------------------------------------


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="join results and delivery reports into final counts",
        description=(
            "Join send results (one line per input line; those with an id were accepted "
            "by the gateway) with delivery reports (matched on id; a final status beats a "
            "non-final one, then the latest timestamp wins). Prints delivered, undelivered "
            "by status, pending, not sent by status and reports for unknown ids."
        ),
    )
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
    p.set_defaults(run=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    import orjson

    from dispatcher.delivery import join_delivery_reports
    from dispatcher.errors import FatalError

    try:
        report = join_delivery_reports(args.results, args.dr, out=args.out)
    except FatalError as exc:
        print(f"dispatcher report: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(report.table(), file=sys.stderr)
        sys.stdout.buffer.write(orjson.dumps(report.as_dict(), option=orjson.OPT_APPEND_NEWLINE))
    else:
        print(report.table())
    return EXIT_OK


# --- status --------------------------------------------------------------------------


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="ask the gateway for the status of message ids",
        description=(
            "Look up message statuses with GET v2/messages/{id}, rate-limited; one JSON "
            "line per id on stdout. Ids from the command line or from a results file."
        ),
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="gateway message ids")
    p.add_argument("--results", metavar="PATH", help="take the ids of a results file")
    p.add_argument("--sample", type=int, metavar="N", help="check only N random ids of --results")
    p.add_argument("--config", metavar="TOML", help="configuration file (base URL, timeout)")
    p.add_argument("--base-url", help="API base URL including its path prefix")
    p.add_argument("--api-key-file", metavar="FILE", help="file holding the API key")
    p.add_argument("--rate", type=float, default=10.0, help="lookups per second")
    p.set_defaults(run=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
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
        if args.rate <= 0:
            raise ConfigError("--rate must be positive")
        ids = list(args.ids)
        if args.results:
            ids += ids_from_results(args.results, sample=args.sample)
        if not ids:
            raise ConfigError("give message ids, or --results PATH")
    except ConfigError as exc:
        return _usage_error(exc)
    return run_async(_status(config, ids, args.rate))


async def _status(config: Config, ids: list[str], rate: float) -> int:
    import orjson

    from dispatcher.gateway import GatewayClient, open_session
    from dispatcher.lookup import lookup

    failed = 0
    async with open_session(
        concurrency=4, timeout=config.timeout, connect_timeout=config.connect_timeout
    ) as session:
        gateway = GatewayClient(session, config.base_url, config.api_key)
        async for answer in lookup(gateway, ids, rate=rate):
            failed += "error" in answer
            sys.stdout.buffer.write(orjson.dumps(answer, option=orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()
    return EXIT_FAILED if failed else EXIT_OK


# --- gen -----------------------------------------------------------------------------


def _add_gen(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gen",
        help="generate synthetic recipients as NDJSON on stdout",
        description=(
            "Generate realistic synthetic recipients (SPEC §2 NDJSON) on stdout: valid "
            "mobile numbers of a dozen countries in varied layouts, a share of invalid "
            "numbers, of non-GSM-7 params, of refs and of per-line overrides. The same "
            "seed gives the same bytes; each share is exact (round(count * share) lines)."
        ),
    )
    p.add_argument("--count", type=int, required=True, help="number of lines to write")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    shares = (
        ("--invalid-share", 0.02, "invalid numbers"),
        ("--unicode-share", 0.05, "lines whose params are outside GSM-7"),
        ("--ref-share", 0.1, 'lines with a "ref"'),
        ("--overrides-share", 0.0, 'lines with a per-line "text" or "from"'),
    )
    for flag, default, what in shares:
        p.add_argument(
            flag, type=float, default=default, metavar="F", help=f"{what} (default {default:g})"
        )
    p.set_defaults(run=_cmd_gen)


def _cmd_gen(args: argparse.Namespace) -> int:
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
        print(f"dispatcher gen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`gen | head`): that is how pipes end, not an error.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


# --- main ----------------------------------------------------------------------------

_COMMANDS = (
    _add_send,
    _add_gateway,
    _add_demo,
    _add_loadtest,
    _add_receiver,
    _add_report,
    _add_status,
    _add_gen,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-command per entry of SPEC §7."""
    parser = argparse.ArgumentParser(
        prog="dispatcher",
        description="Bulk SMS through the Messangi Outbound SMS API, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"dispatcher {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception:
        # A bug: say so, with a traceback that cannot carry the API key.
        import traceback

        from dispatcher.logs import redact

        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print("dispatcher: internal error (the traceback above); please report it", file=sys.stderr)
        return EXIT_ABORTED
