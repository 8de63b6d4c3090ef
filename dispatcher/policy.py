"""Campaign policies over a chunk's prepared messages: duplicates, the halt, send
windows, then caps (SPEC §10); `policies_for` builds a job's from its configuration.

`dispatcher.prepare` makes each line a candidate message (number, opt-out, render, smart
encoding, segments: per line) and hands the candidates of a chunk, in runs of one group,
to the policies here in SPEC §10's order — duplicate → (window/expiry, issue 14) →
caps — before the batcher. Each policy is one class with one method over a run:
``check(group, entries, texts, sink)`` answers the positions to keep (None: all of
them) and writes the local result of every other line to ``sink``. A policy that is
off is not in the list at all, so a job without policies pays nothing per line.

Issue 14's send windows (`dispatcher.windows.Windows`) and the halt (cancel, expiry:
`dispatcher.halt.Halted`) plug in the same way, between `Duplicates` and `Caps`: a line
refused by a window must not spend a cap, and a line that is a duplicate must not be
counted by either. A policy may also hold lines back and hand them on later: the
windows hold a line until its window opens, then `Preparer.readmit` passes it through
the windows again and the policies after them (the caps) to the batcher.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from dispatcher import keys as packed_words
from dispatcher import native
from dispatcher.models import Entry, Group, Status
from dispatcher.pricing import Pricing

if TYPE_CHECKING:
    from dispatcher.config import Config
    from dispatcher.dedupe import ChunkNumbers, Packed
    from dispatcher.halt import Halt
    from dispatcher.quota.shared import SharedQuota
    from dispatcher.resume import Resume
    from dispatcher.suppress import SuppressionList
    from dispatcher.windows import Windows

log = logging.getLogger("dispatcher")


class Sink(Protocol):
    """Where policy outcomes go (see `dispatcher.writers.Outputs.local`)."""

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
    ) -> None: ...


def refuse(sink: Sink, entry: Entry, status: Status, error: str) -> None:
    """The local result of a candidate a policy keeps from the gateway: its line,
    number, ref, segments and encoding, with ``status`` and ``error``."""
    sink.local(
        entry.line,
        entry.to,
        status,
        error,
        ref=entry.ref,
        segments=entry.segments,
        encoding=entry.encoding,
        replaced=entry.replaced,
    )


class Policy(Protocol):
    """One check over a run of candidates of one group (see the module docstring)."""

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None: ...


class DuplicateIndex(Protocol):
    """What `Duplicates` needs of `dispatcher.dedupe.Dedupe`."""

    @property
    def packed(self) -> bool: ...

    def duplicates(
        self,
        code: str | Sequence[str],
        numbers: Sequence[str] | Packed,
        texts: Sequence[str] | None,
        lines: Sequence[int] | Packed,
    ) -> tuple[list[int], list[int]]: ...


# An Entry's fields by position: C-level getters for whole runs (`map`).
_line_of = itemgetter(0)
_to_of = itemgetter(1)


class Duplicates:
    """``--dedupe``: a later line of the same kind as an earlier one is ``DUPLICATE``
    with ``first``, whatever became of the first (it is recorded when it gets here).

    `begin_chunk` hands it the numbers of the input chunk whose runs come next (already
    parsed for the opt-out lists, or parsed once here): the entries' keys are then
    gathered by line rather than read from each entry and parsed again.
    """

    def __init__(self, index: DuplicateIndex, *, texts: bool) -> None:
        self.index = index
        #: whether the key includes the rendered text (``number+text``)
        self.texts = texts
        self._chunk: ChunkNumbers | None = None

    def begin_chunk(self, numbers: ChunkNumbers) -> None:
        """The numbers of the input chunk whose runs `check` (or `register`) sees next."""
        self._chunk = numbers

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None:
        """Record the run's new messages; answer the positions that are not duplicates."""
        return self.check_runs([(group, entries, texts)], sink)[0]

    def check_runs(
        self, runs: Sequence[tuple[Group, list[Entry], list[str] | None]], sink: Sink
    ) -> list[list[int] | None]:
        """`check` over a chunk's runs (of several groups) in one index call, each line
        with its run's code: the runs are in input order, as the lines reach `check` one
        run at a time, so every line gets the same answer and the same ``first``."""
        codes: str | list[str]
        if not runs:
            return []
        if len(runs) == 1:
            first_group, entries, texts = runs[0]
            codes = first_group.sender
        else:
            # Joined a run at a time (a list's extend copies its pointers): a file where
            # one line in twenty has its own text has hundreds of runs a chunk, and a
            # chain over their items cost ~50 instructions an item and a list.
            entries, texts = [], []
            sender, one_sender = runs[0][0].sender, True
            for group, members, members_texts in runs:
                entries += members
                if members_texts:
                    texts += members_texts
                one_sender = one_sender and group.sender == sender
            if one_sender:
                codes = sender
            else:
                codes = list(chain.from_iterable(repeat(g.sender, len(r)) for g, r, _ in runs))
        numbers, lines = self._numbers(entries)
        positions, firsts = self.index.duplicates(
            codes, numbers, texts if self.texts else None, lines
        )
        keeps: list[list[int] | None] = [None] * len(runs)
        if not positions:
            return keeps
        dropped: list[list[int]] = [[] for _ in runs]
        run, start = 0, 0  # positions ascend: walk the runs along with them
        for position, first in zip(positions, firsts, strict=True):
            while position >= start + len(runs[run][1]):
                start += len(runs[run][1])
                run += 1
            self._report(entries[position], first, sink)
            dropped[run].append(position - start)
        for run, gone in enumerate(dropped):
            if gone:
                keeps[run] = others(gone, len(runs[run][1]))
        return keeps

    def _report(self, entry: Entry, first: int, sink: Sink) -> None:
        sink.local(
            entry.line,
            entry.to,
            Status.DUPLICATE,
            f"the same message as line {first}",
            ref=entry.ref,
            segments=entry.segments,
            encoding=entry.encoding,
            first=first,
            replaced=entry.replaced,
        )

    def register(self, group: Group, entries: list[Entry], texts: list[str] | None) -> None:
        """Record lines an earlier run finished, as `check` did then (a resume's replay)."""
        numbers, lines = self._numbers(entries)
        self.index.duplicates(group.sender, numbers, texts if self.texts else None, lines)

    def _numbers(
        self, entries: list[Entry]
    ) -> tuple[Sequence[str] | Packed, Sequence[int] | Packed]:
        """The entries' numbers and lines: when the record is packed or the chunk's keys
        are parsed already, the lines as packed words, and the keys too (the chunk's
        where they cover the entries: its lines have no gap); else as lists."""
        chunk = self._chunk
        if self.index.packed or (chunk is not None and chunk.parsed):
            # packed, even where the chunk's keys do not serve (a blank line in it): the
            # record would make them of a list, ~235 instructions a line
            lines = _lines(entries)
            keys = chunk.keys_at(lines) if chunk is not None else None
            return (keys if keys is not None else _keys(entries)), lines
        return list(map(_to_of, entries)), list(map(_line_of, entries))


