"""Recipient → message: number, group, rendered text, segments — or a local result.

This is the per-recipient hot path. `Preparer.feed` takes a whole input chunk and runs a
plain loop over it: no await, no exception in the normal case, one tuple per message.
What cannot be sent (invalid number, missing param, too many segments, a malformed
line) becomes a local result at once and never reaches the network.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from itertools import compress, repeat
from operator import attrgetter, itemgetter, ne, not_
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson

from dispatcher import native
from dispatcher.config import Config
from dispatcher.errors import InvalidNumber, RenderError
from dispatcher.models import RECIPIENT_FIELDS, Encoding, Entry, Group, Recipient, Rejected, Status
from dispatcher.numbers import normalize, normalize_many, normalize_or_none, refusal
from dispatcher.policy import Policy, Sink
from dispatcher.renderer import Template, compile_template
from dispatcher.segments import count, count_many, count_many_most
from dispatcher.smart import encode

if TYPE_CHECKING:
    from dispatcher.dedupe import ChunkNumbers

UCS2 = Encoding.UCS2

#: Distinct per-line templates kept compiled; beyond this the cache starts afresh.
TEMPLATE_CACHE = 4096

_new_entry = tuple.__new__
_COUNT = itertools.count
_overrides_of = attrgetter("sender", "text", "external_id", "client_id", "email")
_params_of = attrgetter("params")
_ref_of = attrgetter("ref")
_line_of = attrgetter("line")
_encoding_of = itemgetter(0)  # of a SegmentCount
_segments_of = itemgetter(2)
_NO_OVERRIDES = (None, None, None, None, None)
_entry_line = itemgetter(0)  # Entry.line
#: What the column path looks at in place of a line without a number (set aside).
_NO_RECIPIENT = Recipient(line=0, to="")
#: An opted-out line's place in its chunk once its result is written (`Preparer._opt_out`).
_ANSWERED = Recipient(line=0, to="")


#: A run of a chunk's messages of one group: the group, the entries and (when a policy
#: reads them) their rendered texts.
Run = tuple[Group, list[Entry], "list[str] | None"]
#: A chunk's plain lines prepared (`Preparer._plain`): the positions of the other lines,
#: the plain ones' entries and (when a policy reads them) their texts.
Plain = tuple[list[int], list[Entry], "list[str] | None"]


def _extend(runs: list[Run], group: Group, entries: list[Entry], texts: list[str] | None) -> None:
    """Add messages of ``group`` to the chunk's ``runs``: to the last run when it is of
    the same group, else as a new run."""
    if runs and runs[-1][0] is group:
        runs[-1][1].extend(entries)
        last = runs[-1][2]
        if last is not None and texts is not None:
            last.extend(texts)
    else:
        runs.append((group, entries, texts))


_to_of = attrgetter("to")


class Batches(Protocol):
    """Where prepared messages go, in runs of one group (see `dispatcher.batcher`)."""

    def add_many(self, group: Group, entries: list[Entry]) -> None: ...


class LocalSink(Sink, Protocol):
    """Where results decided without the gateway go (see `dispatcher.writers`): the
    policies' `local` results, and malformed lines."""

    def rejected(self, item: Rejected) -> None: ...

    def local_many(
        self, status: Status, error: str, lines: list[int], tos: list[str | None], refs: list[Any]
    ) -> None: ...

    def invalid_many(
        self, lines: list[int], tos: list[str], reasons: list[str], refs: list[Any]
    ) -> None: ...


class OptOut(Protocol):
    """What the opt-out check needs of `dispatcher.suppress.SuppressionList`."""

    def listed_keys(self, keys: Any) -> list[int]: ...


