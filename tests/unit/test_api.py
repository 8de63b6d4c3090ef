"""The protocol, without I/O: every HTTP status and body maps to the right answer or
error, both single-message shapes are read, ids map back to lines, bodies are built
as the gateway documents them. (The I/O is tests/unit/test_gateway.py.)"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dispatcher import api
from dispatcher.api import Answer, check_answer, match_ids, parse_batch, parse_single
from dispatcher.errors import (
    AuthError,
    BadResponse,
    BatchTooLarge,
    RateLimited,
    RequestRejected,
    RetryableError,
    ServerError,
    Unavailable,
)
from dispatcher.models import PACKED_KINDS, Batch, BigInt, Encoding, Entry, Group
from dispatcher.renderer import compile_template
from tests.support.native import FLOATS, INTS, built, twins

KEY = "sk-test-0123456789-secret"


def answer_of(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """`check_answer` on a status, a body (JSON unless bytes) and headers."""
    payload = body if isinstance(body, bytes) else b"" if body is None else orjson.dumps(body)
    return check_answer(status, headers or {}, payload)


@pytest.mark.parametrize(
    ("status", "error", "safe"),
    [
        (429, RateLimited, True),
        (503, Unavailable, True),
        (408, Unavailable, True),
        (500, ServerError, False),
        (502, ServerError, False),
        (504, ServerError, False),
    ],
)
def test_retryable_statuses(status: int, error: type[RetryableError], safe: bool) -> None:
    body = {"meta": {"explain": "busy", "transactionId": "tx"}}
    with pytest.raises(error) as caught:
        answer_of(status, body, {"Retry-After": "3"})
    assert caught.value.safe is safe
    assert caught.value.status == status
    assert caught.value.transaction_id == "tx"
    assert caught.value.cause in (str(status), "429", "5xx")
    if status in (429, 503):
        assert caught.value.retry_after == 3.0
    assert "busy" in str(caught.value)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_fatal_and_hides_the_key(status: int) -> None:
    with pytest.raises(AuthError, match="expired or revoked") as caught:
        answer_of(status, {"meta": {"explain": f"bad key {KEY}"}})
    assert caught.value.exit_code == 3
    assert KEY not in str(caught.value)


def test_413_and_other_4xx() -> None:
    with pytest.raises(BatchTooLarge):
        answer_of(413, {"meta": {"explain": "too many"}})
    body = {"meta": {"explain": "code 999 not assigned"}, "data": {"status": "CODE_NOT_ALLOWED"}}
    with pytest.raises(RequestRejected, match="code 999 not assigned") as caught:
        answer_of(400, body)
    assert caught.value.gateway_status == "CODE_NOT_ALLOWED"
    with pytest.raises(RequestRejected) as caught:
        answer_of(400, {"meta": {}, "data": {"invalidNumber": ["+1"]}})
    assert caught.value.invalid == ["+1"]
    with pytest.raises(RequestRejected, match="check --base-url"):
        answer_of(404, b"not here")
    with pytest.raises(RequestRejected, match="HTTP 302"):
        answer_of(302, None, {"Location": "http://elsewhere/"})


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"meta": {}, "data": {"ids": [',
        b"[1, 2, 3]",
        b'{"meta": {}}',
        b'{"data": {"ids": "nope"}}',
        b'{"data": {"ids": [{"mobile": "+1"}]}}',
    ],
)
def test_an_unreadable_success_is_ambiguous(body: bytes) -> None:
    with pytest.raises(BadResponse) as caught:
        parse_batch(answer_of(200, body))
    assert caught.value.safe is False


def test_a_batch_answer() -> None:
    document = {
        "meta": {"timestamp": 1, "transactionId": "tx-1"},
        "data": {"ids": [{"id": "a", "mobile": "+1"}, {"id": 7}], "invalidNumber": ["+3"]},
    }
    assert parse_batch(answer_of(200, document)) == Answer(
        ids=["a", "7"],
        mobiles=["+1", None],
        invalid=["+3"],
        status="QUEUE",
        transaction_id="tx-1",
    )


def test_single_accepts_both_shapes() -> None:
    enveloped = {"meta": {"transactionId": "t"}, "data": {"id": "m1", "to": "+1", "status": "Q"}}
    assert parse_single(enveloped) == Answer(
        ids=["m1"], mobiles=["+1"], invalid=[], status="Q", transaction_id="t"
    )
    flat = {"status": "QUEUE", "messageId": "m2", "description": "queued"}
    assert parse_single(flat).ids == ["m2"]
    assert parse_single(flat).mobiles == [None]
    with pytest.raises(RequestRejected, match="number blocked") as caught:
        parse_single({"status": "BLACKLISTED", "description": "number blocked"})
    assert caught.value.gateway_status == "BLACKLISTED"
    with pytest.raises(BadResponse):
        parse_single({"meta": {}})


def test_a_status_answer() -> None:
    assert api.parse_status({"meta": {}, "data": {"id": "m1"}}, "m1") == {"id": "m1"}
    assert api.parse_status({"id": "m1", "status": "SENT"}, "m1")["status"] == "SENT"
    with pytest.raises(BadResponse, match="status of m1"):
        api.parse_status({"data": [1]}, "m1")


def ans(pairs: list[tuple[str, str | None]], invalid: list[str] | None = None) -> Answer:
    return Answer(
        ids=[message_id for message_id, _ in pairs],
        mobiles=[mobile for _, mobile in pairs],
        invalid=invalid or [],
        status="QUEUE",
        transaction_id="t",
    )


def test_match_ids_in_order_with_repeats_and_invalid() -> None:
    tos = ["+521", "+522", "+521", "+529"]
    answer = ans([("a", "+521"), ("b", "522"), ("c", "+521")], invalid=["+529"])
    assert match_ids(tos, answer) == ["a", "b", "c", None]
    answer = ans([("a", "+521"), ("c", "+521")], invalid=["522", "+529"])
    assert match_ids(tos, answer) == ["a", None, "c", None]


def test_match_ids_refuses_disagreement() -> None:
    with pytest.raises(BadResponse, match="answered 1 ids"):
        match_ids(["+1", "+2"], ans([("a", "+1")]))
    with pytest.raises(BadResponse, match="is for"):
        match_ids(["+1", "+2"], ans([("a", "+1"), ("b", "+3")]))
    with pytest.raises(BadResponse, match="does not account"):
        match_ids(["+1", "+2"], ans([("a", "+1")], invalid=["+3"]))


def test_match_ids_without_mobiles_goes_by_order() -> None:
    assert match_ids(["+1", "+2"], ans([("a", None), ("b", None)])) == ["a", "b"]
    assert match_ids(["+1", "+2"], ans([("b", None)], invalid=["+1"])) == [None, "b"]


def test_retry_after_forms() -> None:
    assert api.retry_after_seconds("7") == 7.0
    assert api.retry_after_seconds("0.5") == 0.5
    assert api.retry_after_seconds(None) is None
    assert api.retry_after_seconds("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert api.retry_after_seconds(later, now=now.timestamp()) == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("999999999", 999999999.0),
        (" 3 ", 3.0),
        ("9" * 400, math.inf),  # too long for a float: the policy clamps it
        ("inf", None),
        ("Infinity", None),
        ("1e400", None),
        ("nan", None),
        ("-5", None),
        ("-0", None),
        ("+5", None),
        ("5 s", None),
        ("", None),
        ("\u0662", None),
        ("Mon, 01 Jan 1990 00:00:00 GMT", 0.0),  # in the past: no wait
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),
        ("Fri, 32 Dec 2026 23:59:59 GMT", None),
    ],
)
def test_retry_after_is_read_in_its_own_forms_only(value: str, seconds: float | None) -> None:
    assert api.retry_after_seconds(value) == seconds


def test_retry_after_far_in_the_future_is_a_number_the_policy_clamps() -> None:
    far = api.retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT")
    assert far is not None
    assert far > 1e11


def test_bodies_of_a_batch() -> None:
    group = Group(
        "g",
        sender="12345",
        template=compile_template("Hi {0}"),
        options={"from": "12345", "type": "MT", "requestDR": True},
        capacity=math.inf,
    )
    batch = Batch(group, 0.0)
    batch.entries = [
        Entry(1, "+525500000001", ["Ana", 10.65], None, 1, "GSM7", "Hi Ana"),
        Entry(2, "+525500000002", ["Bo"], "ref", 1, "GSM7", "Hi Bo"),
    ]
    assert orjson.loads(api.body(batch, single=False)) == {
        "from": "12345",
        "type": "MT",
        "requestDR": True,
        "text": "Hi {0}",
        "to": [
            {"to": "+525500000001", "params": ["Ana", 10.65]},
            {"to": "+525500000002", "params": ["Bo"]},
        ],
    }
    batch.entries = batch.entries[:1]
    assert orjson.loads(api.body(batch, single=True)) == {
        "from": "12345",
        "type": "MT",
        "requestDR": True,
        "text": "Hi Ana",
        "to": "+525500000001",
    }


#: Params the C part writes itself, and those it leaves to orjson (a str to escape, a
#: lone surrogate, an int beyond 64 bits, a BigInt, a nested array).
_WRITTEN = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="aé€\u2028\U0001f600 /\x7f", max_size=6),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.booleans(),
    st.none(),
)
_LEFT = st.one_of(
    st.text(alphabet='"\\\x00\x1fa\ud800é', min_size=1, max_size=4),
    st.integers(),
    st.builds(BigInt, st.from_regex(r"-?[1-9][0-9]{20,30}", fullmatch=True)),
    st.lists(st.integers(0, 9), max_size=2),
)
#: Characters orjson escapes or refuses, and some it writes as they are.
_AWKWARD = '"\\\x00\x1f\x7fa€\U0001f600\ud800\udfff'
_PARAMS = st.one_of(
    st.lists(_WRITTEN, max_size=4),
    st.lists(_WRITTEN, max_size=4),
    st.lists(_WRITTEN, max_size=4),
    st.lists(st.one_of(_WRITTEN, _LEFT), max_size=3),
    st.tuples(_WRITTEN),
)
_TO = st.one_of(
    st.sampled_from(["+525500000001", "+15005550006"]),
    st.sampled_from(["+525500000002", "+15005550007"]),
    st.text(alphabet='+0123456789"\\é\x01', max_size=14),
)


def _body_or_error(batch: Batch) -> bytes | str:
    try:
        return api.body(batch, single=False)
    except orjson.JSONEncodeError as exc:
        return f"JSONEncodeError: {exc}"


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(_TO, _PARAMS), max_size=8),
    st.sampled_from([{"from": "12345"}, {"from": "12345", "type": "MT", "requestDR": True}]),
)
def test_the_batch_body_in_c_is_orjsons(recipients: list[Any], options: dict[str, Any]) -> None:
    """`api.body` with the C part's ``batch_recipients`` against its twin, orjson on a
    dict a recipient: the same bytes, or the same error (a lone surrogate), whatever
    the numbers and params (a str to escape, an int beyond 64 bits, a BigInt, NaN, a
    nested array, params as a tuple: those it leaves to orjson)."""
    group = Group("g", sender="12345", template=compile_template("Hi {0} ✓"), options=options,
                  capacity=math.inf)  # fmt: skip
    batch = Batch(group, 0.0)
    batch.entries = [
        Entry(line, to, params, None, 1, "GSM7", None)
        for line, (to, params) in enumerate(recipients, 1)
    ]
    with twins(False):
        in_c = _body_or_error(batch)
    with twins(True):
        assert _body_or_error(batch) == in_c


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_WRITTEN, _LEFT, st.text(alphabet=_AWKWARD, max_size=4)))
# a character to escape in a str of each width: 1, 2 and 4 bytes a character
@example('é"')
@example('€"')
@example("😀\\")
@example("€\x01")
def test_each_param_in_c_is_as_orjson_writes_it(param: Any) -> None:
    """One param a batch, so that none of the others sends the batch to orjson: the
    C part writes it as orjson does, or leaves it to orjson."""
    group = Group("g", sender="12345", template=compile_template("{0}"), options={}, capacity=1)
    batch = Batch(group, 0.0)
    batch.entries = [Entry(1, "+15005550006", [param], None, 1, "GSM7", None)]
    with twins(False):
        in_c = _body_or_error(batch)
    with twins(True):
        assert _body_or_error(batch) == in_c


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(FLOATS, INTS), min_size=1, max_size=50))
def test_floats_and_ints_in_the_body_in_c_are_as_orjson_writes_them(params: list[Any]) -> None:
    group = Group("g", sender="12345", template=compile_template("{0}"), options={}, capacity=1)
    batch = Batch(group, 0.0)
    batch.entries = [
        Entry(line, "+15005550006", [param], None, 1, "GSM7", None)
        for line, param in enumerate(params, 1)
    ]
    with twins(False):
        in_c = _body_or_error(batch)
    with twins(True):
        assert _body_or_error(batch) == in_c


# ---- A closed batch packed by the C part (api.pack, models.Packed) -------------------

#: What the reader can give a param (no NaN nor infinity: JSON has none), and the odd.
_FINITE = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="aé€\u2028\U0001f600 /\x7f", max_size=6),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
_PACK_PARAMS = st.one_of(
    st.lists(_FINITE, max_size=4),
    st.lists(_FINITE, max_size=4),
    st.lists(st.one_of(_FINITE, _LEFT), max_size=3),
)
_REFS = st.one_of(st.none(), st.none(), _FINITE, st.lists(st.integers(0, 3), max_size=2))
_ENTRY = st.tuples(
    st.integers(1, 2**40),
    _TO,
    _PACK_PARAMS,
    _REFS,
    st.integers(1, 12),
    st.sampled_from([*Encoding, "GSM7"]),  # a plain str is not an Encoding: left alone
    st.one_of(st.none(), st.none(), st.none(), st.just("a text")),
    st.sampled_from([0, 0, 0, 2]),
    st.sampled_from([0, 0, 0, 1]),
)


def _group(options: dict[str, Any]) -> Group:
    return Group("g", sender="12345", template=compile_template("Hi {0} ✓"), options=options,
                 capacity=math.inf)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.lists(_ENTRY, min_size=1, max_size=8),
    st.sampled_from([{"from": "12345"}, {"from": "12345", "type": "MT", "requestDR": True}]),
    st.booleans(),
)
def test_a_packed_batch_is_the_batch_it_was(
    rows: list[Any], options: dict[str, Any], first: bool
) -> None:
    """`api.pack` of a closed batch: its body, length, lines, numbers and (rebuilt)
    entries are the unpacked batch's, exactly — or it is left as it was, when an entry
    is not of the usual form (a kept text, smart-encoding replacements, a plain str for
    an encoding, what the body leaves to orjson, a ref orjson refuses)."""
    entries = [Entry(*row) for row in rows]
    batch, twin = Batch(_group(options), 0.0), Batch(_group(options), 0.0)
    batch.entries, twin.entries = list(entries), list(entries)
    twin.close("job")
    expected = _body_or_error(twin)
    if first:  # packed before it is closed, as the batcher does: its key from the packing
        api.pack(batch)
        batch.close("job")
    else:
        batch.close("job")
        api.pack(batch)
    usual = all(
        e.text is None and e.replaced == 0 and e.saved == 0 and type(e.encoding) is Encoding
        for e in entries
    )
    if batch.packed is None:  # the refs drawn here are all JSON orjson writes
        assert not usual or built().batch_recipients(entries, orjson.dumps, b"{", b"}") is None
        assert batch.entries == entries
        return
    assert usual
    assert batch.key == twin.key
    assert len(batch) == len(entries)
    assert batch.lines == [e.line for e in entries]
    assert list(batch.numbers) == [e.to for e in entries]
    assert batch.sent == "".join(e.to + "\n" for e in entries).encode()
    assert api.body(batch, single=False) == expected
    # repr tells -0.0 from 0.0 and True from 1: the params come back as they were
    assert repr(batch.entries) == repr(entries)
    assert batch.packed.segments_by == {
        kind: sum(e.segments for e in entries if e.encoding is kind)
        for kind in dict.fromkeys(e.encoding for e in entries)
    }


def _unset(batch: Batch) -> bool:
    """Whether the batch holds no entries (its slot unset), without rebuilding them."""
    try:
        Batch.entries.__get__(batch)  # type: ignore[attr-defined]
    except AttributeError:
        return True
    return False


def test_the_usual_batch_is_packed_and_its_entries_freed() -> None:
    """The usual batch is packed (else the test above would pass by packing nothing),
    and holds no entries until one is asked for."""
    batch = Batch(_group({"from": "12345"}), 0.0)
    batch.entries = [
        Entry(3, "+525500000001", ["Ana", 12.5], None, 1, Encoding.GSM7, None),
        Entry(9, "+15005550006", ["Zoë", -0.0], "crm-1", 2, Encoding.UCS2, None),
    ]
    batch.close("job")
    key = batch.key
    api.pack(batch)
    assert batch.packed is not None
    assert _unset(batch)
    assert (len(batch), batch.lines, batch.key) == (2, [3, 9], key)
    assert batch.packed.refs == [None, "crm-1"]
    assert batch.entries[1] == Entry(9, "+15005550006", ["Zoë", -0.0], "crm-1", 2, "UCS2", None)
    assert repr(batch.entries[1].params[1]) == "-0.0"
    assert not _unset(batch)  # rebuilt once, then held


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["+525500000001", "+15005550006"]), _REFS,
                       st.integers(1, 300), st.sampled_from(list(Encoding))),
             min_size=1, max_size=6),
    st.lists(st.sampled_from(["a1", "507f1f77b", 'q"', "é", ""]), min_size=6, max_size=6),
)  # fmt: skip
def test_packed_result_lines_are_accepted_lines(rows: list[Any], ids: list[str]) -> None:
    """The C part's result lines of a packed batch (``accepted_packed``) are
    ``accepted_lines``' for its entries, byte for byte, with the same sums; both leave
    a batch with an id to escape to the Python loops."""
    core = built()
    entries = [
        Entry(line, to, ["Ana", 1.5], ref, segments, encoding, None)
        for line, (to, ref, segments, encoding) in enumerate(rows, 7)
    ]
    made = core.pack_batch(entries, PACKED_KINDS, orjson.dumps, b"{", b"}")
    assert made is not None
    for item in made:  # held by the tuple alone (+ item, + the call's argument)
        assert item is None or sys.getrefcount(item) == 3
    _, _, _, _, _, pieces, ends, _, sums = made
    ids = ids[: len(entries)]
    middle, after = ',"status":"QUEUE","id":"', ',"attempts":2,"transactionId":"t"'
    kinds = tuple((kind, f',"encoding":"{kind}"{after}') for kind in Encoding)
    lines = core.accepted_lines(entries, ids, middle, kinds, orjson.dumps)
    packed = core.accepted_packed(pieces, ends, ids, middle.encode(), after.encode())
    if lines is None:
        assert packed is None
        return
    assert packed == lines[0]
    assert sums == lines[1]


# ---- The batch answer read in C (api.batch_answer) against orjson and parse_batch ----


class Members(list[tuple[str, Any]]):
    """A JSON object as its members in order, so that a key can come twice."""


def encode(value: Any, spaced: bool, escaped: bool) -> str:
    """JSON text of `value` (`Members` for objects): with or without spaces, non-ASCII
    as itself or as escapes (json's ensure_ascii)."""
    import json

    comma, colon = (", ", ": ") if spaced else (",", ":")
    if isinstance(value, Members):
        inner = comma.join(
            json.dumps(key, ensure_ascii=escaped) + colon + encode(item, spaced, escaped)
            for key, item in value
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + comma.join(encode(item, spaced, escaped) for item in value) + "]"
    return json.dumps(value, ensure_ascii=escaped)


def members(pairs: st.SearchStrategy[list[tuple[str, Any]]]) -> st.SearchStrategy[Members]:
    return pairs.map(Members)


_PLAIN_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_ID_TEXT = st.text(alphabet="0123456789abcdef+-", max_size=12)
_TAME = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4))
_ANY_TEXT = st.one_of(_PLAIN_TEXT, st.text(max_size=6))  # escapes, UTF-8, surrogates
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _ANY_TEXT,
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        members(st.lists(st.tuples(_ANY_TEXT, inner), max_size=3)),
    ),
    max_leaves=8,
)


