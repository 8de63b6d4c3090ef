"""What every command shares: exit codes, the parser class, usage errors, the API-key
look-up, the event-loop runner and the one two-stage signal handling.

Kept light: ``dispatcher --version`` imports this module, so asyncio, aiohttp and the
library load inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeAlias, TypeVar

if TYPE_CHECKING:
    import asyncio

    from dispatcher.config import Number, Secret

T = TypeVar("T")

#: The signals that stop a command: the first gracefully, the second at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ExitCode(enum.IntEnum):
    """The process's exit codes (SPEC §6 and §10; 99 is the load test's, as k6's)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    ABORTED = 3
    UNFINISHED = 4
    THRESHOLD = 99

    @staticmethod
    def interrupted(signum: int) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + signum


# --- parsing ---------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that takes no abbreviations and never echoes the
    value of an option it does not know (it may be a secret: ``--api-key K``).

    A command's options are added on first use (`populate`), so that ``--version``
    and ``--help`` do not import what one command needs for its options.
    """

    def __init__(self, *args: Any, options: Callable[[Parser], None] | None = None, **kw: Any):
        kw["allow_abbrev"] = False
        kw.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kw)
        self._options = options

    def populate(self) -> Parser:
        """Add the command's options, once."""
        options, self._options = self._options, None
        if options is not None:
            options(self)
        return self

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            self.error(unrecognized(extra))
        return parsed

    def error(self, message: str) -> NoReturn:
        # argparse quotes the value a switch was wrongly given (``--resume=K``,
        # ``-hK``): it may be a secret typed in the wrong place.
        message = _EXPLICIT.sub("takes no value (the value given is not shown)", message)
        super().error(message)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # A bad command name is not echoed either: after an unknown option, it may be
        # that option's value.
        if isinstance(action, _Commands) and value not in action.choices:
            raise argparse.ArgumentError(
                action, f"unknown command (choose from {', '.join(action.choices)})"
            )
        super()._check_value(action, value)


_EXPLICIT = re.compile(r"ignored explicit argument .*", re.DOTALL)
#: What an unknown option's name may look like to be shown: ``--word-word`` or ``-x``.
#: Anything else (``-AbC…``, ``-xVALUE``) may be a secret that starts with a dash.
_OPTION_NAME = re.compile(r"--[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*|-[A-Za-z]")


def unrecognized(extra: Sequence[str]) -> str:
    """The error for unknown arguments: the option names, never a value — nor anything
    that only looks like an option (a key may begin with a dash)."""
    names = []
    for arg in extra:
        name = arg.partition("=")[0]
        if len(name) <= 40 and _OPTION_NAME.fullmatch(name):
            names.append(name)
    if others := len(extra) - len(names):
        names.append(f"{others} more value{'s' if others > 1 else ''} (not shown)")
    return f"unrecognized arguments: {', '.join(names)}"


if TYPE_CHECKING:
    _SubParsers: TypeAlias = argparse._SubParsersAction[Parser]
    Commands: TypeAlias = argparse._SubParsersAction[Parser]
else:
    _SubParsers = argparse._SubParsersAction


class _Commands(_SubParsers):
    """The sub-commands: the chosen one gets its options just before it parses."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, list)
        chosen = self.choices.get(values[0])
        if isinstance(chosen, Parser):
            chosen.populate()
        super().__call__(parser, namespace, values, option_string)
        extra = getattr(namespace, argparse._UNRECOGNIZED_ARGS_ATTR, None)
        if extra and isinstance(chosen, Parser):  # the command's usage, not the top's
            chosen.error(unrecognized(extra))


class Command(Protocol):
    """What a command module holds: its one-line ``HELP`` and its ``DESCRIPTION``, how
    it adds its options to its parser, and how it runs (parsed arguments → exit code)."""

    HELP: str
    DESCRIPTION: str

    def options(self, parser: Parser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def add_commands(parser: Parser) -> Commands:
    """The sub-command slot of the top-level parser."""
    return parser.add_subparsers(dest="command", metavar="COMMAND", required=True, action=_Commands)


def add_command(commands: Commands, name: str, command: Command) -> Parser:
    """Register a command: its help now, its options on first use, what runs it."""
    parser = commands.add_parser(
        name, help=command.HELP, description=command.DESCRIPTION, options=command.options
    )
    parser.set_defaults(run=command.run)
    return parser


def add_listen_options(parser: Parser, *, port: int) -> None:
    """``--host`` and ``--port`` of a server command."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=port_number(), default=port, help="port; 0 picks a free one")


def bounded(kind: type[T], low: float, high: float, **details: Any) -> Callable[[str], T]:
    """An argparse ``type`` for a number within bounds: a `number_type` of
    ``Number(kind=kind, low=low, high=high, **details)``."""
    from dispatcher.config import Number

    return number_type(Number(kind=kind, low=low, high=high, **details))


