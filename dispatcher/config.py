"""Configuration: one frozen record, built from defaults < TOML file < env < flags.

Every value is validated once, at start, and a bad one raises `ConfigError` naming the
key, where it came from and what would be accepted — the CLI turns that into exit 2.
The API key lives in a `Secret`, whose repr never shows it.

Each field of `Config` carries a `Key` in its metadata: its TOML section and parser,
its environment variable, its command-line flag and help. The file reader, the
environment reader and the options of ``dispatcher send`` all come from that one list,
so a new setting is one new field.
"""

from __future__ import annotations

import difflib
import errno
import math
import os
import re
import stat
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from dispatcher.errors import ConfigError
from dispatcher.pricing import Pricing, parse_prices, prices_from_flags
from dispatcher.timing import (
    MAX_DURATION,
    MOMENT_HELP,
    WINDOW_HELP,
    WeeklyWindow,
    parse_duration,
    parse_moment,
    parse_window,
)

DEFAULT_BASE_URL = "https://elastic.messangi.me/raven"
ENV_PREFIX = "DISPATCHER_"
API_KEY_ENV = "DISPATCHER_API_KEY"
REDIS_PASSWORD_ENV = "DISPATCHER_REDIS_PASSWORD"
CODE_KINDS = ("longcode", "shortcode", "alphanumeric")


