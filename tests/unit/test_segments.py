"""Segment counting: the GSM 03.38 tables, both billing models, and their boundaries."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import segments
from dispatcher.models import Encoding, SegmentCount
from dispatcher.segments import (
    GSM7_BASIC,
    GSM7_BASIC_TABLE,
    GSM7_CHARACTERS,
    GSM7_EXTENSION,
    GSM7_EXTENSION_TABLE,
    count,
    count_many,
    count_many_most,
    is_gsm7,
    non_gsm_characters,
    parts,
)
from tests.support.native import twins

GSM7, UCS2 = Encoding.GSM7, Encoding.UCS2

# --- the tables, checked against 3GPP TS 23.038 §6.2.1 -------------------------------


def test_basic_table_has_128_positions_and_127_characters() -> None:
    assert len(GSM7_BASIC_TABLE) == 128
    assert len(GSM7_BASIC) == 127  # 0x1B is the escape, not a character
    assert "\x1b" not in GSM7_CHARACTERS


@pytest.mark.parametrize(
    ("code", "char"),
    [
        (0x00, "@"), (0x01, "£"), (0x02, "$"), (0x03, "¥"), (0x04, "è"), (0x05, "é"),
        (0x06, "ù"), (0x07, "ì"), (0x08, "ò"), (0x09, "Ç"), (0x0A, "\n"), (0x0B, "Ø"),
        (0x0C, "ø"), (0x0D, "\r"), (0x0E, "Å"), (0x0F, "å"), (0x10, "Δ"), (0x11, "_"),
        (0x12, "Φ"), (0x13, "Γ"), (0x14, "Λ"), (0x15, "Ω"), (0x16, "Π"), (0x17, "Ψ"),
        (0x18, "Σ"), (0x19, "Θ"), (0x1A, "Ξ"), (0x1B, "\x1b"), (0x1C, "Æ"), (0x1D, "æ"),
        (0x1E, "ß"), (0x1F, "É"), (0x20, " "), (0x24, "¤"), (0x40, "¡"), (0x41, "A"),
        (0x5A, "Z"), (0x5B, "Ä"), (0x5C, "Ö"), (0x5D, "Ñ"), (0x5E, "Ü"), (0x5F, "§"),
        (0x60, "¿"), (0x61, "a"), (0x7A, "z"), (0x7B, "ä"), (0x7C, "ö"), (0x7D, "ñ"),
        (0x7E, "ü"), (0x7F, "à"),
    ],
)  # fmt: skip
def test_basic_table_positions(code: int, char: str) -> None:
    assert GSM7_BASIC_TABLE[code] == char


def test_extension_table_is_the_standard_one() -> None:
    assert GSM7_EXTENSION_TABLE == {
        0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
        0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
    }  # fmt: skip
    assert set("^{}\\[~]|€\f") == GSM7_EXTENSION
    assert not GSM7_EXTENSION & GSM7_BASIC


@pytest.mark.parametrize("char", sorted(GSM7_BASIC))
def test_every_basic_character_is_one_septet(char: str) -> None:
    assert count(char) == SegmentCount(GSM7, 1, 1)
    assert count(char * 160) == SegmentCount(GSM7, 160, 1)


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_every_extension_character_is_two_septets(char: str) -> None:
    assert count(char) == SegmentCount(GSM7, 2, 1)
    assert count("a" + char * 80) == SegmentCount(GSM7, 161, 2)


@pytest.mark.parametrize(
    "char",
    [
        "á", "í", "ó", "ú", "ç", "Á", "â", "ã", "õ", "ê",  # accents not in the table
        "\u201c", "\u201d", "\u2018", "\u2019",  # curly quotes
        "\u2013", "\u2014", "\u2026",  # en dash, em dash, ellipsis
        "\u00a0", "\t", "`", "\x00", "\x7f", "\x1b", "\u2126",  # Ohm sign, not Greek Ω
        "😀", "中",
    ],
)  # fmt: skip
def test_look_alikes_are_not_gsm(char: str) -> None:
    result = count(f"Hello {char} world")
    assert result.encoding is UCS2
    assert not is_gsm7(char)


def test_capital_c_cedilla_is_gsm_but_small_is_not() -> None:
    assert count("Ç").encoding is GSM7
    assert count("ç").encoding is UCS2


def test_empty_text_costs_nothing() -> None:
    assert count("") == SegmentCount(GSM7, 0, 0)
    assert count("", "3gpp") == SegmentCount(GSM7, 0, 0)


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown segment model 'gsm'"):
        count("hi", "gsm")


# --- boundaries --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("septets", "flat", "three_gpp"),
    [
        (1, 1, 1), (153, 1, 1), (154, 1, 1), (160, 1, 1), (161, 2, 2),
        (306, 2, 2), (307, 2, 3), (320, 2, 3), (321, 3, 3),
        (1530, 10, 10), (1531, 10, 11), (1600, 10, 11), (1601, 11, 11),
    ],
)  # fmt: skip
def test_gsm7_boundaries(septets: int, flat: int, three_gpp: int) -> None:
    text = "x" * septets
    assert count(text) == SegmentCount(GSM7, septets, flat)
    assert count(text, "3gpp") == SegmentCount(GSM7, septets, three_gpp)


@pytest.mark.parametrize(
    ("units", "flat", "three_gpp"),
    [
        (67, 1, 1), (68, 1, 1), (70, 1, 1), (71, 2, 2), (134, 2, 2), (135, 2, 3),
        (140, 2, 3), (141, 3, 3), (670, 10, 10), (671, 10, 11), (700, 10, 11), (701, 11, 11),
    ],
)  # fmt: skip
def test_ucs2_boundaries(units: int, flat: int, three_gpp: int) -> None:
    text = "á" + "x" * (units - 1)
    assert count(text) == SegmentCount(UCS2, units, flat)
    assert count(text, "3gpp") == SegmentCount(UCS2, units, three_gpp)


def test_extension_counts_two_at_the_boundary() -> None:
    assert count("x" * 158 + "€") == SegmentCount(GSM7, 160, 1)
    assert count("x" * 159 + "€") == SegmentCount(GSM7, 161, 2)
    assert count("{" * 800) == SegmentCount(GSM7, 1600, 10)
    assert count("{" * 800 + "x") == SegmentCount(GSM7, 1601, 11)


def test_3gpp_never_splits_an_escape_pair() -> None:
    # 152 septets, then ESC+€ would take septets 153-154: it moves to the second part.
    text = "x" * 152 + "€" + "x" * 152
    assert count(text) == SegmentCount(GSM7, 306, 2)
    assert count(text, "3gpp") == SegmentCount(GSM7, 306, 3)
    # One septet earlier it fits exactly.
    text = "x" * 151 + "€" + "x" * 153
    assert count(text, "3gpp") == SegmentCount(GSM7, 306, 2)


def test_3gpp_never_splits_a_surrogate_pair() -> None:
    text = "x" * 66 + "😀" + "x" * 66
    assert count(text) == SegmentCount(UCS2, 134, 2)
    assert count(text, "3gpp") == SegmentCount(UCS2, 134, 3)
    text = "x" * 65 + "😀" + "x" * 67
    assert count(text, "3gpp") == SegmentCount(UCS2, 134, 2)


def test_an_emoji_counts_two_units() -> None:
    assert count("😀" * 35) == SegmentCount(UCS2, 70, 1)
    assert count("😀" * 35 + "x") == SegmentCount(UCS2, 71, 2)


# --- the gateway documentation's own examples --------------------------------------


def test_documentation_curl_text_with_area_is_unicode() -> None:
    text = (
        "We detect an incident outside of us due to a Power Cut that affects your área. "
        "It is not necessary to report it"
    )
    assert count(text) == SegmentCount(UCS2, 111, 2)


@pytest.mark.parametrize("emoji", ["😀", "☺"])
def test_documentation_150_characters_with_an_emoji_is_three_segments(emoji: str) -> None:
    text = "x" * 149 + emoji
    assert len(text) == 150
    result = count(text)
    assert result.encoding is UCS2
    assert result.segments == 3


# --- properties against a plain reference implementation ---------------------------

CLUSTER = regex.compile(r"\X")


def units_of(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def code_point_reference(text: str, model: str) -> SegmentCount:
    """Character by character, the way the standard describes it (and the way this module
    counted before whole clusters): a part may end between any two code points."""
    if all(c in GSM7_CHARACTERS for c in text):
        encoding, widths = GSM7, [2 if c in GSM7_EXTENSION else 1 for c in text]
        single, multi = 160, 153
    else:
        encoding, widths = UCS2, [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, multi = 70, 67
    units = sum(widths)
    if model == "flat":
        return SegmentCount(encoding, units, math.ceil(units / single))
    if units <= single:
        return SegmentCount(encoding, units, 1 if units else 0)
    segments, used = 1, 0
    for width in widths:
        if used + width > multi:
            segments, used = segments + 1, 0
        used += width
    return SegmentCount(encoding, units, segments)


def cluster_reference_parts(text: str) -> list[str]:
    """A multipart UCS-2 text split the way Android's fragmentText does: whole clusters,
    greedily; a cluster longer than a part starts a part and is cut between code points."""
    result, part = [], ""
    for cluster in CLUSTER.findall(text):
        if units_of(part + cluster) <= 67:
            part += cluster
            continue
        if units_of(cluster) <= 67:
            result.append(part)
            part = cluster
            continue
        if part:
            result.append(part)
            part = ""
        for char in cluster:
            if units_of(part + char) > 67:
                result.append(part)
                part = ""
            part += char
    result.append(part)
    return result


def reference(text: str, model: str) -> SegmentCount:
    """The contract: code points for GSM-7 and flat, whole clusters for multipart UCS-2."""
    expected = code_point_reference(text, model)
    if model == "3gpp" and expected.encoding is UCS2 and expected.units > 70:
        return expected._replace(segments=len(cluster_reference_parts(text)))
    return expected


gsm_text = st.text(alphabet=st.sampled_from(sorted(GSM7_CHARACTERS)), max_size=400)
mixed_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(sorted(GSM7_CHARACTERS)),
        st.sampled_from(["á", "ç", "`", "😀", "🇲", "\u2019", "中", "\t"]),
        st.characters(codec="utf-8"),
    ),
    max_size=400,
)


@given(st.one_of(gsm_text, mixed_text), st.sampled_from(["flat", "3gpp"]))
def test_matches_the_reference(text: str, model: str) -> None:
    assert count(text, model) == reference(text, model)


@given(st.one_of(gsm_text, mixed_text))
def test_gsm7_iff_every_character_is_in_the_tables(text: str) -> None:
    assert (count(text).encoding is GSM7) == all(c in GSM7_CHARACTERS for c in text)


@given(st.one_of(gsm_text, mixed_text))
def test_ucs2_units_are_utf16_code_units(text: str) -> None:
    result = count(text)
    if result.encoding is UCS2:
        assert result.units == len(text.encode("utf-16-le")) // 2


@given(st.one_of(gsm_text, mixed_text), st.one_of(gsm_text, mixed_text))
def test_appending_never_reduces_segments(text: str, more: str) -> None:
    for model in ("flat", "3gpp"):
        assert count(text + more, model).segments >= count(text, model).segments


@given(mixed_text)
def test_3gpp_never_cheaper_than_flat(text: str) -> None:
    assert count(text, "3gpp").segments >= count(text).segments


@pytest.mark.parametrize("wide", ["€", "{", "😀", "\U0001f1f2"])
def test_wide_character_at_every_position_near_a_boundary(wide: str) -> None:
    # Exhaustive around the first and second multipart boundaries of both encodings.
    for before in [*range(55, 72), *range(128, 162), *range(295, 310)]:
        for after in (0, 1, 2, 60, 152, 153, 154):
            text = "x" * before + wide + "x" * after
            for model in ("flat", "3gpp"):
                assert count(text, model) == reference(text, model), (before, after, model)


# --- 3gpp: a UCS-2 part never ends inside a user-perceived character ---------------

FAMILY = "👨\u200d👩\u200d👧\u200d👦"  # 7 code points, 11 units
FLAG = "🇲🇽"  # two regional indicators, 4 units
THUMBS = "👍🏽"  # emoji + skin tone, 4 units
KEYCAP = "1\ufe0f\u20e3"  # digit, VS16, combining keycap: 3 units
HEART = "\u2764\ufe0f"  # BMP pictograph + VS16: 2 units
E_ACUTE = "e\u0301"  # combining acute: 2 units, GSM-7 é only once composed
CONJUNCT = "\u0915\u094d\u0937\u093f"  # क्षि: one cluster (GB9c + SpacingMark)
JAMO = "\u1100\u1161\u11a8"  # 각 spelled as Hangul jamo L V T
CLUSTER_PIECES = [
    FAMILY, FLAG, THUMBS, KEYCAP, HEART, E_ACUTE, CONJUNCT, JAMO, "\r\n", "\r", "\n",
    "\u200d", "\ufe0f", "\u0301", "\U0001f1f2", "\u0600", "😀", "🎉", "á", "中", "x", " ",
    "€", "{", "a" + "\u0301" * 70,  # a cluster longer than a part
    "\ud83d", "\ude00",  # lone surrogates: a str may hold them, one unit each
]  # fmt: skip
cluster_text = st.lists(
    st.one_of(st.sampled_from(CLUSTER_PIECES), st.text(max_size=3)), max_size=120
).map("".join)


@pytest.mark.parametrize(
    ("text", "before", "after", "sizes"),
    [
        # The family would straddle units 60-71: it moves whole to the second part.
        ("x" * 60 + FAMILY + "x" * 60, 2, 3, [60, 67, 4]),
        ("x" * 65 + FLAG + "x" * 65, 2, 3, [65, 67, 2]),
        ("x" * 65 + THUMBS + "x" * 65, 2, 3, [65, 67, 2]),
        ("x" * 65 + KEYCAP + "x" * 66, 2, 3, [65, 67, 2]),
        ("x" * 66 + E_ACUTE + "x" * 66, 2, 3, [66, 67, 1]),
        ("á" + "x" * 65 + "\r\n" + "x" * 66, 2, 3, [66, 67, 1]),
        ("x" * 66 + JAMO + "x" * 65, 2, 3, [66, 67, 1]),
        # Ending exactly at unit 67, nothing moves.
        ("x" * 56 + FAMILY + "x" * 67, 2, 2, [67, 67]),
        ("x" * 63 + FLAG + "x" * 67, 2, 2, [67, 67]),
        # One part holds 70 units, whatever the clusters.
        ("x" * 59 + FAMILY, 1, 1, [70]),
        (FAMILY * 6 + "x" * 4, 1, 1, [70]),
        ("x" * 60 + FAMILY, 2, 2, [60, 11]),
        # A cluster longer than a part starts a part and is cut at code points.
        ("a" + "\u0301" * 100, 2, 2, [67, 34]),
        ("x" * 10 + "a" + "\u0301" * 100, 2, 3, [10, 67, 34]),
        ("x" * 10 + "👍" + "🏽" * 40, 2, 3, [10, 66, 16]),  # never inside a surrogate pair
    ],
)
def test_3gpp_whole_clusters(text: str, before: int, after: int, sizes: list[int]) -> None:
    assert code_point_reference(text, "3gpp").segments == before
    result = count(text, "3gpp")
    assert result == SegmentCount(UCS2, units_of(text), after)
    assert [units_of(part) for part in parts(text)] == sizes
    assert count(text) == code_point_reference(text, "flat")  # flat is unchanged


def test_clusters_without_joiners_count_as_before() -> None:
    for text in ["á" * 71, "中" * 200, "😀" * 36, "x" * 66 + "😀" + "x" * 66, "\r" * 80 + "á"]:
        assert count(text, "3gpp") == code_point_reference(text, "3gpp")


def test_lone_surrogates_are_one_unit_each() -> None:
    # Only a str can hold them (surrogatepass); a lone high one must not pass for a pair.
    for text in [
        "\ud83d" + "x" * 65 + FLAG + "x" * 65,
        "x" * 66 + "\ud83d\ude00" + "x" * 66,
        "x" * 66 + "\ud83d\u0301" + "x" * 66,
    ]:
        assert count(text, "3gpp") == reference(text, "3gpp")
        assert parts(text) == cluster_reference_parts(text)


def test_what_is_learnt_about_characters_may_be_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(segments, "_LEARNT_SIZE", 3)
    texts = ["x" * 65 + piece + "á" * 65 for piece in CLUSTER_PIECES] * 2
    for text in texts + [t + "中" for t in texts]:
        assert count(text, "3gpp") == reference(text, "3gpp"), text
        assert len(parts(text)) == count(text, "3gpp").segments


def test_gsm7_parts_never_split_an_escape_pair() -> None:
    text = "x" * 152 + "€" + "x" * 152
    assert [len(p) for p in parts(text)] == [152, 152, 1]  # € + 151 x: 153 septets
    assert parts("x" * 160) == ["x" * 160]
    assert [len(p) for p in parts("x" * 161)] == [153, 8]
    assert parts("") == []


def test_only_multipart_ucs2_in_3gpp_loads_regex() -> None:
    script = (
        "import sys; from dispatcher.segments import count\n"
        "for text in ['x' * 500, '€' * 300, 'á' * 70, '😀' * 35, 'á' * 500 + '😀']:\n"
        "    count(text); count(text[:70], '3gpp')\n"
        "count('€' * 300 + 'x', '3gpp')\n"
        "assert 'regex' not in sys.modules\n"
        "count('á' * 71, '3gpp')\n"
        "assert 'regex' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@given(st.one_of(cluster_text, mixed_text), st.sampled_from(["flat", "3gpp"]))
def test_clusters_match_the_reference(text: str, model: str) -> None:
    assert count(text, model) == reference(text, model)


@given(st.one_of(cluster_text, mixed_text, gsm_text))
def test_parts_agree_with_the_count(text: str) -> None:
    # The differential: count's fast path (runs of joiners) against parts' careful one
    # (every cluster of the text), and both against the reference.
    result = count(text, "3gpp")
    split = parts(text)
    assert "".join(split) == text
    assert len(split) == result.segments
    if result.encoding is UCS2:
        if result.segments > 1:
            assert split == cluster_reference_parts(text)
            assert all(units_of(part) <= 67 for part in split)
        assert result.segments >= code_point_reference(text, "3gpp").segments
    elif result.segments > 1:
        assert all(len(p) + sum(c in GSM7_EXTENSION for c in p) <= 153 for p in split)


@given(st.one_of(cluster_text, mixed_text))
def test_no_part_ends_inside_a_cluster(text: str) -> None:
    boundaries, pos = {0}, 0
    long_clusters = []
    for cluster in CLUSTER.findall(text):
        if units_of(cluster) > 67:
            long_clusters.append(range(pos, pos + len(cluster) + 1))
        pos += len(cluster)
        boundaries.add(pos)
    pos = 0
    for part in parts(text):
        pos += len(part)
        assert pos in boundaries or any(pos in r for r in long_clusters)


@given(st.one_of(cluster_text, mixed_text))
def test_without_multi_code_point_clusters_the_count_is_the_old_one(text: str) -> None:
    if all(len(c) == 1 for c in CLUSTER.findall(text)):
        assert count(text, "3gpp") == code_point_reference(text, "3gpp")


def test_every_code_point_that_is_not_a_joiner_stands_alone() -> None:
    # The fast path's premise (see segments._graphemes), checked next to a letter, an
    # Indic consonant, a pictograph and itself, for a sample of every plane's code points.
    joiner, _ = segments._graphemes()
    for cp in [*range(0x3400), *range(0xA000, 0x20000, 7), *range(0xE0000, 0xE1000)]:
        char = chr(cp)
        if joiner.match(char) or char in "\r\n":
            continue
        for other in ("a", "\u0915", "😀", char):
            assert len(CLUSTER.findall(char + other)) == 2, hex(cp)
            assert len(CLUSTER.findall(other + char)) == 2, hex(cp)


# --- what forced UCS-2 ---------------------------------------------------------------


def test_non_gsm_characters_says_which_and_where() -> None:
    assert non_gsm_characters("Hola “Ana”, tu saldo: 10 €") == [(5, "“"), (9, "”")]
    assert non_gsm_characters("Año 😀`") == [(4, "😀"), (5, "`")]
    assert non_gsm_characters("plain GSM: é {} ñ") == []
    assert non_gsm_characters("") == []


@given(st.one_of(gsm_text, mixed_text, cluster_text))
def test_non_gsm_characters_are_exactly_what_forces_ucs2(text: str) -> None:
    found = non_gsm_characters(text)
    assert found == [(i, c) for i, c in enumerate(text) if c not in GSM7_CHARACTERS]
    assert (count(text).encoding is UCS2) == bool(found)


_ANY_TEXT = st.one_of(
    gsm_text,
    mixed_text,
    st.text(st.characters(codec=None, exclude_categories=()), max_size=30),  # lone surrogates
    st.text(alphabet=st.sampled_from(["a", "{", "é", "😀"]), min_size=1600, max_size=1800),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ANY_TEXT, max_size=12), st.sampled_from(["flat", "3gpp"]), st.booleans())
def test_count_many_is_count_of_each(texts: list[str], model: str, numpy_twins: bool) -> None:
    # The C part's one pass (which leaves the 3gpp multipart texts that need more than
    # their units to `count`), or `count` itself: the same SegmentCounts, and the contract.
    with twins(numpy_twins):
        got, most = count_many_most(texts, model)
    assert got == [count(text, model) for text in texts]
    assert got == [reference(text, model) for text in texts]
    assert most == max((c.segments for c in got), default=0)


def test_count_many_in_c_hands_back_the_cached_counts() -> None:
    got = count_many(["Hi", "Hi {name}", "Olá 😀"], "flat")
    assert got[0] is segments._FLAT_GSM7[2]
    assert got[1] is segments._FLAT_GSM7[11]  # { and } are two septets each
    assert got[2] is segments._FLAT_UCS2[6]
