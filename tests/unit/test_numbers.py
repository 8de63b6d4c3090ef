"""E.164 normalisation: accepted formats, the reasons for refusals, strict mode."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.errors import ConfigError, InvalidNumber
from dispatcher.numbers import normalize, normalize_many, refusal

E164 = re.compile(r"\+[1-9][0-9]{7,14}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+525500000000", "+525500000000"),
        ("525511111111", "+525511111111"),
        ("+15005550006", "+15005550006"),
        ("+52 55 1234 5678", "+525512345678"),
        ("+52 (55) 1234-5678", "+525512345678"),
        ("52.55.1234.5678", "+525512345678"),
        ("(555) 123-4567 89", "+555123456789"),
        ("  +44 7911 123456  ", "+447911123456"),
        ("+52\u00a055\u20111234\u20135678", "+525512345678"),  # no-break space, Unicode dashes
        ("12345678", "+12345678"),  # 8 digits: the shortest accepted
        ("+123456789012345", "+123456789012345"),  # 15 digits: the longest
    ],
)
def test_accepted(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("+", "empty"),
        ("  -  ", "empty"),
        ("+1 800 FLOWERS", "has letters"),
        ("12ab", "has letters"),
        ("1234567", "too short: 7 digits, at least 8"),
        ("+52 55 12", "too short: 6 digits, at least 8"),
        ("1234567890123456", "too long: 16 digits, at most 15"),
        ("0052551234567", "country code cannot start with 0"),
        ("+0525512345678", "country code cannot start with 0"),
        ("+52+5512345678", "'+' is only allowed at the start"),
        ("52551234+5678", "'+' is only allowed at the start"),
        ("+52_5512345678", "has an invalid character '_'"),
        ("+52/55/12345678", "has an invalid character '/'"),
        ("+\uff15\uff125512345678", "has a non-ASCII digit '\uff15'"),  # fullwidth
        ("\u0665\u0662\u0665\u0665\u0661\u0662\u0663\u0664", "has a non-ASCII digit '\u0665'"),
    ],
)
def test_refused_with_a_short_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNumber) as info:
        normalize(raw)
    assert str(info.value) == reason


def test_invalid_number_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="has letters"):
        normalize("call me")


# --- strict mode (phonenumbers) ----------------------------------------------------


@pytest.mark.parametrize("raw", ["+525512345678", "+447911123456", "+12025550123"])
def test_strict_accepts_real_numbers(raw: str) -> None:
    assert normalize(raw, strict=True) == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+99912345678", "unknown country code"),
        ("+861234567890", "not a valid number in CN (country code 86)"),
        ("+12345678", "too short for its country (no area code)"),
        ("+44791112345678", "too long for its country"),
        ("+3312345678", "too short for its country"),
    ],
)
def test_strict_refuses_what_libphonenumber_refuses(raw: str, reason: str) -> None:
    assert normalize(raw) == raw  # fine by the plain E.164 rule
    with pytest.raises(InvalidNumber) as info:
        normalize(raw, strict=True)
    assert str(info.value) == reason


def test_strict_still_applies_the_plain_rules_first() -> None:
    with pytest.raises(InvalidNumber, match="has letters"):
        normalize("+1 800 FLOWERS", strict=True)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_phonenumbers_is_imported_only_when_strict_is_used() -> None:
    done = run_python(
        "import sys\n"
        "from dispatcher.numbers import normalize\n"
        "normalize('+525512345678')\n"
        "assert 'phonenumbers' not in sys.modules\n"
        "normalize('+525512345678', strict=True)\n"
        "assert 'phonenumbers' in sys.modules\n"
        "print('ok')\n"
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_strict_without_phonenumbers_is_a_config_error() -> None:
    # sys.modules[name] = None makes the import fail as if the package were not installed.
    done = run_python(
        "import sys\n"
        "sys.modules['phonenumbers'] = None\n"
        "from dispatcher.errors import ConfigError\n"
        "from dispatcher.numbers import normalize\n"
        "try:\n"
        "    normalize('+525512345678', strict=True)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    assert "pip install 'sms-dispatcher[strict]'" in done.stdout, done.stderr
    assert issubclass(ConfigError, ValueError)


# --- properties --------------------------------------------------------------------

valid_digits = st.from_regex(r"[1-9][0-9]{7,14}", fullmatch=True)


@st.composite
def formatted(draw: st.DrawFn) -> tuple[str, str]:
    """A valid number and a human formatting of it (separators between digits)."""
    digits = draw(valid_digits)
    out = "+" if draw(st.booleans()) else ""
    for i, digit in enumerate(digits):
        if i and draw(st.integers(0, 3)) == 0:
            out += draw(st.sampled_from([" ", "-", ".", "(", ")", " (", ") ", "\u00a0", "\u2013"]))
        out += digit
    return digits, draw(st.sampled_from(["", " ", "  "])) + out + draw(st.sampled_from(["", " "]))


@given(formatted())
def test_formatted_variants_normalise_to_the_same_number(case: tuple[str, str]) -> None:
    digits, raw = case
    assert normalize(raw) == "+" + digits


@given(st.one_of(st.text(max_size=30), formatted().map(lambda c: c[1])))
def test_normalize_is_idempotent_and_only_raises_invalid_number(raw: str) -> None:
    try:
        number = normalize(raw)
    except InvalidNumber as exc:
        reason = str(exc)
        number = ""
    if not number:
        assert reason  # always a reason
        return
    assert E164.fullmatch(number)
    assert normalize(number) == number


def reference(raw: str) -> str | None:
    """SPEC §3 spelled out: strip separators, keep an optional leading +, then
    [1-9][0-9]{7,14}."""
    separators = " -.()\t\u00a0\u2007\u2009\u202f\u2010\u2011\u2012\u2013\u2014\u2212"
    cleaned = raw.translate(str.maketrans("", "", separators))
    match = re.fullmatch(r"\+?([1-9][0-9]{7,14})", cleaned)
    return "+" + match[1] if match else None


number_like = st.text(alphabet="0123456789+ -.()\t\u00a0\u2013a٣", max_size=20)


@given(st.one_of(number_like, formatted().map(lambda c: c[1]), st.text(max_size=20)))
def test_normalize_agrees_with_the_rule_of_the_spec(raw: str) -> None:
    expected = reference(raw)
    try:
        assert normalize(raw) == expected
    except InvalidNumber:
        assert expected is None


@given(st.one_of(number_like, formatted().map(lambda c: c[1]), st.text(max_size=20)))
def test_refusal_is_the_reason_normalize_raises(raw: str) -> None:
    # The reasons of a chunk's invalid numbers, without an exception each: None where
    # normalize accepts, else its InvalidNumber's message, word for word.
    reason = None
    try:
        normalize(raw)
    except InvalidNumber as exc:
        reason = str(exc)
    assert refusal(raw) == reason


def each(raws: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for raw in raws:
        try:
            out.append(normalize(raw))
        except InvalidNumber:
            out.append(None)
    return out


@given(
    st.lists(
        st.one_of(
            number_like,
            formatted().map(lambda c: c[1]),
            st.text(alphabet="0123456789+ \n\r-", max_size=18),
            st.text(max_size=12),
        ),
        max_size=12,
    )
)
def test_normalize_many_is_normalize_for_each(raws: list[str]) -> None:
    assert normalize_many(raws) == each(raws)


def test_normalize_many_of_a_usual_chunk() -> None:
    raws = ["+525512345678", "52 55 1234 5678", "(55) 1234-5678", "", "+52+55", "0525512345678"]
    expected = ["+525512345678", "+525512345678", "+5512345678", None, None, None]
    assert normalize_many(raws) == expected
    assert normalize_many(raws) == each(raws)
    assert normalize_many([]) == []
