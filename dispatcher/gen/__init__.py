"""Synthetic recipients: realistic NDJSON input (SPEC §2) for demos, tests and benchmarks.

Benchmarks pipe ten million lines through ``dispatcher gen``, so the generator must
out-run the sender by a wide margin. Instead of building a dict and calling a JSON
encoder per line, it draws pools once (formatted number heads, last-four-digit tails,
names, amounts, all pre-encoded and JSON-safe) and assembles each ordinary line with a
single ``bytes %`` from four random 16-bit indices taken in bulk from ``randbytes``.
The few special lines (invalid numbers, Unicode names, refs, overrides) take a slower,
plainer path.

Shares are exact, not just expected: of ``count`` lines, ``round(count * share)`` carry
each feature, at random positions. With the same seed the output is the same bytes.
"""

from __future__ import annotations

import math
import random
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from dispatcher.errors import ConfigError
from dispatcher.gen import tables as data

#: Lines per yielded chunk: large enough that the per-chunk work is noise.
CHUNK_LINES = 4096
_POOL = 1 << 16  # pools are indexed directly by a random 16-bit word
_PLAIN = b'{"to":"%s%s","params":["%s",%s]}\n'
_SPECIAL = b'{"to":"%s","params":["%s",%s]%s}\n'


def generate(
    count: int,
    *,
    seed: int = 1,
    invalid_share: float = 0.02,
    unicode_share: float = 0.05,
    ref_share: float = 0.1,
    overrides_share: float = 0.0,
) -> Iterator[bytes]:
    """Yield ``count`` recipient lines of NDJSON, many lines per ``bytes`` chunk.

    ``invalid_share`` of the numbers are refused by any E.164 check, ``unicode_share`` of
    the lines have params outside GSM-7, ``ref_share`` carry ``"ref": "crm-<n>"`` and
    ``overrides_share`` carry a per-line ``"text"`` or ``"from"``. Raises
    :class:`~dispatcher.errors.ConfigError` for a negative count or a share outside [0, 1].
    """
    if count < 0:
        raise ConfigError(f"--count must be 0 or more, not {count}")
    shares = {
        "invalid": invalid_share,
        "unicode": unicode_share,
        "ref": ref_share,
        "overrides": overrides_share,
    }
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"--{name}-share must be between 0 and 1, not {share}")
    return _Generator(count, seed, shares).chunks()


def write(count: int, out: BinaryIO, **options: Any) -> int:
    """Write ``count`` generated lines to a binary stream; return the lines written.

    ``options`` are the keyword arguments of :func:`generate`.
    """
    for chunk in generate(count, **options):
        out.write(chunk)
    return count


def _exact_positions(rng: random.Random, start: int, n: int, share: float) -> set[int]:
    """Positions in ``[0, n)`` of the chunk starting at line ``start`` that carry a feature.

    Rounding the cumulative target keeps the total exact over any number of chunks.
    """
    k = _target(start + n, share) - _target(start, share)
    return set(rng.sample(range(n), k)) if k else set()


def _target(lines: int, share: float) -> int:
    return math.floor(lines * share + 0.5)


def _weighted_pool(
    rng: random.Random, items: Sequence[tuple[bytes, int]], size: int = _POOL
) -> list[bytes]:
    """A list where each item appears about in proportion to its weight."""
    values = [v for v, _ in items]
    weights = [w for _, w in items]
    return rng.choices(values, weights, k=size)


