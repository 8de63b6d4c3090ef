"""Smart encoding: the table, the all-or-nothing rule, transliteration, and its properties."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher import smart
from dispatcher.models import Encoding
from dispatcher.segments import GSM7_CHARACTERS, GSM7_EXTENSION, count
from dispatcher.smart import LETTERS, REPLACEMENTS, encode

GSM7, UCS2 = Encoding.GSM7, Encoding.UCS2


def septets(text: str) -> int:
    return len(text) + sum(c in GSM7_EXTENSION for c in text)


# --- the table -----------------------------------------------------------------------


def test_every_replacement_turns_one_non_gsm_character_into_gsm7() -> None:
    for char, replacement in REPLACEMENTS.items():
        assert len(char) == 1
        assert char not in GSM7_CHARACTERS, repr(char)
        assert all(c in GSM7_CHARACTERS for c in replacement), repr(char)
        assert septets(replacement) <= 3, repr(char)
    for char, replacement in LETTERS.items():
        assert char not in GSM7_CHARACTERS, repr(char)
        assert replacement, repr(char)
        assert all(c in GSM7_CHARACTERS for c in replacement), repr(char)


def test_every_space_separator_is_a_space() -> None:
    spaces = [chr(cp) for cp in range(0x10000) if unicodedata.category(chr(cp)) == "Zs"]
    assert len(spaces) > 10
    for char in spaces:
        assert char == " " or REPLACEMENTS[char] == " ", hex(ord(char))


def test_fullwidth_ascii_becomes_ascii() -> None:
    for cp in range(0xFF01, 0xFF5F):
        expected = "'" if cp == 0xFF40 else chr(cp - 0xFEE0)
        assert REPLACEMENTS[chr(cp)] == expected, hex(cp)


@pytest.mark.parametrize(
    "char", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\ufe0f"]
)
def test_zero_width_characters_are_removed(char: str) -> None:
    assert REPLACEMENTS[char] == ""
    assert encode(f"Hello{char} world") == ("Hello world", 1)


def test_the_docstring_documents_every_replacement() -> None:
    doc = smart.__doc__
    assert doc is not None
    ranges = [
        range(int(a, 16), int(b, 16) + 1) for a, b in re.findall(r"U\+(\w{4})-U\+(\w{4})", doc)
    ]
    for char in REPLACEMENTS:
        documented = (
            char in doc
            or f"U+{ord(char):04X}" in doc
            or any(ord(char) in r for r in ranges)
            or (char == "\t" and "tab" in doc)
        )
        assert documented, f"U+{ord(char):04X} {unicodedata.name(char, '?')}"


# --- encode: concrete cases ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "replaced"),
    [
        ("It\u2019s 5\u00a0pm", "It's 5 pm", 2),
        ("\u201cHola\u201d \u2014 \u00abAna\u00bb\u2026", '"Hola" - "Ana"...', 6),
        ("\u2022 uno\n\u2022 dos", "- uno\n- dos", 2),
        ("Precio:\u202f10\u2009\u20ac", "Precio: 10 €", 2),  # € is GSM-7 (escape)
        ("\uff28\uff49\uff01", "Hi!", 3),
        ("Tab\there", "Tab here", 1),
        ("Mot\u00adclé", "Motclé", 1),
        ("cafe\u0301", "café", 1),  # composed: the same letter, GSM-7 é
        ("\u201cx\u201d" * 3, '"x"' * 3, 6),
    ],
)
def test_look_alikes_are_replaced(text: str, expected: str, replaced: int) -> None:
    assert count(text).encoding is UCS2
    assert encode(text) == (expected, replaced)
    assert count(expected).encoding is GSM7


def test_one_curly_apostrophe_no_longer_costs_three_segments() -> None:
    text = "x" * 150 + "It\u2019s ok"
    assert count(text).segments == 3
    new, replaced = encode(text)
    assert (count(new).segments, replaced) == (1, 1)


@pytest.mark.parametrize(
    "text",
    [
        "Hola \u201cAna\u201d \U0001f600",  # an emoji keeps it UCS-2
        "\u201c\u5f20\u4f1f\u201d",  # so does a Chinese name
        "S\u00e1bado \u2014 10:00",  # á is a letter: only with transliterate
        "1\ufe0f\u20e3 \u2014 uno",  # a keycap is an emoji
        "ca\u0301fe",  # á once composed: still a letter outside GSM-7
    ],
)
def test_nothing_is_replaced_when_the_message_stays_ucs2(text: str) -> None:
    assert encode(text) == (text, 0)


@pytest.mark.parametrize("text", ["Hello world", "Año: 10 €, {ok} [é]", "", "\n\r@£$¥"])
def test_gsm7_is_never_changed(text: str) -> None:
    assert encode(text) == (text, 0)
    assert encode(text, transliterate=True) == (text, 0)


def test_a_replacement_that_would_cost_more_segments_is_not_made() -> None:
    # 1 UCS-2 segment of 70 ellipses would be 210 septets: 2 GSM-7 segments.
    assert encode("\u2026" * 70) == ("\u2026" * 70, 0)
    # 53 ellipses: 159 septets, 1 segment either way: replaced.
    assert encode("\u2026" * 53) == ("." * 159, 53)
    # 54: 162 septets, 2 segments against 1.
    assert encode("\u2026" * 54) == ("\u2026" * 54, 0)


def test_a_message_of_nothing_but_invisible_characters_is_left_alone() -> None:
    assert encode("\u200b\u200d") == ("\u200b\u200d", 0)


# --- transliteration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("S\u00e1bado", "Sabado"),
        ("Ma\u00e7\u00e3", "MaÇa"),
        ("\u1e09", "Ç"),  # ḉ: c, cedilla, acute
        ("\u0141\u00f3d\u017a", "Lodz"),
        ("Zo\u00eb", "Zoe"),
        ("\u01d8 \u01fb", "ü å"),  # keeps the accents GSM-7 has
        ("\u00c8 \u00d2", "E O"),  # GSM-7 has è ò, not È Ò
        ("\u0153uvre", "oeuvre"),
        ("1\u00ba \u00bd \u2122 \ufb01n", "1o 1/2 TM fin"),
        ("\u0391\u0398\u0397\u039d\u0391", "AΘHNA"),  # Θ is GSM-7 itself
        ("q\u0301", "q"),  # an accent no letter takes: dropped
        ("\u201cS\u00e1bado\u201d", '"Sabado"'),
    ],
)
def test_transliteration(text: str, expected: str) -> None:
    assert encode(text) == (text, 0)
    new, replaced = encode(text, transliterate=True)
    assert new == expected
    assert replaced == sum(c not in GSM7_CHARACTERS for c in text)


def test_transliteration_still_leaves_ucs2_alone() -> None:
    for text in ["S\u00e1bado \U0001f600", "\u4e2d\u00e1", "\u0436\u00e1"]:
        assert encode(text, transliterate=True) == (text, 0)


# --- properties ------------------------------------------------------------------------

PIECES = sorted(
    {*REPLACEMENTS, *LETTERS, "á", "í", "ó", "ú", "ê", "ã", "ç", "ǘ", "ß", "é", "ñ", "€", "{"}
    | {"\u0301", "\u0308", "e\u0301", "a\u030a", "\U0001f600", "\U0001f44d\U0001f3fd"}
    | {"中", "ж", "½", "™", "º", "…", "1\ufe0f\u20e3", "\r\n", " ", "x", "Hola "}
)
smart_text = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.sampled_from(sorted(GSM7_CHARACTERS)),
        st.text(max_size=2),
    ),
    max_size=200,
).map("".join)
gsm_text = st.text(alphabet=st.sampled_from(sorted(GSM7_CHARACTERS)), max_size=400)


@given(smart_text, st.booleans())
def test_never_more_segments(text: str, transliterate: bool) -> None:
    new, _ = encode(text, transliterate=transliterate)
    for model in ("flat", "3gpp"):
        assert count(new, model).segments <= count(text, model).segments


@given(gsm_text, st.booleans())
def test_never_changes_gsm7(text: str, transliterate: bool) -> None:
    assert encode(text, transliterate=transliterate) == (text, 0)


@given(smart_text, st.booleans())
def test_idempotent(text: str, transliterate: bool) -> None:
    new, _ = encode(text, transliterate=transliterate)
    assert encode(new, transliterate=transliterate) == (new, 0)


@given(smart_text, st.booleans())
def test_all_or_nothing(text: str, transliterate: bool) -> None:
    new, replaced = encode(text, transliterate=transliterate)
    if replaced == 0:
        assert new == text
    else:
        assert new
        assert count(new).encoding is GSM7
        assert replaced == sum(c not in GSM7_CHARACTERS for c in text)


@given(smart_text)
def test_transliteration_only_adds(text: str) -> None:
    # Whatever the table alone makes GSM-7, transliteration makes GSM-7 the same way.
    new, replaced = encode(text)
    if replaced:
        assert encode(text, transliterate=True) == (new, replaced)