def _optional(key: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[list[tuple[str, Any]]]:
    """The member: once mostly, absent sometimes, twice now and then."""
    return st.integers(0, 7).flatmap(
        lambda roll: (
            st.lists(st.tuples(st.just(key), value), min_size=roll % 3, max_size=roll % 3)
            if roll < 3
            else value.map(lambda item: [(key, item)])
        )
    )


def _object(
    *parts: st.SearchStrategy[list[tuple[str, Any]]], others: Any = _VALUE
) -> st.SearchStrategy[Members]:
    """An object of the given optional members and a few others, in a random order."""
    extra = st.lists(st.tuples(_ANY_TEXT, others), max_size=2)
    return (
        st.tuples(*parts, extra)
        .flatmap(lambda found: st.permutations([pair for part in found for pair in part]))
        .map(Members)
    )


def _mostly(usual: st.SearchStrategy[Any], *others: st.SearchStrategy[Any]) -> Any:
    """`usual` about nine times in ten (so that many answers are read in C), else one of
    the others. (one_of itself would not weigh them: it keeps a strategy given twice
    once.)"""
    rest = st.one_of(*others)
    return st.integers(0, 9).flatmap(lambda roll: usual if roll else rest)


def _answers(usual: bool) -> st.SearchStrategy[Members]:
    """Answers of any shape, or (``usual``) ones that keep the usual shape more often."""
    member = _optional if not usual else lambda key, value: value.map(lambda item: [(key, item)])
    text = _mostly(_ID_TEXT, _PLAIN_TEXT, _ANY_TEXT, st.integers(), st.none())
    item = _object(member("id", text), member("mobile", text), others=_mostly(_TAME, _VALUE))
    ids = st.lists(item, min_size=int(usual), max_size=4)
    data = _object(
        _optional("ids", _mostly(ids, st.none(), st.just("x"))),
        _optional("invalidNumber", _mostly(st.just([]), st.sampled_from([None, ["+3"], "x", 0]))),
        member("status", text),
    )
    meta = _mostly(_object(_optional("transactionId", text)), _SCALAR)
    return _object(member("data", _mostly(data, _SCALAR)), _optional("meta", meta))


def _parsed(payload: bytes) -> Answer | str:
    """What the Python code makes of a 2xx batch answer: its Answer, or its error."""
    try:
        return parse_batch(check_answer(200, {}, payload))
    except BadResponse as exc:
        return f"{type(exc).__name__}: {exc}"


def _agree(payload: bytes) -> None:
    """The C reader leaves the answer to the Python code, or reads what it reads; and
    `api.batch_answer` with the C part gives what it gives without it."""
    read = built().batch_answer(payload)
    expected = _parsed(payload)
    if read is not None:
        assert isinstance(expected, Answer), (payload, read, expected)
        assert read[0] == expected.ids, payload
        assert read[1] == expected.mobiles, payload
        assert expected.invalid == []
    with twins(False):
        try:
            in_c: Answer | str = api.batch_answer(200, {}, payload)
        except BadResponse as exc:
            in_c = f"{type(exc).__name__}: {exc}"
    assert in_c == expected, payload


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_answers(usual=False), _answers(usual=True)), st.booleans(), st.booleans())
def test_the_batch_answer_read_in_c_is_parse_batchs(
    answer: Members, spaced: bool, escaped: bool
) -> None:
    """Answers of every shape (ids without an id or a mobile, ids that are not strings,
    numbers refused, a key twice, data or meta of another type, strings to unescape,
    other members of any JSON value), written with and without spaces and escapes."""
    _agree(encode(answer, spaced, escaped).encode("utf-8", "surrogatepass"))