class _Generator:
    def __init__(self, count: int, seed: int, shares: dict[str, float]) -> None:
        self.count = count
        self.shares = shares
        self.rng = random.Random(seed)
        rng = self.rng
        # Drawing a formatted number costs microseconds, so a short run draws fewer
        # distinct heads (each followed by 10 000 tails) and repeats them over the pool.
        distinct = min(_POOL, max(1024, 1 << max(count // 16, 1).bit_length()))
        self.heads, self.tails = _number_pools(rng, distinct)
        self.names = _weighted_pool(rng, data.GSM_NAMES)
        self.unicode_names = [name for name, _ in data.UNICODE_NAMES]
        amounts = [_amount(rng) for _ in range(distinct)]
        self.amounts = [amounts[i % distinct] for i in range(_POOL)]

    def chunks(self) -> Iterator[bytes]:
        start = 0
        while start < self.count:
            n = min(CHUNK_LINES, self.count - start)
            yield self._chunk(start, n)
            start += n

    def _chunk(self, start: int, n: int) -> bytes:
        words = array("H", self.rng.randbytes(8 * n))
        if sys.byteorder == "big":  # same bytes on every machine for a seed
            words.byteswap()
        heads, tails, names, amounts = self.heads, self.tails, self.names, self.amounts
        lines = [
            _PLAIN % (heads[a], tails[a][b], names[c], amounts[d])
            for a, b, c, d in zip(words[0::4], words[1::4], words[2::4], words[3::4], strict=True)
        ]
        rng, shares = self.rng, self.shares
        invalid = _exact_positions(rng, start, n, shares["invalid"])
        unicode = _exact_positions(rng, start, n, shares["unicode"])
        ref = _exact_positions(rng, start, n, shares["ref"])
        overrides = _exact_positions(rng, start, n, shares["overrides"])
        for i in sorted(invalid | unicode | ref | overrides):
            a, c, d = words[4 * i], words[4 * i + 2], words[4 * i + 3]
            to = _invalid_number(rng) if i in invalid else heads[a] + tails[a][words[4 * i + 1]]
            name = rng.choice(self.unicode_names) if i in unicode else names[c]
            extra = b""
            if i in ref:
                extra += b',"ref":"crm-%d"' % (start + i + 100_001)
            if i in overrides:
                extra += _override(rng)
            lines[i] = _SPECIAL % (to, name, amounts[d], extra)
        return b"".join(lines)


# --- pools -------------------------------------------------------------------------


def _number_pools(rng: random.Random, distinct: int) -> tuple[list[bytes], list[list[bytes]]]:
    """``distinct`` formatted valid numbers split into a head and a four-digit tail.

    Both lists have 65 536 entries. ``heads[i] + tails[i][w]`` is a valid number for any
    16-bit ``w``: the tail pool of each head is the 10 000 fillings of its last four
    digits in that head's layout (``5678``, ``56 78``, ``5 678`` …), repeated to 65 536.
    """
    plans = data.NUMBER_PLANS
    weights = [p.weight for p in plans]
    tail_pools: dict[str, list[bytes]] = {}
    heads: list[bytes] = []
    tails: list[list[bytes]] = []
    for plan in rng.choices(plans, weights, k=distinct):
        number = _fill(rng.choice(plan.patterns), plan.nsn(rng))
        head, tail_layout = _split_tail(number)
        pool = tail_pools.get(tail_layout)
        if pool is None:
            filled = [_fill(tail_layout, f"{i:04d}").encode() for i in range(10_000)]
            pool = tail_pools[tail_layout] = [filled[i % 10_000] for i in range(_POOL)]
        heads.append(head.encode())
        tails.append(pool)
    return [heads[i % distinct] for i in range(_POOL)], [tails[i % distinct] for i in range(_POOL)]


def _fill(pattern: str, digits: str) -> str:
    """Put ``digits`` in order into the ``#`` slots of ``pattern``."""
    it = iter(digits)
    return "".join(next(it) if ch == "#" else ch for ch in pattern)


def _split_tail(number: str) -> tuple[str, str]:
    """Split a formatted number before its last four digits; the tail as a ``#`` layout."""
    seen = 0
    for pos in range(len(number) - 1, -1, -1):
        if number[pos].isdigit():
            seen += 1
            if seen == 4:
                tail = number[pos:]
                return number[:pos], "".join("#" if ch.isdigit() else ch for ch in tail)
    raise ValueError(f"number pattern with fewer than four digits: {number!r}")


def _amount(rng: random.Random) -> bytes:
    # Mostly money with cents, some whole amounts, the way CRM exports look.
    if rng.random() < 0.7:
        return b"%d.%02d" % (rng.randrange(1, 5000), rng.randrange(100))
    return b"%d" % rng.randrange(1, 2000)


def _invalid_number(rng: random.Random) -> bytes:
    maker: Callable[[random.Random], str] = rng.choice(data.INVALID_MAKERS)
    return maker(rng).encode()


def _override(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return b',"text":"%s"' % rng.choice(data.OVERRIDE_TEXTS)
    return b',"from":"%s"' % rng.choice(data.OVERRIDE_SENDERS)