class Secret:
    """A value that must never be printed: repr and str show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _frozen(mapping: Mapping[str, float] | None = None) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping or {}))


# --- how a value from a file, the environment or a flag is read ----------------------

Parser = Callable[[str, Any], Any]

#: Longest wait, timeout or pause a setting may ask for: a day. Beyond it a number is a
#: typo, and the event loop's timers could not even hold an infinite one.
MAX_SECONDS = 86_400.0
#: Largest cap on a job's messages or segments: beyond it a number is a typo.
MAX_CAP = 10**12
#: Slowest rate a sender code may have: one message every 1000 s.
MIN_RATE = 0.001


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {_shown(value)}")
    return value


def _opt_str(key: str, value: Any) -> str | None:
    return None if value is None or value == "" else _str(key, value)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"{key} must be true or false, got {_shown(value)}")


def _paths(key: str, value: Any) -> tuple[str, ...]:
    """A list of file paths (one path alone is taken as a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of file paths, got {_shown(value)}")
    return tuple(value)


def _paths_from_flags(items: list[str] | None) -> tuple[str, ...]:
    return tuple(items or ())


def _opt_bool(key: str, value: Any) -> bool | None:
    return None if value is None else _bool(key, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Number:
    """A parser of a number within bounds: finite (``inf`` only where it means "no
    limit"), never NaN, never negative where the bounds are not (``-0`` included).

    Reads text (flags, environment), TOML numbers and Python numbers alike, and says in
    its error what it accepts, naming where the value came from.
    """

    #: ``int`` (a whole number) or ``float``.
    kind: type
    low: float
    high: float
    #: ``low`` itself refused ("above 0": a timeout of 0 would mean nothing).
    above: bool = False
    #: ``inf`` accepted, meaning "no limit".
    inf: bool = False
    #: None accepted (an unset optional setting).
    optional: bool = False
    #: The unit the error names ("seconds").
    unit: str = ""
    #: How the error words what is accepted, when the bounds alone would not say it.
    words: str = ""

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        number = self._read(value)
        if number is None or not self._fits(number):
            raise ConfigError(f"{key} must be {self.accepts}, got {_shown(value)}")
        return number

    @property
    def accepts(self) -> str:
        """What the number may be, in words (for errors and help)."""
        if self.words:
            return self.words
        unit = f" of {self.unit}" if self.unit else ""
        if self.kind is int:
            first = int(self.low) + 1 if self.above else int(self.low)
            return f"a whole number from {first} to {int(self.high)}"
        if math.isinf(self.high):
            low = "above" if self.above else "from"
            if self.inf:
                return f"a number{unit} {low} {_plain(self.low)}, or inf"
            return f"a finite number{unit} {low} {_plain(self.low)}"
        if self.above:
            return f"a number{unit} above {_plain(self.low)} and at most {_plain(self.high)}"
        return f"a number{unit} from {_plain(self.low)} to {_plain(self.high)}"

    def _read(self, value: Any) -> int | float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            text = value.strip()
            if self.low >= 0 and text.startswith("-"):
                return None  # -0 too: a count or a duration is never negative
            try:
                return int(text) if self.kind is int else float(text)
            except ValueError:
                return None
        if isinstance(value, int):
            if self.kind is int:
                return value
            try:
                return float(value)
            except OverflowError:
                return None
        if isinstance(value, float):
            if self.low >= 0 and math.copysign(1.0, value) < 0:
                return None
            if self.kind is int:
                return int(value) if value.is_integer() else None
            return value
        return None

    def _fits(self, number: float) -> bool:
        if math.isnan(number):
            return False
        if math.isinf(number):
            return self.inf and number > 0
        if self.above:
            return self.low < number <= self.high
        return self.low <= number <= self.high


def _plain(number: float) -> str:
    """1000000 rather than 1e+06: the way a user types it."""
    # bounds may be ints (10**12) as well as floats; int.is_integer is 3.12+
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _count(low: int, high: int) -> Number:
    return Number(kind=int, low=low, high=high)


def _cap() -> Number:
    """A job's cap on messages or segments: unset, or a count from 0."""
    return Number(kind=int, low=0, high=MAX_CAP, optional=True)


def _seconds(*, zero: bool = False, high: float = MAX_SECONDS, unit: str = "seconds") -> Number:
    """A duration: above 0, or from 0 where 0 documents "none"."""
    return Number(kind=float, low=0.0, high=high, above=not zero, unit=unit)


_parse_rate = Number(
    kind=float,
    low=MIN_RATE,
    high=math.inf,
    inf=True,
    words=f"a positive rate per second (at least {MIN_RATE:g}), or inf for none",
)


def parse_rate(key: str, value: Any) -> float:
    """A rate in messages (or segments) per second: a positive number or ``inf``."""
    rate: float = _parse_rate(key, value)
    return rate


def _rates(key: str, value: Any) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table of CODE = rate, got {_shown(value)}")
    return _frozen({str(code): parse_rate(f"{key} {code}", rate) for code, rate in value.items()})


def _rates_from_flags(items: list[str] | None) -> Mapping[str, float]:
    """The ``--rate CODE=N`` flags, in order (a later one for the same code wins)."""
    rates = {}
    for item in items or ():
        code, sep, value = item.partition("=")
        if not sep or not code:
            raise ConfigError(f"--rate takes CODE=N (messages per second, or inf), got {item!r}")
        rates[code] = parse_rate(f"--rate {code}", value)
    return _frozen(rates)


#: An HTTP header's name (RFC 9110 token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_name(key: str, value: Any) -> str:
    name = _str(key, value)
    if name and not _TOKEN.fullmatch(name):
        raise ConfigError(
            f"{key} must be an HTTP header name (letters, digits, -) or '' for none, got {name!r}"
        )
    return name


# --- URLs ----------------------------------------------------------------------------


def url_problem(url: str, *, base: bool = True) -> str | None:
    """What is wrong with an http(s) URL, or None: it needs a scheme and a host, a port
    in 1..65535, no spaces or control characters, no user name or password (the key
    travels in a header) and, for a ``base`` URL that paths are added to, no query or
    fragment. The problem never quotes the URL: it may hold a secret."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL that can be read (a bad port or a bad [IPv6] host)"
    if parts.scheme.lower() not in ("http", "https") or not url.lower().startswith(
        ("http://", "https://")
    ):
        return "must start with http:// or https://"
    if "@" in parts.netloc:
        return "must not hold a user name or password"
    if not parts.hostname:
        return "needs a host after the scheme (http://HOST[:PORT]/…)"
    if port == 0:
        return "needs a port from 1 to 65535"
    if base and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        return "must not have a query (?…) or a fragment (#…): paths are added to it"
    try:
        import yarl

        host = yarl.URL(url).host  # decoded on demand: a bad IDNA name fails only here
    except (ValueError, UnicodeError):
        host = None
    if not host:
        return "has a host that is not a valid name or address"
    return None


def parse_url(key: str, value: Any) -> str:
    """An API base URL (``http://host[:port]/prefix``); `ConfigError` otherwise."""
    url = _str(key, value)
    problem = url_problem(url)
    if problem is not None:
        shown = "" if "@" in url else f", got {url!r}"
        raise ConfigError(
            f"{key} {problem}{shown} (it includes the API's path prefix, e.g. {DEFAULT_BASE_URL})"
        )
    return url


def _quota_url(key: str, value: Any) -> str | None:
    """A Redis URL for the shared quota, refused when it carries a password (which
    belongs in DISPATCHER_REDIS_PASSWORD or --redis-password-file)."""
    from dispatcher.quota import check_url  # the quota package imports this module

    url = _opt_str(key, value)
    if url is None:
        return None
    try:
        return check_url(url.strip())
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _namespace(key: str, value: Any) -> str | None:
    name = _opt_str(key, value)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", name):
        raise ConfigError(f"{key} must be 1-64 letters, digits or _.:- , got {_shown(name)}")
    return name


def _metrics_host(key: str, value: Any) -> str:
    """A host name or address to bind the metrics endpoint to (resolved when bound)."""
    host = _str(key, value).strip()
    if not host or any(ord(c) <= 0x20 or ord(c) == 0x7F or c in "/@[]" for c in host):
        raise ConfigError(f"{key} must be a host name or an IP address, got {_shown(value)}")
    return host


def _callbacks(key: str, value: Any) -> str | None:
    """Comma-separated webhook URLs; an error never quotes one (it may hold the
    receiver's secret)."""
    text = _opt_str(key, value)
    if text is None:
        return None
    urls = text.split(",")
    for number, url in enumerate(urls, 1):
        problem = url_problem(url.strip(), base=False)
        if problem is not None:
            which = f"URL {number} of {len(urls)}" if len(urls) > 1 else "the URL"
            raise ConfigError(f"{key}: {which} {problem} (the URL is not shown)")
    return text


#: What a flag's argument is, by the parser of the key: a switch, a number, a text,
#: or a repeatable flag.
_KINDS: dict[Parser, type] = {
    _bool: bool,
    _opt_bool: bool,
    _str: str,
    _opt_str: str,
    _rates: list,
    _paths: list,
    parse_prices: list,
}


def _window(key: str, value: Any) -> WeeklyWindow | None:
    if value is None or isinstance(value, WeeklyWindow):
        return value
    if not isinstance(value, str | Mapping):
        raise ConfigError(f"{key} must be {WINDOW_HELP}, or a table by weekday")
    try:
        return parse_window(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _time_zone(key: str, value: Any) -> str:
    name = _str(key, value)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{key}: {name!r} is not a known time zone: give an IANA name such as "
            "Europe/Madrid, America/New_York or UTC"
        ) from None
    return name


def _moment(key: str, value: Any) -> str | None:
    """A time as typed (kept as text: relative forms count from the run's start)."""
    if value is None:
        return None
    if isinstance(value, datetime):  # a TOML date-time
        if value.tzinfo is None:
            raise ConfigError(f"{key}: {value} has no UTC offset: add one (Z, +01:00, …)")
        return value.isoformat()
    text = _str(key, value)
    try:
        parse_moment(text, now=datetime.now(UTC))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return text


def _duration(key: str, value: Any) -> float | None:
    """``30m``, ``2h``, ``1d``; a number is seconds."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 < value <= MAX_DURATION:
            raise ConfigError(f"{key} must be more than 0 and at most a year, got {value}")
        return float(value)
    try:
        return parse_duration(_str(key, value))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _shard(key: str, value: Any) -> str | None:
    """``K/N``, kept in its plain spelling (``2/3``)."""
    if value is None:
        return None
    from dispatcher.shares import Share

    return str(Share.parse(_str(key, value), key))


# --- one description per key: file, environment, flag --------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    """How one `Config` field is set: its TOML section and parser, its environment
    variable, its command-line flag and help. `KEYS` holds one per field."""

    section: str
    parse: Parser
    help: str
    #: ``--name-with-dashes`` unless given; None: no flag (file and environment only).
    flag: str | None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    #: The spelling in the file and the environment when it is not the field's name.
    alias: str | None = None
    #: False: only on the command line (resume, force, dry run), never in a file or env.
    file: bool = True
    #: False: a table, which the environment cannot hold.
    env: bool = True
    #: Never shown, logged or put in a file (the API key).
    secret: bool = False
    #: How ``--help`` words the default when the value alone would not say it.
    shown_default: str | None = None
    #: Turns what the flag collected into the value (repeatable flags).
    from_flag: Callable[[Any], Any] | None = None
    #: Filled in for `KEYS`: the field's name and its built-in default.
    name: str = ""
    default: Any = None

    @property
    def kind(self) -> type:
        """``bool`` (a switch), ``int``, ``float``, ``str`` or ``list`` (repeatable)."""
        if isinstance(self.parse, Number):
            return self.parse.kind
        return _KINDS.get(self.parse, str)

    @property
    def option(self) -> str:
        """How errors name a value given on the command line (or to `load`'s flags):
        its flag, else the field's name."""
        if self.flag is None:
            return self.name
        return self.flag or "--" + self.name.replace("_", "-")

    def read(self, where: str, value: Any) -> Any:
        """``value`` parsed and checked (its choices too); ``where`` names its origin
        in the error: ``--timeout``, ``environment DISPATCHER_TIMEOUT``,
        ``c.toml: [gateway] timeout``."""
        value = self.parse(where, value)
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"{where} must be one of {', '.join(self.choices)}, got {_shown(value)}"
            )
        return value

    @property
    def file_name(self) -> str:
        """The key's spelling in the TOML file (``from`` for the sender)."""
        return self.alias or self.name

    @property
    def env_var(self) -> str | None:
        """``DISPATCHER_<KEY>``, or None when the environment cannot set it."""
        if not (self.file and self.env):
            return None
        return ENV_PREFIX + self.file_name.upper()


def _key(
    default: Any = None,
    *,
    factory: Callable[[], Any] | None = None,
    section: str,
    parse: Parser,
    help: str,
    flag: str | None = "",
    **details: Any,
) -> Any:
    """A `Config` field described by a `Key` (flag "" → ``--name-with-dashes``)."""
    key = Key(section=section, parse=parse, help=help, flag=flag, **details)
    if factory is not None:
        return field(default_factory=factory, metadata={"key": key})
    return field(default=default, metadata={"key": key})


def _kind_rates() -> Mapping[str, float]:
    return _frozen(KIND_RATES)


KIND_RATES: Mapping[str, float] = MappingProxyType(
    {"longcode": 1.0, "shortcode": 100.0, "alphanumeric": 100.0}
)
_BY_KIND = ", ".join(f"{kind} {rate:g}/s" for kind, rate in KIND_RATES.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a send needs to know. See ``configs/default.toml`` for each key."""

    base_url: str = _key(
        DEFAULT_BASE_URL,
        section="gateway",
        parse=parse_url,
        metavar="URL",
        help="API base URL including its path prefix",
    )
    api_key: Secret | None = _key(
        section="gateway",
        parse=_str,
        flag=None,
        file=False,
        secret=True,
        help=f"from --api-key-file, api_key_file in the file, or {API_KEY_ENV}; never a flag",
    )
    endpoint: str = _key(
        "batch",
        section="gateway",
        parse=_str,
        choices=("batch", "single"),
        help="the batch endpoint, or one request per message",
    )
    max_batch: int = _key(
        1000,
        section="gateway",
        parse=_count(1, 1_000_000),
        flag=None,
        help="the gateway's largest batch",
    )
    idempotency: bool = _key(
        False, section="gateway", parse=_bool, help="the gateway honours Idempotency-Key"
    )
    idempotency_header: str = _key(
        "Idempotency-Key",
        section="gateway",
        parse=_header_name,
        flag=None,
        help="'' sends no key",
    )
    timeout: float = _key(
        30.0,
        section="gateway",
        parse=_seconds(),
        metavar="S",
        help="seconds before a request times out",
    )
    connect_timeout: float = _key(
        10.0, section="gateway", parse=_seconds(), flag=None, help="seconds to connect"
    )
    # job-level; a line may override sender, text, external_id, client_id, email
    sender: str | None = _key(
        section="message",
        parse=_opt_str,
        flag="--from",
        alias="from",
        metavar="CODE",
        help="sender code: short, long or alphanumeric",
    )
    text: str | None = _key(
        section="message",
        parse=_opt_str,
        metavar="T",
        help="message template with {0}, {1}… placeholders",
    )
    request_dr: bool = _key(False, section="message", parse=_bool, help="ask for delivery reports")
    callbacks: str | None = _key(
        section="message",
        parse=_callbacks,
        metavar="URLS",
        help="comma-separated delivery-report webhook URLs",
    )
    connection: str | None = _key(
        section="message", parse=_opt_str, metavar="NAME", help="carrier connection name"
    )
    email: str | None = _key(
        section="message",
        parse=_opt_str,
        metavar="EMAIL",
        help="email associated with every destination",
    )
    external_id: str | None = _key(
        section="message", parse=_opt_str, metavar="ID", help="externalId for every message"
    )
    client_id: str | None = _key(
        section="message", parse=_opt_str, metavar="ID", help="clientId for every message"
    )
    segment_model: str = _key(
        "flat",
        section="message",
        parse=_str,
        choices=("flat", "3gpp"),
        help="how segments are counted",
    )
    # The per-message limit; ``--max-segments`` is the job's cap (issue 13), but the
    # file keeps ``max_segments`` in [message] for this one, so old files mean the same.
    max_message_segments: int = _key(
        10,
        section="message",
        parse=_count(1, 255),  # a concatenated SMS numbers its parts in one byte
        flag="--max-message-segments",
        alias="max_segments",
        metavar="N",
        help="a message above this many segments is SEGMENTS_EXCEEDED",
    )
    smart_encoding: bool = _key(
        False,
        section="message",
        parse=_bool,
        help="replace look-alike punctuation and spaces by GSM-7 where that makes the "
        "whole message GSM-7",
    )
    transliterate: bool = _key(
        False,
        section="message",
        parse=_bool,
        help="smart encoding also changes letters to their nearest GSM-7 letter (á → a)",
    )
    max_line_bytes: int = _key(
        65536,
        section="input",
        parse=_count(64, 1 << 30),
        flag=None,
        help="longer input lines are REJECTED",
    )
    strict_numbers: bool = _key(
        False, section="input", parse=_bool, help="validate numbers with libphonenumber"
    )
    suppress: tuple[str, ...] = _key(
        (),
        section="policy",
        parse=_paths,
        flag="--suppress",
        metavar="FILE",
        env=False,
        from_flag=_paths_from_flags,
        help="opt-out list (NDJSON, CSV or one number a line; .gz): its numbers are "
        "SUPPRESSED, never sent; repeatable, adds to the file's list",
    )
    dedupe: str = _key(
        "number+text",
        section="policy",
        parse=_str,
        choices=("number+text", "number", "off"),
        metavar="MODE",
        help="a later line with the same code, number and text (number+text), or the same "
        "number (number), is DUPLICATE, not sent",
    )
    max_messages: int | None = _key(
        section="policy",
        parse=_cap(),
        metavar="N",
        help="send at most N messages in the job; the lines beyond are NOT_SENT (resumable)",
    )
    max_job_segments: int | None = _key(
        section="policy",
        parse=_cap(),
        flag="--max-segments",
        metavar="N",
        help="send at most N segments in the job; the lines beyond are NOT_SENT (resumable)",
    )
    max_cost: float | None = _key(
        section="policy",
        parse=Number(kind=float, low=0.0, high=math.inf, optional=True),
        metavar="X",
        help="spend at most X (needs --price-per-segment); the lines beyond are NOT_SENT",
    )
    window: WeeklyWindow | None = _key(
        section="schedule",
        parse=_window,
        metavar="HH:MM-HH:MM",
        env=True,
        help="send only inside this window of the recipient's local time (from the "
        "number's time zone; may cross midnight: 21:00-07:00); a table by weekday in the "
        "file ([schedule.window] mon = …, default = …)",
    )
    outside_window: str = _key(
        "wait",
        section="schedule",
        parse=_str,
        choices=("wait", "skip"),
        help="a line outside its window: wait until it opens, or skip it (OUTSIDE_WINDOW, "
        "resumable)",
    )
    default_tz: str = _key(
        "UTC",
        section="schedule",
        parse=_time_zone,
        metavar="ZONE",
        help="the time zone (IANA name: Europe/Madrid) of a number whose zone is unknown",
    )
    start_at: str | None = _key(
        section="schedule",
        parse=_moment,
        metavar="TIME",
        help=f"start sending at TIME: {MOMENT_HELP}; a resume keeps the schedule",
    )
    expire_at: str | None = _key(
        section="schedule",
        parse=_moment,
        metavar="TIME",
        help="a line not accepted by TIME is EXPIRED_UNSENT, never sent late "
        "(not by a retry, not by a --resume)",
    )
    ttl: float | None = _key(
        section="schedule",
        parse=_duration,
        metavar="DURATION",
        help="expire DURATION (30m, 2h, 1d) after the job's first start",
    )
    now: str | None = _key(
        section="schedule",
        parse=_moment,
        file=False,
        env=False,
        metavar="TIME",
        help="rehearse as if the wall clock read TIME at start (windows, expiry, "
        "--start-at); only with --dry-run, preview, or a gateway on loopback",
    )
    batch_size: int = _key(
        1000,
        section="sending",
        parse=_count(1, 1_000_000),
        metavar="N",
        help="recipients per batch request",
    )
    linger_ms: float = _key(
        50.0,
        section="sending",
        parse=_seconds(zero=True, high=MAX_SECONDS * 1000, unit="milliseconds"),
        metavar="MS",
        help="flush a batch that has not filled after this",
    )
    max_buffered: int = _key(
        50_000,
        section="sending",
        parse=_count(1, 100_000_000),
        flag=None,
        help="recipients buffered across all groups",
    )
    concurrency: int = _key(
        16,
        section="sending",
        parse=_count(1, 10_000),
        metavar="N",
        help="requests in flight at most",
    )
    rates: Mapping[str, float] = _key(
        factory=_frozen,
        section="sending",
        parse=_rates,
        flag="--rate",
        metavar="CODE=N",
        env=False,
        from_flag=_rates_from_flags,
        shown_default=f"by kind of code, from [sending.kind_rates]: {_BY_KIND}",
        help="rate limit of a sender code, per second, N may be inf; repeatable",
    )
    kind_rates: Mapping[str, float] = _key(
        factory=_kind_rates,
        section="sending",
        parse=_rates,
        flag=None,
        env=False,
        help="rate limits by kind of sender code",
    )
    rate_unit: str = _key(
        "messages",
        section="sending",
        parse=_str,
        choices=("messages", "segments"),
        help="what the rate limits count",
    )
    quota_url: str | None = _key(
        section="quota",
        parse=_quota_url,
        metavar="URL",
        help="share the rate limits with every process using this Redis "
        "(redis://HOST:PORT/DB or rediss://…; the password from "
        f"{REDIS_PASSWORD_ENV} or --redis-password-file, never in the URL)",
    )
    quota_namespace: str | None = _key(
        section="quota",
        parse=_namespace,
        metavar="NAME",
        shown_default="derived from base_url",
        help="the shared quota's keys: processes share limits only within one namespace",
    )
    caps_key: str | None = _key(
        section="quota",
        parse=_namespace,
        metavar="NAME",
        shown_default="derived from the input, --from and the text",
        help="with --quota-url, the name the job's caps are counted under in Redis: the "
        "same on every host and worker of the job (see README: job-wide caps)",
    )
    account_rate: float = _key(
        math.inf,
        section="quota",
        parse=parse_rate,
        metavar="N",
        help="account-wide rate limit per second across all codes (needs --quota-url)",
    )
    quota_fallback: str = _key(
        "pause",
        section="quota",
        parse=_str,
        choices=("pause", "local"),
        help="while Redis is down: pause sending, or send at rate / quota_peers locally",
    )
    quota_peers: int = _key(
        1,
        section="quota",
        parse=_count(1, 10_000),
        metavar="N",
        help="processes sharing the quota (the local fallback's divisor)",
    )
    redis_password_file: str | None = _key(
        section="quota",
        parse=_opt_str,
        metavar="FILE",
        help=f"file holding the shared quota's Redis password (else {REDIS_PASSWORD_ENV})",
    )
    redis_password: Secret | None = _key(
        section="quota",
        parse=_str,
        flag=None,
        file=False,
        secret=True,
        help=f"from --redis-password-file or {REDIS_PASSWORD_ENV}; never a flag",
    )
    metrics_port: int | None = _key(
        section="metrics",
        parse=Number(kind=int, low=0, high=65535, optional=True),
        metavar="PORT",
        help="serve Prometheus metrics on this port while the job runs (0: any free "
        "port, logged); a port that cannot be served is a usage error",
    )
    metrics_host: str = _key(
        "127.0.0.1",
        section="metrics",
        parse=_metrics_host,
        metavar="HOST",
        help="the address the metrics are served on (0.0.0.0: every interface)",
    )
    max_attempts: int = _key(
        5,
        section="retry",
        parse=_count(1, 1000),
        metavar="N",
        help="attempts per batch, the first included",
    )
    retry_max_wait: float = _key(
        30.0,
        section="retry",
        parse=_seconds(zero=True),
        flag=None,
        help="longest wait between attempts, and longest pause of a sender code after a "
        "429 or 503, whatever Retry-After asks",
    )
    retry_deadline: float = _key(
        300.0,
        section="retry",
        parse=_seconds(),
        flag=None,
        help="seconds a batch may spend retrying",
    )
    retry_ambiguous: bool = _key(
        False, section="retry", parse=_bool, help="retry even when the gateway may have acted"
    )
    results: str = _key(
        "-",
        section="output",
        parse=_str,
        metavar="PATH",
        shown_default="stdout",
        help="results NDJSON",
    )
    invalid: str | None = _key(
        section="output", parse=_opt_str, metavar="PATH", help="invalid numbers NDJSON"
    )
    rejects: str | None = _key(
        section="output", parse=_opt_str, metavar="PATH", help="malformed input lines NDJSON"
    )
    summary: str | None = _key(
        section="output", parse=_opt_str, metavar="PATH", help="summary JSON"
    )
    resume: bool = _key(
        False, section="run", parse=_bool, file=False, help="finish the job the journal describes"
    )
    force: bool = _key(
        False, section="run", parse=_bool, file=False, help="start over despite an existing journal"
    )
    fsync: bool = _key(False, section="output", parse=_bool, help="fsync results and journal")
    dry_run: bool = _key(
        False,
        section="run",
        parse=_bool,
        file=False,
        help="validate, count and estimate; send nothing",
    )
    explain: bool = _key(
        False,
        section="run",
        parse=_bool,
        file=False,
        help="with --dry-run: the preview of the first 20 lines on stderr",
    )
    progress: bool | None = _key(
        section="output",
        parse=_opt_bool,
        shown_default="when stderr is a terminal",
        help="progress on stderr",
    )
    strict: bool = _key(
        False, section="output", parse=_bool, help="exit 1 when any line is invalid or rejected"
    )
    price_per_segment: float | None = _key(
        section="output",
        parse=Number(kind=float, low=0.0, high=math.inf, optional=True),
        metavar="X",
        help="report the cost of the billable segments",
    )
    prices: Mapping[str, float] = _key(
        factory=_frozen,
        section="output",
        parse=parse_prices,
        flag="--price",
        metavar="PREFIX=X",
        env=False,
        from_flag=prices_from_flags,
        help="price per segment of the numbers starting with PREFIX (a country calling "
        "code, or longer: 1787); repeatable; the others pay price_per_segment",
    )
    workers: int = _key(
        1,
        section="run",
        parse=_count(1, 64),
        metavar="N",
        help="run N processes, each on its share of the input (by a hash of the number); "
        "one results file; --resume needs the same N",
    )
    shard: str | None = _key(
        section="run",
        parse=_shard,
        metavar="K/N",
        help="send only share K of N of the input (by a hash of the number: every line to "
        "one recipient in one share); run each share on its own host with the shared "
        "quota, then join the results with dispatcher merge",
    )
    grace_period: float = _key(
        10.0,
        section="run",
        parse=_seconds(zero=True),
        metavar="S",
        help="seconds in-flight requests get after a stop",
    )
    log_level: str = _key(
        "info",
        section="run",
        parse=_str,
        choices=("debug", "info", "warning", "error"),
        help="log level on stderr",
    )
    log_format: str = _key(
        "text", section="run", parse=_str, choices=("text", "json"), help="log format on stderr"
    )

    @property
    def request_size(self) -> int:
        """Messages per request: 1 on the single endpoint, else the batch size within
        the gateway's maximum."""
        if self.endpoint == "single":
            return 1
        return max(1, min(self.batch_size, self.max_batch))

    @property
    def single(self) -> bool:
        """Whether messages go one per request to ``v2/messages`` with rendered text."""
        return self.request_size == 1


def _keys() -> dict[str, Key]:
    defaults = Config()
    return {
        f.name: replace(f.metadata["key"], name=f.name, default=getattr(defaults, f.name))
        for f in fields(Config)
    }


#: Every field's `Key`, in field order.
KEYS: Mapping[str, Key] = MappingProxyType(_keys())
#: The keys a file or the environment may set, by their spelling there (and the
#: field's name, which is accepted too: ``sender`` as well as ``from``).
_FILE_KEYS = {
    spelling: key for key in KEYS.values() if key.file for spelling in {key.name, key.file_name}
}
_SECTIONS = sorted({key.section for key in _FILE_KEYS.values()})


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Flatten a config file into ``{field: value}``, refusing unknown keys; an error
    names the file, the section and the key."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    values: dict[str, Any] = {}
    for table, content in document.items():
        if table == "api_key_file":
            values["api_key_file"] = _str(f"{path}: api_key_file (top level)", content)
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: {_misplaced(table, content)}")
        if table not in _SECTIONS:
            raise ConfigError(
                f"{path}: unknown section [{table}]{_suggest(table, _SECTIONS)}; "
                f"sections are {', '.join(_SECTIONS)}"
            )
        for name, value in content.items():
            key = _FILE_KEYS.get(str(name))
            if key is None:
                known = [k.file_name for k in KEYS.values() if k.file and k.section == table]
                raise ConfigError(
                    f"{path}: unknown key '{name}' in [{table}]{_suggest(name, known)}"
                )
            if key.section != table:
                raise ConfigError(f"{path}: '{name}' belongs in [{key.section}], not in [{table}]")
            where = f"[{table}.{name}]" if key.kind is list else f"[{table}] {name}"
            values[key.name] = key.read(f"{path}: {where}", value)
    return values


def _misplaced(name: str, value: Any) -> str:
    """The error for a top-level value that is not a section."""
    if name in _SECTIONS:
        return f"[{name}] must be a section (a table of keys), got {type(value).__name__}"
    key = _FILE_KEYS.get(name)
    if key is not None:
        return f"'{name}' must be inside its section: write it under [{key.section}]"
    return (
        f"unknown top-level key '{name}'{_suggest(name, _SECTIONS)}; keys go inside "
        f"the sections {', '.join(_SECTIONS)} (api_key_file alone is top level)"
    )


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``DISPATCHER_<KEY>`` variables, e.g. ``DISPATCHER_CONCURRENCY=32``
    (``DISPATCHER_FROM``, or ``DISPATCHER_SENDER``, for the sender code)."""
    values: dict[str, Any] = {}
    for key in KEYS.values():
        if key.env_var is None:
            continue
        for variable in dict.fromkeys((ENV_PREFIX + key.name.upper(), key.env_var)):
            raw = env.get(variable)
            if raw is not None:  # the file's spelling (DISPATCHER_FROM) comes last, wins
                values[key.name] = key.read(f"environment {variable}", raw)
    return values


def read_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Values given by flag (or by a library caller), keyed by field name, each parsed
    and checked; an error names the flag. None means "not given"."""
    values: dict[str, Any] = {}
    for name, value in flags.items():
        key = KEYS.get(name)
        if key is None or value is None:
            if key is None:
                values[name] = value  # refused with the other unknown keys by `load`
            continue
        values[name] = value if key.secret else key.read(key.option, value)
    return values


#: Largest secret file read: a key is a line, and /dev/zero must not fill the memory.
SECRET_FILE_LIMIT = 64 * 1024


def read_secret_file(path: str | os.PathLike[str], what: str) -> Secret:
    """The secret a file holds: its first non-blank line, white space stripped.

    Shared by every secret read from a file (the API key, and any other credential).
    ``what`` names the file in errors ("the API key file (--api-key-file)"). At most
    64 KiB are read (a device such as /dev/zero is refused, not read until memory runs
    out); the text must be UTF-8. A named pipe is opened without waiting for a writer.
    No error ever quotes the content, nor the path unless it exists (a key typed where
    its file's name belongs must not be printed).
    """
    shown = f"{what} {os.fsdecode(path)}" if os.path.lexists(path) else what
    try:
        data = _read_at_most(path, SECRET_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{what} does not exist (the name given is not shown, in case it is the secret)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {shown}: {exc.strerror}") from None
    if len(data) > SECRET_FILE_LIMIT:
        raise ConfigError(f"{shown} is larger than 64 KiB: it cannot be a key file")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown} is not UTF-8 text") from None
    for line in text.splitlines():
        if line.strip():
            return Secret(line.strip())
    raise ConfigError(f"{shown} is empty")


def _read_at_most(path: str | os.PathLike[str], limit: int) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)  # opened at once; now read as usual
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _header_safe(key: Secret, where: str) -> Secret:
    """An API key must fit in an HTTP header: printable ASCII."""
    if not all(" " <= c <= "~" for c in key.reveal()):
        raise ConfigError(
            f"the API key from {where} holds a character an HTTP header cannot carry "
            "(only printable ASCII)"
        )
    return key


def read_api_key(path: str | os.PathLike[str]) -> Secret:
    """The key from a file: first line, surrounding white space ignored."""
    return _header_safe(read_secret_file(path, "the API key file"), "the API key file")


def find_api_key(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Secret | None:
    """The API key: from the file when one is named, else from ``DISPATCHER_API_KEY``
    (surrounding white space ignored), else None."""
    if path is not None:
        return read_api_key(path)
    value = (os.environ if env is None else env).get(API_KEY_ENV, "").strip()
    return _header_safe(Secret(value), API_KEY_ENV) if value else None


def find_redis_password(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> Secret | None:
    """The shared quota's Redis password: from the file when one is named, else from
    ``DISPATCHER_REDIS_PASSWORD`` (surrounding white space ignored), else None."""
    if path is not None:
        return read_secret_file(path, "the Redis password file (--redis-password-file)")
    value = env.get(REDIS_PASSWORD_ENV, "").strip()
    return Secret(value) if value else None


def load(
    *,
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
) -> Config:
    """Build the run's `Config`: defaults < file < env < flags, each value checked
    where it is read (so an error names the flag, the variable or the file's section
    and key), then the combinations."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_toml(config_file))
    values.update(read_env(env))
    for key, value in read_flags(flags or {}).items():
        if key in ("rates", "prices"):  # --rate, --price add to the file's table
            if value:
                values[key] = _frozen({**values.get(key, {}), **value})
        elif key == "suppress":  # --suppress adds to the file's lists
            if value:
                values[key] = (*values.get(key, ()), *value)
        else:
            values[key] = value
    file_key = values.pop("api_key_file", None)
    if (api_key := find_api_key(api_key_file or file_key, env)) is not None:
        values["api_key"] = api_key
    if (password := find_redis_password(values.get("redis_password_file"), env)) is not None:
        values["redis_password"] = password
    unknown = set(values) - set(KEYS)
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    return validate(Config(**values))


def validate(config: Config) -> Config:
    """Check every value (by field name: a `Config` built in code) and the
    combinations; return the config, with the kinds of code it leaves out rated
    by default."""
    if config.text is not None:
        from dispatcher.renderer import compile_template

        compile_template(config.text)  # e.g. {1000}: refused before any file is touched
    for key in KEYS.values():
        if not key.secret:
            key.read(key.name, getattr(config, key.name))
    pricing = Pricing.from_config(config.price_per_segment, config.prices)
    if config.max_cost is not None and pricing is None:
        raise ConfigError(
            "max_cost needs a price: --price-per-segment X (and --price PREFIX=X, or a "
            "table in [output.prices], for prices by country)"
        )
    if config.explain and not config.dry_run:
        raise ConfigError("--explain goes with --dry-run")
    missing = set(CODE_KINDS) - set(config.kind_rates)
    unknown = set(config.kind_rates) - set(CODE_KINDS)
    if unknown:
        raise ConfigError(
            f"kind_rates accepts {', '.join(CODE_KINDS)}; unknown: {', '.join(sorted(unknown))}"
        )
    if missing:
        config = replace(
            config,
            kind_rates=_frozen({**{k: KIND_RATES[k] for k in missing}, **config.kind_rates}),
        )
    if not math.isinf(config.account_rate) and config.quota_url is None:
        raise ConfigError(
            "account_rate is kept by the shared quota: give --quota-url redis://HOST:PORT/DB"
        )
    if config.caps_key is not None and config.quota_url is None:
        raise ConfigError(
            "caps_key names the job's caps in the shared quota's Redis: give --quota-url "
            "redis://HOST:PORT/DB too"
        )
    if config.resume and config.force:
        raise ConfigError("--resume and --force contradict each other: choose one")
    caps = (config.max_messages, config.max_job_segments, config.max_cost)
    if config.shard is not None and config.quota_url is None and any(c is not None for c in caps):
        raise ConfigError(
            "caps are job-wide, and with --shard but no --quota-url each host would count "
            "only its own share: give every shard the same --quota-url (the caps are then "
            "counted in Redis), or run the shards without max_messages, max_segments and "
            "max_cost"
        )
    if config.expire_at is not None and config.ttl is not None:
        raise ConfigError("give --expire-at or --ttl, not both: each sets the job's expiry")
    return config


def check_rehearsal(config: Config) -> None:
    """``--now`` only where no real recipient can be reached: a dry run, or a gateway
    on loopback (the emulator). `preview` never sends and needs no check."""
    if config.now is None or config.dry_run or is_loopback(config.base_url):
        return
    raise ConfigError(
        "--now rehearses: it is accepted only with --dry-run or a gateway on loopback "
        f"(127.0.0.1, ::1, localhost), not with {urlsplit(config.base_url).hostname}"
    )


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine's loopback (no name lookup)."""
    import ipaddress

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Characters a URL path carries as they are (RFC 3986 "unreserved"): what a receiver
#: secret is made of, so that it fits the last segment of a callback URL.
SECRET_CHARS = frozenset(string.ascii_letters + string.digits + "-._~")
SECRET_MIN = 16


def callback_secrets(callbacks: str | None) -> list[str]:
    """The secrets in ``send --callbacks URLS``: the last path segment of each URL that
    looks like one (16+ URL-safe characters), so that ``send`` can mask them."""
    found = []
    for url in (callbacks or "").split(","):
        try:
            segment = urlsplit(url.strip()).path.rpartition("/")[2]
        except ValueError:
            continue
        if len(segment) >= SECRET_MIN and SECRET_CHARS.issuperset(segment):
            found.append(segment)
    return found