def number_type(number: Number) -> Callable[[str], Any]:
    """An argparse ``type`` that checks what a `dispatcher.config.Number` checks: never
    NaN, ``inf`` only where it means "no limit", never negative (``-0`` included)
    unless the bounds are. argparse's own ``float`` takes ``nan`` and ``inf``."""

    def convert(text: str) -> Any:
        try:
            return number("", text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None

    convert.__name__ = number.kind.__name__
    return convert


def port_number() -> Callable[[str], int]:
    """An argparse ``type`` for a TCP port: 0 (pick a free one) to 65535."""
    return bounded(int, 0, 65535, words="a port from 0 to 65535 (0 picks a free one)")


def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` from a parser that raises ValueError (`ConfigError` is
    one): argparse shows the parser's own message, not "invalid value"."""

    def convert(value: str) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except where it would say nothing: switches, and
    options that are unset (None) or empty by default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default in (None, "", [], (), argparse.SUPPRESS):
            return action.help
        if action.help and "%(default)" in action.help:
            return action.help
        return super()._get_help_string(action)


def usage_error(error: object, *, command: str = "dispatcher") -> int:
    """Print a usage or configuration error; exit code 2."""
    return fail(error, ExitCode.USAGE, command=command)


def fail(error: object, code: int, *, command: str = "dispatcher") -> int:
    """Print ``command: error`` on stderr; return ``code``."""
    print(f"{command}: {error}", file=sys.stderr)
    return code


def api_key(path: str | None) -> Secret | None:
    """The API key: from ``path`` when given, else ``DISPATCHER_API_KEY``, else None."""
    from dispatcher.config import find_api_key

    return find_api_key(path)


# --- running ----------------------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on asyncio's own loop."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class Signals:
    """Two-stage SIGINT/SIGTERM handling, the same for every command.

    The first signal prints ``message``, sets `stop` and calls the ``on_stop`` hooks:
    a graceful stop. The second runs the ``on_force`` hooks (quick, synchronous last
    words) and exits at once with 128 + the signal. `handle` is the handler, so a
    test can drive it; ``exit`` is injectable for the same reason. Other signals may
    get a handler of their own for the run (`on_signal`: SIGUSR1 toggles a send's pause).
    """

    def __init__(
        self, message: str | None = None, *, exit: Callable[[int], object] = os._exit
    ) -> None:
        import asyncio

        self.message = message
        #: The first signal received, if any.
        self.received: int | None = None
        #: Set by the first signal.
        self.stop: asyncio.Event = asyncio.Event()
        self._on_stop: list[Callable[[int], object]] = []
        self._on_force: list[Callable[[], object]] = []
        self._others: dict[int, Callable[[], object]] = {}
        self._exit = exit

    def on_stop(self, hook: Callable[[int], object]) -> None:
        """Call ``hook(signum)`` on the first signal."""
        self._on_stop.append(hook)

    def on_force(self, hook: Callable[[], object]) -> None:
        """Call ``hook()`` before exiting on the second signal."""
        self._on_force.append(hook)

    def on_signal(self, signum: int, hook: Callable[[], object]) -> None:
        """Call ``hook()`` whenever ``signum`` (not a stop signal) comes during the run."""
        self._others[signum] = hook

    @property
    def exit_code(self) -> int | None:
        """128 + the first signal, or None when none came."""
        return None if self.received is None else ExitCode.interrupted(self.received)

    def handle(self, signum: int) -> None:
        """The handler: a graceful stop the first time, an immediate exit the second."""
        if self.received is not None:
            self.force(signum)
            return
        self.received = signum
        if self.message:
            print(self.message, file=sys.stderr, flush=True)
        self.stop.set()
        for hook in self._on_stop:
            hook(signum)

    def force(self, signum: int) -> None:
        """Run the last words, then exit with 128 + ``signum`` without cleaning up."""
        for hook in self._on_force:
            with contextlib.suppress(Exception):
                hook()
        self._exit(ExitCode.interrupted(signum))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (`run_async`) with this handling installed on its loop.

        Once the loop has ended, a signal (while the outputs are written) means
        "exit now", with our exit code.
        """
        try:
            return run_async(self._guarded(coro))
        finally:
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._after_loop)

    async def _guarded(self, coro: Coroutine[Any, Any, T]) -> T:
        import asyncio

        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.handle, signum)
        for other, hook in self._others.items():
            loop.add_signal_handler(other, hook)
        try:
            return await coro
        finally:
            for number in (*STOP_SIGNALS, *self._others):
                loop.remove_signal_handler(number)

    def _after_loop(self, signum: int, frame: object) -> None:
        self.force(signum)


@contextlib.contextmanager
def signal_handlers_restored() -> Iterator[None]:
    """Put back the SIGINT/SIGTERM handlers a command changed (for callers of `main`
    in the same process, such as tests)."""
    saved = [(signum, signal.getsignal(signum)) for signum in STOP_SIGNALS]
    try:
        yield
    finally:
        for signum, handler in saved:
            signal.signal(signum, handler)
