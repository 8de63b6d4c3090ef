"""A realistic recipients file for the benchmarks (issue 16), from a seed.

`dispatcher gen` writes the easy case: every number in E.164, every line well formed.
People's files are not like that. This one has, per line (shares are expectations of
the seeded draw, not exact counts):

- numbers written the ways people write them: E.164, digits without the ``+``, with
  spaces, dashes, dots and parentheses (``+1 (415) 555-0123``), from eight countries;
- a UTF-8 byte order mark on the first line (spreadsheets' "CSV UTF-8" export);
- params mixing names with accents (José, Zoë, Łukasz, Nguyễn…, some of which make
  the message UCS-2) with integers and decimals (``120``, ``10.65``);
- ~5 % of lines with their own ``text``, from a handful of campaign texts (UCS-2,
  emoji, GSM-7 extension characters), so that they form a few groups, not one each;
- ~5 % with a ``ref``; ~2 % invalid numbers (too short, letters, national format with a
  leading 0); ~1 % malformed lines (cut short, not an object, wrong types, no ``to``);
- a blank or whitespace-only line about every 2 000 lines.

    python bench/_mixed.py OUT --count 1000000 [--seed 1]     # OUT "-": stdout

The template it is meant for is `TEMPLATE` (two params).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Iterator

import orjson

TEMPLATE = "Hi {0}, your balance is ${1}"

NAMES = [
    "John", "Mary", "Ana", "Peter", "Sarah", "Mohammed", "Chloé", "José", "Zoë",
    "Łukasz", "Søren", "Nguyễn", "Anaïs", "Jean-Luc", "O'Brien", "Ngozi", "Björn",
    "Ikaika", "Renée", "Ümit", "Siobhán", "Luis", "María", "Wei", "Ólafur", "Kai",
]  # fmt: skip

#: (country code, national significant digits) of the countries the numbers come from.
COUNTRIES = [("1", 10), ("44", 10), ("52", 10), ("49", 11), ("34", 9), ("55", 11), ("91", 10)]

#: The campaign texts a line may carry instead of the job's template.
OWN_TEXTS = [
    "Tu código es {0} 🔐",
    "Price: €{1} ~ {0} | see [terms] at example.com/^x",
    "Привет {0}, ваш баланс {1}",
    "📦 {0}, your parcel is on its way!",
    "{0}: 50% off today only — use code SAVE50",
    "Hello {0}, your appointment is confirmed.",
]

INVALID = ["+12345", "+1 415 CALL NOW", "0412 345 678", "", "+0044 20 7946 0958", "12-34"]

MALFORMED = [
    b'{"to": "+15550001111", "params": ["Ann", 1',
    b'["+15550001111", "Ann"]',
    b'{"to": 15550001111, "params": ["Ann", 1]}',
    b'{"params": ["Ann", 1]}',
    b'{"to": "+15550001111", "params": "Ann"}',
    b'{"to": "+15550001111"} trailing',
    b"to=+15550001111",
]


def _digits(rng: random.Random) -> tuple[str, str]:
    cc, length = rng.choice(COUNTRIES)
    national = str(rng.randrange(2, 10)) + "".join(
        str(d) for d in rng.choices(range(10), k=length - 1)
    )
    return cc, national


def _written(rng: random.Random, cc: str, national: str) -> str:
    """One number, the way a person or a spreadsheet wrote it."""
    style = rng.random()
    if style < 0.40:
        return f"+{cc}{national}"
    if style < 0.55:
        return f"{cc}{national}"
    head, mid, tail = national[:3], national[3:6], national[6:]
    if style < 0.70:
        return f"+{cc} {head} {mid} {tail}"
    if style < 0.80:
        return f"+{cc}-{head}-{mid}-{tail}"
    if style < 0.85:
        return f"{cc}.{head}.{mid}.{tail}"
    return f"+{cc} ({head}) {mid}-{tail}"


def _amount(rng: random.Random) -> int | float:
    if rng.random() < 0.5:
        return rng.randrange(0, 5000)
    return round(rng.uniform(0, 5000), 2)


def lines(count: int, seed: int = 1) -> Iterator[bytes]:
    """``count`` lines (each ending in a newline), the first with a BOM."""
    rng = random.Random(seed)
    for i in range(count):
        draw = rng.random()
        if i and rng.random() < 0.0005:
            line = rng.choice([b"", b"   ", b"\t"])
        elif draw < 0.01:
            line = rng.choice(MALFORMED)
        else:
            if draw < 0.03:
                to = rng.choice(INVALID)
            else:
                to = _written(rng, *_digits(rng))
            record: dict[str, object] = {"to": to, "params": [rng.choice(NAMES), _amount(rng)]}
            if rng.random() < 0.05:
                record["text"] = rng.choice(OWN_TEXTS)
            if rng.random() < 0.05:
                record["ref"] = f"crm-{i}"
            line = orjson.dumps(record)
        if i == 0:
            line = "\ufeff".encode() + line
        yield line + b"\n"


def write(path: str, count: int, seed: int = 1) -> None:
    """Write the file (through a temporary name), unless the same one is there."""
    stamp = path + ".stamp"
    want = f"{count} {seed} {os.path.getmtime(__file__)}"
    if os.path.exists(path) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == want:
                return
    with open(path + ".tmp", "wb") as out:
        out.writelines(lines(count, seed))
    os.replace(path + ".tmp", path)
    with open(stamp, "w") as f:
        f.write(want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.out == "-":
        out = sys.stdout.buffer
        for line in lines(args.count, args.seed):
            out.write(line)
        out.flush()
        return
    write(args.out, args.count, args.seed)


if __name__ == "__main__":
    main()
