"""GSM-7 / UCS-2 detection and segment counting, in both billing models of SPEC §3.

The alphabet is GSM 03.38 (3GPP TS 23.038 §6.2.1): the 128-entry default table and its
extension table, whose characters are sent as ESC + code and so cost two septets.

``flat`` (the gateway's documented billing): segments = ceil(units / 160) for GSM-7,
ceil(units / 70) for UCS-2.  ``3gpp`` (concatenated SMS, what handsets do): one segment
holds 160 septets / 70 units, but a multipart message carries a 6-byte UDH per part, which
leaves 153 septets / 67 units, and an escape pair or a UTF-16 surrogate pair is never split
across two parts, so a part may end one unit short.

Empty text costs nothing: ``SegmentCount(GSM7, 0, 0)`` in both models. The pipeline
refuses empty text before counting, as the gateway would.
"""

from __future__ import annotations

import re
from itertools import count as count_up
from itertools import repeat
from typing import Final

from dispatcher.models import Encoding, SegmentCount

#: The GSM 03.38 default alphabet, indexed by septet value; ``\x1b`` (0x1B) is the escape
#: to the extension table, not a character of its own.
GSM7_BASIC_TABLE: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"  # 0x10
    " !\"#¤%&'()*+,-./"  # 0x20
    "0123456789:;<=>?"  # 0x30
    "¡ABCDEFGHIJKLMNO"  # 0x40
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50
    "¿abcdefghijklmno"  # 0x60
    "pqrstuvwxyzäöñüà"  # 0x70
)

#: The GSM 03.38 extension table: septet value after ESC → character (two septets each).
GSM7_EXTENSION_TABLE: Final = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ESC: Final = "\x1b"
#: Characters that cost one septet.
GSM7_BASIC: Final = frozenset(GSM7_BASIC_TABLE) - {_ESC}
#: Characters that cost two septets (ESC + code).
GSM7_EXTENSION: Final = frozenset(GSM7_EXTENSION_TABLE.values())
#: Every character a GSM-7 message may hold.
GSM7_CHARACTERS: Final = GSM7_BASIC | GSM7_EXTENSION

MODELS: Final = ("flat", "3gpp")

# Enum attribute access costs ~70 ns in CPython 3.11: the hot path uses these instead.
_GSM7: Final = Encoding.GSM7
_UCS2: Final = Encoding.UCS2
_SINGLE: Final = {_GSM7: 160, _UCS2: 70}
_MULTI: Final = {_GSM7: 153, _UCS2: 67}

# The one pass over the text in the common case: encode it (a copy for ASCII text) and
# delete, in C, every byte that is a one-septet ASCII character. Multi-byte UTF-8
# sequences only contain bytes >= 0x80, so what is left decodes back into exactly the
# text's non-ASCII characters plus its ASCII specials: usually nothing at all.
_PLAIN_ASCII: Final = bytes(sorted(ord(c) for c in GSM7_BASIC if c.isascii()))
_ONE_SEPTET_AS_ALPHA: Final = bytes(ord("a") if i in _PLAIN_ASCII else ord(" ") for i in range(256))
_SPECIAL: Final = GSM7_CHARACTERS - {chr(b) for b in _PLAIN_ASCII}
_NON_BMP: Final = re.compile("[\U00010000-\U0010ffff]")
_EXTENSION_RE: Final = re.compile("[" + re.escape("".join(sorted(GSM7_EXTENSION))) + "]")

# SegmentCount is a NamedTuple, whose constructor is a Python-level call; for texts with
# no double-width characters the count only depends on the length, so the results for
# every length up to the gateway's limit and a bit are built once.
_CACHED_UNITS: Final = 1700


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_new_tuple = tuple.__new__


def _table(encoding: Encoding, model: str) -> tuple[SegmentCount, ...]:
    single, multi = _SINGLE[encoding], _MULTI[encoding]
    if model == "flat":
        segs = [_ceil_div(u, single) for u in range(_CACHED_UNITS)]
    else:
        segs = [
            0 if u == 0 else 1 if u <= single else _ceil_div(u, multi) for u in range(_CACHED_UNITS)
        ]
    # tuple.__new__ rather than SegmentCount(...): the tables cost 1 ms less at start-up.
    return tuple(map(_new_tuple, repeat(SegmentCount), zip(repeat(encoding), count_up(), segs)))


