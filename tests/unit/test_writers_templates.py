"""The result writers against their specification (the careful path): every line is
the bytes ``orjson.dumps`` gives for the result's dict (the careful path), whatever the
status, the ref (unicode, quotes, control characters, nested, big integers, None), the
number, the id or the error; and the summary counts what the lines say."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.models import Batch, BigInt, Encoding, Entry, Rejected, Status
from dispatcher.summary import ACCEPTED, Summary
from dispatcher.writers import NdjsonSink, Outputs
from tests.support.result_lines import accepted_line, dry_run_line, unsent_line
from tests.unit.test_writers import batch

NL = orjson.OPT_APPEND_NEWLINE
ODD_TEXT = ['a "quoted" \\ word', "Łukasz 😀", "tab\there\nnew", "\x00\x1f", "\u2028", ""]
ODD_REFS: list[Any] = [
    None,
    "crm-1",
    *ODD_TEXT,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    1e300,
    True,
    False,
    [],
    {},
    {"a": [1, {"b": None}], "é": "ü"},
    [None, "x", 2.25],
]
NUMBERS = ["+15550001111", "15550001111", "+44 20 7946 0000", 'x"y', "a\\b", "Zoë", ""]


class Run:
    """Outputs on in-memory sinks."""

    def __init__(self) -> None:
        self.buffers = {name: io.BytesIO() for name in ("results", "invalid", "rejects")}
        self.sinks = {
            name: NdjsonSink(buffer, name, owned=False) for name, buffer in self.buffers.items()
        }
        self.summary = Summary(clock=lambda: 5.0)
        self.outputs = Outputs(
            self.sinks["results"],
            self.summary,
            invalid=self.sinks["invalid"],
            rejects=self.sinks["rejects"],
        )

    def lines(self, name: str = "results") -> list[bytes]:
        self.outputs.flush()
        return self.buffers[name].getvalue().splitlines(keepends=True)


def batch_of(entries: list[Entry]) -> Batch:
    return batch(*entries)


def serialisable(ref: Any) -> bool:
    try:
        orjson.dumps(ref)
    except TypeError:
        return False
    return True


refs = st.one_of(
    st.sampled_from(ODD_REFS),
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=6,
    ),
).filter(serialisable)
plain_numbers = st.from_regex(r"\+?[0-9]{6,15}", fullmatch=True)
numbers = st.one_of(plain_numbers, st.sampled_from(NUMBERS), st.text(max_size=6))
entries = st.builds(
    lambda line, to, ref, segments, encoding, replaced: Entry(
        line, to, ["p"], ref, segments, encoding, None, replaced
    ),
    st.integers(1, 2**64 - 1),
    numbers,
    refs,
    st.integers(1, 400),
    st.sampled_from([Encoding.GSM7, Encoding.UCS2]),
    st.sampled_from([0, 0, 0, 1, 7]),
)
plain_entries = entries.filter(lambda e: e.to.isascii() and e.to.isprintable())
ids = st.one_of(st.from_regex(r"[0-9a-f]{1,20}", fullmatch=True), st.sampled_from(ODD_TEXT))
statuses = st.one_of(st.sampled_from(list(Status)), st.sampled_from(["QUEUE", 'od"d', "é"]))
tids = st.one_of(st.none(), st.sampled_from(["t-1", *ODD_TEXT]))


def expected_segments(batch_entries: list[Entry]) -> Counter[str]:
    segments: Counter[str] = Counter()
    for e in batch_entries:
        segments[e.encoding] += e.segments
    return segments


@settings(max_examples=120, deadline=None)
@given(
    st.lists(entries, min_size=1, max_size=12),
    st.data(),
    statuses,
    st.integers(1, 9),
    tids,
)
def test_accepted_is_orjson_of_each_result(
    batch_entries: list[Entry], data: st.DataObject, status: str, attempts: int, tid: Any
) -> None:
    message_ids = data.draw(
        st.lists(
            st.one_of(ids, st.none()), min_size=len(batch_entries), max_size=len(batch_entries)
        )
    )
    run = Run()
    run.outputs.accepted(
        batch_of(batch_entries),
        message_ids,
        status=status,
        attempts=attempts,
        transaction_id=tid,
        started=1.0,
    )
    want = []
    for e, message_id in zip(batch_entries, message_ids, strict=True):
        if message_id is None:
            result = {
                "line": e.line,
                "to": e.to,
                "status": Status.INVALID_NUMBER,
                "attempts": attempts,
                "transactionId": tid,
                "error": "the gateway listed the number as invalid",
            }
            if e.ref is not None:
                result["ref"] = e.ref
            want.append(orjson.dumps(result, option=NL))
        else:
            want.append(accepted_line(e, status, message_id, attempts, tid))
    assert run.lines() == want
    billed = [e for e, i in zip(batch_entries, message_ids, strict=True) if i is not None]
    assert run.summary.statuses[status] == len(billed) or status == Status.INVALID_NUMBER
    if status in ACCEPTED:
        assert run.summary.segments == expected_segments(billed)
        if billed:
            stats = run.summary.codes["12345"]
            assert (stats.messages, stats.segments) == (
                len(billed),
                sum(e.segments for e in billed),
            )


@settings(max_examples=120, deadline=None)
@given(st.lists(plain_entries, min_size=1, max_size=40), statuses, st.integers(1, 9), tids)
def test_accepted_plain_batches(
    batch_entries: list[Entry], status: str, attempts: int, tid: Any
) -> None:
    """The usual batch (every line an id, nothing to escape): the template path."""
    message_ids = [f"{i:08x}" for i in range(len(batch_entries))]
    run = Run()
    run.outputs.accepted(
        batch_of(batch_entries),
        list(message_ids),
        status=status,
        attempts=attempts,
        transaction_id=tid,
        started=1.0,
    )
    want = [
        accepted_line(e, status, i, attempts, tid)
        for e, i in zip(batch_entries, message_ids, strict=True)
    ]
    assert run.lines() == want
    assert run.summary.statuses == Counter({status: len(batch_entries)})
    assert run.summary.by_code == Counter({(status, "12345"): len(batch_entries)})
    if status in ACCEPTED:
        assert run.summary.segments == expected_segments(batch_entries)
        assert list(run.summary.segments) == list(expected_segments(batch_entries))
    else:
        assert not run.summary.segments


@settings(max_examples=120, deadline=None)
@given(
    st.lists(entries, min_size=1, max_size=12),
    st.sampled_from([Status.FAILED, Status.AMBIGUOUS, Status.CANCELLED, Status.REJECTD]),
    st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=20)),
    st.integers(0, 9),
    st.booleans(),
)
def test_unsent_is_orjson_of_each_result(
    batch_entries: list[Entry], status: Status, error: str, attempts: int, invalid: bool
) -> None:
    run = Run()
    run.outputs.unsent(batch_of(batch_entries), status, error, attempts=attempts, invalid=invalid)
    assert run.lines() == [unsent_line(e, status, error, attempts) for e in batch_entries]
    invalid_lines = [
        orjson.dumps({"line": e.line, "to": e.to, "reason": error, "source": "gateway"}, option=NL)
        for e in batch_entries
    ]
    assert run.lines("invalid") == (invalid_lines if invalid else [])
    assert run.summary.statuses == Counter({status: len(batch_entries)})
    if status == Status.AMBIGUOUS:
        assert run.summary.ambiguous_segments == sum(e.segments for e in batch_entries)


@settings(max_examples=120, deadline=None)
@given(st.lists(entries, min_size=1, max_size=12))
def test_dry_run_is_orjson_of_each_result(batch_entries: list[Entry]) -> None:
    run = Run()
    run.outputs.dry_run(batch_of(batch_entries))
    want = [dry_run_line(e) for e in batch_entries]
    assert run.lines() == want
    assert run.summary.segments == expected_segments(batch_entries)


def local_result(
    line: Any,
    to: Any,
    status: Any,
    error: Any,
    *,
    ref: Any = None,
    segments: Any = None,
    encoding: Any = None,
    first: Any = None,
    replaced: Any = 0,
) -> bytes:
    """`Outputs.local`'s specification: this dict, as orjson writes it."""
    result: dict[str, Any] = {"line": line, "to": to, "status": status}
    if segments is not None:
        result["segments"] = segments
        result["encoding"] = encoding
    if replaced:
        result["replaced"] = replaced
    if first is not None:
        result["first"] = first
    result["error"] = error
    if ref is not None:
        result["ref"] = ref
    return orjson.dumps(result, option=NL)


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(st.integers(0, 2**64 - 1), st.booleans()),
    st.one_of(st.none(), numbers),
    st.sampled_from(list(Status)),
    st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=20)),
    refs,
    st.one_of(st.none(), st.integers(0, 400), st.booleans()),
    st.sampled_from([None, Encoding.GSM7, Encoding.UCS2]),
    st.one_of(st.none(), st.integers(0, 2**64 - 1), st.booleans()),
    st.one_of(st.sampled_from([0, 0, 3]), st.booleans()),
    st.booleans(),
)
def test_local_is_orjson_of_its_dict(
    line: Any,
    to: str | None,
    status: Status,
    error: str,
    ref: Any,
    segments: Any,
    encoding: Any,
    first: Any,
    replaced: Any,
    invalid: bool,
) -> None:
    """Every status, odd refs, numbers and errors; a bool where an int goes (never from
    the pipeline) still writes what orjson writes."""
    run = Run()
    for _ in range(2):  # the second time from the caches of statuses and errors
        run.outputs.local(
            line,
            to,
            status,
            error,
            ref=ref,
            segments=segments,
            encoding=encoding,
            invalid=invalid,
            first=first,
            replaced=replaced,
        )
    want = local_result(
        line,
        to,
        status,
        error,
        ref=ref,
        segments=segments,
        encoding=encoding,
        first=first,
        replaced=replaced,
    )
    assert run.lines() == [want, want]
    invalid_line = orjson.dumps(
        {"line": line, "to": to, "reason": error, "source": "client"}, option=NL
    )
    assert run.lines("invalid") == ([invalid_line] * 2 if invalid else [])
    assert run.summary.statuses == Counter({status: 2})


