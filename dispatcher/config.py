"""Configuration: one frozen record, built from defaults < TOML file < env < flags.

Every value is validated once, at start, and a bad one raises `ConfigError` naming the
key, where it came from and what would be accepted — the CLI turns that into exit 2.
The API key lives in a `Secret`, whose repr never shows it.
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a send needs to know. See ``configs/default.toml`` for each key."""

    # gateway
    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = field(default=None, repr=False)
    endpoint: str = "batch"
    max_batch: int = 1000
    idempotency: bool = False
    idempotency_header: str = "Idempotency-Key"
    timeout: float = 30.0
    connect_timeout: float = 10.0
    # message (job-level; a line may override sender, text, external_id, client_id, email)
    sender: str | None = None
    text: str | None = None
    request_dr: bool = False
    callbacks: str | None = None
    connection: str | None = None
    email: str | None = None
    external_id: str | None = None
    client_id: str | None = None
    # content
    segment_model: str = "flat"
    max_segments: int = 10
    max_line_bytes: int = 65536
    strict_numbers: bool = False
    # batching, rates, concurrency
    batch_size: int = 1000
    linger_ms: float = 50.0
    max_buffered: int = 50_000
    concurrency: int = 16
    rates: Mapping[str, float] = field(default_factory=_frozen)
    kind_rates: Mapping[str, float] = field(
        default_factory=lambda: _frozen({"longcode": 1, "shortcode": 100, "alphanumeric": 100})
    )
    rate_unit: str = "messages"
    # retries
    max_attempts: int = 5
    retry_max_wait: float = 30.0
    retry_deadline: float = 300.0
    retry_ambiguous: bool = False
    # outputs and run control
    results: str = "-"
    invalid: str | None = None
    rejects: str | None = None
    summary: str | None = None
    resume: bool = False
    force: bool = False
    fsync: bool = False
    dry_run: bool = False
    progress: bool | None = None
    strict: bool = False
    price_per_segment: float | None = None
    grace_period: float = 10.0
    log_level: str = "info"
    log_format: str = "text"

    def with_changes(self, **changes: Any) -> Config:
        """A copy with some keys replaced, validated again."""
        return validate(replace(self, **changes))

    @property
    def request_size(self) -> int:
        """Messages per request: 1 for the single endpoint, else the batch size within
        the gateway's maximum."""
        if self.endpoint == "single":
            return 1
        return max(1, min(self.batch_size, self.max_batch))

    @property
    def single(self) -> bool:
        """Whether messages go one per request to ``v2/messages`` with rendered text."""
        return self.request_size == 1


# --- where each key lives in the TOML file, and how to read it ------------------------

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