_USUAL = orjson.dumps(
    {
        "meta": {"timestamp": 1597166699457, "transactionId": "70169d77", "explain": "é"},
        "data": {
            "ids": [{"id": "507f1f77b", "mobile": "+525500000000"}, {"id": "7", "mobile": "+52"}],
            "invalidNumber": [],
            "from": "12345",
            "text": 'Hi {0}, "€" 😀\\ \t ${1}',
            "status": "QUEUE",
            "n": [1.5, -0.25, 0, -7, True, False, None, {"a": [[]]}],
        },
    }
)


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_a_damaged_answer_is_never_read_otherwise_than_orjson_reads_it(data: st.DataObject) -> None:
    """The usual answer with bytes changed, cut or added anywhere: the C reader never
    takes what orjson refuses, nor reads it otherwise."""
    payload = bytearray(_USUAL)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(payload)))
        byte = data.draw(st.sampled_from(b'{}[]",:\\ \tu0e.-+9aZ\x00\x1f\x7f\x80\xc3\xed\xf0\xff'))
        how = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if how == "replace" and at < len(payload):
            payload[at] = byte
        elif how == "insert":
            payload.insert(at, byte)
        elif how == "delete" and at < len(payload):
            del payload[at]
        elif how == "cut":
            del payload[at:]
    _agree(bytes(payload))


