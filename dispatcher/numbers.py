"""E.164 normalisation of destination numbers (SPEC §3).

A number is accepted when, after removing spaces, dashes, dots and parentheses, it is an
optional ``+`` and 8 to 15 digits, the first not ``0`` (country codes never start with
0); it comes out as ``+`` and the digits. The separators removed include the look-alikes
that word processors and spreadsheets put in numbers (no-break and thin spaces, the
Unicode hyphens and dashes), since they are as clearly formatting as their ASCII cousins.

``strict=True`` also asks Google's libphonenumber data (the ``phonenumbers`` package, in
the ``strict`` extra) whether the number can exist, e.g. that its length suits its country.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import ModuleType
from typing import Final

from dispatcher.errors import ConfigError, InvalidNumber

MIN_DIGITS: Final = 8
MAX_DIGITS: Final = 15

_SEPARATORS: Final = " -.()\t\u00a0\u2007\u2009\u202f\u2010\u2011\u2012\u2013\u2014\u2212"
_STRIP: Final = str.maketrans("", "", _SEPARATORS)
ASCII_SEPARATORS: Final = bytes(ord(c) for c in _SEPARATORS if c.isascii())
# Per line of a text: the digits of a valid number after an optional +, else "".
# [0-9], not \d: str patterns match every Unicode digit with \d.
_E164_LINES: Final = re.compile(r"^(?:\+?([1-9][0-9]{7,14})|.*)$", re.MULTILINE).findall

_phonenumbers: ModuleType | None = None


def normalize(raw: str, *, strict: bool = False) -> str:
    """Return ``raw`` as E.164 (``+`` and 8 to 15 digits) or raise `InvalidNumber`.

    The message of the error is a short reason: ``"has letters"``,
    ``"too short: 7 digits, at least 8"``, ``"country code cannot start with 0"``…
    """
    # The common cases — ASCII, with or without the +, with ASCII separators or none —
    # are a few C-level bytes operations: 0.25 µs on average over `dispatcher gen`'s
    # numbers, against 0.85 µs for a regex first and a str.translate (a dict lookup per
    # character) for formatted ones. Anything else, valid or not, takes the careful path.
    number = None
    if raw.isascii():
        data = raw.encode()
        plus = data.startswith(b"+")
        digits = data[1:] if plus else data
        if not digits.isdigit():
            digits = digits.translate(None, ASCII_SEPARATORS)
            plus = False  # rebuilt below, without the separators
        if digits.isdigit() and MIN_DIGITS <= len(digits) <= MAX_DIGITS and digits[0] != 48:
            number = raw if plus else "+" + digits.decode()
    if number is None:
        number = _normalize_formatted(raw)
    if strict:
        _check_strict(number)
    return number


def normalize_many(raws: Sequence[str], *, strict: bool = False) -> list[str | None]:
    """`normalize` each number: its E.164 form, or None where `normalize` raises (call it
    on those for the reason).

    A chunk of ASCII numbers is normalised as one text — the separators deleted by
    one bytes translate, every line matched by one regex scan — which is half the time
    of a call per number (0.23 against 0.44 µs on `dispatcher gen`'s numbers).
    """
    if not strict and raws:
        blob = "\n".join(raws)
        if blob.isascii() and blob.count("\n") == len(raws) - 1:
            cleaned = blob.encode().translate(None, ASCII_SEPARATORS).decode()
            digits = _E164_LINES(cleaned)
            if len(digits) == len(raws):  # one match per line: always, but cheap to check
                return ["+" + d if d else None for d in digits]
    return [normalize_or_none(raw, strict=strict) for raw in raws]


def normalize_or_none(raw: str, *, strict: bool = False) -> str | None:
    """`normalize`, or None where it raises (call `normalize` for the reason)."""
    try:
        return normalize(raw, strict=strict)
    except InvalidNumber:
        return None


def number_key(number: str | None) -> int:
    """A normalised number as an integer (its digits), 0 for None; a ValueError for a
    string `normalize` would not have returned."""
    if number is None:
        return 0
    if not (number.startswith("+") and number[1:].isdigit() and number.isascii()):
        raise ValueError(f"not a normalised number: {number!r}")
    return int(number)


def _normalize_formatted(raw: str) -> str:
    digits, reason = _formatted(raw)
    if reason is not None:
        raise InvalidNumber(reason)
    return "+" + digits


def refusal(raw: str) -> str | None:
    """Why `normalize` (not strict) refuses ``raw`` — its `InvalidNumber`'s message —
    or None when it does not: the reasons of a chunk's invalid numbers without an
    exception each (0.6 against 1.8 µs a number)."""
    return _formatted(raw)[1]


def _formatted(raw: str) -> tuple[str, str | None]:
    """The digits of ``raw`` without its separators and ``+``, and why they are not a
    number (None: they are)."""
    cleaned = raw.translate(_STRIP)
    digits = cleaned[1:] if cleaned.startswith("+") else cleaned
    if not digits:
        return digits, "empty"
    if not (digits.isascii() and digits.isdigit()):
        return digits, _bad_character(digits)
    if len(digits) < MIN_DIGITS:
        return digits, f"too short: {len(digits)} digits, at least {MIN_DIGITS}"
    if len(digits) > MAX_DIGITS:
        return digits, f"too long: {len(digits)} digits, at most {MAX_DIGITS}"
    if digits[0] == "0":
        return digits, "country code cannot start with 0"
    return digits, None


def _bad_character(digits: str) -> str:
    if any(c.isalpha() for c in digits):
        return "has letters"
    if "+" in digits:
        return "'+' is only allowed at the start"
    bad = next(c for c in digits if not ("0" <= c <= "9"))
    if bad.isdigit():
        return f"has a non-ASCII digit {bad!r}"
    return f"has an invalid character {bad!r}"


def _check_strict(number: str) -> None:
    pn = _load_phonenumbers()
    try:
        parsed = pn.parse(number, None)
    except pn.NumberParseException as exc:
        reason = _PARSE_REASONS.get(exc.error_type, "not a phone number")
        raise InvalidNumber(reason) from None
    possible = pn.is_possible_number_with_reason(parsed)
    if possible != pn.ValidationResult.IS_POSSIBLE:
        raise InvalidNumber(_POSSIBLE_REASONS.get(possible, "not a possible number"))
    if not pn.is_valid_number(parsed):
        region = pn.region_code_for_country_code(parsed.country_code)
        where = f" in {region}" if region and region != "ZZ" else ""
        raise InvalidNumber(f"not a valid number{where} (country code {parsed.country_code})")


_PARSE_REASONS: dict[int, str] = {}
_POSSIBLE_REASONS: dict[int, str] = {}


def _load_phonenumbers() -> ModuleType:
    # Imported on first strict use only: it loads megabytes of metadata.
    global _phonenumbers
    if _phonenumbers is None:
        try:
            import phonenumbers
        except ImportError:
            raise ConfigError(
                "strict number checks need the phonenumbers package: "
                "pip install 'sms-dispatcher[strict]'"
            ) from None
        errors, results = phonenumbers.NumberParseException, phonenumbers.ValidationResult
        _PARSE_REASONS.update(
            {
                errors.INVALID_COUNTRY_CODE: "unknown country code",
                errors.NOT_A_NUMBER: "not a phone number",
                errors.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
                errors.TOO_SHORT_NSN: "too short",
                errors.TOO_LONG: "too long",
            }
        )
        _POSSIBLE_REASONS.update(
            {
                results.INVALID_COUNTRY_CODE: "unknown country code",
                results.TOO_SHORT: "too short for its country",
                results.IS_POSSIBLE_LOCAL_ONLY: "too short for its country (no area code)",
                results.INVALID_LENGTH: "wrong length for its country",
                results.TOO_LONG: "too long for its country",
            }
        )
        _phonenumbers = phonenumbers
    return _phonenumbers