class Preparer:
    """Turns recipients into batch entries under the job's template and options.

    Per line (SPEC §10's order): number, opt-out (``optout``: one look-up per chunk),
    render, smart encoding, segments. Then per run of one group, the chunk-level
    ``policies`` (`dispatcher.policy`: duplicates, caps), then the batcher.
    """

    def __init__(
        self,
        config: Config,
        *,
        capacity: Callable[[str], float],
        optout: OptOut | None = None,
        policies: Sequence[Policy] = (),
    ) -> None:
        if config.sender is None or config.text is None:
            raise ValueError("the job needs a sender code and a text")  # checked by the CLI
        self._config = config
        self._capacity = capacity
        self._model = config.segment_model
        self._max_segments = config.max_message_segments
        self._strict = config.strict_numbers
        self._keep_text = config.single
        self._smart = config.smart_encoding
        self._transliterate = config.transliterate
        self._optout = optout
        self.policies = list(policies)
        #: the rendered texts go with a run to the policies (number+text duplicates),
        #: as far as the last one that reads them
        self._texts = any(getattr(p, "texts", False) for p in self.policies)
        self._texts_until = max(
            (i for i, p in enumerate(self.policies) if getattr(p, "texts", False)), default=-1
        )
        #: policies told each chunk's numbers before its runs (`ChunkNumbers`: duplicates)
        self._chunk_hooks = [p.begin_chunk for p in self.policies if hasattr(p, "begin_chunk")]
        self._templates: dict[str, Template] = {}
        self._groups: dict[Hashable, Group] = {}
        self._smart_groups: dict[Hashable, Group] = {}
        self._default = self._group(config.sender, config.text, None, None, None)

    def feed(self, chunk: list[Recipient | Rejected], batcher: Batches, sink: LocalSink) -> None:
        """Prepare every item of an input chunk, adding messages to ``batcher``."""
        # All the numbers of the chunk at once; a rejected line has none (None below).
        core = native.core
        if core is not None and not self._strict:
            numbers = core.chunk_numbers(chunk, Recipient, RECIPIENT_FIELDS, normalize_or_none)
        else:
            try:
                raw_numbers = list(map(_to_of, chunk))
            except AttributeError:
                raw_numbers = [item.to if type(item) is Recipient else "" for item in chunk]
            numbers = normalize_many(raw_numbers, strict=self._strict)
        if chunk and (self._optout is not None or self._chunk_hooks):
            # The numbers' keys are parsed once, for the opt-out lists and the duplicates.
            shared = _chunk_numbers(chunk[0].line, chunk[-1].line, numbers)
            for begin in self._chunk_hooks:
                begin(shared)
            if self._optout is not None:
                chunk, numbers = self._opt_out(chunk, numbers, shared, sink)
        runs = None if self._smart else self._columns(chunk, numbers, sink)
        if runs is None:
            runs = self._line_by_line(chunk, numbers, sink)
        self._pass(runs, batcher, sink)

    def _columns(
        self, chunk: list[Recipient | Rejected], numbers: list[str | None], sink: LocalSink
    ) -> list[Run] | None:
        """The chunk's runs, its plain lines prepared a column at a time; None when the
        chunk needs the line-by-line path (`_line_by_line`).

        A plain line is a recipient with a valid number and none of its own overrides
        (sender, text, externalId, clientId, email): its message goes with the job's
        template in the default group, so each step — params, render, count, entry — is
        done for the chunk's plain lines at once, with no Python code per line: by the C
        part where it is built (`_plain_in_c`), else by C-level ``map`` calls
        (`_plain`, its twin). The other lines (a few in a hundred: their own text, an
        invalid number, a malformed line) take `_one`, as on the line-by-line path, and
        their messages are put back in input order between the plain ones. A chunk where
        a plain line does not render, renders empty or needs too many segments goes line
        by line instead (so that each of those lines gets its own result): rare, and
        only that chunk.
        """
        core = native.core
        try:
            plain = (
                self._plain(chunk, numbers)
                if core is None
                else self._plain_in_c(core, chunk, numbers)
            )
        except RenderError:
            return None
        if plain is None:
            return None
        specials, entries, kept_texts = plain
        default = self._default
        if specials and not self._strict:
            specials = self._refuse_numbers(chunk, numbers, specials, sink)
        if not specials:
            return [(default, entries, kept_texts)]
        # The other lines, and their messages put back in input order.
        runs: list[Run] = []
        start = 0
        for position in specials:
            prepared = self._one(cast("Recipient", chunk[position]), numbers[position], sink)
            if prepared is None:
                continue
            group, entry, text = prepared
            end = bisect_left(entries, entry.line, start, key=_entry_line)
            if end > start:
                _extend(runs, default, entries[start:end], kept_texts and kept_texts[start:end])
                start = end
            _extend(runs, group, [entry], [text] if kept_texts is not None else None)
        _extend(runs, default, entries[start:], kept_texts and kept_texts[start:])
        return runs

    def _refuse_numbers(
        self,
        chunk: list[Recipient | Rejected],
        numbers: list[str | None],
        specials: list[int],
        sink: LocalSink,
    ) -> list[int]:
        """The chunk's invalid numbers ``INVALID_NUMBER``, all at once (`refusal`'s
        reasons, `Outputs.invalid_many`'s lines: ~1 against ~4 µs a line one by one);
        the other special positions, without the opted-out lines (answered already: a
        call of `_one` each had cost ~1 µs, 2 % of the issue-13 run's lines)."""
        answered = [position for position in specials if chunk[position] is _ANSWERED]
        refused = [
            position
            for position in specials
            if numbers[position] is None
            and type(chunk[position]) is Recipient
            and chunk[position] is not _ANSWERED
        ]
        if refused:
            items = cast("list[Recipient]", [chunk[position] for position in refused])
            tos = [item.to for item in items]
            reasons = list(map(refusal, tos))
            if None in reasons:  # pragma: no cover - normalize_many and refusal disagree
                return specials  # a bug: `_unsendable` says which number
            sink.invalid_many(
                [item.line for item in items],
                tos,
                cast("list[str]", reasons),
                [i.ref for i in items],
            )
        elif not answered:
            return specials
        if len(refused) + len(answered) == len(specials):
            return []
        gone = set(refused).union(answered)
        return [position for position in specials if position not in gone]

    def _plain_in_c(
        self, core: ModuleType, chunk: list[Recipient | Rejected], numbers: list[str | None]
    ) -> Plain | None:
        """`_plain` by the C part: the plain lines found and rendered in one pass
        (``plain_texts``; the template's own ``render`` for a param it does not write, as
        a float beyond 1e16), counted (`count_many_most`), then their entries made in one
        more (``plain_entries``)."""
        template = self._default.template
        found = core.plain_texts(
            chunk, numbers, Recipient, RECIPIENT_FIELDS, template.literals, template.indexes,
            template.render, orjson.dumps,
        )  # fmt: skip
        if found is None:  # a template of more than 8 placeholders
            return self._plain(chunk, numbers)
        specials, texts = found
        if not all(texts):
            return None
        counts, most = count_many_most(texts, self._model)
        if most > self._max_segments:
            return None
        entries = core.plain_entries(
            Entry, chunk, numbers, specials, counts, texts if self._keep_text else None,
            Recipient, RECIPIENT_FIELDS,
        )  # fmt: skip
        return specials, entries, texts if self._texts else None

    def _plain(self, chunk: list[Recipient | Rejected], numbers: list[str | None]) -> Plain | None:
        """The positions of the chunk's lines that are not plain, the plain lines'
        entries and (when a policy reads them) texts; None when a plain line renders
        empty or needs too many segments. RenderError when one does not render."""
        default = self._default
        # Plain: a number, and no overrides. Only the lines without a number (a
        # rejected line among them) are looked at one by one here.
        missing = list(compress(_COUNT(), map(not_, numbers)))
        items = cast("list[Recipient]", chunk)
        if missing:
            items = list(items)
            for position in missing:
                items[position] = _NO_RECIPIENT
        special = list(map(ne, map(_overrides_of, items), repeat(_NO_OVERRIDES)))
        for position in missing:
            special[position] = True
        specials = list(compress(_COUNT(), special))
        if specials:
            items = _without(items, specials)
            plain_numbers = _without(numbers, specials)
        else:
            plain_numbers = numbers
        params = list(map(_params_of, items))
        texts = list(map(default.template.render, params))
        if not all(texts):
            return None
        counts = count_many(texts, self._model)
        segments = list(map(_segments_of, counts))
        if segments and max(segments) > self._max_segments:
            return None
        entries: list[Entry] = list(
            map(
                _new_entry,
                repeat(Entry),
                zip(
                    map(_line_of, items),
                    plain_numbers,
                    params,
                    map(_ref_of, items),
                    segments,
                    map(_encoding_of, counts),
                    texts if self._keep_text else repeat(None),
                    repeat(0),
                    repeat(0),
                ),
            )
        )
        return specials, entries, texts if self._texts else None

    def _line_by_line(
        self,
        chunk: list[Recipient | Rejected],
        numbers: list[str | None],
        sink: LocalSink,
    ) -> list[Run]:
        """The chunk's runs, one line at a time (`_one`)."""
        runs: list[Run] = []
        texts = self._texts
        one = self._one
        for item, to in zip(cast("list[Recipient]", chunk), numbers, strict=True):
            prepared = one(item, to, sink)
            if prepared is not None:
                group, entry, text = prepared
                _extend(runs, group, [entry], [text] if texts else None)
        return runs

    def _one(
        self, item: Recipient, to: str | None, sink: LocalSink
    ) -> tuple[Group, Entry, str] | None:
        """One line's group, message and rendered text; None when its result is local
        (written to ``sink``). The message carries the segments smart encoding saved
        (`Entry.saved`), counted in the summary when the gateway accepts it
        (`dispatcher.writers.Outputs`)."""
        # A rejected line has no number: every one is handled where `to` is None.
        if to is None:
            self._unsendable(item, sink)
            return None
        group = self._default
        if item.sender == "":
            sink.local(item.line, to, Status.REJECTED, "field 'from' is empty", ref=item.ref)
            return None
        try:
            if (
                item.sender is not None
                or item.text is not None
                or item.external_id is not None
                or item.client_id is not None
                or item.email is not None
            ):
                group = self._override(item)  # a line's own text may not compile
            text = group.template.render(item.params)
        except RenderError as exc:
            sink.local(item.line, to, Status.REJECTED, str(exc), ref=item.ref)
            return None
        if not text:
            sink.local(item.line, to, Status.REJECTED, "the rendered text is empty", ref=item.ref)
            return None
        model = self._model
        encoding, _, segments = count(text, model)
        params = item.params
        replaced = saved = 0
        if self._smart and encoding is UCS2:
            new, replaced = encode(text, transliterate=self._transliterate)
            if replaced:
                encoding, _, fewer = count(new, model)
                saved = segments - fewer
                text, segments, params = new, fewer, [new]
                group = self._smart_group(group)
        if segments > self._max_segments:
            sink.local(
                item.line,
                to,
                Status.SEGMENTS_EXCEEDED,
                f"text needs {segments} segments ({encoding}), "
                f"more than max_segments {self._max_segments}",
                ref=item.ref,
                segments=segments,
                encoding=encoding,
                replaced=replaced,
            )
            return None
        entry = Entry(
            item.line,
            to,
            params,
            item.ref,
            segments,
            encoding,
            text if self._keep_text else None,
            replaced,
            saved,
        )
        return group, entry, text

    @property
    def replays(self) -> bool:
        """Whether a policy keeps a state that a resume rebuilds (`replay`): dedupe."""
        return any(hasattr(policy, "register") for policy in self.policies)

    def replay(self, chunk: list[Recipient | Rejected]) -> None:
        """Prepare lines an earlier run of the job finished, and record them with the
        policies that keep a state (`dispatcher.policy.Duplicates.register`) as that
        run did — no outcome, no batch, no count. The opt-out lists are skipped: the
        caller leaves out the lines that were SUPPRESSED (the lists may have changed
        since)."""
        policies, optout = self.policies, self._optout
        self.policies = [_Registering(p) for p in policies if hasattr(p, "register")]
        self._optout = None
        try:
            self.feed(chunk, _DROPPED, _DROPPED)
        finally:
            self.policies, self._optout = policies, optout

    def readmit(
        self, start: Policy, key: Hashable, entries: list[Entry], batcher: Batches, sink: Sink
    ) -> None:
        """Entries of group ``key`` that policy ``start`` held back (`dispatcher.windows`)
        go through it again and the policies after it, then to ``batcher``."""
        group = self._group(*cast("tuple[Any, ...]", key))
        for policy in self.policies[self.policies.index(start) :]:
            keep = policy.check(group, entries, None, sink)
            if keep is not None:
                entries = [entries[i] for i in keep]
            if not entries:
                return
        batcher.add_many(group, entries)

    def _opt_out(
        self,
        chunk: list[Recipient | Rejected],
        numbers: list[str | None],
        shared: ChunkNumbers,
        sink: LocalSink,
    ) -> tuple[list[Recipient | Rejected], list[str | None]]:
        """The chunk without its opted-out lines, which are ``SUPPRESSED``."""
        assert self._optout is not None
        listed = self._optout.listed_keys(shared.keys)
        if not listed:
            return chunk, numbers
        # A listed line stays in its place as `_ANSWERED`, without a number, which the
        # rest of the chunk's way passes over (a copy of the chunk's list, not a new list
        # built a slice at a time between the listed lines: 30 ns a line of the chunk).
        chunk = list(chunk)
        items = cast("list[Recipient]", [chunk[position] for position in listed])
        sink.local_many(
            Status.SUPPRESSED,
            "the number is on an opt-out list",
            [item.line for item in items],
            [numbers[position] for position in listed],
            [item.ref for item in items],
        )
        for position in listed:
            chunk[position] = _ANSWERED
            numbers[position] = None
        return chunk, numbers

    def _pass(self, runs: list[Run], batcher: Batches, sink: LocalSink) -> None:
        """A chunk's runs pass each policy in turn, then go to the batcher.

        A policy sees all the runs of a chunk in one call when it can (``check_runs``:
        the duplicates, whose index costs ~20 µs a call, so that a file where one line
        in ten has its own text does not pay that every ten lines; the halt), else one
        call per run. Either way each policy sees the lines in input order, so the
        outcome is the one of passing each run through all the policies in turn: a
        policy's answer depends only on its own state and the lines that reach it. When
        a policy keeps every line, the runs go on as they are (their texts too, which no
        later policy reads).
        """
        policies, texts_until = self.policies, self._texts_until
        runs = [run for run in runs if run[1]]
        for i, policy in enumerate(policies):
            many = getattr(policy, "check_runs", None)
            if many is not None:
                keeps = many(runs, sink)
            else:
                keeps = [
                    policy.check(group, entries, texts, sink) for group, entries, texts in runs
                ]
            if keeps.count(None) == len(keeps):
                continue  # every line of every run passes (the usual answer): runs as they are
            passed: list[Run] = []
            for (group, entries, texts), keep in zip(runs, keeps, strict=True):
                if i >= texts_until:
                    texts = None
                if keep is not None:
                    entries = list(map(entries.__getitem__, keep))
                    if texts is not None:
                        texts = list(map(texts.__getitem__, keep))
                if entries:
                    passed.append((group, entries, texts))
            runs = passed
        for group, entries, _ in runs:
            batcher.add_many(group, entries)

    def _smart_group(self, group: Group) -> Group:
        """The group of ``group``'s messages that smart encoding changed: each goes with
        its new text as its one param of the template ``{0}``, so a batch body (the
        template and the params, rendered by the gateway) carries exactly that text."""
        smart = self._smart_groups.get(group.key)
        if smart is None:
            sender, _, external_id, client_id, email = cast("tuple[Any, ...]", group.key)
            smart = self._smart_groups[group.key] = self._group(
                sender, "{0}", external_id, client_id, email
            )
        return smart

    def _unsendable(self, item: Recipient | Rejected, sink: LocalSink) -> None:
        """A rejected line, or a number that `normalize` refuses (with the reason); an
        opted-out line (`_ANSWERED`) is answered already."""
        if item is _ANSWERED:
            return
        if isinstance(item, Rejected):
            sink.rejected(item)
            return
        try:
            normalize(item.to, strict=self._strict)
        except InvalidNumber as exc:
            sink.local(
                item.line, item.to, Status.INVALID_NUMBER, str(exc), ref=item.ref, invalid=True
            )
        else:  # pragma: no cover - normalize_many and normalize disagree: a bug
            raise AssertionError(f"normalize_many refused {item.to!r}, normalize did not")

    def _override(self, item: Recipient) -> Group:
        config = self._config
        return self._group(
            item.sender if item.sender is not None else config.sender,  # type: ignore[arg-type]
            item.text if item.text is not None else config.text,  # type: ignore[arg-type]
            item.external_id,
            item.client_id,
            item.email,
        )

    def _group(
        self,
        sender: str,
        text: str,
        external_id: str | None,
        client_id: str | None,
        email: str | None,
    ) -> Group:
        key = (sender, text, external_id, client_id, email)
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= TEMPLATE_CACHE:
                self._groups.clear()
                self._templates.clear()
            template = self._templates.get(text)
            if template is None:
                template = self._templates[text] = compile_template(text)
            group = self._groups[key] = Group(
                key,
                sender=sender,
                template=template,
                options=self._options(sender, external_id, client_id, email),
                capacity=self._capacity(sender),
            )
        return group

    def _options(
        self, sender: str, external_id: str | None, client_id: str | None, email: str | None
    ) -> dict[str, Any]:
        """The request fields besides text and to, in the gateway's spelling."""
        config = self._config
        options: dict[str, Any] = {"from": sender, "type": "MT"}
        if config.request_dr:
            options["requestDR"] = True
        for name, value in (
            ("callbacks", config.callbacks),
            ("connection", config.connection),
            ("email", email if email is not None else config.email),
            ("externalId", external_id if external_id is not None else config.external_id),
            ("clientId", client_id if client_id is not None else config.client_id),
        ):
            if value is not None:
                options[name] = value
        return options


