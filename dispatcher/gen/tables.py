"""The data behind ``dispatcher gen``: number plans, names, invalid numbers, overrides.

Number plans are real MOBILE ranges that Google's libphonenumber accepts (checked by
``tests/test_gen.py``), written in the layouts people actually type. Every layout keeps
the country code: a national format without it would still pass the E.164 shape check
but mean another country. No ``(0)`` trunk prefixes either, for the same reason.

Every string here is JSON-safe as is (no quote, backslash or control character), so the
generator can splice the UTF-8 bytes into lines without an encoder.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_DIGITS = "0123456789"


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """One mobile range of one country: how to draw its national number, how to write it."""

    weight: int
    #: Draws a national significant number (no country code, no trunk prefix).
    nsn: Callable[[random.Random], str]
    #: Layouts with the country code; ``#`` takes the national number's digits in order.
    patterns: tuple[str, ...]


def _ranges(*prefixes: str, length: int) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        prefix = rng.choice(prefixes)
        return prefix + "".join(rng.choices(_DIGITS, k=length - len(prefix)))

    return draw


# Real area codes: libphonenumber checks NANP area codes against its list.
_US_NPA = (
    *("212", "646", "917", "718", "415", "650", "408", "213", "310", "323", "312", "773"),
    *("305", "786", "617", "202", "713", "832", "214", "206", "404", "702", "602", "303"),
    *("503", "215", "612"),
)
_CA_NPA = ("416", "647", "604", "778", "514", "438", "403", "613", "905")


def _nanp(npas: tuple[str, ...]) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        while True:
            # The exchange starts 2-9; N11 codes are services and 555 is fictional.
            nxx = rng.randrange(200, 1000)
            if nxx % 100 != 11 and nxx != 555:
                break
        return f"{rng.choice(npas)}{nxx:03d}{rng.randrange(10_000):04d}"

    return draw


def _std(cc: str, *spaced: str) -> tuple[str, ...]:
    """The compact layouts every country gets, plus its spaced local habits."""
    digits = "#" * spaced[0].count("#")
    return (f"+{cc}{digits}", f"{cc}{digits}", *spaced)


_NANP_LAYOUTS = (
    "+1##########",
    "1##########",
    "+1 (###) ###-####",
    "1-###-###-####",
    "+1.###.###.####",
    "+1 ### ### ####",
)

NUMBER_PLANS: tuple[NumberPlan, ...] = (
    # Mexico: since 2019 one ten-digit plan for fixed and mobile.
    NumberPlan(
        30,
        _ranges("55", "55", "55", "33", "81", "222", "442", "477", "656", "998", length=10),
        _std("52", "+52 ## #### ####", "+52-##-####-####", "+52.##.####.####"),
    ),
    NumberPlan(15, _nanp(_US_NPA), _NANP_LAYOUTS),
    NumberPlan(3, _nanp(_CA_NPA), _NANP_LAYOUTS),
    NumberPlan(
        8,
        _ranges(*[f"77{d}" for d in "123456789"], "78", "79", "74", "75", length=10),
        _std("44", "+44 #### ######", "+44-####-######"),
    ),
    NumberPlan(
        8,
        _ranges("6", "71", "72", "73", "74", length=9),
        _std("34", "+34 ### ### ###", "+34 ### ## ## ##", "34-###-###-###"),
    ),
    NumberPlan(
        10,
        _ranges("119", "219", "319", "419", "519", "619", "719", "819", length=11),
        _std("55", "+55 ## #####-####", "+55 (##) #####-####"),
    ),
    NumberPlan(
        3,
        _ranges("151", "152", "157", "159", "160", "162", "163", "170", "171", "172", length=11),
        _std("49", "+49 ### ########", "+49-###-########"),
    ),
    NumberPlan(
        3,
        _ranges("173", "174", "175", "176", "177", "178", "179", length=11),
        _std("49", "+49 ### ########", "+49 #### #######"),
    ),
    NumberPlan(
        6,
        _ranges("300", "301", "304", "310", "311", "315", "320", "321", "350", length=10),
        _std("57", "+57 ### ### ####", "+57 ### #######"),
    ),
    NumberPlan(
        3,
        _ranges(*[f"911{d}" for d in "12345678"], length=11),
        _std("54", "+54 # ## ####-####", "+54-#-##-####-####"),
    ),
    NumberPlan(
        2,
        _ranges(*[f"9351{d}" for d in "23456789"], length=11),
        _std("54", "+54 # ### ###-####"),
    ),
    NumberPlan(
        4,
        _ranges(*[f"6{d}" for d in "01245678"], "75", "76", "77", "78", length=9),
        _std("33", "+33 # ## ## ## ##", "+33.#.##.##.##.##"),
    ),
    NumberPlan(
        3,
        _ranges("9", "8", "7", length=10),
        _std("91", "+91 ##### #####", "+91-#####-#####"),
    ),
    NumberPlan(
        2,
        _ranges("92", "94", "95", "98", length=9),
        _std("56", "+56 # #### ####"),
    ),
)

# Names: (JSON-safe UTF-8, weight). Every character of GSM_NAMES is in the GSM 03.38
# default alphabet (é, è, ñ, ü, ö, ä, à, ò, ø, å, æ, ß … are); every UNICODE_NAMES entry
# has at least one character outside it (á, í, ó, ú, ã, ç, ł, CJK, Cyrillic, emoji …).
GSM_NAMES: tuple[tuple[bytes, int], ...] = tuple(
    (name.encode(), weight)
    for name, weight in (
        ("Elizabeth", 6),
        ("Joshua", 5),
        ("Emma", 6),
        ("Liam", 5),
        ("Olivia", 5),
        ("Noah", 4),
        ("James", 4),
        ("Sophia", 4),
        ("Carmen", 5),
        ("Alejandro", 5),
        ("Valentina", 5),
        ("Mateo", 5),
        ("Santiago", 5),
        ("Camila", 5),
        ("Diego", 4),
        ("Ximena", 3),
        ("Guadalupe", 4),
        ("José", 6),
        ("Andrés", 3),
        ("Iñaki", 1),
        ("Begoña", 1),
        ("Gabriel", 4),
        ("Beatriz", 3),
        ("Thiago", 3),
        ("Larissa", 2),
        ("Jürgen", 1),
        ("Björn", 1),
        ("Jörg", 1),
        ("Käthe", 1),
        ("Lukas", 2),
        ("Hélène", 1),
        ("Léa", 2),
        ("Chloé", 2),
        ("Renée", 1),
        ("Niccolò", 1),
        ("Giulia", 2),
        ("Søren", 1),
        ("Åsa", 1),
        ("Priya", 2),
        ("Ana Sofia", 1),
        ("Mary-Jane", 1),
        ("O'Brien", 1),
    )
)

UNICODE_NAMES: tuple[tuple[bytes, int], ...] = tuple(
    (name.encode(), 1)
    for name in (
        "María",
        "Lucía",
        "Sofía",
        "Ramón",
        "Joaquín",
        "Martín",
        "Inês",
        "João",
        "Conceição",
        "François",
        "Łukasz",
        "Małgorzata",
        "Zoë",
        "Jiří",
        "Tomáš",
        "Ελένη",
        "Дмитрий",
        "王芳",
        "李娜",
        "张伟",
        "Ana 🎉",
        "Leo 🚀",
    )
)


def _letters(rng: random.Random) -> str:
    digits = "".join(rng.choices(_DIGITS, k=10))
    cut = rng.randrange(2, 8)
    return f"+52{digits[:cut]}{rng.choice(['AB', 'x', 'O', 'call'])}{digits[cut:]}"


def _too_short(rng: random.Random) -> str:
    k = rng.randrange(3, 8)  # at most 7 digits: the E.164 floor is 8
    lead = rng.choice(["+", ""]) + str(rng.randrange(1, 10))
    return lead + "".join(rng.choices(_DIGITS, k=k - 1))


def _too_long(rng: random.Random) -> str:
    k = rng.randrange(16, 20)
    return "+" + str(rng.randrange(1, 10)) + "".join(rng.choices(_DIGITS, k=k - 1))


def _zero_country(rng: random.Random) -> str:
    digits = "".join(rng.choices(_DIGITS, k=rng.randrange(9, 13)))
    return rng.choice(["+0", "0", "00"]) + digits


def _empty(rng: random.Random) -> str:
    return rng.choice(["", " ", "+", "N/A", "-"])


#: Each makes a number that no E.164 check accepts.
INVALID_MAKERS: tuple[Callable[[random.Random], str], ...] = (
    _letters,
    _letters,
    _too_short,
    _too_short,
    _too_long,
    _zero_country,
    _empty,
)

# Per-line overrides. The texts stay in GSM-7 (the euro sign is in its extension
# table) so that --unicode-share alone decides which lines go out as UCS-2.
OVERRIDE_TEXTS: tuple[bytes, ...] = tuple(
    t.encode()
    for t in (
        "Hola {0}, tu saldo es {1} MXN",
        "Hi {0}, your balance is ${1}",
        "{0}: your code is {1}",
        "Hallo {0}, Ihr Guthaben: {1} €",
        "Ciao {0}, saldo: {1} €",
    )
)
OVERRIDE_SENDERS: tuple[bytes, ...] = (b"ACME", b"BANCO", b"12345", b"889900")
