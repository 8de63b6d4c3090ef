"""The records that flow through the pipeline, and the statuses a result can carry.

    Recipient ─prepare─▶ Entry (in a Group) ─batcher─▶ Batch (with its key) ─▶ results

Records on the per-recipient hot path (`Recipient`, a msgspec struct the reader decodes
into; `SegmentCount`, `Entry`) are not frozen dataclasses: a frozen dataclass
``__init__`` goes through ``object.__setattr__`` per field and measured 3x slower
(1.2 µs vs 0.37 µs for nine fields), which alone would eat the per-recipient budget of
SPEC §9. Every stage imports its records from here, never from the stage upstream.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import itemgetter
from typing import TYPE_CHECKING, Annotated, Any, Final, NamedTuple, final, overload

import msgspec
import orjson

if TYPE_CHECKING:
    from dispatcher.renderer import Template

#: A JSON scalar as it may appear in a recipient's ``params``.
Scalar = str | int | float | bool


class Status(StrEnum):
    """The status of one result line: the gateway's own, or one decided locally."""

    # The gateway's statuses (documentation and vendor pages).
    QUEUE = "QUEUE"
    DEQUEUED = "DEQUEUED"
    SENT = "SENT"
    ENROUTE = "ENROUTE"
    DELIVRD = "DELIVRD"
    ACCEPTD = "ACCEPTD"
    EXPIRED = "EXPIRED"
    DELETED = "DELETED"
    UNDELIV = "UNDELIV"
    UNKNOWN = "UNKNOWN"
    REJECTD = "REJECTD"
    INVALID_ROUTING = "INVALID_ROUTING"
    CODE_NOT_ALLOWED = "CODE_NOT_ALLOWED"
    BLACKLISTED = "BLACKLISTED"
    ERROR = "ERROR"
    SEGMENTS_EXCEEDED = "SEGMENTS_EXCEEDED"
    INCOMPLETE = "INCOMPLETE"
    EXHAUSTED = "EXHAUSTED"
    # Decided by the dispatcher.
    INVALID_NUMBER = "INVALID_NUMBER"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    AMBIGUOUS = "AMBIGUOUS"
    DRY_RUN = "DRY_RUN"
    # Campaign policies (SPEC §10): final, never sent...
    SUPPRESSED = "SUPPRESSED"
    DUPLICATE = "DUPLICATE"
    EXPIRED_UNSENT = "EXPIRED_UNSENT"
    # ...and resumable: a --resume attempts these lines again.
    NOT_SENT = "NOT_SENT"
    OUTSIDE_WINDOW = "OUTSIDE_WINDOW"
    CANCELLED = "CANCELLED"


#: Policy outcomes that leave a line unfinished: a ``--resume`` attempts it again.
RESUMABLE = frozenset({Status.NOT_SENT, Status.OUTSIDE_WINDOW, Status.CANCELLED})
#: Policy outcomes that are final: the line is never sent (exit 0 unless ``--strict``).
POLICY_FINAL = frozenset({Status.SUPPRESSED, Status.DUPLICATE, Status.EXPIRED_UNSENT})


class Encoding(StrEnum):
    """How a message is encoded on the air interface, which decides its segment size."""

    GSM7 = "GSM7"
    UCS2 = "UCS2"


class SegmentCount(NamedTuple):
    """What a text costs: its encoding, its length in encoding units, its segments."""

    encoding: Encoding
    units: int
    segments: int


#: An integer the reader's decoder may take itself: one orjson reads as an int too.
#: (msgspec's bounds must fit an int64, so [2**63, 2**64) takes the careful path.)
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: A param the decoder may take itself; anything else takes the reader's careful path.
_Param = str | _Int64 | float | bool


