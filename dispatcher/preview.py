"""What each line would be: its number, text, encoding, segments, cost — before sending.

`Previewer.row` decides one line the way ``send`` does, in ``send``'s order (parse →
number → sender → render → smart encoding → segments), with the same functions
(`dispatcher.numbers`, `dispatcher.renderer`, `dispatcher.smart`, `dispatcher.segments`),
and says why: which characters made the text UCS-2 and where, what smart encoding would
make of them, and what the message costs. `Explainer` takes input chunks as they come and
writes the rows of the lines it selects — the first N, or a seeded random sample of N
(reservoir sampling: memory O(N)) — as a table for people or NDJSON for programs, then
the totals. ``dispatcher preview`` reads the chunks itself (`read_records`,
`explain_lines`); a dry run of ``send`` can hand it the chunks its reader yields, so that
``send --dry-run --explain`` works on stdin too.

The JSON row (every key always present, null where it does not apply):
``line``; ``status`` (``OK``: would be sent; else ``INVALID_NUMBER``, ``REJECTED`` or
``SEGMENTS_EXCEEDED``, as ``send`` decides) and ``error``; ``to`` as written and
``number`` (E.164); ``from`` and ``own_text`` (the line brought its own template);
``text`` as rendered and its ``encoding``, ``units`` and ``segments``; ``non_gsm``, the
characters outside GSM-7 (``char``, ``code`` ``U+2019``, ``name``, ``at``: their 0-based
code-point indices in ``text``, ``replacement``: what smart encoding puts instead, ``""``
for removed, null for none); ``smart``, null when ``text`` is GSM-7, else smart
encoding's result (``text``, null when it cannot make the message GSM-7; ``encoding``,
``segments``, ``saved``, ``replaced`` characters, ``applied``: whether this run sends it);
``price`` per segment and ``cost`` (0 when not sent; null without prices); ``excerpt``
(the start of a malformed line).
"""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from operator import attrgetter
from typing import Any, Final, TextIO

import orjson

from dispatcher.config import Config
from dispatcher.errors import InvalidNumber, RenderError
from dispatcher.models import Encoding, Recipient, Rejected, Status
from dispatcher.numbers import normalize
from dispatcher.pricing import Pricing
from dispatcher.reader import MAX_LINE_BYTES, LineParser
from dispatcher.renderer import compile_template
from dispatcher.segments import count, non_gsm_characters
from dispatcher.smart import encode
from dispatcher.sources import ByteSource

#: Lines previewed when no number is given.
DEFAULT_LIMIT: Final = 20
#: The status of a line that would be sent.
OK: Final = "OK"

_UCS2: Final = Encoding.UCS2
_line_of: Final = attrgetter("line")


