"""Preparer: recipients → batch entries or local results, exactly one outcome each.

Chunks are fed into a real `Batcher` and a sink that records every local result, the
way the pipeline wires them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import prepare
from dispatcher.batcher import Batcher
from dispatcher.config import Config
from dispatcher.errors import RenderError
from dispatcher.models import RECIPIENT_FIELDS, Batch, BigInt, Recipient, Rejected, Status
from dispatcher.numbers import normalize_many, normalize_or_none
from dispatcher.prepare import Preparer
from tests.support.native import FLOATS, INTS, built, twins


@dataclass
class Local:
    line: int
    to: str | None
    status: Status
    error: str
    ref: Any
    segments: int | None
    encoding: str | None
    invalid: bool


class Sink:
    """Records what the preparer decides without the gateway."""

    def __init__(self) -> None:
        self.rejected_items: list[Rejected] = []
        self.locals: list[Local] = []
        self.details: list[dict[str, Any]] = []

    def rejected(self, item: Rejected) -> None:
        self.rejected_items.append(item)

    def local(
        self,
        line: int,
        to: str | None,
        status: Status,
        error: str,
        *,
        ref: Any = None,
        segments: int | None = None,
        encoding: str | None = None,
        invalid: bool = False,
        first: int | None = None,
        replaced: int = 0,
    ) -> None:
        self.locals.append(Local(line, to, status, error, ref, segments, encoding, invalid))
        self.details.append({"first": first, "replaced": replaced})

    def local_many(
        self, status: Status, error: str, lines: list[int], tos: list[str | None], refs: list[Any]
    ) -> None:
        for line, to, ref in zip(lines, tos, refs, strict=True):
            self.local(line, to, status, error, ref=ref)

    def invalid_many(
        self, lines: list[int], tos: list[str], reasons: list[str], refs: list[Any]
    ) -> None:
        for line, to, reason, ref in zip(lines, tos, reasons, refs, strict=True):
            self.local(line, to, Status.INVALID_NUMBER, reason, ref=ref, invalid=True)


def make(
    *, capacity: float = math.inf, batch_size: int = 1000, **changes: Any
) -> tuple[Preparer, Batcher, Sink, list[str]]:
    options: dict[str, Any] = {"sender": "12345", "text": "Hi {0}", "batch_size": batch_size}
    options.update(changes)
    config = Config(**options)
    asked: list[str] = []

    def capacity_of(code: str) -> float:
        asked.append(code)
        return capacity

    batcher = Batcher(
        batch_size=batch_size,
        linger=1.0,
        max_buffered=10_000,
        count_segments=config.rate_unit == "segments",
        clock=lambda: 0.0,
        job="job",
    )
    return Preparer(config, capacity=capacity_of), batcher, Sink(), asked


def drained(batcher: Batcher) -> list[Batch]:
    batcher.drain()
    return batcher.take()


def r(
    line: int, to: str = "+525500000001", params: list[Any] | None = None, **kw: Any
) -> Recipient:
    return Recipient(line=line, to=to, params=["x"] if params is None else params, **kw)


def test_a_valid_recipient_becomes_an_entry_with_its_cost() -> None:
    preparer, batcher, sink, _ = make()
    preparer.feed(
        [
            r(3, "52 (55) 0000-0001", ["Zoé"], ref={"crm": 1}),
            r(4, params=[7]),
            r(5, params=["Zoë"]),
        ],
        batcher,
        sink,
    )
    [batch] = drained(batcher)
    first, second, third = batch.entries
    assert (first.line, first.to, first.params, first.ref) == (
        3,
        "+525500000001",
        ["Zoé"],
        {"crm": 1},
    )
    assert (first.segments, first.encoding) == (1, "GSM7")  # é is in the GSM-7 table
    assert (second.line, second.params, second.ref) == (4, [7], None)
    assert (third.segments, third.encoding) == (1, "UCS2")  # ë is not
    assert first.text is None  # the batch endpoint renders server-side
    assert sink.locals == []
    assert sink.rejected_items == []
    assert batch.group.sender == "12345"
    assert batch.group.template.text == "Hi {0}"
    assert batch.group.options == {"from": "12345", "type": "MT"}


def test_local_outcomes_carry_line_number_ref_and_reason() -> None:
    preparer, batcher, sink, _ = make(text="Hi {0} {1}", max_message_segments=2)
    bad_line = Rejected(line=2, reason="invalid JSON", excerpt="{oops")
    preparer.feed(
        [
            r(1, "12ab", ["a", "b"], ref="r1"),
            bad_line,
            r(3, "+525500000003", ["only one"], ref=[3]),
            r(4, "+525500000004", ["x" * 400, "y"]),
            r(5, "+525500000005", ["", ""], text="{0}{1}"),
            r(6, "+525500000006", ["ok", "fine"]),
        ],
        batcher,
        sink,
    )
    assert sink.rejected_items == [bad_line]
    by_line = {local.line: local for local in sink.locals}
    assert set(by_line) == {1, 3, 4, 5}
    assert by_line[1].status == Status.INVALID_NUMBER
    assert (by_line[1].to, by_line[1].ref, by_line[1].invalid) == ("12ab", "r1", True)
    assert by_line[3].status == Status.REJECTED
    assert (by_line[3].to, by_line[3].ref, by_line[3].invalid) == ("+525500000003", [3], False)
    assert "{1}" in by_line[3].error
    assert by_line[4].status == Status.SEGMENTS_EXCEEDED
    assert (by_line[4].segments, by_line[4].encoding) == (3, "GSM7")
    assert by_line[5].status == Status.REJECTED
    assert "empty" in by_line[5].error
    assert all(local.error for local in sink.locals)
    [batch] = drained(batcher)
    assert batch.lines == [6]


@pytest.mark.parametrize(
    ("changes", "keeps_text"),
    [
        ({}, False),
        ({"endpoint": "single"}, True),
        ({"batch_size": 1}, True),
        ({"max_batch": 1}, True),
    ],
)
def test_rendered_text_is_kept_when_the_single_endpoint_will_send_it(
    changes: dict[str, Any], keeps_text: bool
) -> None:
    preparer, batcher, sink, _ = make(**changes)
    config = Config(sender="12345", text="Hi {0}", **changes)
    assert config.single == keeps_text  # what the pipeline will do
    assert (config.request_size == 1) == keeps_text
    preparer.feed([r(1, params=["Ann"])], batcher, sink)
    [batch] = drained(batcher)
    assert batch.entries[0].text == ("Hi Ann" if keeps_text else None)


def test_overrides_make_groups_and_options_follow_the_gateway_spelling() -> None:
    preparer, batcher, sink, asked = make(
        request_dr=True,
        callbacks="http://127.0.0.1:1/dr",
        connection="conn-a",
        email="job@example.com",
        external_id="job-ext",
        client_id="job-client",
    )
    preparer.feed(
        [
            r(1),
            r(2),
            r(3, external_id="line-ext"),
            r(4, sender="ACME"),
            r(5, text="Other {0}"),
            r(6, client_id="line-client", email="line@example.com"),
            r(7, external_id="line-ext"),
        ],
        batcher,
        sink,
    )
    batches = drained(batcher)
    assert sorted(b.lines for b in batches) == [[1, 2], [3, 7], [4], [5], [6]]
    groups = {b.lines[0]: b.group for b in batches}
    base = {
        "type": "MT",
        "requestDR": True,
        "callbacks": "http://127.0.0.1:1/dr",
        "connection": "conn-a",
        "email": "job@example.com",
        "externalId": "job-ext",
        "clientId": "job-client",
    }
    assert groups[1].options == {"from": "12345", **base}
    assert groups[3].options == {"from": "12345", **base, "externalId": "line-ext"}
    assert groups[4].options == {"from": "ACME", **base}
    assert groups[4].sender == "ACME"
    assert groups[5].template.text == "Other {0}"
    assert groups[6].options == {
        "from": "12345",
        **base,
        "clientId": "line-client",
        "email": "line@example.com",
    }
    assert set(asked) == {"12345", "ACME"}  # capacity asked per sender code


def test_capacity_of_the_sender_code_bounds_each_batch() -> None:
    preparer, batcher, sink, _ = make(capacity=2)
    preparer.feed([r(n, f"+5255000000{n:02d}") for n in range(1, 6)], batcher, sink)
    assert [b.lines for b in drained(batcher)] == [[1, 2], [3, 4], [5]]


def test_segment_models_count_differently() -> None:
    text = "x" * 307
    flat, batcher_f, sink_f, _ = make(text="{0}")
    flat.feed([r(1, params=[text])], batcher_f, sink_f)
    gpp, batcher_g, sink_g, _ = make(text="{0}", segment_model="3gpp")
    gpp.feed([r(1, params=[text])], batcher_g, sink_g)
    assert drained(batcher_f)[0].entries[0].segments == 2
    assert drained(batcher_g)[0].entries[0].segments == 3


def test_strict_numbers_refuse_what_only_looks_like_a_number() -> None:
    loose, batcher_l, sink_l, _ = make()
    strict, batcher_s, sink_s, _ = make(strict_numbers=True)
    items = [r(1, "+999123456789"), r(2, "+14155552671")]
    loose.feed(items, batcher_l, sink_l)
    strict.feed(items, batcher_s, sink_s)
    assert [b.lines for b in drained(batcher_l)] == [[1, 2]]
    assert [b.lines for b in drained(batcher_s)] == [[2]]
    assert [(x.line, x.status) for x in sink_s.locals] == [(1, Status.INVALID_NUMBER)]


# --- every item gets exactly one outcome, whatever the mix ---------------------------

NUMBERS = st.one_of(
    st.sampled_from(["+525500000001", "525500000002", "+52 55 0000 0003", "+15005550006"]),
    st.sampled_from(["", "12ab", "+0123456789", "+1234567", "+1234567890123456", "++52"]),
    st.sampled_from(
        ["(+1) 500-555.0006", "\t+15005550006", "1 5+005550006", "+52\u00a055 0000 0004"]
    ),
    st.text(max_size=12),
    st.text(alphabet="0123456789 +-.()\t\n", max_size=18),
)
PARAMS = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
    ),
    max_size=3,
)
#: Params the renderer refuses or that the C part leaves to it (a BigInt, NaN, an
#: integer beyond 64 bits, a float the renderer writes as orjson does).
ODD_PARAMS = st.lists(
    st.one_of(
        st.text(max_size=3),
        st.none(),
        st.floats(),
        st.integers(),
        st.builds(BigInt, st.from_regex(r"-?[1-9][0-9]{20,30}", fullmatch=True)),
    ),
    max_size=3,
)
ITEMS = st.lists(
    st.one_of(
        st.builds(
            lambda to, params, ref, sender, text: (to, params, ref, sender, text),
            NUMBERS,
            st.one_of(PARAMS, PARAMS, ODD_PARAMS),
            st.one_of(st.none(), st.integers(), st.text(max_size=5)),
            st.one_of(st.none(), st.sampled_from(["ACME", "54321"])),
            st.one_of(st.none(), st.sampled_from(["{0}", "{1} and {0}", "", "static", "{2}"])),
        ),
        st.just("rejected"),
    ),
    max_size=40,
)


def chunk_of(items: list[Any]) -> list[Recipient | Rejected]:
    """The recipients (and malformed lines) of the `ITEMS` strategy's items."""
    chunk: list[Recipient | Rejected] = []
    for line, item in enumerate(items, 1):
        if item == "rejected":
            chunk.append(Rejected(line=line, reason="bad", excerpt=""))
        else:
            to, params, ref, sender, text = item
            chunk.append(
                Recipient(line=line, to=to, params=params, ref=ref, sender=sender, text=text)
            )
    return chunk


