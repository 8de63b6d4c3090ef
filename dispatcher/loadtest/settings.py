"""What a load test is asked to do: one frozen record, validated on construction."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dispatcher.config import MAX_SECONDS, Number, Secret, parse_url
from dispatcher.errors import ConfigError
from dispatcher.loadtest.thresholds import Threshold

if TYPE_CHECKING:
    from dispatcher.emulator.settings import FaultSettings

DEFAULT_SENDER = "12345"
DEFAULT_TEXT = "Hi {0}, your balance is ${1}. Reply STOP to opt out."
#: Above this many requests per second the scheduler itself is the limit.
MAX_REQUEST_RATE = 1_000_000.0
#: Most processes of one test (as `send --workers`).
MAX_WORKERS = 64

_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_DURATION = Number(kind=float, low=0.0, above=True, high=MAX_SECONDS, unit="seconds")
_NONE_OR_DURATION = Number(kind=float, low=0.0, high=MAX_SECONDS, unit="seconds")
#: The bounds of the numbers, by field; an error names the flag (``--rate``).
_NUMBERS = {
    "rate": Number(kind=float, low=0.0, above=True, high=math.inf),
    "duration": _DURATION,
    "warmup": _NONE_OR_DURATION,  # 0: no warm-up
    "drain": _NONE_OR_DURATION,  # 0: do not wait for requests in flight
    "timeout": _DURATION,
    "batch_size": Number(kind=int, low=1, high=1_000_000),
    "concurrency": Number(kind=int, low=1, high=100_000),
    "metrics_port": Number(kind=int, low=0, high=65535, optional=True),
    "workers": Number(kind=int, low=1, high=MAX_WORKERS),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadTest:
    """A constant-arrival-rate load test.

    ``rate`` counts requests per second, or recipients per second with
    ``rate_unit="recipients"`` (requests/s = rate / batch_size). ``duration`` is the
    measured part; ``warmup`` runs before it at the same rate and is left out of every
    figure. ``base_url=None`` drives an emulator started in this process on 127.0.0.1,
    with ``faults`` applied (None: a healthy one).
    """

    rate: float = 100.0
    rate_unit: Literal["requests", "recipients"] = "requests"
    duration: float = 10.0
    warmup: float = 0.0
    batch_size: int = 1
    concurrency: int = 64
    timeout: float = 5.0
    drain: float = 5.0
    sender: str = DEFAULT_SENDER
    text: str = DEFAULT_TEXT
    input: str | None = None
    seed: int = 1
    base_url: str | None = None
    api_key: Secret | None = field(default=None, repr=False)
    faults: FaultSettings | None = None
    thresholds: tuple[Threshold, ...] = ()
    #: Serve Prometheus metrics on this port while the test runs (0: any free port).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: The shared quota (``--quota-url``): every request books its recipients in the
    #: ``sender`` code's bucket first. The namespace defaults to one derived from the
    #: target's base URL; the code's limit to its kind's rate, as `send` has it.
    quota_url: str | None = None
    quota_namespace: str | None = None
    quota_rate: float | None = None
    #: send's quota settings (`dispatcher.config` keys of the same names, parsed by
    #: them): an account-wide limit (None: none), what to do while Redis is down, the
    #: processes sharing the quota (the local fallback's divisor), and what a request
    #: costs in the buckets — its recipients, or their segments (send's ``rate_unit``).
    account_rate: float | None = None
    quota_fallback: str = "pause"
    quota_peers: int = 1
    quota_unit: str = "messages"
    redis_password: Secret | None = field(default=None, repr=False)
    #: Processes driving the schedule, each an equal share of it (`--workers`).
    workers: int = 1

    def __post_init__(self) -> None:
        for name, number in _NUMBERS.items():
            number(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.rate_unit not in ("requests", "recipients"):
            raise ConfigError("--rate-unit must be requests or recipients")
        if self.request_rate > MAX_REQUEST_RATE:
            raise ConfigError(f"--rate is above {MAX_REQUEST_RATE:,.0f} requests/s")
        if self.workers > self.concurrency:
            raise ConfigError("--workers is above --concurrency: each worker needs a slot")
        if self.workers > 1 and self.input == "-":
            raise ConfigError("--workers each read the recipients: give --input a file, not -")
        if self.quota_url is not None:
            from dispatcher.quota import check_url

            check_url(self.quota_url)
            if self.quota_namespace is not None and not _NAMESPACE.fullmatch(self.quota_namespace):
                raise ConfigError(
                    "--quota-namespace must be 1-64 letters, digits or _.:- , "
                    f"got {self.quota_namespace!r}"
                )
        elif self.quota_namespace is not None or self.quota_rate is not None:
            raise ConfigError("--quota-namespace and --quota-rate need --quota-url")
        _check_quota_keys(self)
        if self.quota_rate is not None and not self.quota_rate > 0:
            raise ConfigError("--quota-rate must be a positive number of messages per second")
        for threshold in self.thresholds:
            if not math.isfinite(threshold.limit):
                raise ConfigError(f"threshold {threshold.text!r}: the limit is not a finite number")
        if self.base_url is None:
            from dispatcher.emulator.settings import MAX_BATCH

            if self.batch_size > MAX_BATCH:
                raise ConfigError(f"the embedded emulator takes batches of at most {MAX_BATCH}")
        else:
            parse_url("--base-url", self.base_url)
            if self.api_key is None:
                raise ConfigError(
                    "no API key for --base-url: set DISPATCHER_API_KEY or give --api-key-file"
                )
            if self.faults is not None:
                raise ConfigError("fault and latency flags only apply to the embedded emulator")

    @property
    def request_rate(self) -> float:
        """Requests per second."""
        return self.rate / self.batch_size if self.rate_unit == "recipients" else self.rate

    @property
    def code_rate(self) -> float:
        """The sender code's limit in the shared quota, messages per second."""
        if self.quota_rate is not None:
            return self.quota_rate
        from dispatcher.config import KIND_RATES
        from dispatcher.limiter import code_kind

        return KIND_RATES[code_kind(self.sender)]

    @property
    def embedded(self) -> bool:
        """Whether the target is an emulator in this process."""
        return self.base_url is None

    def as_dict(self) -> dict[str, Any]:
        """The settings as the report shows them (never the API key)."""
        return {
            "rate": float(self.rate),
            "rate_unit": self.rate_unit,
            "batch_size": self.batch_size,
            "duration_s": float(self.duration),
            "warmup_s": float(self.warmup),
            "concurrency": self.concurrency,
            "timeout_s": float(self.timeout),
            "drain_s": float(self.drain),
            "sender": self.sender,
            "input": self.input,
            "seed": self.seed,
            "emulator_faults": self.faults.as_dict() if self.faults is not None else None,
        }


#: `LoadTest` fields checked by send's configuration key of the same meaning.
QUOTA_KEYS = {
    "account_rate": "account_rate",
    "quota_fallback": "quota_fallback",
    "quota_peers": "quota_peers",
    "quota_unit": "rate_unit",
}


def _check_quota_keys(test: LoadTest) -> None:
    """The quota settings as send checks them (its `Key` parsers); each needs
    ``--quota-url`` when it differs from its default."""
    from dispatcher.config import KEYS

    for name, key_name in QUOTA_KEYS.items():
        value = getattr(test, name)
        flag = "--" + name.replace("_", "-")
        if value is None or (name == "account_rate" and value == math.inf):
            continue
        KEYS[key_name].read(flag, value)
        if test.quota_url is None and value != LoadTest.__dataclass_fields__[name].default:
            raise ConfigError(f"{flag} needs --quota-url (the shared quota)")