@pytest.mark.parametrize(
    "payload",
    [
        _USUAL,
        b' \r\n\t{"data":{"ids":[ { "id" : "a" , "mobile" : "+1" } ]}} \n',
        b'{"data":{"ids":[]}}',
        b'{"data":{"ids":null,"invalidNumber":null,"status":null},"meta":null}',
        b'{"data":{"status":""},"meta":{"transactionId":""}}',
        b'{"data":{},"meta":"m"}',
        b'{"data":{},"meta":[1,{"transactionId":"x"}]}',
        # a key twice: the last one counts (orjson's rule)
        b'{"data":{"ids":[{"id":"a","id":"b","mobile":"+1"}]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1","mobile":"+2"}]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1","id":null}]}}',
        b'{"data":{"status":"A","status":"B"}}',
        b'{"data":{"status":"A","status":null}}',
        b'{"data":{},"meta":{"transactionId":"a","transactionId":"b"}}',
        b'{"data":{},"meta":{"transactionId":"a","transactionId":null}}',
        b'{"data":{},"meta":{},"meta":{"transactionId":"b"}}',
        b'{"data":{},"meta":{"transactionId":"b"},"meta":{}}',
        b'{"data":{},"meta":{"transactionId":"b"},"meta":7}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1"}]},"data":{"ids":[]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1"}],"ids":[]}}',
        b'{"data":{"ids":[],"ids":[{"id":"a","mobile":"+1"}]}}',
        b'{"data":{"invalidNumber":[],"invalidNumber":["+1"]}}',
        # an escaped key, maybe the same as one read
        b'{"d\\u0061ta":{"ids":[{"id":"a","mobile":"+1"}]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1"}]},"d\\u0061ta":{}}',
        b'{"data":{"i\\u0064s":[{"id":"a","mobile":"+1"}]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1"}],"i\\u0064s":[]}}',
        b'{"data":{"ids":[{"\\u0069d":"a","mobile":"+1"}]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1","m\\u006fbile":"+2"}]}}',
        b'{"data":{"status":"A","st\\u0061tus":"B"}}',
        b'{"data":{"invalidNumber":[],"inv\\u0061lidNumber":["+1"]}}',
        b'{"data":{},"meta":{"transactionId":"a","tr\\u0061nsactionId":"b"}}',
        b'{"data":{},"meta":{"transactionId":"a"},"m\\u0065ta":{}}',
        # the careful loop's cases
        b'{"data":{"ids":[{"id":"\\u0061","mobile":"+1"}]}}',
        b'{"data":{"ids":[{"id":"\xc3\xa9","mobile":"+1"}]}}',
        b'{"data":{"ids":[{"id":"a"}]}}',
        b'{"data":{"ids":[{"mobile":"+1"}]}}',
        b'{"data":{"ids":[{"id":"a","mobile":null}]}}',
        b'{"data":{"ids":[{"id":7,"mobile":"+1"}]}}',
        b'{"data":{"ids":["a"]}}',
        b'{"data":{"ids":{}}}',
        b'{"data":{"invalidNumber":["+1"]}}',
        b'{"data":{"invalidNumber":[ ]}}',
        b'{"data":{"status":7}}',
        b'{"data":[]}',
        b'{"meta":{}}',
        b"{}",
        b"[]",
        b"",
        b"null",
        # not JSON, or JSON orjson refuses
        b'\xef\xbb\xbf{"data":{}}',
        b'{"data":{}} x',
        b'{"data":{}}\x00',
        b'{"data":{},}',
        b'{"data":{"x":{"a":1,}}}',
        b'{"data":{"x":{,}}}',
        b'{"data":{"x":{"a" 1}}}',
        b'{"data":{"x":{"a":1 "b":2}}}',
        b'{"data":{"x":{1:2}}}',
        b'{"data":{"x":[1 2]}}',
        b'{"data":{"x":[,]}}',
        b'{"data":{"x":[1,]}}',
        b'{"data":{"x":01}}',
        b'{"data":{"x":1.}}',
        b'{"data":{"x":-}}',
        b'{"data":{"x":.5}}',
        b'{"data":{"x":1e400}}',
        b'{"data":{"x":1E2}}',
        b'{"data":{"x":' + b"9" * 400 + b"}}",
        b'{"data":{"x":NaN}}',
        b'{"data":{"x":tru}}',
        b'{"data":{"x":"\\ud800"}}',
        b'{"data":{"x":"\\ud800\\ud800"}}',
        b'{"data":{"x":"\\ud800\\u0041"}}',
        b'{"data":{"x":"\\ud800\\n"}}',
        b'{"data":{"x":"\\ud800\\udc0"}}',
        b'{"data":{"x":"\\udc00"}}',
        b'{"data":{"x":"\\udc00\\ud800"}}',
        b'{"data":{"x":"\\ud83d\\ude00"}}',
        b'{"data":{"x":"\\udbff\\udfff"}}',
        b'{"data":{"x":"\\x"}}',
        b'{"data":{"x":"\\u12"}}',
        b'{"data":{"x":"\x1f"}}',
        b'{"data":{"x":"\x7f"}}',
        b'{"data":{"x":"\xed\xa0\x80"}}',
        b'{"data":{"x":"\xc0\x80"}}',
        b'{"data":{"x":"\xe0\x80\x80"}}',
        b'{"data":{"x":"\xf0\x80\x80\x80"}}',
        b'{"data":{"x":"\xf4\x90\x80\x80"}}',
        b'{"data":{"x":"\xf0\x9f\x98\x80"}}',
        b'{"data":{"x":"\xc3"}}',
        b'{"data":{"x":"abc}}',
        b'{"data":{"x":' + b"[" * 100 + b"]" * 100 + b"}}",
        b'{"data":{"x":' + b"[" * 30 + b"]" * 30 + b"}}",
        b'{"data":{"x" 1}}',
        b'{"data" {}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1"} {"id":"b","mobile":"+2"}]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1"}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1"},]}}',
        b'{"data":{"ids":[{"id":"a","mobile":"+1",}]}}',
        b'{"data":{\x0c}}',
    ],
)
def test_the_batch_answer_read_in_c_on_the_edges(payload: bytes) -> None:
    _agree(payload)


