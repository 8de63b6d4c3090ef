"""Which share of a job's input a process sends (``--shard K/N``, and the workers).

The rule is a stable hash of the normalised number, so that every line to one
recipient lands in one share: duplicates stay exact (`dispatcher.dedupe` sees all the
lines of a number), and each process can read the whole input — a file, a ``.gz`` — and
keep its own share, with no coordinator. A line without a usable number (malformed,
or a number that does not normalise) goes by its line number instead, so that exactly
one share reports it.

The hash is the E.164 digits as an integer, mixed by a 64-bit multiply (Fibonacci
hashing): the same on every host, Python version and run — unlike `hash`, which is
salted per process for strings — and even across shares for the consecutive numbers
lists are full of.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import TYPE_CHECKING

from dispatcher import native
from dispatcher.errors import ConfigError
from dispatcher.models import Recipient, Rejected
from dispatcher.numbers import normalize_many

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

#: 2^64 / φ, odd: multiplying by it spreads consecutive integers over the top bits.
_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
#: Most shares a job may be split into.
MAX_SHARES = 1024

_line_of = attrgetter("line")

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def _mix(value: int) -> int:
    return ((value * _GOLDEN) & _MASK) >> 32


def share_of(number: str | None, line: int, count: int) -> int:
    """The share (0 to ``count - 1``) of a line to ``number`` (E.164, or None when
    the line has no usable number: then its ``line`` decides)."""
    if number is None:
        return _mix(line + 1) % count
    return _mix(int(number[1:])) % count


@dataclass(frozen=True, slots=True)
class Share:
    """Share ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str, where: str = "--shard") -> Share:
        """``K/N`` as the user writes it, K from 1 to N. Raises `ConfigError`."""
        match = _SPEC.fullmatch(text)
        if match is None:
            raise ConfigError(f"{where} must be K/N (this host's share K of N), got {text!r}")
        k, n = int(match.group(1)), int(match.group(2))
        if not 1 <= n <= MAX_SHARES:
            raise ConfigError(f"{where}: N must be from 1 to {MAX_SHARES}, got {n}")
        if not 1 <= k <= n:
            raise ConfigError(f"{where}: K must be from 1 to N ({n}), got {k}")
        return cls(k - 1, n)

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"

    def keep(self, chunk: Sequence[Recipient | Rejected]) -> list[Recipient | Rejected]:
        """The items of an input chunk that belong to this share, in order."""
        if self.count == 1:
            return list(chunk)
        shares = shares_of(chunk, self.count)
        return list(compress(chunk, (shares == self.index).tolist()))


def shares_of(chunk: Sequence[Recipient | Rejected], count: int) -> npt.NDArray[np.uint64]:
    """`share_of` of every item of an input chunk (0 to ``count - 1``), computed for the
    whole chunk at once in 64-bit numpy arithmetic (which wraps as the ``& _MASK`` of
    `_mix` does): what `Share.keep` decides, and what the parent of ``--workers`` hands
    stdin out by (`dispatcher.workers.HandOut`)."""
    import numpy as np

    raws = [item.to if type(item) is Recipient else "" for item in chunk]
    numbers = normalize_many(raws)  # never strict: a share must not depend on it
    keys = _number_keys(numbers)  # 0 where there is no number
    lines = np.fromiter(map(_line_of, chunk), dtype=np.uint64, count=len(chunk))
    values = np.where(keys == 0, lines + np.uint64(1), keys)
    shares: npt.NDArray[np.uint64] = ((values * np.uint64(_GOLDEN)) >> np.uint64(32)) % np.uint64(
        count
    )
    return shares


def _number_keys(numbers: list[str | None]) -> npt.NDArray[np.uint64]:
    """The numbers' keys as a numpy array: parsed by the C part where it is built
    (`dispatcher.keys`), else by its numpy twin."""
    import numpy as np

    if native.core is not None:
        from dispatcher.keys import number_keys

        return np.frombuffer(number_keys(numbers), dtype=np.uint64)
    from dispatcher.sorted_keys import number_keys as twin

    return twin(numbers)