@dataclass(frozen=True, slots=True, kw_only=True)
class NonGsm:
    """A character outside GSM-7 in a text: where it is and what smart encoding makes of it."""

    char: str
    code: str
    name: str
    at: tuple[int, ...]
    replacement: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Smart:
    """What smart encoding makes of a UCS-2 text (``text`` None: it cannot help)."""

    text: str | None
    encoding: Encoding
    segments: int
    saved: int
    replaced: int
    applied: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One previewed line (see the module docstring for each field)."""

    line: int
    status: str
    error: str | None = None
    to: str | None = None
    number: str | None = None
    sender: str | None = None
    own_text: bool | None = None
    text: str | None = None
    encoding: Encoding | None = None
    units: int | None = None
    segments: int | None = None
    non_gsm: tuple[NonGsm, ...] = ()
    smart: Smart | None = None
    price: float | None = None
    cost: float | None = None
    excerpt: str | None = None

    @property
    def sent(self) -> tuple[str | None, Encoding | None, int | None]:
        """Text, encoding and segments of the message as it would go out."""
        smart = self.smart
        if smart is not None and smart.applied:
            return smart.text, smart.encoding, smart.segments
        return self.text, self.encoding, self.segments

    def as_dict(self) -> dict[str, Any]:
        """The JSON row: the fields under their documented names (``from``, not sender)."""
        return {("from" if k == "sender" else k): v for k, v in asdict(self).items()}


class Previewer:
    """Lines → `Row`s under a job's template and message options, as ``send`` would."""

    def __init__(
        self,
        config: Config,
        *,
        pricing: Pricing | None = None,
        smart_encoding: bool = False,
        transliterate: bool = False,
    ) -> None:
        if config.sender is None or config.text is None:
            raise ValueError("the job needs a sender code and a text")  # checked by the CLI
        self.sender: str = config.sender
        self.text: str = config.text
        # As send: the job's template is compiled at once, and a bad one (a placeholder
        # above {999}) is a ConfigError, not a REJECTED line after line.
        compile_template(config.text)
        self.model = config.segment_model
        self.max_segments = config.max_message_segments
        self.strict_numbers = config.strict_numbers
        self.pricing = pricing
        self.smart_encoding = smart_encoding
        self.transliterate = transliterate

    def row(self, item: Recipient | Rejected) -> Row:
        """What ``send`` would do with this line, and why."""
        free = None if self.pricing is None else 0.0  # the cost of a line not sent
        if isinstance(item, Rejected):
            reason, excerpt = item.reason, item.excerpt
            return Row(
                line=item.line, status=Status.REJECTED, error=reason, cost=free, excerpt=excerpt
            )
        line, to = item.line, item.to
        try:
            number = normalize(to, strict=self.strict_numbers)
        except InvalidNumber as exc:
            return Row(line=line, status=Status.INVALID_NUMBER, error=str(exc), to=to, cost=free)
        price = None if self.pricing is None else self.pricing.price(number)
        base = Row(line=line, status=Status.REJECTED, to=to, number=number, price=price, cost=free)
        if item.sender == "":
            return replace(base, error="field 'from' is empty")
        base = replace(
            base,
            sender=self.sender if item.sender is None else item.sender,
            own_text=item.text is not None,
        )
        try:
            text = compile_template(self.text if item.text is None else item.text).render(
                item.params
            )
        except RenderError as exc:
            return replace(base, error=str(exc))
        if not text:
            return replace(base, error="the rendered text is empty")
        encoding, units, segments = count(text, self.model)
        non_gsm: tuple[NonGsm, ...] = ()
        smart = None
        if encoding is _UCS2:
            non_gsm = self._non_gsm(text)
            smart = self._smart(text, segments)
        if smart is not None and smart.applied:
            encoding_sent, billed = smart.encoding, smart.segments
        else:
            encoding_sent, billed = encoding, segments
        status: str = OK
        error: str | None = None
        cost = free
        if billed > self.max_segments:
            status = Status.SEGMENTS_EXCEEDED
            error = (
                f"text needs {billed} segments ({encoding_sent}), "
                f"more than max_segments {self.max_segments}"
            )
        elif price is not None:
            # Rounded (not the running totals): 0.03 * 3 is 0.09, not 0.09000000000000001.
            cost = round(price * billed, 10)
        return replace(
            base,
            status=status,
            error=error,
            text=text,
            encoding=encoding,
            units=units,
            segments=segments,
            non_gsm=non_gsm,
            smart=smart,
            cost=cost,
        )

    def _smart(self, text: str, segments: int) -> Smart:
        new, replaced = encode(text, transliterate=self.transliterate)
        if not replaced:
            return Smart(
                text=None, encoding=_UCS2, segments=segments, saved=0, replaced=0, applied=False
            )
        after = count(new, self.model)
        return Smart(
            text=new,
            encoding=after.encoding,
            segments=after.segments,
            saved=segments - after.segments,
            replaced=replaced,
            applied=self.smart_encoding,
        )

    def _non_gsm(self, text: str) -> tuple[NonGsm, ...]:
        places: dict[str, list[int]] = {}
        for index, char in non_gsm_characters(text):
            places.setdefault(char, []).append(index)
        return tuple(
            NonGsm(
                char=char,
                code=f"U+{ord(char):04X}",
                name=unicodedata.name(char, ""),
                at=tuple(at),
                replacement=self._replacement(text, char, at[0]),
            )
            for char, at in places.items()
        )

    def _replacement(self, text: str, char: str, index: int) -> str | None:
        """What smart encoding puts for ``char``: tried after a plain letter or, for a
        combining accent, after the letter it follows (both then become one letter)."""
        mark = unicodedata.category(char).startswith("M")
        base = text[index - 1] if mark and index > 0 else "a"
        new, replaced = encode(base + char, transliterate=self.transliterate)
        if not replaced:
            return None
        return new if mark else new[1:]