@settings(max_examples=150, deadline=None)
@given(ITEMS, st.integers(1, 7), st.sampled_from(["messages", "segments"]))
def test_exactly_one_outcome_per_item(items: list[Any], batch_size: int, rate_unit: str) -> None:
    preparer, batcher, sink, _ = make(
        text="Hi {0}",
        batch_size=batch_size,
        rate_unit=rate_unit,
        capacity=5,
        max_message_segments=3,
    )
    chunk = chunk_of(items)
    # Feed in two chunks, as the reader would.
    half = len(chunk) // 2
    preparer.feed(chunk[:half], batcher, sink)
    preparer.feed(chunk[half:], batcher, sink)
    batches = drained(batcher)
    lines = [e.line for b in batches for e in b.entries]
    lines += [x.line for x in sink.rejected_items] + [x.line for x in sink.locals]
    assert sorted(lines) == list(range(1, len(items) + 1))
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        assert all(e.segments <= 3 for e in batch.entries)
        assert batch.units <= 5  # the code's capacity, in messages or segments
        senders = {chunk[e.line - 1].sender or "12345" for e in batch.entries}  # type: ignore[union-attr]
        assert senders == {batch.group.sender}


@settings(max_examples=150, deadline=None)
@given(ITEMS, st.sets(st.integers(0, 39), max_size=10), st.integers(1, 4), st.booleans())
def test_opt_out_and_duplicates_as_a_line_by_line_reference(
    items: list[Any], listed_at: set[int], chunks: int, packed: bool
) -> None:
    # The preparer's chunk-level opt-out look-up and duplicate check (slices between the
    # listed lines, runs of one group, positions of the duplicates) against the rule
    # applied one line at a time: a listed number is SUPPRESSED, then a line with the
    # code, number and text of an earlier message is DUPLICATE of it, else it is sent.
    # ``packed``: the duplicates' packed record from the first line, which takes the
    # entries' keys from the chunk's numbers (`ChunkNumbers`), not the dict of a small job.
    from dispatcher import dedupe

    with pytest.MonkeyPatch.context() as patch:
        if packed:
            patch.setattr(dedupe, "SMALL", 0)
        _opt_out_and_duplicates(items, listed_at, chunks)