@pytest.mark.parametrize("ref", [BigInt("1" * 30), object()], ids=["BigInt", "object"])
def test_local_with_a_ref_orjson_refuses_raises_as_orjson_does(ref: Any) -> None:
    run = Run()
    with pytest.raises(TypeError):
        run.outputs.local(7, "+1555", Status.REJECTED, "bad", ref=ref)


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(st.integers(0, 2**64 - 1), st.booleans()),
    st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=20)),
    st.text(max_size=20),
)
def test_rejected_is_orjson_of_its_dicts(line: Any, reason: str, excerpt: str) -> None:
    run = Run()
    run.outputs.rejected(Rejected(line=line, reason=reason, excerpt=excerpt))
    assert run.lines() == [
        orjson.dumps({"line": line, "status": Status.REJECTED, "error": reason}, option=NL)
    ]
    assert run.lines("rejects") == [
        orjson.dumps({"line": line, "reason": reason, "excerpt": excerpt}, option=NL)
    ]
    assert run.summary.statuses == Counter({Status.REJECTED: 1})


def test_a_big_batch_of_mixed_encodings_refs_and_replacements() -> None:
    """A thousand lines, as the sender gives them: the template path, line for line."""
    batch_entries = [
        Entry(
            line,
            f"+1555{line:07d}",
            ["p"],
            None if line % 7 else f'crm "{line}"',
            1 + line % 3,
            Encoding.UCS2 if line % 5 == 0 else Encoding.GSM7,
            None,
            2 if line % 11 == 0 else 0,
        )
        for line in range(1, 1001)
    ]
    message_ids = [f"id{line}" for line in range(1000)]
    run = Run()
    run.outputs.accepted(
        batch_of(batch_entries),
        list(message_ids),
        status="QUEUE",
        attempts=2,
        transaction_id="t",
        started=1.0,
    )
    assert run.lines() == [
        accepted_line(e, "QUEUE", i, 2, "t")
        for e, i in zip(batch_entries, message_ids, strict=True)
    ]
    assert run.summary.segments == expected_segments(batch_entries)


def test_big_unsent_and_dry_run_batches_with_refs_and_replacements() -> None:
    """The template path of `unsent` and `dry_run` (plain numbers), with lines that have
    replacements but no ref, a ref but no replacements, both, and neither."""
    batch_entries = [
        Entry(
            line,
            f"+1555{line:07d}",
            ["p"],
            None if line % 7 else {"crm": f'"{line}"', "n": [line, None]},
            1 + line % 3,
            Encoding.UCS2 if line % 5 == 0 else Encoding.GSM7,
            None,
            2 if line % 11 == 0 else 0,
        )
        for line in range(1, 1001)
    ]
    run = Run()
    run.outputs.unsent(batch_of(batch_entries), Status.AMBIGUOUS, 'may "have" sent', attempts=3)
    assert run.lines() == [
        unsent_line(e, Status.AMBIGUOUS, 'may "have" sent', 3) for e in batch_entries
    ]
    dry = Run()
    dry.outputs.dry_run(batch_of(batch_entries))
    assert dry.lines() == [dry_run_line(e) for e in batch_entries]
    assert dry.summary.segments == expected_segments(batch_entries)