# --- which lines: the first N, or a seeded sample of N ---------------------------------


class _First:
    def __init__(self, size: int) -> None:
        self.size = size
        self.seen = 0

    @property
    def full(self) -> bool:
        return self.seen >= self.size

    def feed(self, chunk: list[Recipient | Rejected]) -> list[Recipient | Rejected]:
        taken = chunk[: self.size - self.seen]
        self.seen += len(taken)
        return taken


class Sample:
    """A uniform random sample of ``size`` items of a stream of unknown length, the same
    for the same seed and stream: Li's reservoir algorithm L, which draws random numbers
    only for the items it takes (O(size · log(n / size)) of them), not for every item."""

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("a sample holds at least one item")
        self.size = size
        self.kept: list[Any] = []
        self.seen = 0
        self._random = random.Random(seed)
        self._w = 1.0
        self._next = 0  # index in the stream of the next item to take, once full

    def feed(self, chunk: list[Any]) -> None:
        """Consider the next items of the stream."""
        start, end = self.seen, self.seen + len(chunk)
        kept, size = self.kept, self.size
        i = start
        while len(kept) < size and i < end:
            kept.append(chunk[i - start])
            i += 1
            if len(kept) == size:
                self._w = self._weight(1.0)
                self._next = i - 1 + self._skip()
        while len(kept) == size and self._next < end:
            kept[self._random.randrange(size)] = chunk[self._next - start]
            self._w = self._weight(self._w)
            self._next += self._skip()
        self.seen = end

    def _weight(self, w: float) -> float:
        # 1 - random() is in (0, 1]; W stays strictly inside (0, 1) for the logarithms.
        w *= math.exp(math.log(1.0 - self._random.random()) / self.size)
        return min(max(w, 1e-300), 1.0 - 2**-53)

    def _skip(self) -> int:
        return math.floor(math.log(1.0 - self._random.random()) / math.log1p(-self._w)) + 1


# --- totals ------------------------------------------------------------------------------


@dataclass(slots=True)
class Totals:
    """What the previewed lines add up to (what would be sent: billed segments and cost)."""

    lines: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: Per encoding of what would be sent: [lines, segments].
    encodings: dict[str, list[int]] = field(default_factory=dict)
    segments: int = 0
    cost: float | None = None
    #: Lines smart encoding makes GSM-7, and the segments that saves.
    smart_lines: int = 0
    smart_saved: int = 0
    smart_applied: bool = False

    def add(self, row: Row) -> None:
        self.lines += 1
        self.statuses[row.status] = self.statuses.get(row.status, 0) + 1
        if row.cost is not None:
            self.cost = (self.cost or 0.0) + row.cost
        if row.smart is not None and row.smart.text is not None:
            self.smart_lines += 1
            self.smart_saved += row.smart.saved
        if row.status == OK:
            _, encoding, segments = row.sent
            assert encoding is not None
            assert segments is not None
            lines_segments = self.encodings.setdefault(encoding, [0, 0])
            lines_segments[0] += 1
            lines_segments[1] += segments
            self.segments += segments

    def as_dict(self) -> dict[str, Any]:
        """The totals as JSON would hold them."""
        return asdict(self)


# --- the table, for people ------------------------------------------------------------------

#: Lines of text shown per message before the rest is cut (``--json`` has it all).
TEXT_LINES: Final = 3
#: Indices shown per character, and characters shown per line, before "…".
_SHOWN_INDICES: Final = 4
_SHOWN_CHARACTERS: Final = 6
_NUMBER_WIDTH: Final = 16  # "+" and 15 digits
_NAMED: Final = {"": "removed", " ": "a space", "\n": "a new line"}