def _opt_out_and_duplicates(items: list[Any], listed_at: set[int], chunks: int) -> None:
    from dispatcher.dedupe import Dedupe
    from dispatcher.numbers import normalize_many
    from dispatcher.policy import Duplicates
    from dispatcher.suppress import SuppressionList

    preparer, batcher, sink, _ = make(text="Hi {0}", batch_size=3, max_message_segments=3)
    chunk = chunk_of(items)
    tos = [item.to for item in chunk if isinstance(item, Recipient)]
    listed = {tos[i] for i in listed_at if i < len(tos)}
    preparer._optout = SuppressionList.from_numbers(sorted(listed))
    duplicates = Duplicates(Dedupe("number+text"), texts=True)
    preparer.policies = [duplicates]
    preparer._chunk_hooks = [duplicates.begin_chunk]
    preparer._texts = True
    size = -(-len(chunk) // chunks) or 1
    for start in range(0, len(chunk), size):
        preparer.feed(chunk[start : start + size], batcher, sink)
    sent = {e.line: e for b in drained(batcher) for e in b.entries}
    outcomes = {x.line: x for x in sink.locals}
    assert not sent.keys() & outcomes.keys()  # one outcome a line
    assert len(outcomes) == len(sink.locals)
    listed_numbers = set(normalize_many(sorted(listed))) - {None}
    seen: dict[tuple[str, str, str], int] = {}
    for item in chunk:
        if isinstance(item, Rejected):
            continue
        policy_outcome = item.line in outcomes and outcomes[item.line].status in (
            Status.SUPPRESSED,
            Status.DUPLICATE,
        )
        if item.line not in sent and not policy_outcome:
            continue  # not a candidate message: the reference has nothing to say
        to = normalize_many([item.to])[0]
        if to in listed_numbers:
            assert outcomes[item.line].status is Status.SUPPRESSED
            continue
        entry = sent.get(item.line)
        if entry is None:
            local = outcomes[item.line]
            assert local.status is Status.DUPLICATE
            key = (item.sender or "12345", local.to, text_of(preparer, item))
            assert key in seen
            assert local.error == f"the same message as line {seen[key]}"
            continue
        key = (item.sender or "12345", entry.to, text_of(preparer, item))
        assert key not in seen
        seen[key] = item.line


def text_of(preparer: Preparer, item: Recipient) -> str:
    group = preparer._override(item) if item.sender or item.text else preparer._default
    return group.template.render(item.params)


class _LineByLine(Preparer):
    """The careful path only: every chunk one line at a time."""

    def _columns(self, *args: Any) -> None:
        return None


@settings(max_examples=300, deadline=None)
@given(
    ITEMS,
    st.integers(1, 4),
    st.sampled_from(
        ["Hi {0}", "{1} owes {0}", "static", "{0}", "Olá {0} ✓ {1}", "{0}{1}{2}{3}{4}{5}{6}{7}{8}"]
    ),
    st.sampled_from(["off", "number+text", "number"]),
    st.booleans(),
    st.booleans(),
)
def test_the_column_path_decides_as_the_line_by_line_path(
    items: list[Any], chunks: int, text: str, dedupe: str, single: bool, in_c: bool
) -> None:
    """`Preparer._columns` (plain lines a column at a time, the others put back in
    order) against `_line_by_line`: the same batches in the same order, with the same
    entries, and the same local results, whatever the mix of lines. The column path
    runs in C (`dispatcher.native`: ``chunk_numbers``, ``plain_texts``,
    ``plain_entries``) or as its Python twin (`Preparer._plain`); the line-by-line
    path is the reference either way. Nine placeholders are more than the C part
    renders: that chunk is the twin's."""
    from dispatcher.dedupe import Dedupe
    from dispatcher.policy import Duplicates

    outcomes = []
    for kind in (Preparer, _LineByLine):
        with twins(not in_c):
            config = Config(
                sender="12345",
                text=text,
                batch_size=3,
                max_message_segments=3,
                endpoint="single" if single else "batch",
            )
            batcher = Batcher(
                batch_size=3,
                linger=1.0,
                max_buffered=10_000,
                count_segments=False,
                clock=lambda: 0.0,
                job="job",
            )
            policies = [] if dedupe == "off" else [Duplicates(Dedupe(dedupe), texts=True)]
            preparer = kind(config, capacity=lambda code: 5, policies=policies)
            sink = Sink()
            chunk = chunk_of(items)
            size = -(-len(chunk) // chunks) or 1
            for start in range(0, len(chunk), size):
                preparer.feed(chunk[start : start + size], batcher, sink)
            batches = [(b.group.key, b.key, list(b.entries)) for b in drained(batcher)]
            # in line order: a chunk's invalid numbers are answered at once, before the
            # other lines the column path takes one by one
            order = sorted(range(len(sink.locals)), key=lambda i: sink.locals[i].line)
            local = [(sink.locals[i], sink.details[i]) for i in order]
            outcomes.append((batches, local, sink.rejected_items))
    assert outcomes[0] == outcomes[1]


#: Mostly plain lines (a valid number, no override), the C part's usual input.
_VALID = st.sampled_from(["+525500000001", "525500000002", "+52 55 0000 0003", "(+1) 500-555.0006"])
PLAIN_ITEMS = st.lists(
    st.one_of(
        st.tuples(_VALID, PARAMS, st.none(), st.none(), st.none()),
        st.tuples(
            _VALID, PARAMS, st.one_of(st.integers(), st.text(max_size=5)), st.none(), st.none()
        ),
        st.tuples(_VALID, ODD_PARAMS, st.none(), st.none(), st.none()),
        ITEMS.flatmap(lambda items: st.sampled_from(items) if items else st.just("rejected")),
    ),
    max_size=40,
)


def _raw_numbers(chunk: list[Recipient | Rejected]) -> list[str]:
    return [item.to if type(item) is Recipient else "" for item in chunk]


@settings(max_examples=500, deadline=None)
@given(ITEMS)
def test_chunk_numbers_in_c_are_normalize_many(items: list[Any]) -> None:
    """The C part's ``chunk_numbers`` (the numbers of a chunk's records, read from
    their slots) against its twin, `normalize_many` of their ``to``."""
    chunk = chunk_of(items)
    got = built().chunk_numbers(chunk, Recipient, RECIPIENT_FIELDS, normalize_or_none)
    assert got == normalize_many(_raw_numbers(chunk))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            NUMBERS,
            st.text(alphabet="0123456789 +-.()\t\n\u00a0\u2013x", max_size=24),
            st.integers(0, 10**16).map(str),
        ),
        max_size=20,
    )
)
def test_chunk_numbers_in_c_of_any_to(numbers: list[str]) -> None:
    chunk: list[Recipient | Rejected] = [Recipient(line=1, to=to) for to in numbers]
    got = built().chunk_numbers(chunk, Recipient, RECIPIENT_FIELDS, normalize_or_none)
    assert got == normalize_many(numbers)


