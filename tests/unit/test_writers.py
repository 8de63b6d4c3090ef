"""Outputs: the exact JSON of every kind of result line, the invalid-number and reject
files, and the summary counters they feed. NdjsonSink: buffering, files, errors."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import OutputError
from dispatcher.models import Batch, Encoding, Entry, Group, Rejected, Status
from dispatcher.renderer import compile_template
from dispatcher.summary import Summary
from dispatcher.writers import FLUSH_BYTES, NdjsonSink, Outputs
from tests.support.native import twins
from tests.support.result_lines import accepted_line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batch(*entries: Entry, sender: str = "12345") -> Batch:
    group = Group(
        sender,
        sender=sender,
        template=compile_template("Hi {0}"),
        options={"from": sender},
        capacity=math.inf,
    )
    b = Batch(group, 0.0)
    b.entries = list(entries)
    b.units = len(entries)
    return b


def entry(
    line: int, to: str, *, ref: Any = None, segments: int = 1, encoding: str = "GSM7"
) -> Entry:
    return Entry(line, to, ["x"], ref, segments, encoding, None)


class Files:
    def __init__(self, directory: Path, clock: Clock) -> None:
        self.directory = directory
        self.summary = Summary(clock=clock)
        self.outputs = Outputs(
            NdjsonSink.open(str(directory / "results.ndjson")),
            self.summary,
            invalid=NdjsonSink.open(str(directory / "invalid.ndjson")),
            rejects=NdjsonSink.open(str(directory / "rejects.ndjson")),
        )

    def close(self) -> None:
        self.outputs.close()

    def lines(self, name: str) -> list[bytes]:
        return (self.directory / name).read_bytes().splitlines(keepends=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(tmp_path: Path, clock: Clock) -> Files:
    return Files(tmp_path, clock)


def test_rejected_line(files: Files) -> None:
    files.outputs.rejected(Rejected(line=7, reason="invalid JSON: x", excerpt="{oops"))
    files.close()
    assert files.lines("results.ndjson") == [
        b'{"line":7,"status":"REJECTED","error":"invalid JSON: x"}\n'
    ]
    assert files.lines("rejects.ndjson") == [
        b'{"line":7,"reason":"invalid JSON: x","excerpt":"{oops"}\n'
    ]
    assert files.lines("invalid.ndjson") == []
    assert files.summary.statuses == {"REJECTED": 1}


def test_local_results(files: Files) -> None:
    out = files.outputs
    out.local(1, "12ab", Status.INVALID_NUMBER, "has letters", ref={"a": 1}, invalid=True)
    out.local(2, "+525500000002", Status.REJECTED, "template needs param {1}")
    out.local(
        3,
        "+525500000003",
        Status.SEGMENTS_EXCEEDED,
        "too long",
        ref=0,
        segments=11,
        encoding="GSM7",
    )
    files.close()
    assert files.lines("results.ndjson") == [
        b'{"line":1,"to":"12ab","status":"INVALID_NUMBER","error":"has letters","ref":{"a":1}}\n',
        b'{"line":2,"to":"+525500000002","status":"REJECTED","error":"template needs param {1}"}\n',
        b'{"line":3,"to":"+525500000003","status":"SEGMENTS_EXCEEDED","segments":11,'
        b'"encoding":"GSM7","error":"too long","ref":0}\n',
    ]
    assert files.lines("invalid.ndjson") == [
        b'{"line":1,"to":"12ab","reason":"has letters","source":"client"}\n'
    ]
    assert files.lines("rejects.ndjson") == []  # rejects are malformed lines only
    assert files.summary.statuses == {
        "INVALID_NUMBER": 1,
        "REJECTED": 1,
        "SEGMENTS_EXCEEDED": 1,
    }
    assert sum(files.summary.segments.values()) == 0  # nothing billable


_REFS = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 10**9), st.one_of(st.none(), st.text(max_size=16)), _REFS)),
    st.sampled_from(list(Status)),
    st.text(max_size=40),
)
def test_local_many_is_local_line_by_line(
    rows: list[tuple[int, str | None, Any]], status: Status, error: str
) -> None:
    """Many lines of one status and error at once: the bytes and the counts of `local`
    called for each in turn (numbers, refs and errors of any kind, quotes and
    non-ASCII included)."""
    outputs = []
    for many in (False, True):
        target = io.BytesIO()
        summary = Summary()
        out = Outputs(NdjsonSink(target, "results", owned=False), summary)
        if many:
            lines, tos, refs = (
                (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [])
            )
            out.local_many(status, error, lines, tos, refs)
        else:
            for line, to, ref in rows:
                out.local(line, to, status, error, ref=ref)
        out.results.flush()
        outputs.append((target.getvalue(), dict(summary.statuses)))
    assert outputs[0] == outputs[1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 10**9), st.text(max_size=16), st.text(max_size=40), _REFS))
)
def test_invalid_many_is_local_line_by_line(rows: list[tuple[int, str, str, Any]]) -> None:
    """A chunk's invalid numbers at once: the results and the invalid file's bytes, and
    the counts, of `local` with ``invalid=True`` for each in turn."""
    outputs = []
    for many in (False, True):
        results, invalid = io.BytesIO(), io.BytesIO()
        summary = Summary()
        out = Outputs(
            NdjsonSink(results, "results", owned=False),
            summary,
            invalid=NdjsonSink(invalid, "invalid", owned=False),
        )
        if many:
            lines, tos, reasons, refs = (
                (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
            )
            out.invalid_many(lines, tos, reasons, refs)
        else:
            for line, to, reason, ref in rows:
                out.local(line, to, Status.INVALID_NUMBER, reason, ref=ref, invalid=True)
        out.results.flush()
        assert out.invalid is not None
        out.invalid.flush()
        outputs.append((results.getvalue(), invalid.getvalue(), dict(summary.statuses)))
    assert outputs[0] == outputs[1]


def test_accepted_batch_with_a_gateway_refusal(files: Files, clock: Clock) -> None:
    b = batch(
        entry(4, "+525500000001", ref="r4", segments=2),
        entry(5, "+525599000000", ref="r5"),
        entry(6, "+525500000001", segments=1, encoding="UCS2"),
    )
    clock.now = 101.5
    files.outputs.accepted(
        b, ["id-a", None, "id-b"], status="QUEUE", attempts=2, transaction_id="tx", started=100.5
    )
    files.close()
    assert files.lines("results.ndjson") == [
        b'{"line":4,"to":"+525500000001","status":"QUEUE","id":"id-a","segments":2,'
        b'"encoding":"GSM7","attempts":2,"transactionId":"tx","ref":"r4"}\n',
        b'{"line":5,"to":"+525599000000","status":"INVALID_NUMBER","attempts":2,'
        b'"transactionId":"tx","error":"the gateway listed the number as invalid","ref":"r5"}\n',
        b'{"line":6,"to":"+525500000001","status":"QUEUE","id":"id-b","segments":1,'
        b'"encoding":"UCS2","attempts":2,"transactionId":"tx"}\n',
    ]
    assert files.lines("invalid.ndjson") == [
        b'{"line":5,"to":"+525599000000","reason":"the gateway listed the number as invalid",'
        b'"source":"gateway"}\n'
    ]
    s = files.summary
    assert s.statuses == {"QUEUE": 2, "INVALID_NUMBER": 1}
    assert s.segments == {"GSM7": 2, "UCS2": 1}
    stats = s.codes["12345"]
    assert (stats.messages, stats.segments, stats.first, stats.last) == (2, 3, 100.5, 101.5)


@pytest.mark.parametrize(
    "ids",
    [["id-a", "id-b", "id-c"], ["id-a", None, "id-c"], ["id-a", 'id-"b"', "id-c"]],
    ids=["usual", "a refusal", "an id to escape"],
)
def test_a_packed_batch_gets_the_unpacked_batchs_results(
    tmp_path: Path, clock: Clock, ids: list[str | None]
) -> None:
    """`Outputs.accepted` of a batch packed as it closed (`api.pack`) writes what it
    writes for the batch unpacked: its own C path for the usual answer, the entries
    rebuilt for the rest."""
    from dispatcher import api

    got = []
    for packed in (False, True):
        (tmp_path / str(packed)).mkdir()
        files = Files(tmp_path / str(packed), clock)
        b = batch(
            entry(4, "+525500000001", ref="r4", segments=2, encoding=Encoding.GSM7),
            entry(5, "+525599000000", ref={"k": [1.5]}, encoding=Encoding.UCS2),
            entry(6, "+525500000001", segments=3, encoding=Encoding.GSM7),
        )
        b.close("job")
        if packed:
            api.pack(b)
            assert b.packed is not None
        files.outputs.accepted(
            b, list(ids), status="QUEUE", attempts=2, transaction_id="tx", started=100.5
        )
        files.close()
        s = files.summary
        got.append(
            (
                files.lines("results.ndjson"),
                files.lines("invalid.ndjson"),
                s.statuses,
                list(s.segments.items()),
                s.codes["12345"].segments,
            )
        )
    assert got[0] == got[1]
    assert len(got[0][0]) == 3


def test_unsent_batch(files: Files) -> None:
    b = batch(entry(8, "+525500000008", ref=[1]), entry(9, "+525500000009", segments=3))
    files.outputs.unsent(b, Status.AMBIGUOUS, "may have been sent", attempts=3)
    b2 = batch(entry(10, "+525599000010"))
    files.outputs.unsent(b2, Status.INVALID_NUMBER, "refused", attempts=1, invalid=True)
    files.close()
    assert files.lines("results.ndjson") == [
        b'{"line":8,"to":"+525500000008","status":"AMBIGUOUS","segments":1,"encoding":"GSM7",'
        b'"attempts":3,"error":"may have been sent","ref":[1]}\n',
        b'{"line":9,"to":"+525500000009","status":"AMBIGUOUS","segments":3,"encoding":"GSM7",'
        b'"attempts":3,"error":"may have been sent"}\n',
        b'{"line":10,"to":"+525599000010","status":"INVALID_NUMBER","segments":1,'
        b'"encoding":"GSM7","attempts":1,"error":"refused"}\n',
    ]
    assert files.lines("invalid.ndjson") == [
        b'{"line":10,"to":"+525599000010","reason":"refused","source":"gateway"}\n'
    ]
    s = files.summary
    assert s.statuses == {"AMBIGUOUS": 2, "INVALID_NUMBER": 1}
    assert s.ambiguous_segments == 4
    assert sum(s.segments.values()) == 0
    assert s.codes == {}


def test_dry_run_lines(files: Files) -> None:
    b = batch(entry(1, "+525500000001", ref="x", segments=2), entry(2, "+525500000002"))
    files.outputs.dry_run(b)
    files.close()
    assert files.lines("results.ndjson") == [
        b'{"line":1,"to":"+525500000001","status":"DRY_RUN","segments":2,"encoding":"GSM7",'
        b'"ref":"x"}\n',
        b'{"line":2,"to":"+525500000002","status":"DRY_RUN","segments":1,"encoding":"GSM7"}\n',
    ]
    assert files.summary.statuses == {"DRY_RUN": 2}
    assert files.summary.segments == {"GSM7": 3}


def test_nothing_reaches_the_file_before_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"
    sink = NdjsonSink.open(str(path))
    sink.write(b'{"line":1}\n')
    sink.write_many([b'{"line":2}\n', b'{"line":3}\n'])
    assert path.read_bytes() == b""
    sink.flush()
    assert path.read_bytes() == b'{"line":1}\n{"line":2}\n{"line":3}\n'
    big = b"x" * (FLUSH_BYTES // 2) + b"\n"
    sink.write(big)
    sink.write(big)  # past FLUSH_BYTES: written without waiting for a flush
    assert path.stat().st_size == 33 + 2 * len(big)
    sink.close()


def test_append_keeps_earlier_results(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"
    path.write_bytes(b'{"line":1}\n')
    sink = NdjsonSink.open(str(path), append=True)
    sink.write(b'{"line":2}\n')
    sink.close()
    assert path.read_bytes() == b'{"line":1}\n{"line":2}\n'


def test_an_unwritable_path_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        NdjsonSink.open(str(tmp_path / "no" / "such" / "dir.ndjson"))


FULL = Path("/dev/full")


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full")
def test_a_full_disk_is_an_output_error_at_flush_and_at_close() -> None:
    sink = NdjsonSink.open(str(FULL))
    sink.write(b'{"line":1}\n')
    with pytest.raises(OutputError, match="/dev/full"):
        sink.flush()
    with pytest.raises(OutputError, match="/dev/full"):
        sink.close()


# --- the usual batch's fast path: the very bytes of orjson's result dict -------------


def reference(
    entries: list[Entry],
    ids: list[str | None],
    status: str,
    attempts: int,
    transaction_id: str | None,
) -> bytes:
    """One orjson dict per line: what `Outputs.accepted` writes, spelled out."""
    out = []
    for entry, message_id in zip(entries, ids, strict=True):
        if message_id is None:
            result: dict[str, Any] = {
                "line": entry.line,
                "to": entry.to,
                "status": Status.INVALID_NUMBER,
                "attempts": attempts,
                "transactionId": transaction_id,
                "error": "the gateway listed the number as invalid",
            }
            if entry.ref is not None:
                result["ref"] = entry.ref
            out.append(orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE))
        else:
            out.append(accepted_line(entry, status, message_id, attempts, transaction_id))
    return b"".join(out)


def write_accepted(
    entries: list[Entry],
    ids: list[str | None],
    status: str,
    attempts: int,
    transaction_id: str | None,
) -> tuple[bytes, Summary]:
    target = io.BytesIO()
    outputs = Outputs(NdjsonSink(target, "test", owned=False), Summary())
    group = Group("g", sender="12345", template=compile_template("Hi {0}"), options={}, capacity=1)
    batch = Batch(group, 0.0)
    batch.entries = entries
    outputs.accepted(
        batch, ids, status=status, attempts=attempts, transaction_id=transaction_id, started=0.0
    )
    outputs.flush()
    return target.getvalue(), outputs.summary


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text()
    | st.floats(allow_nan=False).filter(math.isfinite)
)
refs = st.none() | st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
numbers = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True) | st.text(max_size=16)
encodings = st.sampled_from([Encoding.GSM7, Encoding.UCS2, "GSM7", "UCS2"])
entries = st.builds(
    Entry,
    line=st.integers(1, 10**9),
    to=numbers,
    params=st.just([]),
    ref=refs,
    segments=st.integers(0, 10),
    encoding=encodings,
    text=st.none(),
    replaced=st.integers(0, 3),
)


@settings(max_examples=300)
@given(
    batch=st.lists(st.tuples(entries, st.none() | st.text(max_size=30)), min_size=1, max_size=8),
    status=st.sampled_from(["QUEUE", "SENT", 'odd "status"', "ENROUTE"]),
    attempts=st.integers(1, 9),
    transaction_id=st.none() | st.text(max_size=40),
)
def test_result_lines_are_orjson_bytes(
    batch: list[tuple[Entry, str | None]], status: str, attempts: int, transaction_id: str | None
) -> None:
    lines = [e for e, _ in batch]
    ids = [i for _, i in batch]
    written, summary = write_accepted(lines, ids, status, attempts, transaction_id)
    assert written == reference(lines, ids, status, attempts, transaction_id)
    accepted = [e for e, i in batch if i is not None]
    assert summary.statuses[status] == len(accepted)
    assert summary.statuses[Status.INVALID_NUMBER] == len(batch) - len(accepted)
    if status != 'odd "status"':
        expected: dict[str, int] = {}
        for e in accepted:
            expected[str(e.encoding)] = expected.get(str(e.encoding), 0) + e.segments
        assert {str(k): v for k, v in summary.segments.items() if v} == {
            k: v for k, v in expected.items() if v
        }
        code = summary.codes.get("12345")  # none when nothing was accepted
        assert (code.messages if code else 0) == len(accepted)
        assert (code.segments if code else 0) == sum(e.segments for e in accepted)


_VERBATIM_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=20
)
usual_entries = st.builds(
    Entry,
    line=st.integers(-(2**63), 2**63 - 1) | st.integers(1, 10**9),
    to=st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True) | _VERBATIM_TEXT,
    params=st.just([]),
    ref=refs,
    segments=st.integers(0, 10) | st.integers(0, 2**64 - 1),
    encoding=st.sampled_from([Encoding.GSM7, Encoding.UCS2]) | encodings,
    text=st.none(),
    replaced=st.integers(0, 3),
    saved=st.integers(0, 3),
)


@settings(max_examples=300)
@given(
    batch=st.lists(st.tuples(usual_entries, _VERBATIM_TEXT), min_size=1, max_size=12),
    status=st.sampled_from(["QUEUE", "SENT"]),
    transaction_id=st.none() | st.text(max_size=40),
)
def test_the_usual_batch_in_c_and_in_python_alike(
    batch: list[tuple[Entry, str]], status: str, transaction_id: str | None
) -> None:
    # Every id and number verbatim (the fast path's batch): the C part's lines (or its
    # refusal, for an int beyond 64 bits or an encoding given as a plain str) and the
    # Python loop's are orjson's bytes, with the same summary.
    lines = [e for e, _ in batch]
    ids: list[str | None] = [i for _, i in batch]
    runs = []
    for numpy_twins in (False, True):
        with twins(numpy_twins):
            runs.append(write_accepted(lines, ids, status, 2, transaction_id))
    (c_bytes, c_summary), (py_bytes, py_summary) = runs
    assert c_bytes == py_bytes == reference(lines, ids, status, 2, transaction_id)
    c_document, py_document = c_summary.as_dict(), py_summary.as_dict()
    for document in (c_document, py_document):
        document.pop("elapsed_s"), document.pop("recipients_per_s")
    assert c_document == py_document
    assert (
        c_summary.segments_saved
        == py_summary.segments_saved
        == sum(e.saved for e in lines if e.replaced)
    )


def test_usual_batch_line_by_line() -> None:
    entries = [
        Entry(1, "+525500000001", ["Ann"], None, 1, Encoding.GSM7, None),
        Entry(3, "+525500000002", ["Zoë"], {"crm": "ñ-8812", "n": 10.65}, 2, Encoding.UCS2, None),
    ]
    ids = ["f8f3f9090000000007dd0000", "f8f3f9090000000007dd0001"]
    written, summary = write_accepted(entries, ids, "QUEUE", 1, "3147f60d-da7c-43e9")  # type: ignore[arg-type]
    assert written == reference(entries, ids, "QUEUE", 1, "3147f60d-da7c-43e9")  # type: ignore[arg-type]
    assert (
        written.splitlines()[1]
        == (
            '{"line":3,"to":"+525500000002","status":"QUEUE","id":"f8f3f9090000000007dd0001",'
            '"segments":2,"encoding":"UCS2","attempts":1,"transactionId":"3147f60d-da7c-43e9",'
            '"ref":{"crm":"ñ-8812","n":10.65}}'
        ).encode()
    )
    assert summary.segments == {"GSM7": 1, "UCS2": 2}


def test_smart_encoding_savings_count_where_the_gateway_accepts_the_message(
    files: Files,
) -> None:
    """`segments_saved` and `smart_encoded` count the accepted messages only (and a dry
    run's): not one the gateway refused, nor one that was never sent."""

    def smart(line: int, to: str, saved: int) -> Entry:
        return entry(line, to)._replace(replaced=2, saved=saved)

    accepted = batch(smart(1, "+525500000001", 1), entry(2, "+525500000002"))
    files.outputs.accepted(
        accepted, ["id-1", "id-2"], status="QUEUE", attempts=1, transaction_id="tx", started=0
    )
    refused = batch(smart(3, "+525599000003", 1), smart(4, "+525500000004", 2))
    files.outputs.accepted(
        refused, [None, "id-4"], status="QUEUE", attempts=1, transaction_id="tx", started=0
    )
    files.outputs.unsent(
        batch(smart(5, "+525500000005", 1)), Status.CANCELLED, "cancelled", attempts=0
    )
    assert (files.summary.smart_encoded, files.summary.segments_saved) == (2, 3)
    files.outputs.dry_run(batch(smart(6, "+525500000006", 4), entry(7, "+525500000007")))
    files.close()
    assert (files.summary.smart_encoded, files.summary.segments_saved) == (3, 7)
