"""GSM-7 / UCS-2 detection and segment counting, in both billing models of SPEC §3.

The alphabet is GSM 03.38 (3GPP TS 23.038 §6.2.1): the 128-entry default table and its
extension table, whose characters are sent as ESC + code and so cost two septets.

``flat`` (the gateway's documented billing): segments = ceil(units / 160) for GSM-7,
ceil(units / 70) for UCS-2.  ``3gpp`` (concatenated SMS, what handsets do): one segment
holds 160 septets / 70 units, but a multipart message carries a 6-byte UDH per part, which
leaves 153 septets / 67 units, and an escape pair is never split across two parts, so a
GSM-7 part may end one septet short.

A multipart UCS-2 part never ends inside a user-perceived character either (an extended
grapheme cluster of Unicode UAX #29: a ZWJ emoji sequence such as 👨‍👩‍👧‍👦, a flag, an
emoji with a skin tone, a keycap 1️⃣, a letter with combining accents, CR LF), as Android's
``SmsMessage.fragmentText`` and the widely used segment calculators split it: whole
clusters are packed greedily, a cluster that does not fit in what is left of a part starts
the next one, and only a cluster longer than a whole part (67 units) is cut, at the last
code point that fits, never inside a surrogate pair. The clusters come from the ``regex``
module's ``\\X``, imported on the first multipart UCS-2 text in this model (GSM-7 texts,
single-segment texts and the ``flat`` model never load it), and only used around the
characters that can join their neighbours: a multipart UCS-2 text without any costs a set
difference more than before (see :func:`_ucs2_multipart`). :func:`parts` returns the parts.

Empty text costs nothing: ``SegmentCount(GSM7, 0, 0)`` in both models. The pipeline
refuses empty text before counting, as the gateway would.
"""

from __future__ import annotations

import re
from itertools import count as count_up
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import regex

from dispatcher import native
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
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# Every byte but the high bytes of the UTF-16 units that start a surrogate pair.
_NOT_HIGH_SURROGATE: Final = bytes(b for b in range(256) if not 0xD8 <= b <= 0xDB)
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
_3GPP_GSM7: Final = _table(_GSM7, "3gpp")
_3GPP_UCS2: Final = _table(_UCS2, "3gpp")


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
        if encoding is _GSM7:
            if doubles == 0 or units <= 160:
                if units < _CACHED_UNITS:
                    return _3GPP_GSM7[units]
                return SegmentCount(_GSM7, units, _ceil_div(units, 153))
            positions = [m.start() for m in _EXTENSION_RE.finditer(text)]
            return SegmentCount(_GSM7, units, _pack(len(text), positions, 153))
        if units <= 70:
            return _3GPP_UCS2[units]
        return _ucs2_multipart(text, special, units, doubles)
    raise ValueError(f"unknown segment model {model!r}; expected one of {', '.join(MODELS)}")


def count_many(texts: list[str], model: str = "flat") -> list[SegmentCount]:
    """`count` of each text: by the C part (`dispatcher.native`) where it is built, which
    reads each text once against a table of the GSM-7 characters (`_classes`), and by
    `count` for what it leaves (a 3gpp multipart text that needs more than its units).
    """
    return count_many_most(texts, model)[0]


def count_many_most(texts: list[str], model: str = "flat") -> tuple[list[SegmentCount], int]:
    """`count_many`, and the most segments of a text (0 for no text)."""
    core = native.core
    counts: list[SegmentCount]
    if core is None or model not in MODELS:
        counts = list(map(count, texts, repeat(model)))
        return counts, max(map(_segments_of, counts), default=0)
    if model == "flat":
        counts, left, most = core.segment_counts(texts, _classes(), _FLAT_GSM7, _FLAT_UCS2, False)
    else:
        counts, left, most = core.segment_counts(texts, _classes(), _3GPP_GSM7, _3GPP_UCS2, True)
    if left:
        counts = [
            c if c is not None else count(t, model) for c, t in zip(counts, texts, strict=True)
        ]
        most = max(map(_segments_of, counts))
    return counts, most