def _lines(entries: list[Entry]) -> Packed:
    """The entries' lines as packed words: by the C part (`dispatcher.keys`, no numpy) at
    4 against 28 ns an entry for ``np.fromiter`` over them (the twin)."""
    if native.core is not None:
        return packed_words.column(entries, 0)
    import numpy as np

    return np.fromiter(map(_line_of, entries), dtype=np.int64, count=len(entries))


def _keys(entries: list[Entry]) -> Packed:
    """The entries' numbers' keys as packed words, where the chunk's do not serve (a
    chunk with a blank line): parsed from the entries by the C part (no list of their
    numbers made first), else by `dispatcher.sorted_keys.number_keys`."""
    if native.core is not None:
        return packed_words.column_keys(entries, 1)
    from dispatcher.sorted_keys import number_keys

    return number_keys(list(map(_to_of, entries)))


def others(positions: list[int], count: int) -> list[int]:
    """The positions below ``count`` that are not in ``positions`` (ascending), in order:
    a slice of ranges between them, not a test per position."""
    kept: list[int] = []
    start = 0
    for position in positions:
        kept += range(start, position)
        start = position + 1
    kept += range(start, count)
    return kept


#: Cost sums are floats: a cap is reached only beyond this relative slack.
_COST_SLACK = 1e-9