# The special characters of real texts repeat ("é", "íñ", "{}"), and set operations on
# them cost more than the pass over the text: their classification is memoised.
_CLASSIFIED: dict[str, tuple[Encoding, int]] = {}
_CLASSIFIED_SIZE: Final = 4096
_CLASSIFIED_MAX_LEN: Final = 24

_FLAT_GSM7: Final = _table(_GSM7, "flat")
_FLAT_UCS2: Final = _table(_UCS2, "flat")
_3GPP: Final = {e: _table(e, "3gpp") for e in Encoding}


def count(text: str, model: str = "flat") -> SegmentCount:
    """Return the encoding, length in units (septets or UTF-16 code units) and segments.

    ``model`` is ``"flat"`` or ``"3gpp"`` (see the module docstring).
    """
    if text.isascii():
        data = text.encode()
        # All one-septet characters (the common case): 25 ns cheaper than the deletion.
        if data.translate(_ONE_SEPTET_AS_ALPHA).isalpha():
            if model == "flat" and len(text) < _CACHED_UNITS:
                return _FLAT_GSM7[len(text)]
            rest = b""
        else:
            rest = data.translate(None, _PLAIN_ASCII)
    else:
        rest = text.encode("utf-8", "surrogatepass").translate(None, _PLAIN_ASCII)
    if not rest:
        encoding, doubles = _GSM7, 0
    else:
        special = rest.decode("utf-8", "surrogatepass")
        known = _CLASSIFIED.get(special)
        if known is None:
            known = _classify(special)
            if len(special) <= _CLASSIFIED_MAX_LEN:
                if len(_CLASSIFIED) >= _CLASSIFIED_SIZE:
                    _CLASSIFIED.clear()
                _CLASSIFIED[special] = known
        encoding, doubles = known
    units = len(text) + doubles

    if model == "flat":
        if units < _CACHED_UNITS:
            # Chosen by identity: hashing an Enum member is a Python-level call.
            return (_FLAT_GSM7 if encoding is _GSM7 else _FLAT_UCS2)[units]
        return SegmentCount(encoding, units, _ceil_div(units, _SINGLE[encoding]))
    if model == "3gpp":
        if doubles == 0 or units <= _SINGLE[encoding]:
            if units < _CACHED_UNITS:
                return _3GPP[encoding][units]
            return SegmentCount(encoding, units, _ceil_div(units, _MULTI[encoding]))
        wide = _EXTENSION_RE if encoding is _GSM7 else _NON_BMP
        positions = [m.start() for m in wide.finditer(text)]
        return SegmentCount(encoding, units, _pack(len(text), positions, _MULTI[encoding]))
    raise ValueError(f"unknown segment model {model!r}; expected one of {', '.join(MODELS)}")


def _classify(special: str) -> tuple[Encoding, int]:
    """Encoding and number of double-width characters, given a text's special characters."""
    chars = set(special)
    if chars <= _SPECIAL:
        return _GSM7, sum(special.count(c) for c in chars & GSM7_EXTENSION)
    # Outside the BMP a character is a surrogate pair: two UTF-16 code units. (Not
    # len(encode("utf-16-le")): a codec looked up by name costs ~300 ns.)
    if max(chars) > "\uffff":
        return _UCS2, len(_NON_BMP.findall(special))
    return _UCS2, 0


def _pack(length: int, wide: list[int], per_segment: int) -> int:
    """Segments needed for ``length`` characters of one unit each, except those at the
    ``wide`` positions, which take two units that must stay in the same segment."""
    segments, used, last = 1, 0, 0
    for pos in wide:
        used += pos - last
        if used > per_segment:
            full = (used - 1) // per_segment
            segments += full
            used -= full * per_segment
        if used + 2 > per_segment:
            segments += 1
            used = 2
        else:
            used += 2
        last = pos + 1
    used += length - last
    if used > per_segment:
        segments += (used - 1) // per_segment
    return segments


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 03.38 default or extension table."""
    return count(text).encoding is _GSM7
