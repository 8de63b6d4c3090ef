"""What a resumed run decides, in the order it decides it.

A send writes its results and a journal (`dispatcher.journal`). When it stops early —
a crash, kill -9, Ctrl-C, a fatal error — ``send --resume`` with the same input and
outputs finishes the job, and this module is where a resume can be followed:

1. `open_job` opens the journal: a new job, or the job an earlier run left. Resuming
   refuses a journal written with other message options (`fingerprint`) or for an
   input of another size.
2. `ResumeState.read` reads what that run left. The results file is the truth about
   which lines are *finished* (a last line torn by the crash is cut off); then the
   journal: a batch recorded ``sent`` with a line that has no result was *in flight*
   when the run stopped — unless it was recorded ``unsent`` (the gateway certainly
   did not act).
3. `Resume.divert` is the resumed run's first stage over each input chunk: it drops
   finished lines and diverts the lines of in-flight batches into rebuilt batches —
   the same lines in the same order, hence the same body and idempotency key.
4. A rebuilt batch is sent again under its key when the gateway honours keys
   (``idempotency``) or the user accepts the risk (``--retry-ambiguous``); otherwise
   its lines become AMBIGUOUS: the gateway may have sent them already.
5. Some lines of a rebuilt batch may have their results already. `Resume.results`
   stands in front of the outputs for the sender and is the one place that drops
   results written twice; the batcher and the writers know nothing of resuming.

Where what comes next belongs: checks that the journal and the results agree go in
`ResumeState.read`; an outcome that leaves a line resumable (not sent because of a cap,
a send window, a cancel) is a result that does not put its line in ``done``; the
compaction of the results file at the end of a resumed run is one more method here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from dispatcher.config import Config
from dispatcher.errors import ConfigError, OutputError
from dispatcher.journal import Journal, journal_path, records
from dispatcher.models import RESUMABLE, Batch, Entry, Group, Recipient, Rejected, Status
from dispatcher.pricing import Pricing
from dispatcher.summary import ACCEPTED
from dispatcher.writers import Outputs, prune

if TYPE_CHECKING:
    from dispatcher.prepare import Preparer
    from dispatcher.summary import Summary

#: Outcomes that the caps count as sent: the gateway took the message, or may have.
_MAY_HAVE_SENT = frozenset({*map(str, ACCEPTED), str(Status.AMBIGUOUS)})

_RESUMABLE = frozenset(map(str, RESUMABLE))

IN_FLIGHT_AT_CRASH = (
    "in flight when an earlier run stopped: the gateway may have sent it, and it does not "
    "honour idempotency keys, so it was not sent again"
)

Item = Recipient | Rejected
Submit = Callable[[Batch], Awaitable[None]]


# --- 1. the job: new, or the one an earlier run left --------------------------------


def fingerprint(config: Config) -> str:
    """What must not change between a run and its resume: everything in the bodies."""
    parts = [
        config.sender,
        config.text,
        config.request_dr,
        config.callbacks,
        config.connection,
        config.email,
        config.external_id,
        config.client_id,
        config.endpoint,
        config.segment_model,
        config.max_message_segments,
        config.strict_numbers,
    ]
    return hashlib.blake2b(orjson.dumps(parts), digest_size=8).hexdigest()


def input_size(source: str) -> int | None:
    """The size of an input file (None for stdin or a pipe): a resumed run must read
    the same input, or its line numbers and batches would mean something else."""
    if source == "-":
        return None
    try:
        status = os.stat(source)
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def open_job(config: Config, source: str) -> tuple[Journal, ResumeState | None]:
    """The journal of this run — a new job, or with ``--resume`` the job an earlier run
    left, together with what that run left."""
    if config.results == "-" or config.dry_run:
        if config.resume:
            raise ConfigError(
                "--resume needs --results PATH (and a real send): there is no journal "
                "for results on stdout or for a dry run"
            )
        return Journal(None, secrets.token_hex(6)), None
    path = journal_path(config.results)
    exists = os.path.exists(path)
    if config.resume:
        if not exists:
            raise ConfigError(f"--resume: there is no journal at {path} to resume from")
        discard_compaction(config.results)
        state = ResumeState.read(
            path,
            config.results,
            fingerprint(config),
            input_size(source),
            pricing=Pricing.from_config(config.price_per_segment, config.prices),
        )
        return Journal(path, state.job, fsync=config.fsync), state
    if exists and not config.force:
        raise ConfigError(
            f"a journal from an earlier run exists at {path}: add --resume to finish that "
            "job, or --force to start over (the results file is overwritten)"
        )
    journal = Journal.create(
        path,
        secrets.token_hex(6),
        fingerprint=fingerprint(config),
        source=source,
        input_size=input_size(source),
        fsync=config.fsync,
    )
    return journal, None


# --- 2. what the earlier run left ----------------------------------------------------


class LineSet:
    """Line numbers as a growable bitmap: 5 M finished lines cost 625 KB, not 200 MB."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, line: int) -> None:
        byte, bit = divmod(line, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1 + len(self._bits) // 2))
        mask = 1 << bit
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            self.count += 1

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, int):
            return False
        byte = line >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (line & 7)))

    def __len__(self) -> int:
        return self.count

    def discard(self, line: int) -> None:
        byte = line >> 3
        mask = 1 << (line & 7)
        if byte < len(self._bits) and self._bits[byte] & mask:
            self._bits[byte] &= ~mask & 0xFF
            self.count -= 1


