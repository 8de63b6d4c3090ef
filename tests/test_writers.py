"""Result lines: the fast text-built lines are exactly orjson's bytes for the result dict,
and the summary counts what was written."""

from __future__ import annotations

import io
import math
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.batcher import Batch, Entry, Group
from dispatcher.models import Encoding, Status
from dispatcher.renderer import compile_template
from dispatcher.summary import Summary
from dispatcher.writers import NdjsonSink, Outputs


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
        else:
            result = {
                "line": entry.line,
                "to": entry.to,
                "status": status,
                "id": message_id,
                "segments": entry.segments,
                "encoding": entry.encoding,
                "attempts": attempts,
                "transactionId": transaction_id,
            }
        if entry.ref is not None:
            result["ref"] = entry.ref
        out.append(orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE))
    return b"".join(out)


def write(
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
    written, summary = write(lines, ids, status, attempts, transaction_id)
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
        assert summary.codes["12345"].messages == len(accepted)
        assert summary.codes["12345"].segments == sum(e.segments for e in accepted)


def test_usual_batch() -> None:
    entries = [
        Entry(1, "+525500000001", ["Ann"], None, 1, Encoding.GSM7, None),
        Entry(3, "+525500000002", ["Zoë"], {"crm": "ñ-8812", "n": 10.65}, 2, Encoding.UCS2, None),
    ]
    ids = ["f8f3f9090000000007dd0000", "f8f3f9090000000007dd0001"]
    written, summary = write(entries, ids, "QUEUE", 1, "3147f60d-da7c-43e9")  # type: ignore[arg-type]
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
