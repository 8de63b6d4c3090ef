"""The emulator's pure parts: its own checks, the 1-second window, the token bucket,
the seeded fault draws and the settings. No server, no sleeps: time is a variable."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.emulator import EmulatorSettings, FaultSettings
from dispatcher.emulator.checks import (
    GSM7,
    UCS2,
    BadParam,
    ExactInt,
    GatewayTemplate,
    Inexact,
    MissingParam,
    NumberCheck,
    batch_units,
    param_text,
    parse_exact,
    segments_of,
    units,
)
from dispatcher.emulator.faults import FaultInjector
from dispatcher.emulator.idempotency import request_fingerprint
from dispatcher.emulator.ledger import Ledger, SlidingWindow
from dispatcher.emulator.ratelimit import TokenBucket, retry_after
from dispatcher.emulator.settings import fault_update, parse_code_rate

# --- numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["+525500000000", "525500000000", "+15005550006", "12345678", "+123456789012345"],
)
def test_valid_numbers(number: str) -> None:
    check = NumberCheck()
    assert check.valid(number)
    assert check.all_valid([number, number])


@pytest.mark.parametrize(
    "number",
    [
        "",
        "+",
        "1234567",  # 7 digits: too short
        "+1234567890123456",  # 16 digits: too long
        "0525500000000",  # no country code starts with 0
        "++525500000000",
        "+52 55 0000 0000",  # the gateway does not normalise
        "12ab",
        "+52550000000\n0",
        "٥٢٥٥٠٠٠٠٠٠٠٠",  # Arabic-Indic digits are not [0-9]
    ],
)
def test_invalid_numbers(number: str) -> None:
    check = NumberCheck()
    assert not check.valid(number)
    assert not check.all_valid(["+525500000000", number])


def test_all_valid_is_not_fooled_by_joined_numbers() -> None:
    # Joined by "\n" this pair reads like three valid numbers.
    assert not NumberCheck().all_valid(["12345678\n12345678", "12345678"])
    assert not NumberCheck().all_valid(["+525500000000", 525500000000])


def test_invalid_prefix_applies_after_the_plus() -> None:
    check = NumberCheck(["999", "4477"])
    assert not check.valid("+99912345678")
    assert not check.valid("99912345678")
    assert not check.valid("+447700900123")
    assert check.valid("+447800900123")
    assert not check.all_valid(["+447800900123", "99912345678"])
    assert check.all_valid(["+447800900123", "+19995550000"])


# --- encodings and segments ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", (GSM7, 5)),
        ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ", (GSM7, 31)),
        ("¡¿ÄÖÑÜ§äöñüà", (GSM7, 12)),
        ("^{}\\[~]|€\f", (GSM7, 20)),  # the extension table counts 2 each
        ("a`b", (UCS2, 3)),  # the backtick is not GSM-7
        ("área", (UCS2, 4)),  # á is not GSM-7 (à is)
        ("tab\there", (UCS2, 8)),
        ("😀", (UCS2, 2)),  # outside the BMP: a surrogate pair
        ("€😀", (UCS2, 3)),
        ("\x1b", (UCS2, 1)),  # a bare escape is not text
    ],
)
def test_units(text: str, expected: tuple[str, int]) -> None:
    assert units(text) == expected


def test_segments_flat_model() -> None:
    assert segments_of(GSM7, 160) == 1
    assert segments_of(GSM7, 161) == 2
    assert segments_of(GSM7, 1600) == 10
    assert segments_of(GSM7, 1601) == 11
    assert segments_of(UCS2, 70) == 1
    assert segments_of(UCS2, 71) == 2
    assert segments_of(UCS2, 700) == 10
    assert segments_of(UCS2, 701) == 11


def test_batch_units_takes_the_fast_path_only_for_plain_gsm() -> None:
    assert batch_units(["abc", "de"]) == ([GSM7, GSM7], [3, 2])
    assert batch_units(["abc", "d{"]) is None
    assert batch_units(["abc", "é"]) is None


# --- templates ----------------------------------------------------------------------


def test_template_renders_positional_params() -> None:
    t = GatewayTemplate("Hi {0}, your balance is ${1}")
    assert t.render_all([["Elizabeth", 10.65], ["Joshua", 20.5]]) == [
        "Hi Elizabeth, your balance is $10.65",
        "Hi Joshua, your balance is $20.5",
    ]


def test_template_keeps_other_braces_literal() -> None:
    t = GatewayTemplate("{x} {0} {} {{1}} {a1} {1")
    assert t.render_all([["A", "B"]]) == ["{x} A {} {B} {a1} {1"]


def test_static_template() -> None:
    t = GatewayTemplate("no placeholders {here}")
    assert t.static
    assert t.render_all([[], ["ignored"]]) == ["no placeholders {here}"] * 2


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x", "x"),
        (3, "3"),
        (-7, "-7"),
        (10.65, "10.65"),
        (3.0, "3.0"),
        (1e-05, "0.00001"),
        (1.5e-07, "1.5e-7"),
        (1e16, "1e+16"),
        (True, "true"),
        (False, "false"),
    ],
)
def test_param_text_is_shortest_json(value: object, text: str) -> None:
    assert param_text(value) == text
    assert GatewayTemplate("{0}").render_all([[value]]) == [text]


def test_missing_param_names_placeholder_and_recipient() -> None:
    t = GatewayTemplate("{0} and {3}")
    with pytest.raises(MissingParam) as exc:
        t.render_all([["a", "b", "c", "d"], ["a"]])
    assert (exc.value.index, exc.value.recipient) == (3, 1)


@pytest.mark.parametrize("bad", [None, [1], {"a": 1}])
@pytest.mark.parametrize("text", ["{0}", "{1}", "{0}{1}{0}"])
def test_non_scalar_param_is_refused_used_or_not(bad: object, text: str) -> None:
    for rows in ([["a", "b"], ["c", bad]], [["a", "b"], ["c", bad, "extra"]]):
        with pytest.raises(BadParam) as info:
            GatewayTemplate(text).render_all(rows)
        assert (info.value.recipient, info.value.position) == (1, 1)


def test_placeholder_indexes_stop_at_999() -> None:
    assert GatewayTemplate("{999}").highest == 999
    assert GatewayTemplate("{" + "0" * 5000 + "12}").highest == 12
    for text in ("{1000}", "{12345678901234567890}", "{" + "9" * 5000 + "}"):
        with pytest.raises(ValueError, match=r"is above \{999\}"):
            GatewayTemplate(text)


@pytest.mark.parametrize("big", [2.0**63, -(2.0**63), 1e300, -1e19])
@pytest.mark.parametrize(
    "rows",
    [
        [["a", "BIG"], ["b", 1.5]],  # a column of numbers: one orjson call
        [["a", "BIG"], ["b", "s"]],  # a mixed column: one by one
        [["a", "BIG"], ["b", 1.5, "extra"]],  # unequal lengths: row by row
    ],
)
def test_a_float_that_may_be_a_big_integer_asks_for_the_exact_parse(
    big: float, rows: list[list[object]]
) -> None:
    rows = [[big if x == "BIG" else x for x in row] for row in rows]
    template = GatewayTemplate("{0} {1}")
    with pytest.raises(Inexact):
        template.render_all(rows)
    assert template.render_all(rows, exact=True)[0] == f"a {param_text(big)}"


def test_exact_parse_keeps_integers_beyond_64_bits() -> None:
    raw = b'{"a": [18446744073709551616, 18446744073709551615, -9223372036854775809, 1e19, 7]}'
    values = parse_exact(raw)["a"]
    assert values == ["18446744073709551616", 2**64 - 1, "-9223372036854775809", 1e19, 7]
    assert [type(v) for v in values] == [ExactInt, int, ExactInt, float, int]
    assert parse_exact(b"[" + b"7" * 5000 + b"]") == ["7" * 5000]
    assert param_text(values[0]) == "18446744073709551616"
    for refused in (b"[NaN]", b"[1e400]", b'["\\ud800"]', b"[1,]", b"\xff", b"[" * 100_000):
        with pytest.raises(ValueError, match=r".+"):
            parse_exact(refused)


# --- the 1-second window ------------------------------------------------------------


def max_window(events: list[tuple[float, int, int]]) -> tuple[int, int]:
    """(max messages, max segments) in any 1-second window, as the ledger's stats say,
    for accepted requests given as (t, messages, segments)."""
    ledger = Ledger("counts")
    for t, count, segments in events:
        assert segments % count == 0
        ledger.accept(
            sender="12345", tos=["+15005550006"] * count, texts="x", encodings=GSM7,
            segments=segments // count, t=t, date="d",
        )  # fmt: skip
    code = ledger.stats.as_dict()["codes"].get("12345", {})
    return code.get("max_window", 0), code.get("max_window_segments", 0)


def test_window_counts_events_less_than_a_second_apart() -> None:
    assert max_window([(0.0, 5, 5), (0.999, 5, 10)]) == (10, 15)


def test_window_excludes_an_event_exactly_one_second_old() -> None:
    assert max_window([(0.0, 100, 100), (1.0, 100, 100)]) == (100, 100)


def test_window_maximum_can_lie_in_the_middle() -> None:
    events = [(0.0, 3, 3), (0.5, 2, 4), (1.2, 4, 4), (3.0, 1, 1), (3.1, 1, 1)]
    # (0.2, 1.2] holds 2 + 4 messages; (0.0, 1.0] holds 5.
    assert max_window(events) == (6, 8)


def test_window_counts_messages_and_segments_separately() -> None:
    # The segment maximum and the message maximum come from different windows.
    events = [(0.0, 1, 10), (0.9, 1, 10), (2.0, 5, 5), (2.5, 5, 5)]
    assert max_window(events) == (10, 20)


def test_window_with_equal_timestamps_and_empty_input() -> None:
    assert max_window([(1.0, 1, 1)] * 7) == (7, 7)
    assert max_window([]) == (0, 0)


def test_window_is_incremental() -> None:
    w = SlidingWindow()
    w.add(0.0, 10, 10)
    w.add(10.0, 1, 1)
    assert (w.max_count, w.max_segments) == (10, 10)
    w.add(10.5, 20, 40)
    assert (w.max_count, w.max_segments) == (21, 41)


def test_ledger_code_stats_use_the_window() -> None:
    ledger = Ledger()
    for t, n in [(0.0, 3), (0.5, 2), (1.2, 4)]:
        ledger.accept(
            sender="12345", tos=["+15005550006"] * n, texts="x", encodings=GSM7,
            segments=2, t=t, date="d",
        )  # fmt: skip
    code = ledger.stats.as_dict()["codes"]["12345"]
    assert code == {
        "accepted": 9,
        "segments": 18,
        "max_window": 6,
        "max_window_segments": 12,
        "first": 0.0,
        "last": 1.2,
    }
    assert ledger.stats.duplicates == 8  # same from, to and text every time


# --- the token bucket ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_holds_one_second_and_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, clock)
    assert bucket.take(10) == 0.0
    assert bucket.take(1) == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.take(1) == 0.0
    clock.now += 60  # idle for a minute: still only one second's worth
    assert bucket.take(10) == 0.0
    assert bucket.take(1) > 0


def test_token_bucket_refusal_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, clock)
    assert bucket.take(3) == 0.0
    assert bucket.take(3) == pytest.approx(0.2)
    assert bucket.take(2) == 0.0  # the refused 3 were not taken


def test_slow_rates_hold_at_least_one_message() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.5, clock)
    assert bucket.take(1) == 0.0
    assert bucket.take(1) == pytest.approx(2.0)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_after(0.01) == 1
    assert retry_after(1.0) == 1
    assert retry_after(1.01) == 2


# --- settings and fault draws -------------------------------------------------------


def test_rate_defaults_by_code_kind() -> None:
    s = EmulatorSettings(rates={"COMPANY": 7.0, "777": math.inf})
    assert s.rate_for("12345") == 100
    assert s.rate_for("123456") == 100
    assert s.rate_for("1234567") == 1
    assert s.rate_for("ACME") == 100
    assert s.rate_for("COMPANY") == 7
    assert s.rate_for("777") == math.inf
    assert EmulatorSettings(rate_limit=False).rate_for("1234567") == math.inf


def test_parse_code_rate() -> None:
    assert parse_code_rate("12345=20") == ("12345", 20.0)
    assert parse_code_rate("ACME=inf") == ("ACME", math.inf)
    for bad in ("12345", "=3", "A=0", "A=-1", "A=x", "A=nan"):
        with pytest.raises(ValueError, match="CODE=N"):
            parse_code_rate(bad)


def test_settings_never_show_the_key() -> None:
    s = EmulatorSettings(api_key="sekrit-123")
    assert "sekrit-123" not in repr(s)
    assert EmulatorSettings().api_key != EmulatorSettings().api_key


@pytest.mark.parametrize(
    "kwargs", [{"fail_429": 1.5}, {"drop_after": -0.1}, {"fail_429": 0.6, "fail_503": 0.5}]
)
def test_fault_shares_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"a share from 0 to 1|add up"):
        FaultSettings(**kwargs)


def test_fault_update_is_partial_and_checked() -> None:
    s = fault_update(FaultSettings(fail_429=0.1), {"drop_after": 0.2})
    assert (s.fail_429, s.drop_after) == (0.1, 0.2)
    with pytest.raises(ValueError, match="unknown"):
        fault_update(s, {"fail_418": 0.1})
    with pytest.raises(ValueError, match="number"):
        fault_update(s, {"fail_503": "lots"})


def test_fault_draws_are_seeded_and_follow_shares() -> None:
    settings = FaultSettings(fail_429=0.2, drop_after=0.3)
    a = FaultInjector(settings, seed=7)
    draws = [a.draw() for _ in range(2000)]
    b = FaultInjector(settings, seed=7)
    assert [b.draw() for _ in range(2000)] == draws
    assert set(draws) == {"429", "drop_after", None}
    assert 300 < draws.count("429") < 500
    assert 500 < draws.count("drop_after") < 700
    a.reseed()
    assert [a.draw() for _ in range(10)] == draws[:10]


def test_share_one_always_faults_and_zero_never() -> None:
    assert {FaultInjector(FaultSettings(fail_503=1.0), 1).draw() for _ in range(50)} == {"503"}
    assert {FaultInjector(FaultSettings(), 1).draw() for _ in range(50)} == {None}


def test_latency_is_mean_plus_bounded_jitter() -> None:
    f = FaultInjector(FaultSettings(latency_ms=20, jitter_ms=5), seed=3)
    delays = [f.delay() for _ in range(500)]
    assert all(0.015 <= d <= 0.025 for d in delays)
    assert len(set(delays)) > 100
    g = FaultInjector(FaultSettings(latency_ms=1, jitter_ms=50), seed=3)
    assert min(g.delay() for _ in range(200)) == 0.0  # never negative


def test_request_fingerprint_depends_on_endpoint_and_body() -> None:
    assert request_fingerprint("/a", b"x") == request_fingerprint("/a", b"x")
    assert request_fingerprint("/a", b"x") != request_fingerprint("/b", b"x")
    assert request_fingerprint("/a", b"x") != request_fingerprint("/a", b"y")


def test_duplicates_need_the_same_sender_number_and_text() -> None:
    ledger = Ledger()

    def send(sender: str, tos: list[str], texts: list[str] | str) -> None:
        ledger.accept(
            sender=sender, tos=tos, texts=texts, encodings=GSM7, segments=1, t=0.0, date="d"
        )

    send("A", ["1", "2"], ["x", "y"])
    send("A", ["1"], ["z"])  # same number, another text
    send("B", ["1"], ["x"])  # another sender
    assert ledger.stats.duplicates == 0
    send("A", ["1", "1", "1"], ["z", "x", "q"])  # z and x were sent to 1 already
    assert ledger.stats.duplicates == 2
    send("A", ["3", "3"], "w")  # the same number twice in one request
    assert ledger.stats.duplicates == 3
    send("A", ["1"], "q")
    assert ledger.stats.duplicates == 4


# --- rendering against a reference ----------------------------------------------------

_scalars = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


def _reference(template: str, params: list[object]) -> str:
    return re.sub(r"\{([0-9]+)\}", lambda m: param_text(params[int(m.group(1))]), template)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.text(alphabet="ab {}%$\\", max_size=4), st.integers(0, 3).map("{{{}}}".format)
        ),
        max_size=6,
    ),
    rows=st.lists(st.lists(_scalars, min_size=4, max_size=4), min_size=1, max_size=5),
    ragged=st.booleans(),
)
def test_render_all_matches_a_reference(
    pieces: list[str], rows: list[list[object]], ragged: bool
) -> None:
    template = "".join(pieces)
    if ragged:  # unequal params lists take the one-by-one path
        rows = [row + [0] * i for i, row in enumerate(rows)]
    compiled = GatewayTemplate(template)
    if compiled.static:
        return
    # exact: the params are what they say (the test's floats are floats, however big).
    assert compiled.render_all(rows, exact=True) == [_reference(template, row) for row in rows]
