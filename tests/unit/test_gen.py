"""dispatcher gen: deterministic, exact shares, valid JSON, numbers libphonenumber accepts."""

from __future__ import annotations

import io
import re
from collections import Counter
from typing import Any

import orjson
import phonenumbers
import pytest

from dispatcher.errors import ConfigError
from dispatcher.gen import CHUNK_LINES, generate, tables, write

# An independent oracle for GSM 03.38: the default alphabet plus the extension table.
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "^{}\\[~]|€\f"
)
E164 = re.compile(r"\+?[1-9][0-9]{7,14}")
SEPARATORS = re.compile(r"[\s\-.()]")
KEYS = {"to", "params", "ref", "text", "from"}


def is_e164(to: str) -> bool:
    return E164.fullmatch(SEPARATORS.sub("", to)) is not None


def is_gsm7(value: Any) -> bool:
    return all(ch in GSM7 for ch in str(value))


def lines_of(count: int, **options: Any) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in b"".join(generate(count, **options)).splitlines()]


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    options = {"invalid_share": 0.1, "unicode_share": 0.1, "ref_share": 0.2}
    first = b"".join(generate(10_000, seed=7, overrides_share=0.1, **options))
    assert first == b"".join(generate(10_000, seed=7, overrides_share=0.1, **options))
    assert first != b"".join(generate(10_000, seed=8, overrides_share=0.1, **options))


def test_chunks_hold_many_lines_and_count_is_exact() -> None:
    chunks = list(generate(2 * CHUNK_LINES + 5))
    assert [c.count(b"\n") for c in chunks] == [CHUNK_LINES, CHUNK_LINES, 5]
    assert list(generate(0)) == []


def test_every_line_is_a_recipient_in_the_spec_shape() -> None:
    for rec in lines_of(20_000, ref_share=0.3, overrides_share=0.2, unicode_share=0.2):
        assert set(rec) <= KEYS
        assert isinstance(rec["to"], str)
        name, amount = rec["params"]
        assert isinstance(name, str)
        assert name
        assert isinstance(amount, int | float)
        assert amount > 0
        if "ref" in rec:
            assert re.fullmatch(r"crm-[0-9]+", rec["ref"])
        for key in ("text", "from"):
            if key in rec:
                assert isinstance(rec[key], str)
                assert rec[key]


def test_amounts_have_at_most_two_decimals() -> None:
    raw = b"".join(generate(5_000, unicode_share=0, invalid_share=0, ref_share=0))
    amounts = re.findall(rb",([0-9.]+)\]\}", raw)
    assert len(amounts) == 5_000
    assert all(re.fullmatch(rb"[1-9][0-9]*(\.[0-9]{2})?", a) for a in amounts)
    assert any(b"." in a for a in amounts)
    assert any(b"." not in a for a in amounts)


def test_shares_are_exact() -> None:
    count = 20_000
    recs = lines_of(
        count, seed=3, invalid_share=0.1, unicode_share=0.2, ref_share=0.3, overrides_share=0.25
    )
    assert len(recs) == count
    assert sum(not is_e164(r["to"]) for r in recs) == 2_000
    assert sum(not all(is_gsm7(p) for p in r["params"]) for r in recs) == 4_000
    assert sum("ref" in r for r in recs) == 6_000
    assert sum("text" in r or "from" in r for r in recs) == 5_000
    assert len({r["ref"] for r in recs if "ref" in r}) == 6_000
    # Override texts stay GSM-7, so only --unicode-share makes a line UCS-2.
    assert all(is_gsm7(r["text"]) for r in recs if "text" in r)


def test_default_shares() -> None:
    recs = lines_of(1_000)
    assert sum(not is_e164(r["to"]) for r in recs) == 20
    assert sum(not all(is_gsm7(p) for p in r["params"]) for r in recs) == 50
    assert sum("ref" in r for r in recs) == 100
    assert not any("text" in r or "from" in r for r in recs)


def test_zero_and_full_shares() -> None:
    none = lines_of(3_000, invalid_share=0, unicode_share=0, ref_share=0)
    assert all(is_e164(r["to"]) and set(r) == {"to", "params"} for r in none)
    every = lines_of(3_000, invalid_share=1, unicode_share=1, ref_share=1, overrides_share=1)
    assert not any(is_e164(r["to"]) for r in every)
    assert all("ref" in r and ("text" in r or "from" in r) for r in every)


def test_valid_numbers_pass_libphonenumber_in_varied_layouts() -> None:
    numbers = [r["to"] for r in lines_of(20_000, seed=11) if is_e164(r["to"])]
    valid = 0
    regions: Counter[str] = Counter()
    for to in numbers:
        digits = SEPARATORS.sub("", to)
        parsed = phonenumbers.parse(digits if digits.startswith("+") else "+" + digits)
        if phonenumbers.is_valid_number(parsed):
            valid += 1
            regions[phonenumbers.region_code_for_number(parsed)] += 1
    assert valid >= 0.99 * len(numbers)
    assert {"MX", "US", "CA", "GB", "ES", "BR", "DE", "CO", "AR", "FR", "IN", "CL"} <= set(regions)
    assert regions.most_common(1)[0][0] == "MX"
    # Layouts that exercise normalisation: compact with and without +, and separators.
    assert any(to.startswith("+") and to[1:].isdigit() for to in numbers)
    assert any(to.isdigit() for to in numbers)
    for sep in (" ", "-", ".", "("):
        assert any(sep in to for to in numbers), sep
    # Numbers barely repeat: the tails vary per line.
    assert len(set(numbers)) > 0.99 * len(numbers)


def test_invalid_numbers_cover_every_kind() -> None:
    bad = [r["to"] for r in lines_of(5_000, invalid_share=0.2) if not is_e164(r["to"])]
    digits = [SEPARATORS.sub("", to).lstrip("+") for to in bad]
    assert any(re.search(r"[A-Za-z]", d) for d in digits)
    assert any(d.isdigit() and len(d) < 8 for d in digits)
    assert any(d.isdigit() and len(d) > 15 for d in digits)
    assert any(d.startswith("0") for d in digits)
    assert "" in bad


def test_name_pools_keep_their_promise() -> None:
    for name, _ in tables.GSM_NAMES:
        assert is_gsm7(name.decode()), name.decode()
    for name, _ in tables.UNICODE_NAMES:
        assert not is_gsm7(name.decode()), name.decode()
    for name, _ in (*tables.GSM_NAMES, *tables.UNICODE_NAMES):
        assert orjson.loads(b'"' + name + b'"') == name.decode()


@pytest.mark.parametrize(
    "options",
    [{"count": -1}, {"invalid_share": 1.5}, {"unicode_share": -0.1}, {"overrides_share": 2}],
)
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    count = options.pop("count", 10)
    with pytest.raises(ConfigError):
        generate(count, **options)


def test_write_matches_generate() -> None:
    out = io.BytesIO()
    assert write(500, out, seed=5, ref_share=0.5) == 500
    assert out.getvalue() == b"".join(generate(500, seed=5, ref_share=0.5))