class Recipient(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One parsed input line: who to text, with what params, and the line's overrides.

    ``to`` is the number exactly as given; normalisation happens downstream so that
    the result and invalid-number lines can echo what the user wrote.

    A msgspec struct so that `dispatcher.reader` decodes a well-formed line straight
    into it, types checked as it decodes, with no dict and no copy in between. The
    annotations the decoder sees (the ``else`` branches) are deliberately narrower than
    what the record may hold: they accept only what the decoder reads exactly as the
    reader's careful path (orjson) would; every other line fails the decode and takes
    the careful path, which may store any JSON in ``ref`` and a `BigInt` in ``params``.
    No unknown field (the careful path ignores them, but the decoder would skip their
    values without checking them as orjson does). A ``line`` key in the input is decoded
    (so it must pass as orjson would) and overwritten by the reader's line number.

    ``gc=False``: nothing a record holds (parsed JSON) can refer back to it, so the
    cyclic collector need not track the records (a chunk holds thousands of them).
    """

    if TYPE_CHECKING:
        line: int = 0
    else:
        line: _Int64 = 0
    to: str
    if TYPE_CHECKING:
        params: list[Any] = msgspec.field(default_factory=list)
        ref: Any = None
    else:
        params: list[_Param] = msgspec.field(default_factory=list)
        ref: _Param | None = None
    sender: str | None = msgspec.field(default=None, name="from")
    text: str | None = None
    external_id: str | None = msgspec.field(default=None, name="externalId")
    client_id: str | None = msgspec.field(default=None, name="clientId")
    email: str | None = None


#: `Recipient`'s fields as the C part reads and sets them (`dispatcher.native`: the
#: reader's ``decode_lines``, the preparer's ``chunk_numbers``, ``plain_texts`` and
#: ``plain_entries``): its slots' descriptors, in the order it expects.
RECIPIENT_FIELDS: Final = tuple(
    Recipient.__dict__[name]
    for name in (
        "line", "to", "params", "ref", "sender", "text", "external_id", "client_id", "email"
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """An input line that cannot become a message, with a short human reason."""

    line: int
    reason: str
    #: The start of the offending line (decoded leniently) to help the user find it.
    excerpt: str = ""


class Entry(NamedTuple):
    """One message of a batch: its input line, number, params and what it costs.

    Built on the hot path with ``tuple.__new__(Entry, (...))`` (see `dispatcher.prepare`).
    """

    line: int
    to: str
    params: list[Any]
    ref: Any
    segments: int
    encoding: str
    text: str | None  # the rendered text, kept only when it is sent as such
    #: characters smart encoding replaced (0: none, the usual case)
    replaced: int = 0
    #: segments smart encoding saved on this message. It goes with the entry (and a
    #: held line's spill record, `dispatcher.windows.Held`) so that the summary counts
    #: it where, and only if, the gateway accepts the message (`dispatcher.writers`)
    saved: int = 0


_line_of = itemgetter(0)  # Entry.line


class Group:
    """Messages that can share one batch call."""

    __slots__ = ("capacity", "key", "options", "sender", "template")

    def __init__(
        self,
        key: Hashable,
        *,
        sender: str,
        template: Template,
        options: dict[str, Any],
        capacity: float,
    ) -> None:
        self.key = key
        self.sender = sender
        self.template = template
        #: The request fields other than text and to, in the gateway's spelling.
        self.options = options
        #: The most units (messages or segments) one batch of this group may carry.
        self.capacity = capacity


def batch_key(job: str, lines: Iterable[int]) -> str:
    """The idempotency key of a batch: the job and its lines in batch order, the same on
    every attempt and on a resumed run.

    Journals hold these keys, so this must never change: a resumed run rebuilds an
    in-flight batch and must send it under the key the gateway has already seen.
    """
    return _key(job, array("q", lines).tobytes())


def _key(job: str, lines: bytes) -> str:
    """`batch_key` of the lines as int64 in native order (what a `Packed` holds)."""
    return f"{job}-{hashlib.blake2b(lines, digest_size=12).hexdigest()}"


class Packed:
    """What the batch endpoint's send of a batch needs of its entries, made by the C
    part as the batch closes, while they are still in the CPU's cache (`api.pack`): the
    body, the numbers (each followed by a newline, for the answer's check), the lines
    and segments (int64 each), each entry's encoding (its index in `PACKED_KINDS`), the
    result lines' pieces around the id and the batch-wide text (``ends``: three uint32
    an entry), the refs (None when there is none) and the segments by encoding.

    A packed batch drops its entries: the send side never looks at them again (each
    look had cost a cache miss a field, a fifth of a run's time), and they are freed
    while in the cache. `Batch.entries` rebuilds them from here for the rare paths that
    want them (a retry split, a failure, a cap).
    """

    __slots__ = (
        "body", "count", "ends", "kinds", "lines", "numbers", "pieces", "refs", "segments",
        "segments_by",
    )  # fmt: skip

    def __init__(
        self,
        body: bytes,
        numbers: bytes,
        lines: bytes,
        segments: bytes,
        kinds: bytes,
        pieces: bytes,
        ends: bytes,
        refs: list[Any] | None,
        sums: list[tuple[int, int]],
    ) -> None:
        self.body = body
        self.numbers = numbers
        self.lines = lines
        self.segments = segments
        self.kinds = kinds
        self.pieces = pieces
        self.ends = ends
        self.refs = refs
        self.count = len(kinds)
        #: segments by encoding, in the order of each encoding's first message
        self.segments_by: dict[str, int] = {PACKED_KINDS[k][0]: total for k, total in sums}

    def entries(self) -> list[Entry]:
        """The entries packed, equal to the ones the batch had."""
        recipients = orjson.loads(self.body)["to"]
        refs = self.refs if self.refs is not None else [None] * self.count
        return [
            Entry(line, item["to"], item["params"], ref, segments, PACKED_KINDS[kind][0], None)
            for line, item, ref, segments, kind in zip(
                array("q", self.lines),
                recipients,
                refs,
                array("q", self.segments),
                self.kinds,
                strict=True,
            )
        ]


#: The encodings a packed entry may have, with their JSON text (`Packed.kinds` indexes).
PACKED_KINDS: Final = tuple((kind, orjson.dumps(kind)) for kind in Encoding)


class Batch:
    """Messages of one group that go to the gateway in one request.

    Open while the batcher fills it; `close` fixes its lines and computes its
    idempotency key, once. After that its entries do not change. The batcher may swap
    them for their packed form (`pack`, `Packed`) just before the close.
    """

    __slots__ = (
        "_lines", "count_segments", "created", "entries", "group", "job", "key", "packed",
        "units",
    )  # fmt: skip

    def __init__(self, group: Group, created: float, *, count_segments: bool = False) -> None:
        self.group = group
        #: the messages, in the batch's order; unset while the batch is packed, until
        #: asked for (`__getattr__` rebuilds them)
        self.entries: list[Entry] = []
        #: messages, or segments when the rate limit counts segments
        self.units = 0
        self.count_segments = count_segments
        self.created = created
        #: the job the batch belongs to, and its idempotency key (set by `close`)
        self.job = ""
        self.key = ""
        self._lines: list[int] | None = None
        self.packed: Packed | None = None

    def __getattr__(self, name: str) -> Any:
        # Only for a slot left unset: the entries of a packed batch, rebuilt once (an
        # attribute that is set never comes here: no cost on the batcher's path).
        if name != "entries" or self.packed is None:  # (an unset packed: not this name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        entries = self.entries = self.packed.entries()
        return entries

    def __len__(self) -> int:
        packed = self.packed
        return packed.count if packed is not None else len(self.entries)

    @property
    def lines(self) -> list[int]:
        """The input line numbers, in the batch's order."""
        if self._lines is not None:
            return self._lines
        if self.packed is not None:
            return array("q", self.packed.lines).tolist()
        return list(map(_line_of, self.entries))

    @property
    def numbers(self) -> Numbers:
        """The numbers, in the batch's order (looked at one by one only when needed)."""
        return Numbers(self)

    @property
    def sent(self) -> list[Entry] | bytes:
        """What the answer's numbers are checked against (`api.batch_answer`)."""
        return self.packed.numbers if self.packed is not None else self.entries

    def close(self, job: str) -> None:
        """Fix the lines and compute the idempotency key (`batch_key`) of job ``job``
        (from the packed lines when the batch was packed first, as the batcher does)."""
        self.job = job
        if self.packed is not None:
            self.key = _key(job, self.packed.lines)
            return
        lines = self._lines = list(map(_line_of, self.entries))
        self.key = batch_key(job, lines)

    def pack(self, packed: Packed) -> None:
        """Hold the batch as ``packed`` (made from its entries) instead; before or after
        it is closed."""
        self.packed = packed
        del self.entries
        self._lines = None

    def split(self) -> tuple[Batch, Batch]:
        """Two closed halves with their own keys, for a gateway that answered 413."""
        half = len(self) // 2
        halves = []
        for entries in (self.entries[:half], self.entries[half:]):
            batch = Batch(self.group, self.created, count_segments=self.count_segments)
            batch.entries = entries
            batch.units = sum(e.segments for e in entries) if self.count_segments else len(entries)
            batch.close(self.job)
            halves.append(batch)
        return halves[0], halves[1]

    def __repr__(self) -> str:
        lines = self.lines
        first = lines[0] if lines else None
        return f"<Batch {self.group.sender} lines from {first}, {len(self)} messages>"


class Numbers(Sequence[str]):
    """A batch's numbers as a sequence: its length without looking at them; the numbers
    themselves (decoded from a packed batch once) only when an item is asked for."""

    __slots__ = ("_batch", "_numbers")

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self._numbers: list[str] | None = None

    def __len__(self) -> int:
        return len(self._batch)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        numbers = self._numbers
        if numbers is None:
            batch = self._batch
            if batch.packed is not None:
                numbers = batch.packed.numbers.decode().split("\n")[:-1]
            else:
                numbers = [entry.to for entry in batch.entries]
            self._numbers = numbers
        return numbers[index]


@final
class BigInt:
    """A JSON integer outside 64 bits, kept as the digits written in the input.

    orjson reads such an integer as a float (``1.8446744073709552e+19``), or refuses it
    beyond a double's range, and cannot write it back; Python's ``int()`` and ``str()``
    refuse more than 4300 digits. ``digits`` is the JSON token itself (``-`` and
    digits), so rendering it and putting it on the wire are both exact.
    """

    __slots__ = ("digits",)

    digits: str

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"BigInt({self.digits!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is BigInt and other.digits == self.digits

    def __hash__(self) -> int:
        return hash(self.digits)


def json_default(value: object) -> orjson.Fragment:
    """orjson's ``default`` hook for bodies holding params: a `BigInt` as its JSON number.

    ``orjson.dumps(body, default=json_default)``: orjson calls it only for types it does
    not know, so bodies without a `BigInt` cost nothing more.
    """
    if type(value) is BigInt:
        return orjson.Fragment(value.digits)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
