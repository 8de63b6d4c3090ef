"""Templates: placeholder syntax, how params render, errors that name the placeholder."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import ConfigError, RenderError
from dispatcher.models import BigInt, Recipient, json_default
from dispatcher.reader import parse_lines
from dispatcher.renderer import MAX_INDEX, Template, TemplateError, compile_template


def render(text: str, params: Sequence[object]) -> str:
    return compile_template(text).render(params)


def test_spec_examples() -> None:
    template = compile_template("Hola {0}, tu saldo es {1}")
    assert template.render(["Elizabeth", 10.65]) == "Hola Elizabeth, tu saldo es 10.65"
    assert template.render(["Joshua", 20.5]) == "Hola Joshua, tu saldo es 20.5"
    assert render("Your code is {0}", ["4417"]) == "Your code is 4417"
    assert render("{0} items", [3]) == "3 items"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{name} {0}", "{name} A"),
        ("{ 0 } {0}", "{ 0 } A"),
        ("{ {0} }", "{ A }"),
        ("{{0}}", "{A}"),  # no escaping: the inner {0} is the placeholder
        ("{{{0}}}", "{{A}}"),
        ("}{0}{", "}A{"),
        ("{-1}{0}", "{-1}A"),
        ("{0x1}{1.0}", "{0x1}{1.0}"),
        ("{01}", "B"),  # decimal digits, leading zeros allowed
        ("{\u0661}", "{\u0661}"),  # an Arabic-Indic digit is not a placeholder
        ("{1}{0}{1}", "BAB"),
        ("{}", "{}"),
        ("", ""),
    ],
)
def test_placeholder_syntax(text: str, expected: str) -> None:
    assert render(text, ["A", "B"]) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        ("", ""),
        ("{0}", "{0}"),  # a param is never read again as a template
        (3, "3"),
        (-42, "-42"),
        (0, "0"),
        (2**70, "1180591620717411303424"),
        (10.65, "10.65"),
        (20.5, "20.5"),
        (3.0, "3.0"),
        (-0.0, "-0.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e16, orjson.dumps(1e16).decode()),
        (1e-7, orjson.dumps(1e-7).decode()),  # Python's repr says 1e-07
        (1e-5, orjson.dumps(1e-5).decode()),  # Python's repr says 1e-05
        (True, "true"),
        (False, "false"),
    ],
)
def test_param_rendering(value: object, expected: str) -> None:
    for text in ("{0}", "<{0}>", "{0}{0}", "{0}{0}{0}", "{0}{0}{0}{0}"):
        assert render(text, [value]) == text.replace("{0}", expected)


def test_floats_render_as_orjson_puts_them_on_the_wire() -> None:
    for value in (1e-7, 1e-5, 1e16, 1e22, 5e-324, 1.7976931348623157e308):
        assert render("{0}", [value]) == orjson.dumps(value).decode()


def test_subclasses_render_as_their_base_type() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    assert render("{0}/{1}", [Level.HIGH, Name("x")]) == "3/x"


@pytest.mark.parametrize("placeholders", [1, 2, 3, 5])
def test_missing_param_names_the_placeholder(placeholders: int) -> None:
    text = " ".join(f"{{{i}}}" for i in range(placeholders))
    template = compile_template(text)
    with pytest.raises(RenderError) as info:
        template.render([])
    assert (
        str(info.value) == f"template needs param {{{placeholders - 1}}} but the line has 0 params"
    )
    if placeholders > 1:
        with pytest.raises(RenderError, match=r"but the line has 1 param$"):
            template.render(["x"])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "param {1} is null; params must be strings, numbers or booleans"),
        ([1], "param {1} is an array; params must be strings, numbers or booleans"),
        ({"a": 1}, "param {1} is an object; params must be strings, numbers or booleans"),
        (b"x", "param {1} is a bytes; params must be strings, numbers or booleans"),
        (float("nan"), "param {1} is not a finite number: nan"),
        (float("inf"), "param {1} is not a finite number: inf"),
        (float("-inf"), "param {1} is not a finite number: -inf"),
    ],
)
@pytest.mark.parametrize("text", ["{1}", "{0}{1}", "{0}{1}{0}", "{0}{1}{0}{0}"])
def test_unrenderable_param_names_the_placeholder(text: str, value: object, reason: str) -> None:
    with pytest.raises(RenderError) as info:
        render(text, ["ok", value])
    assert str(info.value) == reason


def test_unused_params_are_not_looked_at() -> None:
    assert render("{0}", ["x", None, {"a": 1}]) == "x"
    assert render("static", []) == "static"


def test_template_attributes() -> None:
    template = compile_template("Hi {2}, {0}")
    assert template.text == "Hi {2}, {0}"
    assert template.max_index == 2
    assert not template.is_static
    static = compile_template("Hi {name}")
    assert static.max_index == -1
    assert static.is_static
    assert static.render(["ignored"]) == "Hi {name}"


def test_compile_is_cached_and_templates_compare_by_text() -> None:
    assert compile_template("a {0}") is compile_template("a {0}")
    assert Template("a {0}") == compile_template("a {0}")
    assert hash(Template("a {0}")) == hash("a {0}")
    assert Template("a {0}") != Template("a {1}")
    assert repr(Template("a {0}")) == "Template('a {0}')"


def test_render_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="needs param"):
        render("{0}", [])


# --- placeholder indexes: at most 999 ----------------------------------------------


def test_index_999_is_the_highest() -> None:
    assert MAX_INDEX == 999
    params = [str(i) for i in range(1000)]
    assert render("{999}", params) == "999"
    assert render("{0999}|{000}", params) == "999|0"
    assert compile_template("{" + "0" * 5000 + "7}").max_index == 7  # zeros are free


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("{1000}", "{1000}"),
        ("Hi {0}, {01000}", "{01000}"),
        ("{12345678901234567890}", "{12345678901234567890}"),
        ("{" + "9" * 5000 + "}", "{99999999999999999999…} (5000 digits)"),
        ("{0}{1}{2}{" + "1" * 4301 + "}", "{11111111111111111111…} (4301 digits)"),
    ],
)
def test_an_index_above_999_is_refused_at_compile(text: str, shown: str) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(text)
    assert str(info.value) == f"placeholder {shown} is above {{999}}, the highest index a " + (
        "template may use"
    )
    # A line's own text: prepare's `except RenderError` makes the line REJECTED.
    # The job's template: the CLI's `except ConfigError` makes it exit 2.
    assert isinstance(info.value, RenderError)
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, ValueError)


@given(st.text(alphabet="{}0123456789a", max_size=60))
def test_compile_raises_nothing_but_template_error(text: str) -> None:
    try:
        template = compile_template(text)
    except TemplateError:
        return
    assert template.max_index <= MAX_INDEX


# --- integers of any size: digits as written, the same JSON number on the wire --------


@pytest.mark.parametrize(
    "digits", ["18446744073709551616", "-9223372036854775809", "1" + "0" * 30, "7" * 5000]
)
def test_big_ints_render_as_their_digits(digits: str) -> None:
    for text in ("{0}", "<{0}>", "{1}{0}", "{0}{0}{0}", "{0}{0}{0}{0}"):
        assert render(text, [BigInt(digits), "x"]) == text.replace("{0}", digits).replace(
            "{1}", "x"
        )


def test_json_default_writes_a_big_int_as_the_same_json_number() -> None:
    body = {"text": "{0}", "to": [{"to": "1", "params": [BigInt("-" + "9" * 400), 1.5, "s"]}]}
    raw = orjson.dumps(body, default=json_default)
    assert raw == b'{"text":"{0}","to":[{"to":"1","params":[-' + b"9" * 400 + b',1.5,"s"]}]}'
    with pytest.raises(TypeError):
        orjson.dumps([object()], default=json_default)
    assert BigInt("1") == BigInt("1")
    assert BigInt("1") != 1
    assert hash(BigInt("12")) == hash(BigInt("12"))
    assert repr(BigInt("12")) == "BigInt('12')"


def through_the_client(digits: str) -> tuple[str, bytes]:
    """An input line with this integer as its param → rendered text, batch body."""
    line = f'{{"to": "+15005550006", "params": ["x", {digits}]}}'.encode()
    (recipient,) = parse_lines([line], 1)
    assert isinstance(recipient, Recipient), recipient
    text = compile_template("Pay {1} now").render(recipient.params)
    body = orjson.dumps({"to": [{"params": recipient.params}]}, default=json_default)
    return text, body


@given(
    st.one_of(
        st.integers(),
        st.integers(min_value=2**64),
        st.integers(max_value=-(2**63) - 1),
        st.sampled_from([10**30, -(2**70), 2**64, -(2**63) - 1, 2**64 - 1, -(2**63)]),
    )
)
@settings(max_examples=300)
def test_integers_of_any_size_render_and_travel_exactly(n: int) -> None:
    text, body = through_the_client(str(n))
    assert text == f"Pay {n} now"
    assert json.loads(body)["to"][0]["params"][1] == n  # the same JSON number
    assert f",{n}]".encode() in body


@pytest.mark.parametrize("digits", ["1" + "0" * 400, "-" + "3" * 4300, "9" * 20000])
def test_integers_beyond_a_double_and_int_limits(digits: str) -> None:
    text, body = through_the_client(digits)
    assert text == f"Pay {digits} now"
    assert body == b'{"to":[{"params":["x",' + digits.encode() + b"]}]}"


# --- properties against a regex reference ------------------------------------------


def reference(text: str, params: Sequence[object]) -> str:
    def one(match: re.Match[str]) -> str:
        value = params[int(match[1])]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        return orjson.dumps(value).decode()

    return re.sub(r"\{([0-9]+)\}", one, text)


scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
pieces = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["{", "}", "{{", "}}", "{x}", "{-1}", "{ 0 }"]),
    st.integers(min_value=0, max_value=6).map(lambda i: f"{{{i}}}"),
)


@given(st.lists(pieces, max_size=12).map("".join), st.lists(scalars, min_size=7, max_size=9))
def test_render_matches_the_reference_and_never_raises(text: str, params: list[object]) -> None:
    assert render(text, params) == reference(text, params)


@given(st.lists(pieces, max_size=12).map("".join), st.lists(scalars, max_size=6))
def test_render_raises_only_for_a_missing_index(text: str, params: list[object]) -> None:
    template = compile_template(text)
    if template.max_index < len(params):
        assert template.render(params) == reference(text, params)
    else:
        with pytest.raises(RenderError, match=re.escape(f"needs param {{{template.max_index}}}")):
            template.render(params)