#: key → (TOML table, parser). The table groups keys for humans; names are unique.
KEYS: dict[str, tuple[str, Parser]] = {
    "base_url": ("gateway", _str),
    "endpoint": ("gateway", _str),
    "max_batch": ("gateway", _int),
    "idempotency": ("gateway", _bool),
    "idempotency_header": ("gateway", _str),
    "timeout": ("gateway", _float),
    "connect_timeout": ("gateway", _float),
    "sender": ("message", _opt_str),
    "text": ("message", _opt_str),
    "request_dr": ("message", _bool),
    "callbacks": ("message", _opt_str),
    "connection": ("message", _opt_str),
    "email": ("message", _opt_str),
    "external_id": ("message", _opt_str),
    "client_id": ("message", _opt_str),
    "segment_model": ("message", _str),
    "max_segments": ("message", _int),
    "max_line_bytes": ("input", _int),
    "strict_numbers": ("input", _bool),
    "batch_size": ("sending", _int),
    "linger_ms": ("sending", _float),
    "max_buffered": ("sending", _int),
    "concurrency": ("sending", _int),
    "rates": ("sending", _rates),
    "kind_rates": ("sending", _rates),
    "rate_unit": ("sending", _str),
    "max_attempts": ("retry", _int),
    "retry_max_wait": ("retry", _float),
    "retry_deadline": ("retry", _float),
    "retry_ambiguous": ("retry", _bool),
    "results": ("output", _str),
    "invalid": ("output", _opt_str),
    "rejects": ("output", _opt_str),
    "summary": ("output", _opt_str),
    "fsync": ("output", _bool),
    "progress": ("output", _opt_bool),
    "strict": ("output", _bool),
    "price_per_segment": ("output", _opt_float),
    "grace_period": ("run", _float),
    "log_level": ("run", _str),
    "log_format": ("run", _str),
}
#: TOML spellings that differ from the field name.
ALIASES = {"from": "sender"}
#: Keys that only make sense on the command line, never in a file or env.
FLAG_ONLY = {"resume", "force", "dry_run", "api_key"}


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
    tables = sorted({table for table, _ in KEYS.values()})
    for table, content in document.items():
        if table == "api_key_file" and isinstance(content, str):
            values["api_key_file"] = content
            continue
        if table not in tables or not isinstance(content, dict):
            raise ConfigError(
                f"{path}: unknown section [{table}]{_suggest(table, tables)}; "
                f"sections are {', '.join(tables)}"
            )
        for name, value in content.items():
            key = ALIASES.get(str(name), str(name))
            if key not in KEYS or KEYS[key][0] != table:
                known = [k for k, (t, _) in KEYS.items() if t == table]
                raise ConfigError(
                    f"{path}: unknown key '{name}' in [{table}]{_suggest(name, known)}"
                )
            values[key] = KEYS[key][1](f"{path}: [{table}] {name}", value)
    return values


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``DISPATCHER_<KEY>`` variables, e.g. ``DISPATCHER_CONCURRENCY=32``."""
    values: dict[str, Any] = {}
    for key, (_, parse) in KEYS.items():
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is None or key in ("rates", "kind_rates"):
            continue
        values[key] = parse(f"environment {ENV_PREFIX}{key.upper()}", raw)
    if ENV_PREFIX + "FROM" in env:
        values["sender"] = env[ENV_PREFIX + "FROM"]
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
        if key == "rates" and value:  # --rate CODE=N adds to the file's table
            values["rates"] = _frozen({**values.get("rates", {}), **value})
        elif value is not None:
            values[key] = value
    key_file = api_key_file or values.pop("api_key_file", None)
    if key_file is not None:
        values["api_key"] = read_api_key(key_file)
    elif env.get(API_KEY_ENV):
        values["api_key"] = Secret(env[API_KEY_ENV].strip())
    names = {f.name for f in fields(Config)}
    unknown = set(values) - names
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
    _choice("endpoint", config.endpoint, ("batch", "single"))
    _choice("segment_model", config.segment_model, ("flat", "3gpp"))
    _choice("rate_unit", config.rate_unit, ("messages", "segments"))
    _choice("log_level", config.log_level, ("debug", "info", "warning", "error"))
    _choice("log_format", config.log_format, ("text", "json"))
    for key, minimum in (
        ("batch_size", 1),
        ("max_batch", 1),
        ("concurrency", 1),
        ("max_attempts", 1),
        ("max_segments", 1),
        ("max_line_bytes", 64),
        ("max_buffered", 1),
    ):
        _at_least(key, getattr(config, key), minimum)
    for key in ("timeout", "connect_timeout", "retry_deadline"):
        if getattr(config, key) <= 0:
            raise ConfigError(f"{key} must be a positive number of seconds")
    for key in ("linger_ms", "retry_max_wait", "grace_period"):
        _at_least(key, getattr(config, key), 0)
    if config.price_per_segment is not None:
        _at_least("price_per_segment", config.price_per_segment, 0)
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
        defaults = Config().kind_rates
        config = replace(
            config, kind_rates=_frozen({**{k: defaults[k] for k in missing}, **config.kind_rates})
        )
    if config.resume and config.force:
        raise ConfigError("--resume and --force contradict each other: choose one")
    return config
