"""Recipient → message: number, group, rendered text, segments — or a local result.

This is the per-recipient hot path. `Preparer.feed` takes a whole input chunk and runs a
plain loop over it: no await, no exception in the normal case, one tuple per message.
What cannot be sent (invalid number, missing param, too many segments, a malformed
line) becomes a local result at once and never reaches the network.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from operator import attrgetter
from typing import Any, Protocol, cast

from dispatcher.config import Config
from dispatcher.errors import InvalidNumber, RenderError
from dispatcher.models import Entry, Group, Recipient, Rejected, Status
from dispatcher.numbers import normalize, normalize_many
from dispatcher.renderer import Template, compile_template
from dispatcher.segments import count

#: Distinct per-line templates kept compiled; beyond this the cache starts afresh.
TEMPLATE_CACHE = 4096

_new_entry = tuple.__new__
_to_of = attrgetter("to")


class Batches(Protocol):
    """Where prepared messages go, in runs of one group (see `dispatcher.batcher`)."""

    def add_many(self, group: Group, entries: list[Entry]) -> None: ...


class LocalSink(Protocol):
    """Where results decided without the gateway go (see `dispatcher.writers`)."""

    def rejected(self, item: Rejected) -> None: ...

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
    ) -> None: ...


class Preparer:
    """Turns recipients into batch entries under the job's template and options."""

    def __init__(self, config: Config, *, capacity: Callable[[str], float]) -> None:
        if config.sender is None or config.text is None:
            raise ValueError("the job needs a sender code and a text")  # checked by the CLI
        self._config = config
        self._capacity = capacity
        self._model = config.segment_model
        self._max_segments = config.max_segments
        self._strict = config.strict_numbers
        self._keep_text = config.single
        self._templates: dict[str, Template] = {}
        self._groups: dict[Hashable, Group] = {}
        self._default = self._group(config.sender, config.text, None, None, None)

    def feed(self, chunk: list[Recipient | Rejected], batcher: Batches, sink: LocalSink) -> None:
        """Prepare every item of an input chunk, adding messages to ``batcher``."""
        model, max_segments, strict = self._model, self._max_segments, self._strict
        keep_text, default = self._keep_text, self._default
        # All the numbers of the chunk at once; a rejected line has none (None below).
        try:
            raw_numbers = list(map(_to_of, chunk))
        except AttributeError:
            raw_numbers = [item.to if type(item) is Recipient else "" for item in chunk]
        numbers = normalize_many(raw_numbers, strict=strict)
        # Entries go to the batcher in runs of one group (usually the whole chunk).
        run_group = default
        run: list[Entry] = []
        append = run.append
        # A rejected line has no number: every one is handled where `to` is None.
        for item, to in zip(cast("list[Recipient]", chunk), numbers, strict=True):
            if to is None:
                self._unsendable(item, sink)
                continue
            group = default
            if item.sender == "":
                sink.local(item.line, to, Status.REJECTED, "field 'from' is empty", ref=item.ref)
                continue
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
                continue
            if not text:
                sink.local(
                    item.line, to, Status.REJECTED, "the rendered text is empty", ref=item.ref
                )
                continue
            # Unpacked: a NamedTuple's attributes are descriptor calls, ~40 ns each.
            encoding, _, segments = count(text, model)
            if segments > max_segments:
                sink.local(
                    item.line,
                    to,
                    Status.SEGMENTS_EXCEEDED,
                    f"text needs {segments} segments ({encoding}), "
                    f"more than max_segments {max_segments}",
                    ref=item.ref,
                    segments=segments,
                    encoding=encoding,
                )
                continue
            if group is not run_group:
                batcher.add_many(run_group, run)
                run_group, run = group, []
                append = run.append
            # tuple.__new__ rather than Entry(...): no Python-level __new__ frame, 120 ns.
            append(
                _new_entry(
                    Entry,
                    (
                        item.line,
                        to,
                        item.params,
                        item.ref,
                        segments,
                        encoding,
                        text if keep_text else None,
                    ),
                )
            )
        batcher.add_many(run_group, run)

    def _unsendable(self, item: Recipient | Rejected, sink: LocalSink) -> None:
        """A rejected line, or a number that `normalize` refuses (with the reason)."""
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