class Caps:
    """``--max-messages``, ``--max-segments``, ``--max-cost``: never exceeded.

    What the job has committed counts: the messages handed to the batcher (whether or
    not the gateway then takes them), and what an earlier run of the job may have sent
    (`count`: accepted and AMBIGUOUS results). The first line that would go beyond a
    cap reaches it (`reached`: the cap and the line); it and every later line are
    ``NOT_SENT``, resumable with a higher cap.

    This counts in the process; with a shared quota (``--quota-url``) the job's
    processes count together in Redis instead (`dispatcher.quota.caps.SharedCaps`).
    """

    def __init__(
        self,
        *,
        max_messages: int | None = None,
        max_segments: int | None = None,
        max_cost: float | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        if max_cost is not None and pricing is None:
            raise ValueError("a cost cap needs a pricing")
        self.max_messages = max_messages if max_messages is not None else math.inf
        self.max_segments = max_segments if max_segments is not None else math.inf
        self.max_cost = max_cost * (1 + _COST_SLACK) if max_cost is not None else math.inf
        self._limits = {
            "max_messages": max_messages,
            "max_segments": max_segments,
            "max_cost": max_cost,
        }
        self.pricing = pricing if max_cost is not None else None
        self.messages = 0
        self.segments = 0
        self.cost = 0.0
        #: (the cap, the first line that would have gone beyond it), once reached
        self.reached: tuple[str, int] | None = None

    @classmethod
    def wanted(
        cls,
        *,
        max_messages: int | None,
        max_segments: int | None,
        max_cost: float | None,
        pricing: Pricing | None,
    ) -> Caps | None:
        """The caps of a job, or None when it has none."""
        if max_messages is None and max_segments is None and max_cost is None:
            return None
        return cls(
            max_messages=max_messages,
            max_segments=max_segments,
            max_cost=max_cost,
            pricing=pricing,
        )

    def count(self, messages: int, segments: int, cost: float) -> None:
        """Count what an earlier run of the job may have sent."""
        self.messages += messages
        self.segments += segments
        self.cost += cost

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None:
        """Commit the run's messages up to the caps; the rest are ``NOT_SENT``."""
        stop = 0 if self.reached is not None else self._commit(entries)
        if stop == len(entries):
            return None
        error = self.error()
        for entry in entries[stop:]:
            refuse(sink, entry, Status.NOT_SENT, error)
        return list(range(stop))

    def error(self) -> str:
        """The reason every line from the one that reached a cap gets (``NOT_SENT``)."""
        assert self.reached is not None
        cap, line = self.reached
        return (
            f"{cap} {self._limits[cap]:g} reached at line {line}: not sent; "
            "--resume with a higher cap sends it"
        )

    def _commit(self, entries: list[Entry]) -> int:
        """Count entries while they fit; the position of the first that does not."""
        messages, segments, cost = self.messages, self.segments, self.cost
        pricing = self.pricing
        position = 0
        for position, entry in enumerate(entries):  # noqa: B007 (read after the loop)
            cap = None
            if messages + 1 > self.max_messages:
                cap = "max_messages"
            elif segments + entry.segments > self.max_segments:
                cap = "max_segments"
            elif pricing is not None:
                price = pricing.cost(entry.to, entry.segments)
                if cost + price > self.max_cost:
                    cap = "max_cost"
                else:
                    cost += price
            if cap is not None:
                self.reached = (cap, entry.line)
                break
            messages += 1
            segments += entry.segments
        else:
            position = len(entries)
        self.messages, self.segments, self.cost = messages, segments, cost
        return position


# --- a job's policies -----------------------------------------------------------------


def policies_for(
    config: Config,
    resume: Resume | None,
    halt: Halt,
    windows: Windows | None,
    *,
    quota: SharedQuota | None = None,
    source: object = None,
) -> list[Policy]:
    """The job's policies in SPEC §10's order: duplicates, the halt (cancel, expiry),
    the send windows, the caps — each only when the job has it. The caps count what an
    earlier run of a resumed job may have sent; with a shared ``quota`` they are counted
    job-wide in its Redis (`dispatcher.quota.caps`: the job named by ``--caps-key``, or
    after ``source``, the input)."""
    from dispatcher.halt import Halted

    policies: list[Policy] = []
    if config.dedupe != "off":
        from dispatcher.dedupe import Dedupe

        index = Dedupe(config.dedupe, expected=expected_lines(source))
        policies.append(Duplicates(index, texts=config.dedupe == "number+text"))
    policies.append(Halted(halt))
    if windows is not None:
        policies.append(windows)
    pricing = Pricing.from_config(config.price_per_segment, config.prices)
    caps = Caps.wanted(
        max_messages=config.max_messages,
        max_segments=config.max_job_segments,
        max_cost=config.max_cost,
        pricing=pricing,
    )
    if caps is not None and quota is not None:
        policies.append(_shared_caps(config, resume, quota, source, pricing))
    elif caps is not None:
        if resume is not None:
            caps.count(*resume.state.committed)
        policies.append(caps)
    return policies


#: A recipient's NDJSON line is seldom longer than this (``dispatcher gen``'s: ~53 bytes).
LONG_LINE = 200


def expected_lines(source: object) -> int:
    """A low estimate of how many lines the input ``source`` has: its size over
    `LONG_LINE` when it is a file (a gzip file's size undercounts it), else 0 (stdin, a
    stream, a file that cannot be read — the reader says so)."""
    if not isinstance(source, str | os.PathLike) or os.fspath(source) == "-":
        return 0
    try:
        return os.stat(source).st_size // LONG_LINE
    except OSError:
        return 0


def _shared_caps(
    config: Config,
    resume: Resume | None,
    quota: SharedQuota,
    source: object,
    pricing: Pricing | None,
) -> Caps:
    """The caps counted job-wide in Redis, this process's part started from what its
    earlier runs may have sent (`dispatcher.quota.caps.SharedCaps`)."""
    from dispatcher.quota.caps import SharedCaps, job_name

    name = config.caps_key or job_name(config.sender, config.text, source)
    share = config.shard or "1/1"
    committed: tuple[int, int, float] = (0, 0, 0.0)
    pinned: set[int] = set()
    if resume is not None:
        committed = resume.state.committed
        done = resume.state.done
        pinned = {n for lines in resume.state.in_flight.values() for n in lines if n not in done}
    caps = SharedCaps(
        quota,
        name=name,
        share=share,
        max_messages=config.max_messages,
        max_segments=config.max_job_segments,
        max_cost=config.max_cost,
        pricing=pricing,
        committed=committed,
        pinned=pinned,
        max_message_segments=config.max_message_segments,
    )
    log.info("caps counted job-wide in Redis: %s, share %s", caps.key, share)
    return caps


def opt_out_lists(paths: Sequence[str]) -> SuppressionList | None:
    """The job's opt-out lists (``--suppress``) loaded into one set, or None; logs what
    each holds, and warns when a list looks kept in national format."""
    if not paths:
        return None
    from dispatcher.suppress import SuppressionList

    optout = SuppressionList.load(paths)
    for stats in optout.stats:
        log.info(
            "opt-out list %s (%s): %d numbers, %d unparseable, %d not valid for any country",
            stats.path,
            stats.format,
            stats.numbers,
            stats.unparseable,
            stats.not_valid,
        )
        if stats.not_valid and stats.not_valid * 10 >= stats.numbers:
            log.warning(
                "opt-out list %s: %d of %d numbers are not valid for any country: is it "
                "kept in national format (no country code)? Such entries match nobody",
                stats.path,
                stats.not_valid,
                stats.numbers,
            )
    return optout
