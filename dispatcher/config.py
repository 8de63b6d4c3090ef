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
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dispatcher.errors import ConfigError
from dispatcher.pricing import Pricing, parse_prices, prices_from_flags

DEFAULT_BASE_URL = "https://elastic.messangi.me/raven"
ENV_PREFIX = "DISPATCHER_"
API_KEY_ENV = "DISPATCHER_API_KEY"
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


# --- how a value from a file or the environment is read ------------------------------

Parser = Callable[[str, Any], Any]


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
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
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a whole number, got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return number


def _float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if math.isnan(number):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return number


def _opt_float(key: str, value: Any) -> float | None:
    return None if value is None else _float(key, value)


def _opt_int(key: str, value: Any) -> int | None:
    return None if value is None else _int(key, value)


def _paths(key: str, value: Any) -> tuple[str, ...]:
    """A list of file paths (one path alone is taken as a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of file paths, got {value!r}")
    return tuple(value)


def _paths_from_flags(items: list[str] | None) -> tuple[str, ...]:
    return tuple(items or ())


def _opt_bool(key: str, value: Any) -> bool | None:
    return None if value is None else _bool(key, value)


def parse_rate(key: str, value: Any) -> float:
    """A rate in messages (or segments) per second: a positive number or ``inf``."""
    rate = _float(key, value)
    if rate <= 0:
        raise ConfigError(f"{key} must be a positive rate per second or 'inf', got {value!r}")
    return rate


def _rates(key: str, value: Any) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table of CODE = rate, got {value!r}")
    return _frozen({str(code): parse_rate(f"{key}.{code}", rate) for code, rate in value.items()})


def _rates_from_flags(items: list[str] | None) -> Mapping[str, float]:
    """The ``--rate CODE=N`` flags, in order (a later one for the same code wins)."""
    rates = {}
    for item in items or ():
        code, sep, value = item.partition("=")
        if not sep or not code:
            raise ConfigError(f"--rate takes CODE=N (messages per second, or inf), got {item!r}")
        rates[code] = parse_rate(f"--rate {code}", value)
    return _frozen(rates)


#: What a flag's argument is, by the parser of the key: a switch, a number, a text,
#: or a repeatable flag.
_KINDS: dict[Parser, type] = {
    _bool: bool,
    _opt_bool: bool,
    _int: int,
    _opt_int: int,
    _float: float,
    _opt_float: float,
    _str: str,
    _opt_str: str,
    _rates: list,
    _paths: list,
    parse_prices: list,
}


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
        return _KINDS.get(self.parse, str)

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
        parse=_str,
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
        1000, section="gateway", parse=_int, flag=None, help="the gateway's largest batch"
    )
    idempotency: bool = _key(
        False, section="gateway", parse=_bool, help="the gateway honours Idempotency-Key"
    )
    idempotency_header: str = _key(
        "Idempotency-Key", section="gateway", parse=_str, flag=None, help="'' sends no key"
    )
    timeout: float = _key(
        30.0,
        section="gateway",
        parse=_float,
        metavar="S",
        help="seconds before a request times out",
    )
    connect_timeout: float = _key(
        10.0, section="gateway", parse=_float, flag=None, help="seconds to connect"
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
        parse=_opt_str,
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
        parse=_int,
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
        65536, section="input", parse=_int, flag=None, help="longer input lines are REJECTED"
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
        parse=_opt_int,
        metavar="N",
        help="send at most N messages in the job; the lines beyond are NOT_SENT (resumable)",
    )
    max_job_segments: int | None = _key(
        section="policy",
        parse=_opt_int,
        flag="--max-segments",
        metavar="N",
        help="send at most N segments in the job; the lines beyond are NOT_SENT (resumable)",
    )
    max_cost: float | None = _key(
        section="policy",
        parse=_opt_float,
        metavar="X",
        help="spend at most X (needs --price-per-segment); the lines beyond are NOT_SENT",
    )
    batch_size: int = _key(
        1000, section="sending", parse=_int, metavar="N", help="recipients per batch request"
    )
    linger_ms: float = _key(
        50.0,
        section="sending",
        parse=_float,
        metavar="MS",
        help="flush a batch that has not filled after this",
    )
    max_buffered: int = _key(
        50_000,
        section="sending",
        parse=_int,
        flag=None,
        help="recipients buffered across all groups",
    )
    concurrency: int = _key(
        16, section="sending", parse=_int, metavar="N", help="requests in flight at most"
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
    max_attempts: int = _key(
        5, section="retry", parse=_int, metavar="N", help="attempts per batch, the first included"
    )
    retry_max_wait: float = _key(
        30.0, section="retry", parse=_float, flag=None, help="longest wait between attempts"
    )
    retry_deadline: float = _key(
        300.0, section="retry", parse=_float, flag=None, help="seconds a batch may spend retrying"
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
        parse=_opt_float,
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
    grace_period: float = _key(
        10.0,
        section="run",
        parse=_float,
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
    """Flatten a config file into ``{field: value}``, refusing unknown keys."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for table, content in document.items():
        if table == "api_key_file" and isinstance(content, str):
            values["api_key_file"] = content
            continue
        if table not in _SECTIONS or not isinstance(content, dict):
            raise ConfigError(
                f"{path}: unknown section [{table}]{_suggest(table, _SECTIONS)}; "
                f"sections are {', '.join(_SECTIONS)}"
            )
        for name, value in content.items():
            key = _FILE_KEYS.get(str(name))
            if key is None or key.section != table:
                known = [k.file_name for k in KEYS.values() if k.file and k.section == table]
                raise ConfigError(
                    f"{path}: unknown key '{name}' in [{table}]{_suggest(name, known)}"
                )
            values[key.name] = key.parse(f"{path}: [{table}] {name}", value)
    return values


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
                values[key.name] = key.parse(f"environment {variable}", raw)
    return values


