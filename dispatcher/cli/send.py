"""``dispatcher send``: the recipients of a file (or stdin) through the gateway.

Its options are the fields of `dispatcher.config.Config` that have a flag, declared
from their `Key`s: a setting added to `Config` gets its flag, its help and its place
in ``--help`` here without a line of this module changing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dispatcher.cli._common import ExitCode, Parser, Signals, fail, usage_error
from dispatcher.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dispatcher.config import Config, Key
    from dispatcher.paths import Place
    from dispatcher.pipeline import Shutdown
    from dispatcher.summary import Summary

STOPPING = "stopping: finishing in-flight requests (send the signal again to exit now)"

HELP = "send the recipients of an NDJSON file (or stdin) through the gateway"
DESCRIPTION = (
    "Send SMS to every recipient of an NDJSON file, a .gz file or stdin ('-'). "
    "Writes exactly one result per input line (stdout unless --results), the "
    "invalid numbers, and a summary. The API key comes from DISPATCHER_API_KEY "
    "or --api-key-file, never from a flag. Each setting comes from its flag, "
    "else its DISPATCHER_* variable, else the --config file, else the default "
    "shown."
)


def options(p: Parser) -> None:
    """``send``'s own arguments, then one option per `Config` key that has a flag,
    grouped by the key's section of the config file. Unset options stay None, so
    the environment and the file can fill them."""
    from dispatcher.config import API_KEY_ENV, KEYS

    p.add_argument("input", nargs="?", default="-", help="NDJSON recipients: a path, .gz, or -")
    add = p.add_argument_group("configuration").add_argument
    add("--config", metavar="TOML", help="configuration file (see configs/default.toml)")
    add("--api-key-file", metavar="FILE", help=f"file holding the API key (else {API_KEY_ENV})")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in KEYS.values():
        if key.flag is None:
            continue
        if key.section not in groups:
            groups[key.section] = p.add_argument_group(key.section)
        _add_option(groups[key.section], key)
        if key.name == "text":
            groups[key.section].add_argument(
                "--text-file", metavar="FILE", help="read the template from a file"
            )


def _add_option(group: argparse._ArgumentGroup, key: Key) -> None:
    flag = key.flag or "--" + key.name.replace("_", "-")
    settings: dict[str, Any] = {"dest": key.name, "default": None, "help": _help(key)}
    if key.kind is bool:
        # A setting a file may turn on can be turned off again on the command line.
        settings["action"] = argparse.BooleanOptionalAction if key.file else "store_true"
    elif key.kind is list:
        settings.update(action="append", metavar=key.metavar)
    else:
        # The text as typed: `config.load` reads and checks it like the environment's
        # and the file's values, so that the error names the flag (argparse's float()
        # would take nan and inf).
        settings.update(metavar=key.metavar, choices=key.choices or None)
    group.add_argument(flag, **settings)


def _help(key: Key) -> str:
    """The key's help with its default and where else it can come from: its
    environment variable (and value, when set: never a secret's) and its file key."""
    if not key.file:  # a switch of this run only: nothing else sets it
        return key.help
    shown = key.shown_default or _shown(key.default)
    where = []
    now = os.environ.get(key.env_var) if key.env_var else None
    if now is not None and not key.secret:
        where += [f"now {_displayable(now)!r} from {key.env_var}"]
        where += [f"built-in {shown}"] if shown else []
    else:
        where += [f"default {shown}"] if shown else []
        where += [f"env {key.env_var}"] if key.env_var else []
    if key.kind is list and isinstance(key.default, Mapping):  # a table: [sending.rates]
        where.append(f"file [{key.section}.{key.file_name}]")
    else:
        where.append(f"file [{key.section}] {key.file_name}")
    return f"{key.help} ({'; '.join(where)})".replace("%", "%%")


def _displayable(value: str) -> str:
    """An environment value as ``--help`` may show it: a URL's user name and password
    (a Redis URL a user wrongly put one in) masked, and any registered secret too."""
    from urllib.parse import urlsplit

    from dispatcher.logs import MASK, redact

    try:
        parts = urlsplit(value)
    except ValueError:
        return MASK
    if "@" in parts.netloc:
        value = parts._replace(netloc=MASK + "@" + parts.netloc.rpartition("@")[2]).geturl()
    return redact(value)


def _shown(default: Any) -> str | None:
    if default is None:
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
    except ConfigError as exc:
        return usage_error(exc)
    if args.input != "-" and not os.path.exists(args.input):
        return usage_error(f"input {args.input} does not exist")
    if config.workers > 1:  # the parent of a --workers job, or one of its workers
        from dispatcher import workers

        if (share := workers.worker_share()) is None:
            return _run_workers(args, config)
        config = workers.for_worker(config, *share)  # the parent prints the job's table
        return run_send(args.input, config, tune_gc=True, inputs=_settings_files(args), table=False)
    return run_send(args.input, config, tune_gc=True, inputs=_settings_files(args))


def _run_workers(args: argparse.Namespace, config: Config) -> int:
    from dispatcher import logs
    from dispatcher.workers import run_job

    logs.configure(config.log_level, config.log_format)
    try:
        return run_job(args.argv, config, config.workers)
    except ConfigError as exc:
        return usage_error(exc)
    except FatalError as exc:
        return fail(exc, ExitCode.ABORTED)


def config_from(args: argparse.Namespace) -> Config:
    """The run's configuration from the parsed flags, the environment and the file."""
    from dispatcher import config as cfg

    flags = flags_from(args, lambda key: key.flag is not None)
    config = cfg.load(flags=flags, config_file=args.config, api_key_file=args.api_key_file)
    if config.sender is None:
        raise ConfigError("send needs a sender code: --from CODE (or from = … in [message])")
    if config.text is None:
        raise ConfigError("send needs a text: --text T or --text-file F (or text = … in [message])")
    if config.api_key is None and not config.dry_run:
        raise ConfigError("no API key: set DISPATCHER_API_KEY or give --api-key-file FILE")
    cfg.check_rehearsal(config)
    return config


def flags_from(args: argparse.Namespace, declared: Callable[[Key], bool]) -> dict[str, Any]:
    """The values of the `Config` flags a command ``declared``, as `config.load` takes
    them (repeatable ones collected), and ``--text-file`` read into ``text``."""
    from dispatcher.config import KEYS

    flags: dict[str, Any] = {}
    for key in KEYS.values():
        if declared(key):
            value = getattr(args, key.name)
            flags[key.name] = key.from_flag(value) if key.from_flag else value
    if args.text_file is not None:
        if args.text is not None:
            raise ConfigError("give --text or --text-file, not both")
        flags["text"] = _read_text(args.text_file)
    return flags


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().removesuffix("\n")
    except OSError as exc:
        raise ConfigError(f"cannot read --text-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--text-file {path} is not UTF-8 text") from None


def _settings_files(args: argparse.Namespace) -> list[Place]:
    """The files the settings came from: no output may overwrite them."""
    from dispatcher.job import settings_files

    return settings_files(
        config_file=args.config, text_file=args.text_file, api_key_file=args.api_key_file
    )


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


def signals_for(shutdown: Shutdown) -> Signals:
    """Signal handling for a pipeline run: the first signal stops reading and lets
    in-flight requests finish; the second saves what it can and exits at once. SIGUSR1
    pauses the job, or resumes it when paused (`dispatcher.control`)."""
    import signal

    from dispatcher.control import toggle_pause

    signals = Signals(STOPPING)
    signals.on_stop(shutdown.request)
    signals.on_force(shutdown.force)
    signals.on_signal(signal.SIGUSR1, toggle_pause)
    return signals


def run_send(
    source: str,
    config: Config,
    *,
    tune_gc: bool = False,
    inputs: Sequence[Place] = (),
    table: bool = True,
) -> int:
    """Run the pipeline with signal handling; print and write the summary; exit code.

    ``tune_gc`` (the CLI's own process only) sets the collector up for the run;
    ``inputs`` are the files the settings came from (`dispatcher.pipeline.run`).
    """
    from dispatcher import logs, pipeline

    if tune_gc:
        _tune_gc()
    logs.configure(config.log_level, config.log_format)
    if config.api_key is not None:
        logs.register_secret(config.api_key.reveal())
    shutdown = pipeline.Shutdown()
    try:
        summary = signals_for(shutdown).run(
            pipeline.run(source, config, shutdown=shutdown, inputs=inputs)
        )
    except ConfigError as exc:
        return usage_error(exc)
    except FatalError as exc:  # outputs or journal cannot even be opened
        return fail(exc, ExitCode.ABORTED)
    return report_summary(summary, strict=config.strict, summary_path=config.summary, table=table)


def report_summary(
    summary: Summary, *, strict: bool, summary_path: str | None, table: bool = True
) -> int:
    """Write the summary JSON, print the table on stderr, return the exit code."""
    from dispatcher.logs import redact, redact_document
    from dispatcher.progress import summary_table
    from dispatcher.writers import write_json

    # The exit reason quotes the error that stopped the run: masked like every output.
    document = redact_document(summary.as_dict())
    if summary.fatal is not None:
        code = fail(redact(str(summary.fatal)), ExitCode.ABORTED)
    elif summary.interrupted is not None:
        code = ExitCode.interrupted(summary.interrupted)
    else:
        code = summary.exit_code(strict=strict)
    document["exit_code"] = code
    if summary_path and (problem := write_json(summary_path, document)):
        code = fail(problem, ExitCode.ABORTED)
    if table:
        print(summary_table(document), file=sys.stderr)
    return code