def visible(text: str) -> str:
    """``text`` safe and legible in a terminal: control characters as their pictures
    (``⏎`` for a new line, ``␛`` for escape), invisible ones and unusual spaces as
    ``⟨U+200B⟩``; never an escape sequence the terminal would obey."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _picture(c) for c in text)


def _picture(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "⏎"
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "␡"
    return f"⟨U+{code:04X}⟩"


def _width(char: str) -> int:
    """Terminal columns of one (visible) character: wide East Asian and emoji take 2."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _columns(text: str) -> int:
    return len(text) if text.isascii() else sum(map(_width, text))


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, ending with "…" when cut."""
    if _columns(text) <= width:
        return text
    used, out = 1, []  # the "…" takes one
    for char in text:
        used += _width(char)
        if used > width:
            break
        out.append(char)
    return "".join(out) + "…"


def _flow(label: str, parts: list[str], width: int, indent: str) -> list[str]:
    """``label`` and ``parts`` (joined by "; ") in lines of ``width`` columns, a line
    that does not fit on the last going on the next, ``indent``-ed."""
    lines: list[str] = []
    current, sep = label, " "
    for part in parts:
        if _columns(current) + len(sep) + _columns(part) > width and current.strip():
            lines.append(current + sep.rstrip())
            current, sep = indent, ""
        current += sep + part
        sep = "; "
    return [_clip(line, width) for line in [*lines, current]]


def _wrap(text: str, width: int, lines: int) -> list[str]:
    """``text`` in at most ``lines`` lines of ``width`` columns, broken after a space
    where one is near; when it is longer, the last line ends with "… (+N)", N the
    characters not shown."""
    out: list[str] = []
    start = 0
    while start < len(text) and len(out) < lines:
        end = _fit(text, start, width)
        if end < len(text):
            space = text.rfind(" ", max(start, end - 16), end)
            end = space + 1 if space > start else end
        out.append(text[start:end].rstrip(" ") or text[start:end])
        last, start = start, end
    if start < len(text):
        end = _fit(text, last, width - len(f"… (+{len(text)})"))
        out[-1] = f"{text[last:end]}… (+{len(text) - end})"
    return out


def _fit(text: str, start: int, width: int) -> int:
    """The end of the longest piece of ``text`` from ``start`` within ``width`` columns."""
    used = 0
    for i in range(start, len(text)):
        used += _width(text[i])
        if used > width:
            return max(i, start + 1)  # at least one character, however wide
    return len(text)


class Table:
    """The preview as a table ``width`` columns wide: a row per line, the message's
    text wrapped beside it, and below it what made the text UCS-2 and what smart
    encoding makes of it."""

    def __init__(self, previewer: Previewer, *, width: int = 100) -> None:
        self.pricing = previewer.pricing
        self.sender = previewer.sender
        self.width = max(60, width)
        decimals = self.pricing.decimals if self.pricing is not None else 0
        self._cost_width = decimals + 4 if self.pricing is not None else 0
        self._indent = " " * 9
        # line, number, encoding, segments, cost: the text starts after them.
        self._text_at = (
            9 + _NUMBER_WIDTH + 2 + 4 + 2 + 3 + 2 + (self._cost_width + 2) * bool(self.pricing)
        )

    def header(self) -> str:
        cost = f"{'COST':>{self._cost_width}}  " if self.pricing is not None else ""
        return f"{'LINE':>7}  {'NUMBER':<{_NUMBER_WIDTH}}  ENC   SEG  {cost}TEXT\n"

    def row(self, row: Row) -> str:
        """The lines of one row, each ending with a new line."""
        head = f"{row.line:>7}  "
        if row.encoding is None:  # not rendered: invalid number or rejected line
            shown = _clip(visible(row.to), _NUMBER_WIDTH) if row.to is not None else "-"
            at = len(head) + _NUMBER_WIDTH + 2
            why = _wrap(f"{row.status}: {visible(row.error or '')}", self.width - at, TEXT_LINES)
            lines = [f"{head}{shown:<{_NUMBER_WIDTH}}  {why[0]}", *(" " * at + w for w in why[1:])]
            if row.excerpt:
                lines.append(_clip(f"{self._indent}line: {visible(row.excerpt)}", self.width))
            return "".join(line + "\n" for line in lines)
        text, encoding, segments = row.sent
        cost = ""
        if self.pricing is not None:
            money = f"{row.cost:.{self.pricing.decimals}f}" if row.status == OK else "-"
            cost = f"{money:>{self._cost_width}}  "
        wrapped = _wrap(visible(text or ""), self.width - self._text_at, TEXT_LINES)
        lines = [f"{head}{row.number:<{_NUMBER_WIDTH}}  {encoding!s:<4}  {segments:>3}  {cost}"]
        lines[0] += wrapped[0]
        lines += [" " * self._text_at + more for more in wrapped[1:]]
        for label, *parts in self._details(row):
            lines += _flow(self._indent + label, parts, self.width, self._indent + "  ")
        return "".join(line + "\n" for line in lines)

    def _details(self, row: Row) -> Iterator[list[str]]:
        """What the row's columns do not say, each a list of parts to flow into lines."""
        if row.to is not None and row.to.removeprefix("+") != (row.number or "").removeprefix("+"):
            yield [f"written {visible(row.to)}"]
        own = ", its own text" if row.own_text else ""
        if row.sender != self.sender:
            yield [f"from {visible(row.sender or '')}{own}"]
        elif own:
            yield [own.removeprefix(", ")]
        if row.status != OK:
            yield [f"{row.status}: {row.error}"]
        smart = row.smart
        if smart is None:
            return
        chars = [self._character(c, smart) for c in row.non_gsm[:_SHOWN_CHARACTERS]]
        if len(row.non_gsm) > _SHOWN_CHARACTERS:
            chars.append(f"and {len(row.non_gsm) - _SHOWN_CHARACTERS} more characters")
        if smart.applied:
            saved = f", saved {_segments(smart.saved)}" if smart.saved else ""
            was = f"was {row.encoding}, {_segments(row.segments)}{saved}"
            yield [f"smart encoding replaced {smart.replaced} ({was}):", *chars]
            return
        yield ["UCS-2 because of", *chars]
        if smart.text is None:
            yield ["smart encoding cannot make it GSM-7"]
        else:
            after = f"{smart.encoding}, {_segments(smart.segments)}"
            saves = f"saves {_segments(smart.saved)}" if smart.saved else "saves nothing"
            yield [f"smart encoding makes it {after}: {saves}"]

    @staticmethod
    def _character(char: NonGsm, smart: Smart) -> str:
        """``’ U+2019 at 14 → '``; a character that does not show: its picture or name."""
        c = char.char
        if not c.isprintable():
            shown = _picture(c) if ord(c) < 0x20 or ord(c) == 0x7F else char.name
        else:
            shown = c if _width(c) else char.name  # a combining accent alone: its name
        at = ", ".join(map(str, char.at[:_SHOWN_INDICES]))
        if len(char.at) > _SHOWN_INDICES:
            at += f", … ({len(char.at)} times)"
        named = shown == char.name
        text = f"{char.code} {shown} at {at}" if named else f"{shown} {char.code} at {at}"
        if char.replacement is None:
            return text + " (no GSM-7 look-alike)"
        if smart.text is None:  # another character keeps it UCS-2: no replacement made
            return text
        return f"{text} → {_NAMED.get(char.replacement, visible(char.replacement))}"

    def footer(self, totals: Totals, *, selected: str) -> str:
        """The totals: lines by status, what would be sent, its cost, smart encoding."""
        by_count = sorted(totals.statuses.items(), key=lambda item: -item[1])
        by_status = ", ".join(f"{n:,} {status}" for status, n in by_count)
        lines = [f"{_lines(totals.lines)} previewed ({selected}): {by_status or 'none'}"]
        sent = totals.statuses.get(OK, 0)
        if sent:
            per_encoding = "; ".join(
                f"{encoding} {_messages(n)}, {_segments(segments)}"
                for encoding, (n, segments) in sorted(totals.encodings.items())
            )
            lines.append(
                f"would send {_messages(sent)}, {_segments(totals.segments)} ({per_encoding})"
            )
        if self.pricing is not None and totals.cost is not None:
            cost = f"{totals.cost:.{self.pricing.decimals}f}"
            lines.append(f"cost: {cost} ({self.pricing.describe()})")
        if totals.smart_lines:
            made, saved = _lines(totals.smart_lines), _segments(totals.smart_saved)
            if totals.smart_applied:
                lines.append(f"smart encoding made {made} GSM-7 and saved {saved}")
            else:
                lines.append(
                    f"smart encoding would make {made} GSM-7 and save {saved} (--smart-encoding)"
                )
        wrapped = (part for line in lines for part in _wrap(line, self.width, len(line)))
        return "".join(line + "\n" for line in ["", *wrapped])