@dataclass(slots=True)
class ResumeState:
    """What an earlier run left: finished lines and the batches it left in flight."""

    job: str
    #: lines that have their result in the results file
    done: LineSet = field(default_factory=LineSet)
    #: key → the lines of a batch that was sent and never finished, in batch order
    in_flight: dict[str, list[int]] = field(default_factory=dict)
    #: status → count of the result lines already written (for the summary)
    statuses: dict[str, int] = field(default_factory=dict)
    segments: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    #: what earlier runs may have sent (accepted or AMBIGUOUS): messages, segments, cost
    committed: tuple[int, int, float] = (0, 0, 0.0)
    #: the price of what was sent, for the cost cap (set before `read` reads results)
    pricing: Pricing | None = None
    #: lines whose newest result is resumable (NOT_SENT…): attempted again
    pending: LineSet = field(default_factory=LineSet)
    #: result lines a newer result of their line replaces (dropped by `compact`)
    superseded: int = 0

    @classmethod
    def read(
        cls,
        journal: str,
        results: str,
        expected_fingerprint: str,
        size: int | None = None,
        *,
        pricing: Pricing | None = None,
    ) -> ResumeState:
        """Read a results file and its journal, checking the job is the same one.

        The results are read first, so only unfinished batches are held in memory
        however long the journal is. A batch is in flight when some of its lines have
        no result — whatever its ``done`` record says — unless it is recorded
        ``unsent``.
        """
        state = cls(job="", pricing=pricing)
        state._read_results(results)
        job: str | None = None
        done = state.done
        for record in records(journal):
            if "sent" in record:
                lines = record["lines"]
                if not all(line in done for line in lines):
                    state.in_flight[str(record["sent"])] = [int(n) for n in lines]
            elif "unsent" in record:
                state.in_flight.pop(str(record["unsent"]), None)
            elif "journal" in record:
                job = str(record["job"])
                _check_header(journal, record, expected_fingerprint, size)
            elif record.get("complete"):
                state.complete = True
        if job is None:
            raise ConfigError(f"--resume: {journal} has no header; it is not a dispatcher journal")
        state.job = job
        return state

    def keep_finished(self, path: str) -> None:
        """Rewrite an invalid-number or rejects file of the earlier run keeping only
        the finished lines: the others get their lines again in this run."""
        prune(path, keep=self.done)

    def _read_results(self, path: str) -> None:
        """Collect finished lines and counts; cut off a last line left half-written."""
        try:
            f = open(path, "r+b")  # noqa: SIM115
        except FileNotFoundError:
            return
        with f:
            good = 0
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    result = orjson.loads(raw)
                    line = int(result["line"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    break
                good += len(raw)
                if line in self.done:
                    continue
                status = str(result.get("status"))
                if line in self.pending:  # a newer outcome of a resumable line
                    self.pending.discard(line)
                    self.superseded += 1
                if status in _RESUMABLE:  # not finished: this run attempts it again
                    self.pending.add(line)
                    continue
                self.done.add(line)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if "id" in result and "segments" in result:
                    encoding = str(result.get("encoding"))
                    segments = int(result["segments"])
                    self.segments[encoding] = self.segments.get(encoding, 0) + segments
                if status in _MAY_HAVE_SENT:
                    self._commit(result)
            f.truncate(good)
        # The resumable results left are replaced by this run's outcomes of their lines.
        self.superseded += len(self.pending)

    def _commit(self, result: dict[str, Any]) -> None:
        """Count a result that the gateway took, or may have taken, for the caps."""
        messages, segments, cost = self.committed
        count = int(result.get("segments") or 1)
        if self.pricing is not None:
            cost += self.pricing.cost(str(result.get("to")), count)
        self.committed = (messages + 1, segments + count, cost)


def _check_header(
    journal: str, header: dict[str, Any], expected_fingerprint: str, size: int | None
) -> None:
    if header.get("fingerprint") != expected_fingerprint:
        raise ConfigError(
            f"--resume: the message options differ from the run that wrote {journal} "
            "(sender, text, request options, endpoint or segment model); resume "
            "with the same options, or use --force to start over"
        )
    was = header.get("input_size")
    if size is not None and was is not None and was != size:
        raise ConfigError(
            f"--resume: the input has changed since the run that wrote {journal} "
            f"({size} bytes, was {was}); resume with the same input, or use --force "
            "to start over"
        )


# --- 3–5. the resumed run -------------------------------------------------------------


class Resume:
    """The resumed run's first stage (`divert`) and its results filter (`results`).

    Made once the outputs are open; counts the earlier run's results in the summary.
    """

    def __init__(
        self,
        state: ResumeState,
        outputs: Outputs,
        journal: Journal,
        *,
        resend: bool,
        count_segments: bool,
    ) -> None:
        self.state = state
        #: in-flight batches are sent again under their keys (else: AMBIGUOUS)
        self.resend = resend
        self._outputs = outputs
        self._journal = journal
        self._count_segments = count_segments
        #: line → the in-flight batch it must rejoin
        self._pins: dict[int, _Rebuild] = {}
        for key, lines in state.in_flight.items():
            rebuild = _Rebuild(key, lines)
            for line in lines:
                self._pins[line] = rebuild
        self._ready: list[Batch] = []
        written = {line for line in self._pins if line in state.done}
        #: the outputs for the sender, minus the results the earlier run wrote
        self.results = Unwritten(outputs, written)
        outputs.summary.absorb(state.statuses, state.segments)

    async def divert(self, chunk: list[Item], preparer: Preparer, submit: Submit) -> list[Item]:
        """The items of ``chunk`` that still go the usual way.

        Finished lines are dropped. The lines of in-flight batches are prepared into
        their rebuilt batches; one that is whole is submitted again, or its lines are
        answered AMBIGUOUS when it must not be re-sent.
        """
        done, pins = self.state.done, self._pins
        if not pins:
            return [item for item in chunk if item.line not in done] if done else chunk
        fresh: list[Item] = []
        pinned: list[Item] = []
        for item in chunk:
            if item.line in pins:
                pinned.append(item)
            elif item.line not in done:
                fresh.append(item)
        if pinned:
            preparer.feed(pinned, self, self._outputs)
            ready, self._ready = self._ready, []
            for batch in ready:
                if self.resend:
                    await submit(batch)
                else:
                    self.results.unsent(batch, Status.AMBIGUOUS, IN_FLIGHT_AT_CRASH, attempts=0)
                    self._journal.done(batch.key)
        return fresh

    def add_many(self, group: Group, entries: list[Entry]) -> None:
        """Where `divert` has the preparer put the entries of in-flight lines."""
        for entry in entries:
            rebuild = self._pins.pop(entry.line)
            if rebuild.add(group, entry):
                self._ready.append(rebuild.batch(self.state.job, self._count_segments))


class _Rebuild:
    """An in-flight batch of the earlier run, gathering its lines again."""

    __slots__ = ("entries", "group", "key", "lines")

    def __init__(self, key: str, lines: list[int]) -> None:
        self.key = key
        self.lines = lines
        self.entries: dict[int, Entry] = {}
        self.group: Group | None = None

    def add(self, group: Group, entry: Entry) -> bool:
        """Take one line back; True once every line is back."""
        self.group = group
        self.entries[entry.line] = entry
        return len(self.entries) == len(self.lines)

    def batch(self, job: str, count_segments: bool) -> Batch:
        """The batch as it was sent: its lines in their order, under its key."""
        assert self.group is not None
        batch = Batch(self.group, 0.0, count_segments=count_segments)
        batch.entries = [self.entries[line] for line in self.lines]
        batch.units = sum(e.segments for e in batch.entries) if count_segments else len(batch)
        batch.close(job)
        # The same function of the same lines gives the same key; the journal's own
        # record is the one the gateway saw, so that is the one it is sent under.
        batch.key = self.key
        return batch


class Unwritten:
    """The outputs as the sender sees them, minus the results already written.

    Only batches rebuilt by `Resume` hold such lines; once all of those are written
    every batch passes straight through.
    """

    def __init__(self, outputs: Outputs, written: set[int]) -> None:
        self._outputs = outputs
        self._written = written

    @property
    def summary(self) -> Summary:
        """The run's summary."""
        return self._outputs.summary

    def accepted(
        self,
        batch: Batch,
        ids: list[str | None],
        *,
        status: str,
        attempts: int,
        transaction_id: str | None,
        started: float,
    ) -> None:
        """`Outputs.accepted` for the lines without a result."""
        if self._written and not self._written.isdisjoint(batch.lines):
            keep = self._unwritten(batch)
            if not keep:
                return
            batch, ids = _part(batch, keep), [ids[index] for index in keep]
        self._outputs.accepted(
            batch,
            ids,
            status=status,
            attempts=attempts,
            transaction_id=transaction_id,
            started=started,
        )

    def unsent(
        self, batch: Batch, status: str, error: str, *, attempts: int, invalid: bool = False
    ) -> None:
        """`Outputs.unsent` for the lines without a result."""
        if self._written and not self._written.isdisjoint(batch.lines):
            keep = self._unwritten(batch)
            if not keep:
                return
            batch = _part(batch, keep)
        self._outputs.unsent(batch, status, error, attempts=attempts, invalid=invalid)

    def _unwritten(self, batch: Batch) -> list[int]:
        """Positions of the lines without a result; forgets the others (written once)."""
        written = self._written
        lines = batch.lines
        keep = [index for index, line in enumerate(lines) if line not in written]
        written.difference_update(lines)
        return keep


def _part(batch: Batch, positions: list[int]) -> Batch:
    """The entries of ``batch`` at ``positions``, as a batch of their own (same key)."""
    part = Batch(batch.group, batch.created, count_segments=batch.count_segments)
    part.entries = [batch.entries[index] for index in positions]
    part.units = sum(e.segments for e in part.entries) if part.count_segments else len(part)
    part.job, part.key = batch.job, batch.key
    return part


# --- 6. the end of a resumed run: one result per line again --------------------------


def compaction_path(results: str) -> str:
    """Where `compact` writes the new results file before renaming it over the old."""
    return results + ".compacting"


def compact(results: str, journal: Journal) -> int:
    """Rewrite ``results`` with exactly one line per input line, the newest outcome of
    each winning; return how many older lines were dropped.

    Two streaming passes and one byte per line: the first counts the results of each
    line, the second writes a line's result only when it is that line's last. The new
    file is written beside the old, fsynced and renamed over it; the journal records
    the compaction before and after. A crash before the rename leaves the old file
    whole (a resumed run deletes the half-written one, `discard_compaction`); after
    it, the new one, which is as good.
    """
    counts = bytearray()
    with open(results, "rb") as f:
        for raw in f:
            line = _line_of(raw)
            if line >= len(counts):
                counts.extend(bytes(line - len(counts) + 1 + len(counts) // 2))
            counts[line] = min(counts[line] + 1, 255)
    temporary = compaction_path(results)
    journal.compaction("start")
    dropped = 0
    try:
        with open(results, "rb") as f, open(temporary, "wb") as out:
            for raw in f:
                line = _line_of(raw)
                counts[line] -= 1
                if counts[line]:
                    dropped += 1
                else:
                    out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, results)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise OutputError(f"cannot compact {results}: {exc.strerror}") from None
    _fsync_directory(results)
    journal.compaction("done")
    return dropped


def discard_compaction(results: str) -> None:
    """A compaction a crash interrupted before its rename: the old file is whole."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(compaction_path(results))


def _line_of(raw: bytes) -> int:
    return int(orjson.loads(raw)["line"])


def _fsync_directory(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