def _plain_or_error(plain: Callable[[], Any]) -> Any:
    try:
        return plain()
    except RenderError as exc:
        return ("RenderError", str(exc))


@settings(max_examples=400, deadline=None)
@given(
    PLAIN_ITEMS,
    st.sampled_from(
        ["Hi {0}", "{1} owes {0}", "static", "{0}", "Olá {0} ✓ {1}", "{0}{1}{2}{3}{4}{5}{6}{7}{8}"]
    ),
    st.booleans(),
    st.sampled_from(["flat", "3gpp"]),
)
def test_the_plain_lines_in_c_are_the_twins(
    items: list[Any], text: str, single: bool, model: str
) -> None:
    """`Preparer._plain_in_c` against `Preparer._plain`, its twin, on one chunk: the
    same positions set aside, the same entries, the same rendered texts (read by a
    number+text duplicate check), or the same RenderError."""
    from dispatcher.dedupe import Dedupe
    from dispatcher.policy import Duplicates

    config = Config(
        sender="12345",
        text=text,
        max_message_segments=3,
        segment_model=model,
        endpoint="single" if single else "batch",
    )
    preparer = Preparer(
        config, capacity=lambda code: 5, policies=[Duplicates(Dedupe("number+text"), texts=True)]
    )
    chunk = chunk_of(items)
    numbers = normalize_many(_raw_numbers(chunk))
    twin = _plain_or_error(lambda: preparer._plain(chunk, numbers))
    assert _plain_or_error(lambda: preparer._plain_in_c(built(), chunk, numbers)) == twin


