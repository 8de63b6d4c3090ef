"""What a resumed run decides, in the order it decides it.

A send writes its results and a journal (`dispatcher.journal`). When it stops early —
a crash, kill -9, Ctrl-C, a fatal error — ``send --resume`` with the same input and
outputs finishes the job, and this module is where a resume can be followed:

1. `open_job` opens the journal, holding the job's lock (`dispatcher.lock`): a new job
   (the journal created atomically; ``--force`` replaces it), or the job an earlier
   run left. Resuming refuses a journal written with other message options
   (`fingerprint`, naming the options that changed: `body_options`) or for an input of another size.
2. `ResumeState.read` reads what that run left, trusting nothing it cannot check: a
   journal record that is not sound (`dispatcher.journal.JournalFile`), a batch key
   of another job, a line in two batches in flight, a results line that is not a
   result or disagrees with the journal (`_disagreement`; an ``id`` for a line no
   batch was sent with) all stop the resume (exit 2) before anything changes. Only
   what a crash leaves — a last journal record or results line cut short — is cut
   off, with a warning. The results file is then the truth about which lines are
   *finished*; a batch recorded ``sent`` with a line that has no result was *in
   flight* when the run stopped — unless it was recorded ``unsent`` (the gateway
   certainly did not act).
3. `Resume.divert` is the resumed run's first stage over each input chunk: it drops
   finished lines and diverts the lines of in-flight batches into rebuilt batches —
   the same lines in the same order, hence the same body and idempotency key. A line
   of one that does not come back as it was sent stops the run (`InputChanged`).
4. A rebuilt batch is sent again under its key when the gateway honours keys
   (``idempotency``) or the user accepts the risk (``--retry-ambiguous``); otherwise
   its lines become AMBIGUOUS: the gateway may have sent them already.
5. Some lines of a rebuilt batch may have their results already. `Resume.results`
   stands in front of the outputs for the sender and is the one place that drops
   results written twice; the batcher and the writers know nothing of resuming.

An outcome that leaves a line resumable (NOT_SENT by a cap, OUTSIDE_WINDOW,
CANCELLED) is a result that does not put its line in ``done``: the resumed run
attempts the line again and appends its newer result (`dispatcher.finished` lets a
later result replace a resumable one, and only that). At the end of a resumed run
that replaced any, `compact` rewrites the results file to one line per input line.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from dispatcher.config import KEYS, Config
from dispatcher.errors import ConfigError, FatalError, OutputError
from dispatcher.finished import Finished, LineSet
from dispatcher.journal import DamagedJournal, Journal, JournalFile, damaged, journal_path
from dispatcher.models import Batch, Entry, Group, Recipient, Rejected, Status
from dispatcher.pricing import Pricing
from dispatcher.schedule import Schedule
from dispatcher.writers import Outputs, prune

if TYPE_CHECKING:
    from dispatcher.prepare import Preparer
    from dispatcher.summary import Summary

IN_FLIGHT_AT_CRASH = (
    "in flight when an earlier run stopped: the gateway may have sent it, and it does not "
    "honour idempotency keys, so it was not sent again"
)

Item = Recipient | Rejected
Submit = Callable[[Batch], Awaitable[None]]


# --- 1. the job: new, or the one an earlier run left --------------------------------


#: The options that change a message body (or which lines are sent): a resume must
#: use the same. Caps, opt-out lists, windows, rates and prices may change.
BODY_OPTIONS = (
    "sender",
    "text",
    "request_dr",
    "callbacks",
    "connection",
    "email",
    "external_id",
    "client_id",
    "endpoint",
    "segment_model",
    "max_message_segments",
    "strict_numbers",
    "smart_encoding",
    "transliterate",
    # dedupe changes which lines are sent, not their bodies; kept to be safe
    "dedupe",
)


def _digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value), digest_size=8).hexdigest()


def body_options(config: Config) -> dict[str, str]:
    """Each body option's flag → a digest of its value (the value itself may hold a
    secret: a callback URL), recorded in the journal header so that a resume can name
    the options that changed."""
    options = {KEYS[name].option: _digest(getattr(config, name)) for name in BODY_OPTIONS}
    if config.shard is not None:  # only when set: older journals stay resumable
        options[KEYS["shard"].option] = _digest(config.shard)
    return options


def fingerprint(config: Config) -> str:
    """What must not change between a run and its resume: everything in the bodies."""
    return _digest(sorted(body_options(config).items()))


def legacy_fingerprint(config: Config) -> str:
    """The fingerprint of a journal header without ``options`` (written before they
    were recorded): it covered fewer options, and cannot say which one changed."""
    return _digest([getattr(config, name) for name in BODY_OPTIONS[:12]])


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


def job_results(config: Config) -> str | None:
    """The results path that names this run's job, or None when the results go to a
    stream (stdout, ``/dev/null``, a pipe): then there is no job to journal, lock or
    resume."""
    if config.results == "-":
        return None
    try:
        mode = os.stat(config.results).st_mode
    except OSError:
        return config.results
    streams = (stat.S_ISCHR, stat.S_ISFIFO, stat.S_ISSOCK)
    return None if any(is_stream(mode) for is_stream in streams) else config.results


def open_job(
    config: Config,
    source: str,
    schedule: Schedule | None = None,
    *,
    text_option: str = "--text",
) -> tuple[Journal, ResumeState | None]:
    """The journal of this run — a new job, or with ``--resume`` the job an earlier run
    left, together with what that run left. Called holding the job's lock
    (`dispatcher.lock`): nothing of the job is read, created or removed without it.

    ``text_option`` is the option this run's text came from (``--text-file``), which a
    refused resume names when the text changed.

    A new job records ``schedule`` (this run's, resolved) in its journal; a resumed one
    keeps the schedule its first run recorded (``state.schedule``), refusing one given
    again otherwise (`Schedule.resumed`)."""
    results = job_results(config)
    if results is None or config.dry_run:
        if config.resume:
            raise ConfigError(
                "--resume needs --results PATH (and a real send): there is no journal "
                "for results on stdout or for a dry run"
            )
        if results is not None:
            _clear_for_dry_run(journal_path(results), force=config.force)
        return Journal(None, secrets.token_hex(6)), None
    path = journal_path(results)
    if config.resume:
        discard_compaction(results)
        state = ResumeState.read(
            path,
            results,
            fingerprint(config),
            input_size(source),
            pricing=Pricing.from_config(config.price_per_segment, config.prices),
            options=body_options(config),
            legacy_fingerprint=legacy_fingerprint(config),
            named={"--text": text_option},
        )
        if schedule is not None:
            state.schedule = schedule.resumed(state.schedule, config, path)
        return Journal(path, state.job, fsync=config.fsync), state
    journal = Journal.create(
        path,
        secrets.token_hex(6),
        fingerprint=fingerprint(config),
        options=body_options(config),
        source=source,
        input_size=input_size(source),
        schedule=None if schedule is None else schedule.record(),
        fsync=config.fsync,
        replace=config.force,
    )
    return journal, None


def _clear_for_dry_run(path: str, *, force: bool) -> None:
    """A dry run overwrites the results file: never under a job that left a journal
    (its results would be lost, and a resume would take DRY_RUN lines for finished
    ones) unless ``--force`` starts over, which removes the journal."""
    if not os.path.lexists(path):
        return
    if not force:
        raise ConfigError(
            f"a journal from an earlier run exists at {path}: a dry run would overwrite "
            "that job's results; finish it with --resume, or add --force to start over"
        )
    os.unlink(path)


# --- 2. what the earlier run left ----------------------------------------------------


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
    #: the highest line with a result (0: none)
    last_line: int = 0
    #: what earlier runs may have sent (accepted or AMBIGUOUS): messages, segments, cost
    committed: tuple[int, int, float] = (0, 0, 0.0)
    #: the cost of the billable segments already written, priced by the table
    billed: float = 0.0
    #: finished lines not replayed through the duplicate check (DUPLICATE, SUPPRESSED)
    unregistered: LineSet = field(default_factory=LineSet)
    #: lines whose newest result is resumable (NOT_SENT…): attempted again
    pending: LineSet = field(default_factory=LineSet)
    #: result lines a newer result of their line replaces (dropped by `compact`)
    superseded: int = 0
    #: the schedule the job's first run recorded (None: a journal from before schedules)
    schedule: Schedule | None = None

    @classmethod
    def read(
        cls,
        journal: str,
        results: str,
        expected_fingerprint: str,
        size: int | None = None,
        *,
        pricing: Pricing | None = None,
        options: dict[str, str] | None = None,
        legacy_fingerprint: str | None = None,
        named: Mapping[str, str] | None = None,
    ) -> ResumeState:
        """Read a journal and its results file, trusting neither blindly.

        The header must be this job's (`fingerprint`, input size); every journal record
        must be sound (`JournalFile`), every batch key the header's job's; every results
        line must be a result (`dispatcher.finished`) and agree with the journal.
        Anything else raises a `ConfigError` naming the file and the line, before
        anything is changed or sent. Only then is a last
        record or line cut short by a crash cut off, with a warning.

        The results are read before the journal's records, so only unfinished batches
        are held in memory however long the journal is. A batch is in flight when some
        of its lines have no result — whatever its ``done`` record says — unless it is
        recorded ``unsent``. A line whose newest result is resumable is not finished
        (`pending`); ``pricing`` prices what was sent, for the cost cap. ``options``
        (`body_options`) names what changed when the fingerprints differ, as ``named``
        spells them where this run set them otherwise (``{"--text": "--text-file"}``);
        ``legacy_fingerprint`` is accepted from a header that has no options.
        """
        journal_file = JournalFile(journal)
        records = journal_file.records()
        try:
            _, header = next(records, (0, {}))
        except FileNotFoundError:
            raise ConfigError(
                f"--resume: there is no journal at {journal} to resume from"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"--resume: cannot read the journal {journal}: {exc.strerror}"
            ) from None
        if "journal" not in header:
            raise DamagedJournal(
                f"--resume: {journal} has no header (a crash as it was created?): it is "
                "not a dispatcher journal, and nothing was sent from it; start over with "
                "--force"
            )
        _check_options(
            journal, header, expected_fingerprint, options, legacy_fingerprint, named or {}
        )
        _check_size(journal, header, size)
        finished = Finished.read(results, pricing=pricing)
        state = cls(
            job=header["job"],
            done=finished.done,
            statuses=finished.statuses,
            segments=finished.segments,
            last_line=finished.last_line,
            committed=finished.committed,
            billed=finished.billed,
            unregistered=finished.unregistered,
            pending=finished.pending,
            # the resumable results left are replaced by this run's outcomes
            superseded=finished.superseded + len(finished.pending),
        )
        if "schedule" in header:
            state.schedule = Schedule.from_record(header["schedule"])
        sent = LineSet()
        done, in_flight = state.done, state.in_flight
        where: dict[str, int] = {}  # key of a batch in flight → its journal line
        ours = state.job + "-"  # every batch key starts with its job (`batch_key`)
        for number, record in records:
            if "complete" in record:
                state.complete = True
                continue
            if "compaction" in record:
                continue
            key = record.get("sent") or record.get("unsent") or record["done"]
            if not key.startswith(ours):
                raise damaged(journal, number, "its batch key is not of the header's job")
            if "sent" in record:
                lines = record["lines"]
                sent.update(lines)
                if not done.has_all(lines):
                    in_flight[key] = lines
                    where[key] = number
            elif "unsent" in record:
                in_flight.pop(key, None)
        _check_in_flight(journal, in_flight, where)
        finished.check_sent(sent, journal)
        journal_file.repair()
        finished.repair()
        return state

    def keep_finished(self, path: str) -> None:
        """Rewrite an invalid-number or rejects file of the earlier run keeping only
        the finished lines: the others get their lines again in this run."""
        prune(path, keep=self.done)


def _check_in_flight(journal: str, in_flight: dict[str, list[int]], where: dict[str, int]) -> None:
    """No line is in two batches in flight, or twice in one: the batches a resume
    rebuilds must each get every line back."""
    seen: set[int] = set()
    for key, lines in in_flight.items():
        if len(set(lines)) != len(lines) or not seen.isdisjoint(lines):
            raise damaged(
                journal, where[key], "its batch shares a line with another batch in flight"
            )
        seen.update(lines)


def _check_options(
    journal: str,
    header: dict[str, Any],
    expected: str,
    options: dict[str, str] | None,
    legacy: str | None,
    named: Mapping[str, str],
) -> None:
    """The body options are the run's that wrote the journal; else exit 2, naming the
    options that changed when the header recorded them (as ``named`` spells them)."""
    was = header.get("options")
    if was is None:  # a header from before options were recorded
        if header.get("fingerprint") in (expected, legacy):
            return
        changed: list[str] = []
    else:
        now = was if options is None else options  # None: compare the fingerprints only
        changed = sorted(
            named.get(k, k) for k in was.keys() | now.keys() if was.get(k) != now.get(k)
        )
        if not changed and header.get("fingerprint") == expected:
            return
    what = (
        ", ".join(changed)
        if changed
        else "sender, text, request options, endpoint, segment model or encoding"
    )
    raise ConfigError(
        f"--resume: the message options differ from the run that wrote {journal} "
        f"({what}); resume with the same options, or use --force to start over"
    )


def _check_size(journal: str, header: dict[str, Any], size: int | None) -> None:
    was = header.get("input_size")
    if size is not None and was is not None and was != size:
        raise ConfigError(
            f"--resume: the input has changed since the run that wrote {journal} "
            f"({size} bytes, was {was}); resume with the same input, or use --force "
            "to start over"
        )


# --- 3–5. the resumed run -------------------------------------------------------------


class InputChanged(FatalError):
    """The input of a resumed run is not the job's: a line of a batch in flight did not
    come back as it was sent, or the results hold a line beyond the input (exit 3;
    the job stays resumable with its own input)."""


class Resume:
    """The resumed run's first stage (`divert`), its results filter (`results`) and its
    last word on the input (`finish`).

    Made once the outputs are open; counts the earlier run's results in the summary.

    Every line of an in-flight batch must come back as it was sent: when one is
    missing (the reader went past it, or the input ended), or cannot be sent now, or
    now belongs to another group, the input is not the job's — most likely a different
    stdin, where the input size cannot be checked first. The run then stops
    (`InputChanged`): answering those lines AMBIGUOUS without knowing their recipient,
    or dropping them, would leave the journal calling a job complete that is not. The
    job stays resumable, and a resume with the job's input finishes it.
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
        #: the pinned lines in order, and how many of them the reader has passed
        self._order = sorted(self._pins)
        self._passed = 0
        self._ready: list[Batch] = []
        written = {line for line in self._pins if line in state.done}
        #: the outputs for the sender, minus the results the earlier run wrote
        self.results = Unwritten(outputs, written)
        outputs.summary.absorb(state.statuses, state.segments, state.billed)

    async def divert(self, chunk: list[Item], preparer: Preparer, submit: Submit) -> list[Item]:
        """The items of ``chunk`` that still go the usual way.

        Finished lines are dropped, once replayed through the duplicate check
        (`Preparer.replay`) so that a later line duplicating one an earlier run
        finished is still a DUPLICATE. The lines of in-flight batches are prepared into
        their rebuilt batches; one that is whole is submitted again, or its lines are
        answered AMBIGUOUS when it must not be re-sent.
        """
        done, pins = self.state.done, self._pins
        if done and preparer.replays:
            self._replay(chunk, preparer)
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
            preparer.feed(pinned, self, _NotAsSent())
            ready, self._ready = self._ready, []
            for batch in ready:
                if self.resend:
                    await submit(batch)
                else:
                    self.results.unsent(batch, Status.AMBIGUOUS, IN_FLIGHT_AT_CRASH, attempts=0)
                    self._journal.done(batch.key)
        if chunk:
            self._check_passed(chunk[-1].line)
        return fresh

    def _replay(self, chunk: list[Item], preparer: Preparer) -> None:
        """Record the chunk's finished lines with the duplicate check, in input order,
        as the run that finished them did. A line that was a duplicate or suppressed
        then was no first then (``unregistered``): left out, which also keeps a pending
        line before it (NOT_SENT by a cap, say) the first of its kind. A line of an
        in-flight batch is left out too: it goes through every policy again as its
        batch is rebuilt (`add_many`), which records it."""
        done, unregistered, pins = self.state.done, self.state.unregistered, self._pins
        finished = [
            item
            for item in chunk
            if item.line in done and item.line not in unregistered and item.line not in pins
        ]
        if finished:
            preparer.replay(finished)

    def add_many(self, group: Group, entries: list[Entry]) -> None:
        """Where `divert` has the preparer put the entries of in-flight lines."""
        for entry in entries:
            rebuild = self._pins.pop(entry.line)
            if rebuild.add(group, entry):
                self._ready.append(rebuild.batch(self.state.job, self._count_segments))

    def finish(self, lines: int) -> None:
        """The input ended after ``lines`` lines: every in-flight line must have come
        back, and no result may name a line beyond it."""
        if self._pins:
            self._check_passed(max(self._pins) + 1)
        if self.state.last_line > lines:
            raise InputChanged(
                f"--resume: the results hold line {self.state.last_line}, but this input "
                f"ends at line {lines}: it is not the job's input. {_STAYS_RESUMABLE}"
            )

    def _check_passed(self, line: int) -> None:
        """Every in-flight line before ``line`` must have come back by now."""
        order, pins = self._order, self._pins
        end = bisect.bisect_left(order, line, lo=self._passed)
        for missing in order[self._passed : end]:
            if missing in pins:
                raise InputChanged(
                    f"--resume: line {missing} was in flight when the earlier run stopped, "
                    f"but this input has no such line: it is not the job's input. "
                    f"{_STAYS_RESUMABLE}"
                )
        self._passed = end


_STAYS_RESUMABLE = (
    "Nothing more is sent; the job stays resumable: --resume with the job's own input"
)


class _NotAsSent:
    """Where the preparer puts in-flight lines it cannot send now: each one was sent
    before, so the input changed."""

    def rejected(self, item: Rejected) -> None:
        self._changed(item.line, f"it is now malformed ({item.reason})")

    def local(self, line: int, to: str | None, status: Status, error: str, **_: Any) -> None:
        self._changed(line, f"it now cannot be sent ({status}: {error})")

    def local_many(
        self, status: Status, error: str, lines: list[int], tos: list[str | None], refs: list[Any]
    ) -> None:
        if lines:
            self.local(lines[0], tos[0], status, error)

    def invalid_many(
        self, lines: list[int], tos: list[str], reasons: list[str], refs: list[Any]
    ) -> None:
        if lines:
            self.local(lines[0], tos[0], Status.INVALID_NUMBER, reasons[0])

    @staticmethod
    def _changed(line: int, how: str) -> None:
        raise InputChanged(
            f"--resume: line {line} was in flight when the earlier run stopped, and {how}: "
            f"this input is not the job's. {_STAYS_RESUMABLE}"
        )


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
        if self.group is not None and group.key != self.group.key:
            raise InputChanged(
                f"--resume: line {entry.line} was in flight when the earlier run stopped, "
                "and now has another sender, text or options than its batch: this input "
                f"is not the job's. {_STAYS_RESUMABLE}"
            )
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