def _without(values: list[Any], positions: list[int]) -> list[Any]:
    """``values`` without those at ``positions`` (ascending): copied a slice at a time
    into a list of the final size. ``list(compress(...))`` grows its list by reallocs,
    which copy it whenever the heap has no room to grow in place: over 200 k lines, 67 M
    instructions of such copies with the campaign checks on, 22 M with them off
    (callgrind). 9 against 27 to 33 ns a line for 150 positions in 5000, the mask
    included."""
    kept: list[Any] = [None] * (len(values) - len(positions))
    at = start = 0
    for position in positions:
        end = at + position - start
        kept[at:end] = values[start:position]
        at, start = end, position + 1
    kept[at:] = values[start:]
    return kept


def _chunk_numbers(first: int, last: int, numbers: list[str | None]) -> ChunkNumbers:
    """`dispatcher.dedupe.ChunkNumbers` of a chunk (imported here: a job with neither
    opt-out lists nor dedupe never imports it)."""
    from dispatcher.dedupe import ChunkNumbers

    return ChunkNumbers.of(first, last, numbers)


class _Registering:
    """A policy that keeps a state, recording a replayed run and keeping none of it."""

    __slots__ = ("_policy",)

    def __init__(self, policy: Any) -> None:
        self._policy = policy

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None:
        self._policy.register(group, entries, texts)
        return []


class _Dropped:
    """Where a replay's batches and outcomes go: nowhere."""

    def add_many(self, group: Group, entries: list[Entry]) -> None:
        pass

    def rejected(self, item: Rejected) -> None:
        pass

    def local(self, *_: Any, **__: Any) -> None:
        pass

    def local_many(self, *_: Any) -> None:
        pass

    def invalid_many(self, *_: Any) -> None:
        pass


_DROPPED = _Dropped()