def _lines(n: int) -> str:
    return f"{n:,} line{'' if n == 1 else 's'}"


def _messages(n: int) -> str:
    return f"{n:,} message{'' if n == 1 else 's'}"


def _segments(n: int | None) -> str:
    return f"{n:,} segment{'' if n == 1 else 's'}"


# --- the explainer: chunks in, rows and totals out ----------------------------------------


class Explainer:
    """Previews the lines it selects from the chunks it is fed, writing to ``out``.

    With ``sample`` it keeps a random sample of that many lines (the same for the same
    ``seed``; a random seed, shown in the totals, when none is given) and writes them in
    line order at `finish`; otherwise it writes the first ``limit`` lines as they come
    and then wants no more (`done`). ``json``: one JSON row per line, else a `Table`
    ``width`` columns wide. The totals go to ``footer`` (``out`` unless given) at `finish`.
    """

    def __init__(
        self,
        previewer: Previewer,
        out: TextIO,
        *,
        limit: int = DEFAULT_LIMIT,
        sample: int | None = None,
        seed: int | None = None,
        json: bool = False,
        width: int = 100,
        footer: TextIO | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.previewer = previewer
        self.totals = Totals(smart_applied=previewer.smart_encoding)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self._out = out
        self._footer = footer or out
        self._json = json
        self._first = None if sample else _First(limit)
        self._sample = Sample(sample, self.seed) if sample else None
        self._table = Table(previewer, width=width)
        self._header = not json  # written with the first rows (or the totals)

    @property
    def done(self) -> bool:
        """Whether it needs no more input (the first ``limit`` lines are written)."""
        return self._first is not None and self._first.full

    def feed(self, chunk: list[Recipient | Rejected]) -> None:
        """Take the next records of the input, in line order."""
        if self._sample is not None:
            self._sample.feed(chunk)
        elif self._first is not None and not self._first.full:
            self._write(self._first.feed(chunk))
            self._out.flush()

    def finish(self) -> Totals:
        """Write the sampled rows (when sampling), then the totals; return the totals."""
        sample = self._sample
        self._write(sorted(sample.kept, key=_line_of) if sample is not None else [])
        if sample is not None and sample.seen > sample.size:
            selected = (
                f"a random sample of {sample.size:,} of {sample.seen:,} lines, seed {self.seed}"
            )
        elif self._first is not None and self._first.full:
            selected = f"the first {self._first.seen:,}"
        else:
            selected = "every line of the input"
        self._footer.write(self._table.footer(self.totals, selected=selected))
        self._footer.flush()
        return self.totals

    def _write(self, items: list[Recipient | Rejected]) -> None:
        if self._header:
            self._out.write(self._table.header())
            self._header = False
        rows = [self.previewer.row(item) for item in items]
        for row in rows:
            self.totals.add(row)
        if self._json:
            self._out.write("".join(orjson.dumps(r.as_dict()).decode() + "\n" for r in rows))
        else:
            self._out.write("".join(map(self._table.row, rows)))


def read_records(
    stream: ByteSource, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[list[Recipient | Rejected]]:
    """The records of an opened input (`dispatcher.sources.open_source`), chunk by chunk:
    `dispatcher.reader.Reader` without the event loop. `InputError` if the input breaks."""
    parser = LineParser(max_line_bytes=max_line_bytes)
    while data := stream.read():
        if records := parser.feed(data):
            yield records
    if records := parser.finish():
        yield records


def explain_lines(chunks: Iterable[list[Recipient | Rejected]], explainer: Explainer) -> Totals:
    """Feed ``chunks`` to ``explainer`` until it is done or they end; write the totals."""
    for chunk in chunks:
        explainer.feed(chunk)
        if explainer.done:
            break
    return explainer.finish()