def read_api_key(path: str | os.PathLike[str]) -> Secret:
    """The key from a file: first line, surrounding white space ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not key:
        raise ConfigError(f"the API key file {path} is empty")
    return Secret(key)


def find_api_key(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Secret | None:
    """The API key: from the file when one is named, else from ``DISPATCHER_API_KEY``
    (surrounding white space ignored), else None."""
    if path is not None:
        return read_api_key(path)
    value = (os.environ if env is None else env).get(API_KEY_ENV, "").strip()
    return Secret(value) if value else None


def load(
    *,
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
) -> Config:
    """Build the run's `Config`: defaults < file < env < flags, then validate."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_toml(config_file))
    values.update(read_env(env))
    for key, value in (flags or {}).items():
        if key in ("rates", "prices") and value:  # --rate, --price add to the file's table
            values[key] = _frozen({**values.get(key, {}), **value})
        elif key == "suppress" and value:  # --suppress adds to the file's lists
            values[key] = (*values.get(key, ()), *value)
        elif value is not None:
            values[key] = value
    file_key = values.pop("api_key_file", None)
    if (api_key := find_api_key(api_key_file or file_key, env)) is not None:
        values["api_key"] = api_key
    unknown = set(values) - set(KEYS)
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    return validate(Config(**values))


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def _at_least(key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum:g}, got {value:g}")


def validate(config: Config) -> Config:
    """Check ranges and combinations; return the config unchanged when it is sound."""
    if config.text is not None:
        from dispatcher.renderer import compile_template

        compile_template(config.text)  # e.g. {1000}: refused before any file is touched
    for key in KEYS.values():
        if key.choices:
            _choice(key.name, getattr(config, key.name), key.choices)
    for name, minimum in (
        ("batch_size", 1),
        ("max_batch", 1),
        ("concurrency", 1),
        ("max_attempts", 1),
        ("max_message_segments", 1),
        ("max_line_bytes", 64),
        ("max_buffered", 1),
    ):
        _at_least(name, getattr(config, name), minimum)
    for name in ("timeout", "connect_timeout", "retry_deadline"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds")
    for name in ("linger_ms", "retry_max_wait", "grace_period"):
        _at_least(name, getattr(config, name), 0)
    for name in ("max_messages", "max_job_segments", "max_cost"):
        if getattr(config, name) is not None:
            _at_least(name, getattr(config, name), 0)
    pricing = Pricing.from_config(config.price_per_segment, config.prices)  # refuses inf
    if config.max_cost is not None and pricing is None:
        raise ConfigError(
            "max_cost needs a price: --price-per-segment X (and --price PREFIX=X, or a "
            "table in [output.prices], for prices by country)"
        )
    if config.explain and not config.dry_run:
        raise ConfigError("--explain goes with --dry-run")
    if not config.base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"base_url must start with http:// or https://, got {config.base_url!r} "
            f"(it includes the API's path prefix, e.g. {DEFAULT_BASE_URL})"
        )
    missing = set(CODE_KINDS) - set(config.kind_rates)
    unknown = set(config.kind_rates) - set(CODE_KINDS)
    if unknown:
        raise ConfigError(f"kind_rates accepts {', '.join(CODE_KINDS)}; unknown: {unknown}")
    if missing:
        config = replace(
            config,
            kind_rates=_frozen({**{k: KIND_RATES[k] for k in missing}, **config.kind_rates}),
        )
    if config.resume and config.force:
        raise ConfigError("--resume and --force contradict each other: choose one")
    return config
