r"""Smart encoding: GSM-7 look-alikes for the characters that alone make a message UCS-2.

One curly apostrophe pasted from a word processor turns a 160-character GSM-7 message
into three UCS-2 segments. :func:`encode` replaces such look-alike punctuation and spacing
with GSM 03.38 characters, **when and only when that makes the whole message GSM-7** and
costs no more segments in either model (``flat`` or ``3gpp``); otherwise the text comes
back unchanged, with 0 replaced, so that a message which stays UCS-2 (an emoji, a Chinese
name) is not altered for nothing. A message that is already GSM-7 is never changed.

The table (:data:`REPLACEMENTS`), as the README quotes it:

- ``'`` for ‘ ’ ‚ ‛ ′ ‵ ‹ › ʹ ʼ ´ ` ｀: single quotes, apostrophes, primes, single
  guillemets, the spacing acute and grave accents (the grave accent is ASCII, not GSM-7).
- ``"`` for “ ” „ ‟ ″ ‶ « » ʺ 〝 〞 〟: double quotes, double primes, guillemets.
- ``-`` for ‐ ‑ ‒ – — ― ⁃ − ⸺ ⸻ ﹘: hyphen, non-breaking hyphen, figure, en and em
  dashes, horizontal bar, minus sign; and for the bullets • ‣ ◦ ∙ ▪ ●.
- ``.`` for the middle dot ·; ``...``, ``..``, ``.`` for the ellipsis … and the leaders
  ‥ ․; ``!!`` ``??`` ``?!`` ``!?`` for ‼ ⁇ ⁈ ⁉.
- ``/`` for ⁄ ∕, ``*`` for ⁎ ∗, ``^`` for ˆ ‸, ``~`` for ˜ ∼, ``|`` for ¦, ``<`` ``>``
  for the angle brackets 〈 〉 ⟨ ⟩ U+2329 U+232A.
- a space for every Unicode space separator (category Zs) other than the space itself
  (U+00A0 no-break space, U+1680, U+2000-U+200A, U+202F, U+205F, U+3000) and for tab.
- ``\n`` for U+2028 line separator, U+2029 paragraph separator, U+0085 next line.
- nothing (removed) for the invisible: U+200B zero width space, U+200C zero width
  non-joiner, U+200D zero width joiner, U+2060 word joiner, U+FEFF byte order mark,
  U+00AD soft hyphen, U+034F grapheme joiner, U+180E, the direction marks U+200E U+200F
  U+061C, embeddings and isolates U+202A-U+202E U+2066-U+2069, invisible operators
  U+2061-U+2064, and the presentation selectors U+FE0E U+FE0F.
- the ASCII twin of each fullwidth (U+FF01-U+FF5E) and small (U+FE50-U+FE6B) form of
  ASCII; ``£`` ``¥`` for ￡ ￥; ``,`` ``.`` for the ideographic comma and full stop
  、 。 ､ ｡ ﹑.
- ``Ω`` ``Å`` ``K`` for the Ohm, Angstrom and Kelvin signs U+2126 U+212B U+212A
  (canonically those letters).

Decisions: guillemets become straight quotes (they are the quotation marks of French,
Spanish, Russian…; ``<<`` would cost two septets each and read as arrows); an em dash
becomes one hyphen, not two; symbols that are not look-alikes (© ® ™ ° ½ × ÷ ¢) and
emoji are never replaced: an emoji keeps the message UCS-2. Letters with accents are never
changed either, with one exception that changes no letter: a letter followed by a
combining accent is composed (NFC), so ``e`` + U+0301 becomes GSM-7 ``é``.

``transliterate=True`` (``--transliterate``) also changes letters, to the nearest GSM-7
letter: a letter with an accent keeps as many of its accents as GSM-7 has (``ǘ`` → ``ü``,
``ǻ`` → ``å``) and loses the others (``á`` → ``a``, ``Ò`` → ``O``, ``ş`` → ``s``); ``ç``
becomes ``Ç``, code 0x09, which the ETSI table draws as a capital, the Unicode
Consortium's mapping reads as the small letter, and handsets show either way (Kannel
sends ``ç`` as 0x09 too); Greek capitals drawn like Latin ones (``Α`` ``Β`` ``Ε`` …) become
those Latin letters; other letters that do not decompose follow a short table (``ł`` →
``l``, ``đ`` → ``d``, ``œ`` → ``oe``, ``þ`` → ``th``, …, :data:`LETTERS`); compatibility
characters become their plain form (``º`` → ``o``, ``²`` → ``2``, ``ﬁ`` → ``fi``, ``™`` →
``TM``, ``½`` → ``1/2``); a combining accent left over is dropped.

``replaced`` counts the characters of the original text that were not GSM-7, each of which
was replaced, composed into its letter or removed. It is how the pipeline reports
``"replaced": N``; the segments saved are ``count(text)`` minus ``count(new)``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from dispatcher.models import Encoding, SegmentCount
from dispatcher.segments import GSM7_BASIC, GSM7_CHARACTERS, count

_EXPLICIT: Final = {
    # Single quotation marks, apostrophes, primes.
    "\u2018": "'",  # ‘ LEFT SINGLE QUOTATION MARK
    "\u2019": "'",  # ’ RIGHT SINGLE QUOTATION MARK, the typographic apostrophe
    "\u201a": "'",  # ‚ SINGLE LOW-9 QUOTATION MARK (German opening quote, not a comma)
    "\u201b": "'",  # ‛ SINGLE HIGH-REVERSED-9 QUOTATION MARK
    "\u2032": "'",  # ′ PRIME
    "\u2035": "'",  # ‵ REVERSED PRIME
    "\u2039": "'",  # ‹ SINGLE LEFT-POINTING ANGLE QUOTATION MARK
    "\u203a": "'",  # › SINGLE RIGHT-POINTING ANGLE QUOTATION MARK
    "\u02b9": "'",  # ʹ MODIFIER LETTER PRIME
    "\u02bc": "'",  # ʼ MODIFIER LETTER APOSTROPHE
    "\u00b4": "'",  # ´ ACUTE ACCENT, typed for an apostrophe ("don´t")
    "`": "'",  # GRAVE ACCENT: ASCII, yet not in GSM 03.38
    # Double quotation marks, double primes, guillemets.
    "\u201c": '"',  # “ LEFT DOUBLE QUOTATION MARK
    "\u201d": '"',  # ” RIGHT DOUBLE QUOTATION MARK
    "\u201e": '"',  # „ DOUBLE LOW-9 QUOTATION MARK
    "\u201f": '"',  # ‟ DOUBLE HIGH-REVERSED-9 QUOTATION MARK
    "\u2033": '"',  # ″ DOUBLE PRIME
    "\u2036": '"',  # ‶ REVERSED DOUBLE PRIME
    "\u00ab": '"',  # « LEFT-POINTING DOUBLE ANGLE QUOTATION MARK
    "\u00bb": '"',  # » RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK
    "\u02ba": '"',  # ʺ MODIFIER LETTER DOUBLE PRIME
    "\u301d": '"',  # 〝 REVERSED DOUBLE PRIME QUOTATION MARK
    "\u301e": '"',  # 〞 DOUBLE PRIME QUOTATION MARK
    "\u301f": '"',  # 〟 LOW DOUBLE PRIME QUOTATION MARK
    # Hyphens, dashes, minus: one hyphen-minus each.
    "\u2010": "-",  # ‐ HYPHEN
    "\u2011": "-",  # ‑ NON-BREAKING HYPHEN
    "\u2012": "-",  # ‒ FIGURE DASH
    "\u2013": "-",  # – EN DASH
    "\u2014": "-",  # — EM DASH
    "\u2015": "-",  # ― HORIZONTAL BAR
    "\u2043": "-",  # ⁃ HYPHEN BULLET
    "\u2212": "-",  # − MINUS SIGN
    "\u2e3a": "-",  # ⸺ TWO-EM DASH
    "\u2e3b": "-",  # ⸻ THREE-EM DASH
    "\ufe58": "-",  # ﹘ SMALL EM DASH
    # Bullets.
    "\u2022": "-",  # • BULLET
    "\u2023": "-",  # ‣ TRIANGULAR BULLET
    "\u25e6": "-",  # ◦ WHITE BULLET
    "\u2219": "-",  # ∙ BULLET OPERATOR
    "\u25aa": "-",  # ▪ BLACK SMALL SQUARE
    "\u25cf": "-",  # ● BLACK CIRCLE
    "\u00b7": ".",  # · MIDDLE DOT (Catalan l·l is written l.l without it)
    # Ellipsis and leaders; doubled punctuation.
    "\u2026": "...",  # … HORIZONTAL ELLIPSIS
    "\u2025": "..",  # ‥ TWO DOT LEADER
    "\u2024": ".",  # ․ ONE DOT LEADER
    "\u203c": "!!",  # ‼ DOUBLE EXCLAMATION MARK
    "\u2047": "??",  # ⁇ DOUBLE QUESTION MARK
    "\u2048": "?!",  # ⁈ QUESTION EXCLAMATION MARK
    "\u2049": "!?",  # ⁉ EXCLAMATION QUESTION MARK
    # Slashes, asterisks, carets, tildes, bars, angle brackets.
    "\u2044": "/",  # ⁄ FRACTION SLASH
    "\u2215": "/",  # ∕ DIVISION SLASH
    "\u204e": "*",  # ⁎ LOW ASTERISK
    "\u2217": "*",  # ∗ ASTERISK OPERATOR
    "\u02c6": "^",  # ˆ MODIFIER LETTER CIRCUMFLEX ACCENT
    "\u2038": "^",  # ‸ CARET
    "\u02dc": "~",  # ˜ SMALL TILDE
    "\u223c": "~",  # ∼ TILDE OPERATOR
    "\u00a6": "|",  # ¦ BROKEN BAR
    "\u2329": "<",  # 〈 LEFT-POINTING ANGLE BRACKET
    "\u232a": ">",  # 〉 RIGHT-POINTING ANGLE BRACKET
    "\u3008": "<",  # 〈 LEFT ANGLE BRACKET
    "\u3009": ">",  # 〉 RIGHT ANGLE BRACKET
    "\u27e8": "<",  # ⟨ MATHEMATICAL LEFT ANGLE BRACKET
    "\u27e9": ">",  # ⟩ MATHEMATICAL RIGHT ANGLE BRACKET
    # Spaces: every space separator (Unicode category Zs) but U+0020, and tab.
    "\u00a0": " ",  # NO-BREAK SPACE
    "\u1680": " ",  # OGHAM SPACE MARK
    "\u2000": " ",  # EN QUAD
    "\u2001": " ",  # EM QUAD
    "\u2002": " ",  # EN SPACE
    "\u2003": " ",  # EM SPACE
    "\u2004": " ",  # THREE-PER-EM SPACE
    "\u2005": " ",  # FOUR-PER-EM SPACE
    "\u2006": " ",  # SIX-PER-EM SPACE
    "\u2007": " ",  # FIGURE SPACE
    "\u2008": " ",  # PUNCTUATION SPACE
    "\u2009": " ",  # THIN SPACE
    "\u200a": " ",  # HAIR SPACE
    "\u202f": " ",  # NARROW NO-BREAK SPACE
    "\u205f": " ",  # MEDIUM MATHEMATICAL SPACE
    "\u3000": " ",  # IDEOGRAPHIC SPACE
    "\t": " ",  # CHARACTER TABULATION: not in GSM 03.38
    # Line breaks that GSM 03.38 lacks.
    "\u2028": "\n",  # LINE SEPARATOR
    "\u2029": "\n",  # PARAGRAPH SEPARATOR
    "\u0085": "\n",  # NEXT LINE (NEL)
    # Invisible characters: removed.
    "\u200b": "",  # ZERO WIDTH SPACE
    "\u200c": "",  # ZERO WIDTH NON-JOINER
    "\u200d": "",  # ZERO WIDTH JOINER
    "\u2060": "",  # WORD JOINER
    "\ufeff": "",  # ZERO WIDTH NO-BREAK SPACE (byte order mark)
    "\u00ad": "",  # SOFT HYPHEN
    "\u034f": "",  # COMBINING GRAPHEME JOINER
    "\u180e": "",  # MONGOLIAN VOWEL SEPARATOR (zero width since Unicode 6.3)
    "\u200e": "",  # LEFT-TO-RIGHT MARK
    "\u200f": "",  # RIGHT-TO-LEFT MARK
    "\u061c": "",  # ARABIC LETTER MARK
    "\u202a": "",  # LEFT-TO-RIGHT EMBEDDING
    "\u202b": "",  # RIGHT-TO-LEFT EMBEDDING
    "\u202c": "",  # POP DIRECTIONAL FORMATTING
    "\u202d": "",  # LEFT-TO-RIGHT OVERRIDE
    "\u202e": "",  # RIGHT-TO-LEFT OVERRIDE
    "\u2061": "",  # FUNCTION APPLICATION
    "\u2062": "",  # INVISIBLE TIMES
    "\u2063": "",  # INVISIBLE SEPARATOR
    "\u2064": "",  # INVISIBLE PLUS
    "\u2066": "",  # LEFT-TO-RIGHT ISOLATE
    "\u2067": "",  # RIGHT-TO-LEFT ISOLATE
    "\u2068": "",  # FIRST STRONG ISOLATE
    "\u2069": "",  # POP DIRECTIONAL ISOLATE
    "\ufe0e": "",  # VARIATION SELECTOR-15 (text presentation)
    "\ufe0f": "",  # VARIATION SELECTOR-16 (emoji presentation)
    # CJK punctuation that has an ASCII twin.
    "\u3001": ",",  # 、 IDEOGRAPHIC COMMA
    "\u3002": ".",  # 。 IDEOGRAPHIC FULL STOP
    "\uff61": ".",  # ｡ HALFWIDTH IDEOGRAPHIC FULL STOP
    "\uff64": ",",  # ､ HALFWIDTH IDEOGRAPHIC COMMA
    "\ufe51": ",",  # ﹑ SMALL IDEOGRAPHIC COMMA
    "\uffe1": "£",  # ￡ FULLWIDTH POUND SIGN
    "\uffe5": "¥",  # ￥ FULLWIDTH YEN SIGN
    "\uff40": "'",  # ｀ FULLWIDTH GRAVE ACCENT, as its ASCII twin
    # Letter-like symbols that are the same character as a GSM-7 letter (NFC maps them).
    "\u2126": "Ω",  # Ω OHM SIGN
    "\u212b": "Å",  # Å ANGSTROM SIGN
    "\u212a": "K",  # K KELVIN SIGN
}


def _forms_of_ascii() -> dict[str, str]:
    """Fullwidth (U+FF01-U+FF5E) and small (U+FE50-U+FE6B) forms: their ASCII twin."""
    forms = {}
    for cp in [*range(0xFF01, 0xFF5F), *range(0xFE50, 0xFE6C)]:
        plain = unicodedata.normalize("NFKC", chr(cp))
        if plain in GSM7_CHARACTERS:
            forms[chr(cp)] = plain
    return forms


#: Look-alike → GSM-7 text (``""``: removed). Every key is outside GSM 03.38, every value
#: inside it, at most three septets long.
REPLACEMENTS: Final[Mapping[str, str]] = MappingProxyType({**_forms_of_ascii(), **_EXPLICIT})

#: Letters that do not decompose into a GSM-7 letter and accents (``transliterate=True``).
LETTERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ç": "Ç",  # GSM 03.38 0x09: a capital in the ETSI table, small in Unicode's mapping
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ħ": "h", "Ħ": "H",
        "ı": "i", "ŀ": "l", "Ŀ": "L", "ŧ": "t", "Ŧ": "T", "ŋ": "n", "Ŋ": "N", "ĸ": "k",
        "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th", "ƒ": "f", "ẞ": "SS",
        # Greek capitals drawn as Latin ones, which GSM 03.38 leaves to the Latin letters.
        "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
        "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    }
)  # fmt: skip

_GSM7: Final = Encoding.GSM7
_PLAIN_ASCII: Final = bytes(sorted(ord(c) for c in GSM7_BASIC if c.isascii()))
# What transliteration makes of a character (None: nothing GSM-7), learnt as texts come.
_TRANSLITERATED: dict[str, str | None] = {}
_TRANSLITERATED_SIZE: Final = 4096
# The plan for the special characters of frequent texts (as segments._CLASSIFIED): the
# (character, replacement) pairs, None when one has no replacement; per transliterate.
_Plan = tuple[tuple[str, str], ...]
_PLANS: Final[tuple[dict[str, _Plan | None], dict[str, _Plan | None]]] = ({}, {})
_PLANS_SIZE: Final = 4096
_PLANS_MAX_LEN: Final = 24


def encode(text: str, *, transliterate: bool = False) -> tuple[str, int]:
    """``(text, replaced)``: ``text`` made GSM-7 with the table above, and how many of its
    characters that took; or ``(text, 0)`` unchanged if it cannot be made GSM-7 (or is
    already), or if that would cost more segments in either model."""
    before = count(text)
    if before.encoding is _GSM7:
        return text, 0
    # Its characters outside plain ASCII: usually a few, the same in text after text.
    special = text.encode("utf-8", "surrogatepass").translate(None, _PLAIN_ASCII)
    key = special.decode("utf-8", "surrogatepass")
    plans = _PLANS[transliterate]
    if key in plans:
        plan = plans[key]
    else:
        outside = set(key) - GSM7_CHARACTERS
        if any(unicodedata.category(c)[0] == "M" for c in outside):
            return _composed(text, outside, before, transliterate)
        plan = _plan(outside, transliterate)
        if len(key) <= _PLANS_MAX_LEN:
            if len(plans) >= _PLANS_SIZE:
                plans.clear()
            plans[key] = plan
    if plan is None:
        return text, 0
    new, replaced = text, 0
    for char, replacement in plan:
        replaced += new.count(char)
        new = new.replace(char, replacement)
    return _checked(text, before, new, replaced)


def _composed(
    text: str, outside: set[str], before: SegmentCount, transliterate: bool
) -> tuple[str, int]:
    """:func:`encode` for a text with combining marks: a letter followed by accents may be
    a GSM-7 letter once composed (NFC), and transliteration must see the letter."""
    composed = unicodedata.normalize("NFC", text)
    plan = _plan(_outside(composed), transliterate)
    if plan is None:
        return text, 0
    new = composed
    for char, replacement in plan:
        new = new.replace(char, replacement)
    return _checked(text, before, new, sum(map(text.count, outside)))


def _checked(text: str, before: SegmentCount, new: str, replaced: int) -> tuple[str, int]:
    """``(new, replaced)`` if ``new`` is GSM-7, not empty and costs no more segments than
    ``text``; else ``(text, 0)``."""
    after = count(new)
    if after.encoding is not _GSM7 or not new:
        return text, 0
    # Each character outside GSM-7 (one unit or more) becomes at most two septets but for
    # the few longer replacements (… → ...): at most twice the units cannot cost more
    # segments in either model; beyond that, both are counted.
    if after.units > 2 * before.units and any(
        count(new, model).segments > count(text, model).segments for model in ("flat", "3gpp")
    ):
        return text, 0
    return new, replaced


def _outside(text: str) -> set[str]:
    """The distinct characters of ``text`` outside GSM 03.38."""
    special = text.encode("utf-8", "surrogatepass").translate(None, _PLAIN_ASCII)
    return set(special.decode("utf-8", "surrogatepass")) - GSM7_CHARACTERS


def _plan(outside: set[str], transliterate: bool) -> _Plan | None:
    """The replacement of each of the ``outside`` characters; None if one has none."""
    plan = []
    for char in sorted(outside):
        replacement = REPLACEMENTS.get(char)
        if replacement is None:
            if not transliterate:
                return None
            replacement = _transliterated(char)
            if replacement is None:
                return None
        plan.append((char, replacement))
    return tuple(plan)


def _transliterated(char: str) -> str | None:
    if char in _TRANSLITERATED:
        return _TRANSLITERATED[char]
    result = _transliterate(char)
    if len(_TRANSLITERATED) >= _TRANSLITERATED_SIZE:
        _TRANSLITERATED.clear()
    _TRANSLITERATED[char] = result
    return result


def _transliterate(char: str) -> str | None:
    """The nearest GSM-7 text for one character outside the table, or None."""
    if char in LETTERS:
        return LETTERS[char]
    if unicodedata.category(char) == "Mn":
        return ""  # an accent left alone once letters are composed: dropped
    # Keep the accents GSM-7 has a letter for (ǘ → ü, ḉ → ç → Ç), drop the others (ű → u).
    decomposed = unicodedata.normalize("NFD", char)
    base, marks = decomposed[0], decomposed[1:]
    for keep in range(len(marks), -1, -1):
        letter = unicodedata.normalize("NFC", base + marks[:keep])
        if letter in GSM7_CHARACTERS:
            return letter
        if letter in LETTERS:
            return LETTERS[letter]
    # Compatibility forms (º ² ﬁ ™ ½): their plain characters, without accents.
    plain = "".join(
        REPLACEMENTS.get(c, c)
        for c in unicodedata.normalize("NFKD", char)
        if unicodedata.category(c) != "Mn"
    )
    if plain and plain != char and all(c in GSM7_CHARACTERS for c in plain):
        return plain
    return None
