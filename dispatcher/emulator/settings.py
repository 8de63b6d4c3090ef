"""How an emulator behaves: frozen keyword-only settings, validated on construction."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from dispatcher.config import MAX_SECONDS, Number

#: Most messages one request may hold: a message id keeps 4 hex digits for its position.
MAX_BATCH = 0x10000

#: Fault kinds in the order their shares are laid on [0, 1) by the seeded draw.
FAULT_KINDS = ("429", "503", "500_before", "drop_before", "500_after", "drop_after")
_SHARE_FIELDS = {
    "fail_429": "429",
    "fail_503": "503",
    "fail_500_before": "500_before",
    "drop_before": "drop_before",
    "fail_500_after": "500_after",
    "drop_after": "drop_after",
}


#: A share of requests or reports.
SHARE = Number(kind=float, low=0.0, high=1.0, words="a share from 0 to 1")
#: A rate in messages per second; inf for none.
RATE = Number(
    kind=float, low=0.0, above=True, high=math.inf, inf=True, words="a positive rate, or inf"
)
#: Added latency, jitter, delivery-report delay: up to a day.
MILLISECONDS = Number(kind=float, low=0.0, high=MAX_SECONDS * 1000, unit="milliseconds")


def parse_code_rate(spec: str) -> tuple[str, float]:
    """``CODE=N`` (N may be ``inf``) → (code, rate); ValueError with the reason."""
    code, sep, value = spec.partition("=")
    try:
        rate = RATE("", value)
    except ValueError:
        rate = math.nan
    if not sep or not code or math.isnan(rate):
        raise ValueError(f"rate {spec!r} must look like CODE=N, N a positive number or inf")
    return code, rate


def _digits_after_plus(prefix: str) -> str:
    return prefix.lstrip("+")


def _flag(default: Any = None, *, help: str, factory: Any = None, **details: Any) -> Any:
    """A field that ``dispatcher gateway`` (and, for faults, ``loadtest`` and ``demo``)
    sets with a flag. The metadata holds its help and, where the default does not
    say it, the rest: ``flag`` (else ``--name-with-dashes``), ``metavar``, ``type``,
    ``number`` (a `Number`: the bounds the flag and the settings both check),
    ``share`` (a number in 0..1), ``item`` and ``collect`` (a repeatable flag: how one
    value reads, and what the values become)."""
    metadata = {"help": help, **details}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _share(what: str) -> Any:
    return _flag(0.0, share=True, number=SHARE, help=f"share of send requests {what}")


def _check_numbers(settings: Any, extra: Mapping[str, Number] | None = None) -> None:
    """Every field that has a `Number` (in its metadata, or in ``extra``) is within
    it; ValueError (a `ConfigError`) naming the field otherwise."""
    numbers = {f.name: f.metadata["number"] for f in fields(settings) if "number" in f.metadata}
    for name, number in {**numbers, **(extra or {})}.items():
        number(name, getattr(settings, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSettings:
    """Shares (0..1) of send requests that fail each way, and added latency.

    At most one fault hits a request: the shares are laid side by side on [0, 1), so
    their sum must not exceed 1.
    """

    fail_429: float = _share("answered 429 (nothing recorded)")
    fail_500_before: float = _share("answered 500 before recording")
    fail_500_after: float = _share("answered 500 after recording")
    fail_503: float = _share("answered 503 (nothing recorded)")
    drop_before: float = _share("whose connection is closed before recording")
    drop_after: float = _share("whose connection is closed after recording")
    latency_ms: float = _flag(0.0, metavar="MS", number=MILLISECONDS, help="mean added latency")
    jitter_ms: float = _flag(
        0.0, metavar="MS", number=MILLISECONDS, help="uniform +/- jitter of the latency"
    )
    #: The Retry-After (whole seconds) of injected 429 and 503 answers; tests use 0.
    retry_after_s: int = _flag(
        1,
        flag="--fault-retry-after",
        metavar="S",
        number=Number(kind=int, low=0, high=int(MAX_SECONDS)),
        help="Retry-After seconds of injected 429 and 503 answers",
    )

    def __post_init__(self) -> None:
        _check_numbers(self)
        if sum(getattr(self, name) for name in _SHARE_FIELDS) > 1.0 + 1e-9:
            raise ValueError("fault shares add up to more than 1")

    def shares(self) -> list[tuple[str, float]]:
        """(kind, share) in draw order, kinds as in the stats' ``faults`` keys."""
        by_kind = {kind: getattr(self, name) for name, kind in _SHARE_FIELDS.items()}
        return [(kind, by_kind[kind]) for kind in FAULT_KINDS]

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorSettings:
    """Everything the emulator can be told; the CLI flags map one to one onto these."""

    #: Bearer token clients must send. Random unless given; never printed by repr.
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    owner: str = _flag("owner@example.com", help="owner/operator/username in answers")
    operator: str = "operator@example.com"
    #: Answer the single endpoint with the flat ``{status, messageId, description}``.
    flat_single: bool = _flag(
        False, help="answer v2/messages with the flat {status, messageId, description} shape"
    )
    max_batch: int = _flag(
        1000,
        metavar="N",
        number=Number(kind=int, low=1, high=MAX_BATCH),
        help="recipients per batch request (more: 413)",
    )
    max_segments: int = _flag(
        10, metavar="N", number=Number(kind=int, low=1, high=255), help="segments per message"
    )
    #: Sender codes not assigned to the account: CODE_NOT_ALLOWED.
    deny_codes: frozenset[str] = _flag(
        frozenset(),
        flag="--deny-code",
        metavar="CODE",
        collect=frozenset,
        help="answer CODE_NOT_ALLOWED for this sender code; repeatable",
    )
    #: Numbers starting with these digits (after an optional "+") are invalid.
    invalid_prefixes: tuple[str, ...] = _flag(
        (),
        flag="--invalid-prefix",
        metavar="PREFIX",
        item=_digits_after_plus,
        collect=tuple,
        help="numbers starting with these digits are invalid at the gateway; repeatable",
    )
    #: Messages per second per sender code; math.inf for none.
    rates: Mapping[str, float] = _flag(
        factory=dict,
        flag="--rate",
        metavar="CODE=N",
        item=parse_code_rate,
        collect=dict,
        help="messages/s for a sender code (N may be inf); repeatable; by kind otherwise: "
        "shortcode 100, longcode 1, alphanumeric 100",
    )
    rate_limit: bool = _flag(True, flag="--no-rate-limit", help="no rate limits at all")
    shortcode_rate: float = 100.0
    longcode_rate: float = 1.0
    alphanumeric_rate: float = 100.0
    #: "full" keeps every message; "counts" only counters and window stats.
    ledger: Literal["full", "counts"] = _flag(
        "full",
        choices=("full", "counts"),
        help="full keeps every message; counts only counters (for huge benchmarks)",
    )
    faults: FaultSettings = field(default_factory=FaultSettings)
    #: Seeds the fault and delivery-report draws; None draws from the OS.
    seed: int | None = _flag(
        None, type=int, metavar="N", help="seed of the fault and delivery-report draws"
    )
    dr_delay_ms: float = _flag(
        200.0, metavar="MS", number=MILLISECONDS, help="delay of delivery reports"
    )
    dr_undeliv: float = _flag(
        0.0, share=True, number=SHARE, help="share of delivery reports UNDELIV"
    )
    dr_expired: float = _flag(
        0.0, share=True, number=SHARE, help="share of delivery reports EXPIRED"
    )
    dr_rejectd: float = _flag(
        0.0, share=True, number=SHARE, help="share of delivery reports REJECTD"
    )
    dr_concurrency: int = 32
    dr_timeout_s: float = 5.0
    #: Stored idempotent responses beyond this many bytes evict the oldest.
    idempotency_max_bytes: int = 256 * 1024 * 1024
    #: Largest request body accepted.
    max_body_bytes: int = 64 * 1024 * 1024
    access_log: bool = _flag(False, help="log each request on stderr (it costs throughput)")

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.ledger not in ("full", "counts"):
            raise ValueError("ledger must be 'full' or 'counts'")
        _check_numbers(self, _UNFLAGGED)
        for code, rate in self.rates.items():
            RATE(f"rate for {code}", rate)
        dr = (self.dr_undeliv, self.dr_expired, self.dr_rejectd)
        if sum(dr) > 1.0 + 1e-9:
            raise ValueError("delivery-report shares must add up to at most 1")

    def rate_for(self, code: str) -> float:
        """Messages per second allowed for a sender code (math.inf: unlimited)."""
        if not self.rate_limit:
            return math.inf
        rate = self.rates.get(code)
        if rate is not None:
            return rate
        if code.isdigit() and code.isascii():
            return self.shortcode_rate if len(code) <= 6 else self.longcode_rate
        return self.alphanumeric_rate


#: The bounds of the settings that have no flag.
_UNFLAGGED = {
    "shortcode_rate": RATE,
    "longcode_rate": RATE,
    "alphanumeric_rate": RATE,
    "dr_concurrency": Number(kind=int, low=1, high=10_000),
    "dr_timeout_s": Number(kind=float, low=0.0, above=True, high=MAX_SECONDS, unit="seconds"),
    "idempotency_max_bytes": Number(kind=int, low=0, high=1 << 40),
    "max_body_bytes": Number(kind=int, low=1, high=1 << 40),
}


def fault_update(current: FaultSettings, changes: Mapping[str, Any]) -> FaultSettings:
    """A partial update of fault settings; unknown names and bad values raise ValueError."""
    numbers = {f.name: f.metadata["number"] for f in fields(FaultSettings)}
    unknown = set(changes) - set(numbers)
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
    merged: dict[str, Any] = dict(current.as_dict())
    for name, value in changes.items():
        if type(value) not in (int, float):
            raise ValueError(f"{name} must be a number")
        merged[name] = numbers[name](name, value)
    return FaultSettings(**merged)