def _matched(payload: bytes, tos: list[str]) -> list[str | None] | str:
    """What the Python code makes of an answer to a batch of these numbers: the ids
    matched to them, or its error."""
    try:
        return match_ids(tos, parse_batch(check_answer(200, {}, payload)))
    except BadResponse as exc:
        return f"{type(exc).__name__}: {exc}"


def _entries(tos: list[str]) -> list[Entry]:
    return [Entry(line, to, [], None, 1, "GSM7", None) for line, to in enumerate(tos, 1)]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.sampled_from(["+1", "+52155", "52155", "+5215", "+1 ", "é", "+1\\"]), max_size=5),
    st.data(),
)
def test_the_answer_checked_against_the_numbers_sent_in_c(tos: list[str], data: Any) -> None:
    """With the batch's entries, the C reader checks each mobile against the number
    sent at its place as it reads it: where it answers, it is match_ids' answer; where
    the mobiles differ in any way (another number, the same digits without '+', one
    missing, one too many, escaped, refused), it leaves the answer to match_ids."""
    mobiles = data.draw(
        st.one_of(
            st.just(tos),
            st.lists(st.sampled_from(["+1", "+52155", "52155", "+5215", "\\u002b1"]), max_size=6),
        )
    )
    ids = [{"id": f"m{k}", "mobile": mobile} for k, mobile in enumerate(mobiles)]
    invalid = data.draw(st.sampled_from([[], ["+9"]]))
    payload = orjson.dumps({"data": {"ids": ids, "invalidNumber": invalid}})
    payload = payload.replace(b"\\\\u002b", b"\\u002b")  # an escaped '+', as written
    entries = _entries(tos)
    expected = _matched(payload, tos)
    read = built().batch_answer(payload, entries)
    if read is not None:
        assert read[1] is None
        assert read[0] == expected, (payload, tos)
    if all(to.isascii() and to.isprintable() and '"' not in to and "\\" not in to for to in tos):
        # a packed batch's numbers (only numbers that need no escaping are packed)
        assert built().batch_answer(payload, "".join(to + "\n" for to in tos).encode()) == read
    with twins(False):
        try:
            answer = api.batch_answer(200, {}, payload, entries)
            in_c: list[str | None] | str = match_ids(tos, answer)
        except BadResponse as exc:
            in_c = f"{type(exc).__name__}: {exc}"
    assert in_c == expected