@pytest.mark.parametrize(
    "param",
    [
        "Zoë", 7, -(2**63), 2**64 - 1, 2**70, True, False, 0.0, -0.0, 10.65, 3.0, 1e-7, 1e16,
        -1.5e300, math.nan, math.inf, -math.inf, BigInt("123456789012345678901234"), None,
        [1], {"a": 1},
    ],
)  # fmt: skip
def test_each_kind_of_param_renders_in_c_as_in_its_twin(param: Any) -> None:
    preparer = Preparer(Config(sender="12345", text="<{0}>"), capacity=lambda code: 5)
    chunk: list[Recipient | Rejected] = [Recipient(line=3, to="+15005550006", params=[param])]
    numbers = normalize_many(_raw_numbers(chunk))
    twin = _plain_or_error(lambda: preparer._plain(chunk, numbers))
    assert _plain_or_error(lambda: preparer._plain_in_c(built(), chunk, numbers)) == twin


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(FLOATS, INTS), min_size=1, max_size=50))
def test_floats_and_ints_render_in_c_as_in_the_twin(params: list[Any]) -> None:
    """The C part writes a float itself where it can (as orjson does: amounts, the
    edges of its range) and an int of 64 bits; the twin renders each by orjson and
    str. One param a line, 50 lines a chunk; the texts compared are those a number+text
    duplicate check reads."""
    from dispatcher.dedupe import Dedupe
    from dispatcher.policy import Duplicates

    preparer = Preparer(
        Config(sender="12345", text="<{0}>"),
        capacity=lambda code: 5,
        policies=[Duplicates(Dedupe("number+text"), texts=True)],
    )
    chunk: list[Recipient | Rejected] = [
        Recipient(line=line, to="+15005550006", params=[param])
        for line, param in enumerate(params, 1)
    ]
    numbers = normalize_many(_raw_numbers(chunk))
    twin = _plain_or_error(lambda: preparer._plain(chunk, numbers))
    assert _plain_or_error(lambda: preparer._plain_in_c(built(), chunk, numbers)) == twin


@given(st.lists(st.integers(), max_size=60), st.data())
def test_without_drops_exactly_the_positions(values: list[int], data: st.DataObject) -> None:
    positions = sorted(
        data.draw(st.sets(st.integers(0, max(len(values) - 1, 0)))) if values else []
    )
    kept = prepare._without(values, positions)
    assert kept == [v for i, v in enumerate(values) if i not in set(positions)]
