"""How an emulator behaves: frozen keyword-only settings, validated on construction."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

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


def parse_code_rate(spec: str) -> tuple[str, float]:
    """``CODE=N`` (N may be ``inf``) → (code, rate); ValueError with the reason."""
    code, sep, value = spec.partition("=")
    try:
        rate = float(value)
    except ValueError:
        rate = math.nan
    if not sep or not code or not rate > 0:
        raise ValueError(f"rate {spec!r} must look like CODE=N, N a positive number or inf")
    return code, rate


def _digits_after_plus(prefix: str) -> str:
    return prefix.lstrip("+")


def _flag(default: Any = None, *, help: str, factory: Any = None, **details: Any) -> Any:
    """A field that ``dispatcher gateway`` (and, for faults, ``loadtest`` and ``demo``)
    sets with a flag. The metadata holds its help and, where the default does not
    say it, the rest: ``flag`` (else ``--name-with-dashes``), ``metavar``, ``type``,
    ``share`` (a number in 0..1), ``item`` and ``collect`` (a repeatable flag: how one
    value reads, and what the values become)."""
    metadata = {"help": help, **details}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _share(what: str) -> Any:
    return _flag(0.0, share=True, help=f"share of send requests {what}")


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
    latency_ms: float = _flag(0.0, metavar="MS", help="mean added latency")
    jitter_ms: float = _flag(0.0, metavar="MS", help="uniform +/- jitter of the latency")
    #: The Retry-After (whole seconds) of injected 429 and 503 answers; tests use 0.
    retry_after_s: int = _flag(
        1,
        flag="--fault-retry-after",
        metavar="S",
        help="Retry-After seconds of injected 429 and 503 answers",
    )

    def __post_init__(self) -> None:
        for name in _SHARE_FIELDS:
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {share}")
        if sum(getattr(self, name) for name in _SHARE_FIELDS) > 1.0 + 1e-9:
            raise ValueError("fault shares add up to more than 1")
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must not be negative")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must not be negative")

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
    max_batch: int = _flag(1000, metavar="N", help="recipients per batch request (more: 413)")
    max_segments: int = _flag(10, metavar="N", help="segments per message")
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
    dr_delay_ms: float = _flag(200.0, metavar="MS", help="delay of delivery reports")
    dr_undeliv: float = _flag(0.0, share=True, help="share of delivery reports UNDELIV")
    dr_expired: float = _flag(0.0, share=True, help="share of delivery reports EXPIRED")
    dr_rejectd: float = _flag(0.0, share=True, help="share of delivery reports REJECTD")
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
        if not 1 <= self.max_batch <= MAX_BATCH or self.max_segments < 1:
            raise ValueError(f"max_batch must be 1..{MAX_BATCH}, max_segments at least 1")
        for code, rate in self.rates.items():
            if not rate > 0:
                raise ValueError(f"rate for {code} must be positive, got {rate}")
        for name in ("shortcode_rate", "longcode_rate", "alphanumeric_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        dr = (self.dr_undeliv, self.dr_expired, self.dr_rejectd)
        if any(not 0 <= s <= 1 for s in dr) or sum(dr) > 1.0 + 1e-9:
            raise ValueError("delivery-report shares must be in 0..1 and add up to at most 1")
        if self.dr_delay_ms < 0 or self.dr_concurrency < 1:
            raise ValueError("dr_delay_ms must be >= 0 and dr_concurrency >= 1")

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


def fault_update(current: FaultSettings, changes: Mapping[str, Any]) -> FaultSettings:
    """A partial update of fault settings; unknown names and bad values raise ValueError."""
    known = {f.name for f in fields(FaultSettings)}
    unknown = set(changes) - known
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
    merged: dict[str, Any] = dict(current.as_dict())
    for name, value in changes.items():
        if type(value) not in (int, float):
            raise ValueError(f"{name} must be a number")
        merged[name] = int(value) if name == "retry_after_s" else float(value)
    return FaultSettings(**merged)
