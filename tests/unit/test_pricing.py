"""Pricing: one price per segment, or the longest matching E.164 prefix of a table."""

from __future__ import annotations

import math
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.errors import ConfigError
from dispatcher.pricing import Pricing, parse_prices, prices_from_flags

TABLE = {"1": 0.0075, "1787": 0.012, "52": 0.03, "44": 0.04, "521": 0.05}


def test_one_price_for_every_number() -> None:
    pricing = Pricing(0.01)
    assert pricing.price("+525500000001") == 0.01
    assert pricing.cost("+447700900123", 3) == pytest.approx(0.03)
    assert pricing.cost("+447700900123", 0) == 0


@pytest.mark.parametrize(
    ("number", "price"),
    [
        ("+15005550006", 0.0075),  # country code 1
        ("+17875550100", 0.012),  # 1787 (Puerto Rico) beats 1
        ("17875550100", 0.012),  # without the +
        ("+17865550100", 0.0075),  # 1786 is not 1787
        ("+525500000001", 0.03),
        ("+521234567890", 0.05),  # 521 beats 52
        ("+447700900123", 0.04),
        ("+4915112345678", 0.01),  # no prefix: the default
        ("+33612345678", 0.01),
    ],
)
def test_the_longest_matching_prefix_wins(number: str, price: float) -> None:
    pricing = Pricing(0.01, TABLE)
    assert pricing.price(number) == price
    assert pricing.cost(number, 2) == pytest.approx(2 * price)


def test_from_config() -> None:
    assert Pricing.from_config(None) is None
    assert Pricing.from_config(None, {}) is None
    flat = Pricing.from_config(0.02, None)
    assert flat is not None
    assert flat.price("+15005550006") == 0.02
    table = Pricing.from_config(0.01, {"44": 0.04})
    assert table is not None
    assert table.price("+447700900123") == 0.04


def test_a_table_needs_a_default_price() -> None:
    with pytest.raises(ConfigError, match="needs price_per_segment"):
        Pricing.from_config(None, {"44": 0.04})


@pytest.mark.parametrize("price", [-0.01, math.inf, -math.inf, math.nan, True, "cheap", None, []])
def test_a_price_is_finite_and_not_negative(price: object) -> None:
    with pytest.raises(ConfigError, match="price_per_segment"):
        Pricing(price)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"prices\.44"):
        Pricing(0.01, {"44": price})  # type: ignore[dict-item]


@pytest.mark.parametrize("prefix", ["0", "01", "", "4a", "1234567", "٤٤", "+", "44 1"])
def test_a_prefix_is_one_to_six_digits_not_starting_with_zero(prefix: str) -> None:
    with pytest.raises(ConfigError, match="not a number prefix"):
        Pricing(0.01, {prefix: 0.01})


def test_a_prefix_may_be_written_with_its_plus() -> None:
    assert dict(Pricing(0.01, {"+44": 0.04}).prices) == {"44": 0.04}
    with pytest.raises(ConfigError, match="given twice"):
        parse_prices("prices", {"+44": 0.04, "44": 0.05})


def test_the_toml_table_shape() -> None:
    document = tomllib.loads(
        "[output]\nprice_per_segment = 0.01\n\n"
        "[output.prices]\n1 = 0.0075\n1787 = 0.012\n52 = 0.03\n44 = 0.04\n"
    )
    prices = parse_prices("[output] prices", document["output"]["prices"])
    assert dict(prices) == {"1": 0.0075, "1787": 0.012, "52": 0.03, "44": 0.04}
    pricing = Pricing.from_config(document["output"]["price_per_segment"], prices)
    assert pricing is not None
    assert pricing.price("+17875550100") == 0.012
    with pytest.raises(ConfigError, match=r"\[output\] prices must be a table"):
        parse_prices("[output] prices", 0.01)
    with pytest.raises(ConfigError, match=r"\[output\] prices\.44 must be a finite price"):
        parse_prices("[output] prices", {"44": -1})


def test_price_flags() -> None:
    assert dict(prices_from_flags(["44=0.04", "1787=0.012", "44=0.05"])) == {
        "44": 0.05,
        "1787": 0.012,
    }
    assert dict(prices_from_flags(None)) == {}
    with pytest.raises(ConfigError, match="--price takes PREFIX=PRICE"):
        prices_from_flags(["44"])
    with pytest.raises(ConfigError, match="--price 44 must be a finite price"):
        prices_from_flags(["44=nan"])
    with pytest.raises(ConfigError, match="--price: '0' is not a number prefix"):
        prices_from_flags(["0=1"])


def test_decimals_show_every_price_and_describe_says_the_table() -> None:
    assert Pricing(0.01).decimals == 2
    assert Pricing(0.5).decimals == 2
    assert Pricing(0.01, {"1": 0.0075}).decimals == 4
    assert Pricing(0.0000001).decimals == 6
    assert Pricing(0.01).describe() == "0.01 per segment"
    assert Pricing(0.01, TABLE).describe() == "0.0100 per segment; 5 prefixes priced apart"


def _naive_price(table: dict[str, float], default: float, number: str) -> float:
    digits = number.lstrip("+")
    matches = [prefix for prefix in table if digits.startswith(prefix)]
    return table[max(matches, key=len)] if matches else default


@given(
    table=st.dictionaries(
        st.from_regex(r"[1-9][0-9]{0,5}", fullmatch=True),
        st.floats(min_value=0, max_value=10, allow_nan=False),
        max_size=12,
    ),
    numbers=st.lists(st.from_regex(r"\+?[1-9][0-9]{7,14}", fullmatch=True), max_size=20),
)
def test_matches_a_naive_longest_prefix_search(table: dict[str, float], numbers: list[str]) -> None:
    pricing = Pricing(0.5, table)
    for number in [*numbers, *numbers]:  # the second time from the memo
        assert pricing.price(number) == _naive_price(table, 0.5, number), number


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dispatcher.pricing._MEMO_SIZE", 3)
    pricing = Pricing(0.01, {"1787": 0.012, "1": 0.0075})
    numbers = [f"+1{area}5550100" for area in range(780, 790)]  # 1787 is one of them
    expected = [0.012 if n.startswith("+1787") else 0.0075 for n in numbers]
    assert [pricing.price(n) for n in numbers * 2] == expected * 2
    assert len(pricing._memo) <= 3
