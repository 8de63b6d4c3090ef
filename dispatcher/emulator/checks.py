"""The gateway's own checks: number format, GSM-7 detection, flat-model segments, templates.

Deliberately independent of ``dispatcher.numbers``, ``dispatcher.segments`` and
``dispatcher.renderer``: the emulator is the oracle the client is tested against, so it
must not share the client's code (or its bugs). The batch functions work on a whole
batch at once, so that the common case (every number valid, every text plain GSM-7)
costs a few C-level passes instead of Python work per recipient.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from itertools import chain, repeat, starmap
from typing import Any

import orjson

GSM7 = "GSM7"
UCS2 = "UCS2"

#: GSM 03.38 default alphabet (one septet each); ESC itself is not text.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: an escape plus the character, two septets each.
_EXTENSION = "\f^{}\\[~]|€"
_SEPTETS = {**dict.fromkeys(_BASIC, 1), **dict.fromkeys(_EXTENSION, 2)}

#: ASCII bytes that are one plain septet; deleting them leaves only what needs a look.
_ASCII_PLAIN = bytes(b for b in range(128) if _SEPTETS.get(chr(b)) == 1)
_ASCII_EXTENSION = _EXTENSION[:-1].encode("ascii")  # without the euro sign

_NUMBER = r"\+?(?:{guard})[1-9][0-9]{{7,14}}"


class NumberCheck:
    """Valid numbers: optional ``+``, then ``[1-9]`` and 7 to 14 more digits.

    ``invalid_prefixes`` (compared on the digits after the optional ``+``) are refused
    too, so tests can make numbers the client accepts but the gateway does not.
    """

    def __init__(self, invalid_prefixes: Sequence[str] = ()) -> None:
        guard = "".join(f"(?!{re.escape(p)})" for p in invalid_prefixes)
        one = _NUMBER.format(guard=guard)
        self._one = re.compile(one)
        # Many numbers joined by "\n" checked by one regex call; see all_valid().
        self._many = re.compile(f"(?:{one}\n)*{one}")

    def valid(self, number: object) -> bool:
        """Whether the gateway accepts this ``to`` value."""
        return type(number) is str and self._one.fullmatch(number) is not None

    def all_valid(self, numbers: list[Any]) -> bool:
        """True when every item is a valid number (False means: look one by one)."""
        try:
            joined = "\n".join(numbers)
        except TypeError:
            return False
        # A number holding "\n" would add separators: the count check catches it.
        return joined.count("\n") == len(numbers) - 1 and self._many.fullmatch(joined) is not None


def units(text: str) -> tuple[str, int]:
    """(encoding, units) of a text in the flat model: septets, or UTF-16 code units."""
    if text.isascii():
        special = text.encode("ascii").translate(None, _ASCII_PLAIN)
        if not special:
            return GSM7, len(text)
        if not special.translate(None, _ASCII_EXTENSION):
            return GSM7, len(text) + len(special)
        return UCS2, len(text)
    septets = 0
    get = _SEPTETS.get
    for char in text:
        n = get(char)
        if n is None:
            return UCS2, len(text.encode("utf-16-le")) // 2
        septets += n
    return GSM7, septets


def segments_of(encoding: str, count: int) -> int:
    """Flat model: 160 septets or 70 UTF-16 units per segment."""
    per = 160 if encoding == GSM7 else 70
    return -(-count // per)


def batch_units(texts: list[str]) -> tuple[list[str], list[int]] | None:
    """Fast path: when every text is plain GSM-7 (no extension, nothing outside the
    alphabet), return (encodings, units) for all; None means measure one by one."""
    joined = "\n".join(texts)
    if not joined.isascii() or joined.encode("ascii").translate(None, _ASCII_PLAIN):
        return None
    return [GSM7] * len(texts), list(map(len, texts))


# --- templates -----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([0-9]+)\}")
#: The highest placeholder index a batch text may use; leading zeros are free.
MAX_INDEX = 999
#: orjson reads integers in [-2**63, 2**64) exactly; a float this big may be one beyond.
_BIG = 2.0**63


class ExactInt(str):
    """A JSON integer beyond 64 bits, as the digits sent (from `parse_exact`)."""

    __slots__ = ()


class MissingParam(ValueError):
    """A placeholder has no param for some recipient."""

    def __init__(self, index: int, recipient: int) -> None:
        super().__init__(f"placeholder {{{index}}} has no param for recipient {recipient}")
        self.index = index
        self.recipient = recipient


class BadParam(ValueError):
    """A param that is not a string, number or boolean."""

    def __init__(self, recipient: int, position: int) -> None:
        super().__init__(f"to[{recipient}].params[{position}] must be a string, number or boolean")
        self.recipient = recipient
        self.position = position


class Inexact(Exception):
    """A float param big enough to have been an integer orjson could not hold exactly:
    the body must be read again with `parse_exact`."""


def placeholder_index(digits: str) -> int:
    """The index of ``{digits}``; ValueError above MAX_INDEX, however many digits."""
    significant = digits.lstrip("0") or "0"
    if len(significant) <= 3 and int(significant) <= MAX_INDEX:
        return int(significant)
    shown = f"{{{digits}}}" if len(digits) <= 20 else f"{{{digits[:20]}…}} ({len(digits)} digits)"
    raise ValueError(f"placeholder {shown} is above {{{MAX_INDEX}}}, the highest index allowed")


class GatewayTemplate:
    """A batch text with ``{N}`` placeholders, compiled once into a format string.

    Other braces are literal text: they are doubled in the format string. Raises
    ValueError for an index above MAX_INDEX.
    """

    __slots__ = ("_format", "_percent", "highest", "indices", "source", "static")

    def __init__(self, source: str) -> None:
        self.source = source
        pieces: list[str] = []
        literals: list[str] = []
        order: list[int] = []
        last = 0
        for match in _PLACEHOLDER.finditer(source):
            literal = source[last : match.start()]
            pieces.append(_escape(literal))
            literals.append(literal)
            index = placeholder_index(match.group(1))
            order.append(index)
            pieces.append(f"{{{index}}}")
            last = match.end()
        pieces.append(_escape(source[last:]))
        literals.append(source[last:])
        self._format = "".join(pieces)
        #: The placeholder indices used, ascending.
        self.indices = sorted(set(order))
        #: Index of the highest placeholder, -1 when there is none.
        self.highest = max(order, default=-1)
        #: True when the text has no placeholder: every recipient gets the source.
        self.static = not order
        # "{0}…{1}…{2}", each once and in order, also renders as a %-format over a
        # tuple, which (fed by map) is the fastest way Python has to fill a template.
        self._percent: str | None = None
        if order == list(range(len(order))):
            self._percent = "%s".join(lit.replace("%", "%%") for lit in literals)

    def render_all(self, params: list[list[Any]], *, exact: bool = False) -> list[str]:
        """Render for every recipient.

        Raises MissingParam, BadParam (checked for every param, used or not), or
        Inexact, unless ``exact`` (the params come from `parse_exact`).
        """
        width = self.highest + 1
        sizes = set(map(len, params))
        if width and len(sizes) == 1 and sizes.pop() >= width:
            return self._render_by_column(params, width, exact)
        check_params(params)
        return self._render_one_by_one(params, exact)

    def _render_by_column(self, params: list[list[Any]], width: int, exact: bool) -> list[str]:
        # Every recipient has the same number of params: convert a column at a time,
        # numbers through one orjson call per column, then fill the template per row.
        used = set(self.indices)
        columns: list[Any] = []
        # zip(*params) transposes in C: one tuple per column.
        for j, column in enumerate(zip(*params, strict=True)):
            kinds = set(map(type, column))
            if not kinds <= _SCALAR_TYPES:
                check_params(params)  # raises BadParam naming the first bad one
            if j >= width:
                continue  # checked, never rendered
            if j not in used:
                columns.append(repeat(""))
            elif kinds == _STR:
                columns.append(column)
            elif kinds <= _NUMBER_KINDS:
                dumped = orjson.dumps(list(column))
                # Floats of 1e16 and more are written with an exponent, "e+".
                if not exact and float in kinds and b"e+" in dumped:
                    _check_exact(column)
                columns.append(dumped[1:-1].decode().split(","))
            else:
                columns.append([param_text(x, exact) for x in column])
        rows = zip(*columns)  # noqa: B905  (repeat() columns are endless on purpose)
        if self._percent is not None:
            return list(map(self._percent.__mod__, rows))
        return list(starmap(self._format.format, rows))

    def _render_one_by_one(self, params: list[list[Any]], exact: bool) -> list[str]:
        fmt = self._format.format
        out = []
        for i, p in enumerate(params):
            if len(p) <= self.highest:
                raise MissingParam(next(n for n in self.indices if n >= len(p)), i)
            out.append(fmt(*[x if type(x) is str else param_text(x, exact) for x in p]))
        return out


_STR = {str}
_NUMBER_KINDS = {int, float}
_SCALAR_TYPES = frozenset((str, int, float, bool, ExactInt))


def check_params(params: list[list[Any]]) -> None:
    """BadParam for the first param that is not a string, number or boolean.

    One C-level pass over every param when they are all fine.
    """
    if set(map(type, chain.from_iterable(params))) <= _SCALAR_TYPES:
        return
    for i, p in enumerate(params):
        for j, x in enumerate(p):
            if type(x) not in _SCALAR_TYPES:
                raise BadParam(i, j)


def _check_exact(column: Sequence[Any]) -> None:
    for x in column:
        if type(x) is float and not -_BIG < x < _BIG:
            raise Inexact


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def param_text(value: object, exact: bool = True) -> str:
    """A param as text: strings as given, numbers in shortest JSON form, true/false.

    Raises Inexact for a float that may stand for a bigger integer, unless ``exact``.
    """
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if not exact and not -_BIG < value < _BIG:  # type: ignore[operator]
            raise Inexact
        return orjson.dumps(value).decode()
    if kind is ExactInt:
        return str(value)
    raise TypeError(f"param {value!r} is not a string, number or boolean")


# --- exact integers ------------------------------------------------------------------


def _exact_int(token: str) -> int | ExactInt:
    if len(token) < 20:
        return int(token)
    if len(token) == 20 and -(2**63) <= (value := int(token)) < 2**64:
        return value
    return ExactInt(token)


def _finite(token: str) -> float:
    value = float(token)
    if value in (math.inf, -math.inf):
        raise ValueError("number is infinity when parsed as double")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_exact(raw: bytes) -> Any:
    """JSON as orjson reads it, except integers beyond 64 bits: ExactInt, not floats.

    ValueError for anything orjson refuses too (NaN, numbers beyond a double, lone
    surrogates, invalid UTF-8). The standard library's parser: slow, for rare bodies.
    """
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_int=_exact_int,
            parse_float=_finite,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise ValueError("too deeply nested") from None
    try:
        orjson.dumps(value)  # lone surrogates, which orjson refuses to read as well
    except TypeError:
        raise ValueError("lone surrogate in a string") from None
    return value