_segments_of = itemgetter(2)  # of a SegmentCount


_CLASSES: bytes | None = None


def _classes() -> bytes:
    """Per BMP character: 1 for a one-septet GSM-7 character, 2 for an extension one,
    0 for a character only UCS-2 holds (made once, 64 KiB)."""
    global _CLASSES
    if _CLASSES is None:
        table = bytearray(65536)
        for character in GSM7_BASIC:
            table[ord(character)] = 1
        for character in GSM7_EXTENSION:
            table[ord(character)] = 2
        _CLASSES = bytes(table)
    return _CLASSES


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


# Loaded on the first multipart UCS-2 text: importing ``regex`` costs ~9 ms of start-up.
_grapheme_rules: tuple[regex.Pattern[str], regex.Pattern[str]] | None = None


def _graphemes() -> tuple[regex.Pattern[str], regex.Pattern[str]]:
    """``(joiner, cluster)``: a character that may join its neighbour into a cluster, and
    one cluster (``\\X``).

    Outside the joiners every code point is a cluster of its own: each rule of UAX #29 that
    forbids a break (GB3-GB13) has CR LF, an Extend, ZWJ, SpacingMark or Prepend character,
    a Hangul jamo L/V/T, a regional indicator or an Indic conjunct linker on one side.
    """
    global _grapheme_rules
    if _grapheme_rules is None:
        import regex

        joiner = regex.compile(
            r"[\p{GCB=Extend}\p{GCB=ZWJ}\p{GCB=SpacingMark}\p{GCB=Prepend}"
            r"\p{GCB=L}\p{GCB=V}\p{GCB=T}\p{GCB=Regional_Indicator}\p{InCB=Linker}]"
        )
        _grapheme_rules = (joiner, regex.compile(r"\X"))
    return _grapheme_rules


# Which characters are joiners, learnt as texts come: a property look-up in ``regex``
# costs ~50 ns a character, a set difference over a text's distinct characters much less.
_JOINERS_SEEN: set[str] = set()
_LONERS_SEEN: set[str] = set()
_LEARNT_SIZE: Final = 1 << 16
# As _CLASSIFIED: whether the special characters of frequent texts include a joiner.
_JOINS: dict[str, bool] = {}


def _may_join(special: str) -> bool:
    """Whether any of a text's special characters is a joiner (CR LF aside)."""
    known = _JOINS.get(special)
    if known is not None:
        return known
    chars = set(special)
    unknown = chars - _JOINERS_SEEN - _LONERS_SEEN
    if unknown:
        if len(_JOINERS_SEEN) + len(_LONERS_SEEN) > _LEARNT_SIZE:
            _JOINERS_SEEN.clear()
            _LONERS_SEEN.clear()
            _JOINS.clear()  # its answers stand for characters known to be in these sets
            unknown = chars
        joiner, _ = _graphemes()
        for char in unknown:
            (_JOINERS_SEEN if joiner.match(char) else _LONERS_SEEN).add(char)
    known = not _JOINERS_SEEN.isdisjoint(chars)
    if len(special) <= _CLASSIFIED_MAX_LEN:
        if len(_JOINS) >= _CLASSIFIED_SIZE:
            _JOINS.clear()
        _JOINS[special] = known
    return known


def _ucs2_multipart(text: str, special: str, units: int, doubles: int) -> SegmentCount:
    """The count of a multipart (> 70 units) UCS-2 text in the ``3gpp`` model."""
    joins = _JOINS.get(special)
    if joins is None:
        joins = _may_join(special)
    if joins or "\r\n" in text:
        segments = len(_ucs2_cuts(text))
    elif doubles == 0:
        # Every cluster is one code point and one unit: as before clusters.
        if units < _CACHED_UNITS:
            return _3GPP_UCS2[units]
        segments = _ceil_div(units, 67)
    else:
        # Every cluster is one code point: the code-point packing, as before clusters.
        segments = _pack(len(text), [m.start() for m in _NON_BMP.finditer(text)], 67)
    return _new_tuple(SegmentCount, (_UCS2, units, segments))