def test_the_usual_answer_is_read_in_c() -> None:
    """The C reader takes the answers the gateway and the emulator give (else the tests
    above would pass with a reader that takes nothing)."""
    assert built().batch_answer(_USUAL) == (
        ["507f1f77b", "7"],
        ["+525500000000", "+52"],
        "QUEUE",
        "70169d77",
    )
    assert built().batch_answer(b'{"data":{"ids":[]}}') == ([], [], None, None)
    assert built().batch_answer(b'{"data":{"ids":[{"id":"a","mobile":"+1"}]}} ') is not None
    # checked against the numbers sent: mobiles not made
    usual = b'{"data":{"ids":[{"id":"a","mobile":"+1"},{"id":"b","mobile":"+2"}]}}'
    assert built().batch_answer(usual, _entries(["+1", "+2"])) == (["a", "b"], None, None, None)
    assert built().batch_answer(usual, _entries(["+1", "2"])) is None
    assert built().batch_answer(usual, _entries(["+1"])) is None
    assert built().batch_answer(usual, _entries(["+1", "+2", "+3"])) is None
    # the same against a packed batch's numbers
    assert built().batch_answer(usual, b"+1\n+2\n") == (["a", "b"], None, None, None)
    for numbers in (b"+1\n+3\n", b"+1\n2\n", b"+1\n", b"+1\n+2\n+3\n", b"+1\n+2", b"", b"+1+2\n"):
        assert built().batch_answer(usual, numbers) is None
