"""What a message costs: a price per segment, the same everywhere or by destination prefix.

``price_per_segment`` alone prices every segment alike. A price table adds prices by
E.164 prefix, the country calling code (``1``, ``52``, ``44``) or a longer prefix where a
country's numbers are priced apart (``1787``, Puerto Rico, inside country code 1): a
number pays the price of its longest matching prefix, else ``price_per_segment``, which a
table therefore needs. In TOML::

    [output]
    price_per_segment = 0.01        # numbers no prefix below matches

    [output.prices]
    1 = 0.0075
    1787 = 0.012
    52 = 0.03
    44 = 0.04

The look-up is pure and cheap enough for every line: a number's first digits (as many as
the longest prefix of the table) are looked up in a memo of the prices found so far (a
campaign's numbers share few of them), and only a new one searches the table, longest
prefix first; a price without a table is returned at once.
Prices are finite and not negative; a bad one is a `ConfigError` naming its key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from dispatcher.errors import ConfigError

#: The longest prefix a table may price: a 3-digit country code and 3 more digits.
MAX_PREFIX_DIGITS: Final = 6
_MEMO_SIZE: Final = 1 << 16


def parse_price(key: str, value: Any) -> float:
    """A price: a finite number, not negative (a string from a flag is read as one)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key} must be a price (a number), got {value!r}")
    try:
        price = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a price (a number), got {value!r}") from None
    if not math.isfinite(price) or price < 0:
        raise ConfigError(f"{key} must be a finite price of 0 or more, got {value!r}")
    return price


def parse_prefix(key: str, prefix: Any) -> str:
    """An E.164 prefix: 1 to `MAX_PREFIX_DIGITS` ASCII digits, the first not 0."""
    text = str(prefix).strip().removeprefix("+")
    if not (
        text.isascii() and text.isdigit() and 1 <= len(text) <= MAX_PREFIX_DIGITS and text[0] != "0"
    ):
        raise ConfigError(
            f"{key}: {prefix!r} is not a number prefix: give a country calling code such "
            f"as 44, or a longer prefix such as 1787 (1 to {MAX_PREFIX_DIGITS} digits, "
            "not starting with 0)"
        )
    return text


def parse_prices(key: str, value: Any) -> Mapping[str, float]:
    """A price table from a file: ``{prefix: price}`` (the parser of its config key)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table of PREFIX = price, got {value!r}")
    table: dict[str, float] = {}
    for prefix, price in value.items():
        digits = parse_prefix(key, prefix)
        if digits in table:
            raise ConfigError(f"{key}: prefix {digits} is given twice")
        table[digits] = parse_price(f"{key}.{digits}", price)
    return MappingProxyType(table)


def prices_from_flags(items: Iterable[str] | None) -> Mapping[str, float]:
    """The ``--price PREFIX=X`` flags, in order (a later one for the same prefix wins)."""
    table: dict[str, float] = {}
    for item in items or ():
        prefix, sep, price = item.partition("=")
        if not sep:
            raise ConfigError(f"--price takes PREFIX=PRICE (e.g. 44=0.04), got {item!r}")
        digits = parse_prefix("--price", prefix)
        table[digits] = parse_price(f"--price {digits}", price)
    return MappingProxyType(table)


class Pricing:
    """Prices per segment by destination: `price` of a number, `cost` of a message."""

    __slots__ = ("_longest", "_memo", "decimals", "default", "prices")

    def __init__(self, default: float, prices: Mapping[str, float] | None = None) -> None:
        self.default = parse_price("price_per_segment", default)
        #: The table, by prefix digits (validated).
        self.prices: Mapping[str, float] = parse_prices("prices", dict(prices or {}))
        self._longest = max(map(len, self.prices), default=0)
        # Price by a number's first `_longest` digits: few distinct ones in a campaign.
        self._memo: dict[str, float] = {}
        #: Decimals that show every price exactly (at least 2, at most 6): for tables.
        self.decimals = max(2, *(_decimals(p) for p in (self.default, *self.prices.values())))

    @classmethod
    def from_config(
        cls, price_per_segment: float | None, prices: Mapping[str, Any] | None = None
    ) -> Pricing | None:
        """The pricing a configuration describes, or None when it names no price.

        A table needs ``price_per_segment`` for the numbers none of its prefixes match:
        a cost cap must never meet a message whose cost it cannot know.
        """
        if price_per_segment is None:
            if prices:
                raise ConfigError(
                    "a price table needs price_per_segment too, the price of the numbers "
                    "no prefix matches (0 if they are free)"
                )
            return None
        return cls(price_per_segment, prices)

    def price(self, number: str) -> float:
        """The price of one segment to ``number`` (E.164, with or without its ``+``)."""
        if not self._longest:
            return self.default
        head = number[1 : 1 + self._longest] if number[:1] == "+" else number[: self._longest]
        price = self._memo.get(head)
        if price is None:
            price = self._longest_match(head)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[head] = price
        return price

    def _longest_match(self, digits: str) -> float:
        prices = self.prices
        for length in range(len(digits), 0, -1):
            price = prices.get(digits[:length])
            if price is not None:
                return price
        return self.default

    def cost(self, number: str, segments: int) -> float:
        """What a message of ``segments`` segments to ``number`` costs."""
        return self.price(number) * segments

    def describe(self) -> str:
        """One line for people: ``0.01 per segment; 3 prefixes priced apart``."""
        text = f"{self.default:.{self.decimals}f} per segment"
        if self.prices:
            n = len(self.prices)
            text += f"; {n} prefix{'es' if n > 1 else ''} priced apart"
        return text

    def __repr__(self) -> str:
        return f"Pricing({self.default!r}, {dict(self.prices)!r})"


def _decimals(price: float) -> int:
    """Decimals of ``price`` as written (``0.0075`` → 4), at most 6."""
    if round(price, 6) != price:
        return 6
    return len(f"{price:.6f}".rstrip("0").partition(".")[2])