def _ucs2_cuts(text: str) -> list[int]:
    """Where the parts of a multipart UCS-2 text end: code-point indices, the last
    ``len(text)``. The characters of ``text`` must have been through :func:`_may_join`.

    As Android's ``findNextUnicodePosition``: a part ends 67 units on, one earlier if that
    would split a surrogate pair; if that is not a cluster boundary, at the last boundary
    before it, unless the cluster began with the part (longer than a part, it is cut).
    """
    # In UTF-16 units, in C: the high byte of each unit says whether it starts a pair,
    # and the pairs before a unit turn its offset into an index in ``text``.
    highs = text.encode("utf-16-le", "surrogatepass")[1::2]
    total = len(highs)
    if len(highs.translate(None, _NOT_HIGH_SURROGATE)) != total - len(text):
        # A lone surrogate (only a str can hold one) would pass for half a pair: the same
        # cuts on a stand-in that \X takes the same way, one unit, not a surrogate.
        text = _SURROGATE.sub("\ufffd", text)
        highs = text.encode("utf-16-le")[1::2]
    joiners = _JOINERS_SEEN
    cuts: list[int] = []
    start = start_unit = 0
    while total - start_unit > 67:
        cut_unit = start_unit + 67
        if 0xD8 <= highs[cut_unit - 1] <= 0xDB:
            cut_unit -= 1
        cut = cut_unit - len(highs[:cut_unit].translate(None, _NOT_HIGH_SURROGATE))
        left, right = text[cut - 1], text[cut]
        if left in joiners or right in joiners or (left == "\r" and right == "\n"):
            boundary = _boundary_before(text, cut, start)
            if boundary > start:
                cut_unit -= cut - boundary + len(_NON_BMP.findall(text, boundary, cut))
                cut = boundary
        cuts.append(cut)
        start, start_unit = cut, cut_unit
    cuts.append(len(text))
    return cuts


def _boundary_before(text: str, index: int, start: int) -> int:
    """The last cluster boundary at or before ``index`` (``start`` if none is after it)."""
    joiners = _JOINERS_SEEN

    def joined(i: int) -> bool:  # no break between text[i - 1] and text[i]?
        left, right = text[i - 1], text[i]
        return left in joiners or right in joiners or (left == "\r" and right == "\n")

    # Out to the nearest certain breaks: between two code points that are not joiners.
    lo, hi, end = index, index, len(text)
    while lo > 0 and joined(lo):
        lo -= 1
    while hi < end and joined(hi):
        hi += 1
    _, cluster = _graphemes()
    best, pos = lo, lo
    for c in cluster.findall(text, lo, hi):
        pos += len(c)
        if pos > index:
            break
        best = pos
    return max(best, start)


def parts(text: str) -> list[str]:
    """The parts a handset sends ``text`` as in the ``3gpp`` model (empty text: none).

    ``len(parts(text)) == count(text, "3gpp").segments``; joined, they give ``text`` back.
    """
    result = count(text, "3gpp")
    if result.segments <= 1:
        return [text] if text else []
    if result.encoding is _UCS2:
        cuts = _ucs2_cuts(text)  # count() had the characters through _may_join
    else:
        cuts, used = [], 0
        for i, char in enumerate(text):
            width = 2 if char in GSM7_EXTENSION else 1
            if used + width > 153:
                cuts.append(i)
                used = 0
            used += width
        cuts.append(len(text))
    return [text[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]


def non_gsm_characters(text: str) -> list[tuple[int, str]]:
    """The characters that make ``text`` UCS-2, each with its index (in code points)."""
    special = text.encode("utf-8", "surrogatepass").translate(None, _PLAIN_ASCII)
    outside = set(special.decode("utf-8", "surrogatepass")) - GSM7_CHARACTERS
    if not outside:
        return []
    return [(i, char) for i, char in enumerate(text) if char in outside]


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 03.38 default or extension table."""
    return count(text).encoding is _GSM7
