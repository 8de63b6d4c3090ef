"""Reading and checking send requests, the way the gateway would.

Everything here is synchronous and works on a whole request at once: a batch is
checked with a few passes over lists, and a refusal is one exception per request
(:class:`Refused`), never one per recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import orjson

from dispatcher.emulator import checks
from dispatcher.emulator.checks import GSM7, GatewayTemplate, NumberCheck

_STR = {str}
_LIST = {list}
_LIST_OR_NONE = {list, type(None)}
_TO = itemgetter("to")


class Refused(Exception):
    """The gateway refuses the request: HTTP status, ``meta.explain`` and ``data``."""

    def __init__(
        self,
        status: int,
        explain: str,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(explain)
        self.status = status
        self.explain = explain
        self.data = data
        self.headers = headers


def bad(explain: str) -> Refused:
    return Refused(400, explain)


@dataclass(slots=True)
class Options:
    """The request fields shared by both send endpoints."""

    sender: str
    text: str
    request_dr: bool
    type: str
    connection: str | None
    callbacks: list[str]
    email: str | None
    external_id: str | None
    client_id: str | None

    def echo(self) -> dict[str, Any]:
        """Optional fields the caller set, echoed in the single endpoint's answer."""
        out: dict[str, Any] = {}
        for name, value in (
            ("connection", self.connection),
            ("callbacks", ",".join(self.callbacks) or None),
            ("email", self.email),
            ("externalId", self.external_id),
            ("clientId", self.client_id),
        ):
            if value is not None:
                out[name] = value
        return out


#: A run of digits long enough to be an integer beyond a double.
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses an integer beyond a double; the exact parse takes it (rare).
        if not _LONG_DIGITS.search(raw):
            raise bad(f"request body is not valid JSON: {exc.msg}") from None
        try:
            body = checks.parse_exact(raw)
        except ValueError:
            raise bad(f"request body is not valid JSON: {exc.msg}") from None
    if type(body) is not dict:
        raise bad("request body must be a JSON object")
    return body


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or type(value) is str:
        return value
    raise bad(f"{name} must be a string")


def parse_options(body: dict[str, Any]) -> Options:
    """Check the fields common to both endpoints (not ``to``)."""
    sender = body.get("from")
    if type(sender) is not str or not sender:
        raise bad("from is required and must be a non-empty string")
    text = body.get("text")
    if type(text) is not str:
        raise bad("text is required and must be a string")
    if not text:
        raise bad("text must not be empty")
    request_dr = body.get("requestDR", False)
    if request_dr is None:
        request_dr = False
    if type(request_dr) is not bool:
        raise bad("requestDR must be true or false")
    kind = body.get("type")
    if kind is None:
        kind = "MT"
    elif kind != "MT":
        raise bad("type must be MT")
    callbacks_field = _opt_str(body, "callbacks")
    callbacks = []
    if callbacks_field:
        for url in callbacks_field.split(","):
            url = url.strip()
            if not url.startswith(("http://", "https://")):
                raise bad("callbacks must be comma-separated http(s) URLs")
            callbacks.append(url)
    return Options(
        sender=sender,
        text=text,
        request_dr=request_dr,
        type=kind,
        connection=_opt_str(body, "connection"),
        callbacks=callbacks,
        email=_opt_str(body, "email"),
        external_id=_opt_str(body, "externalId"),
        client_id=_opt_str(body, "clientId"),
    )


def segments_exceeded() -> Refused:
    return Refused(
        400,
        "Text exceeds the limit of allowed segments",
        {"status": "SEGMENTS_EXCEEDED"},
    )


def code_not_allowed(code: str) -> Refused:
    return Refused(
        400,
        f"sender code {code} is not assigned to this account",
        {"status": "CODE_NOT_ALLOWED"},
    )


@dataclass(slots=True)
class Measured:
    """Rendered texts of the accepted recipients and what they cost.

    A field is one shared value when it is the same for every recipient.
    """

    texts: list[str] | str
    encodings: list[str] | str
    segments: list[int] | int


def measure_one(text: str, max_segments: int) -> Measured:
    encoding, count = checks.units(text)
    segments = checks.segments_of(encoding, count)
    if segments > max_segments:
        raise segments_exceeded()
    return Measured(text, encoding, segments)


def measure_many(texts: list[str], max_segments: int) -> Measured:
    """Encodings and segments of rendered texts; refuses the lot if one is too long."""
    fast = checks.batch_units(texts)
    if fast is not None:
        longest = max(fast[1])
        if longest <= 160:
            if longest == 0:
                raise bad("text renders empty for some recipient")
            return Measured(texts, GSM7, 1)
        counts = fast[1]
        encodings: list[str] | str = GSM7
        segments = [-(-c // 160) for c in counts]
    else:
        pairs = [checks.units(t) for t in texts]
        encodings = [p[0] for p in pairs]
        segments = [checks.segments_of(e, c) for e, c in pairs]
        if min(c for _, c in pairs) == 0:
            raise bad("text renders empty for some recipient")
    if max(segments) > max_segments:
        raise segments_exceeded()
    return Measured(texts, encodings, segments)


@dataclass(slots=True)
class BatchPlan:
    """A checked batch: who gets what, and the numbers the gateway refused."""

    tos: list[str]
    invalid: list[str]
    measured: Measured | None


def parse_recipients(recipients: object, max_batch: int) -> tuple[list[Any], list[Any]]:
    """(to values, params lists) of a batch's ``to`` array; 413 when too many."""
    if type(recipients) is not list or not recipients:
        raise bad("to is required and must be a non-empty array of recipients")
    if len(recipients) > max_batch:
        raise Refused(
            413, f"batch of {len(recipients)} recipients exceeds the limit of {max_batch}"
        )
    # map() with C callables: no Python frame per recipient. Anything unusual (the
    # "to:" typo, a missing key, a non-object) raises and takes the slow path.
    try:
        tos = list(map(_TO, recipients))
        params = list(map(dict.get, recipients, repeat("params")))
    except (KeyError, TypeError):
        return _parse_recipients_slowly(recipients)
    if not set(map(type, tos)) <= _STR:
        return _parse_recipients_slowly(recipients)
    kinds = set(map(type, params))
    if not kinds <= _LIST:
        if not kinds <= _LIST_OR_NONE:
            return _parse_recipients_slowly(recipients)
        params = [[] if p is None else p for p in params]  # params left out
    return tos, params


def _parse_recipients_slowly(recipients: list[Any]) -> tuple[list[Any], list[Any]]:
    # The documentation's own example spells the key "to:"; accept both.
    tos: list[Any] = []
    params: list[Any] = []
    for i, r in enumerate(recipients):
        if type(r) is not dict:
            raise bad(f"to[{i}] must be an object")
        to = r.get("to", r.get("to:"))
        if type(to) is not str:
            raise bad(f"to[{i}].to is required and must be a string")
        p = r.get("params")
        if p is None:
            p = []
        elif type(p) is not list:
            raise bad(f"to[{i}].params must be an array")
        tos.append(to)
        params.append(p)
    return tos, params


def plan_batch(
    raw: bytes,
    body: dict[str, Any],
    options: Options,
    numbers: NumberCheck,
    max_batch: int,
    max_segments: int,
) -> BatchPlan:
    """Check a batch body; raises Refused for what the gateway refuses as a whole.

    ``body`` is ``raw`` as orjson read it. A float param that may have been an integer
    beyond 64 bits (orjson reads those as floats) makes it read ``raw`` again, exactly.
    """
    try:
        template = GatewayTemplate(options.text)
    except ValueError as exc:  # a placeholder index above 999
        raise bad(str(exc)) from None
    try:
        return _plan(body, template, options, numbers, max_batch, max_segments, exact=False)
    except checks.Inexact:
        exact = checks.parse_exact(raw)  # orjson read it: so does the exact parse
        return _plan(exact, template, options, numbers, max_batch, max_segments, exact=True)


def _plan(
    body: dict[str, Any],
    template: GatewayTemplate,
    options: Options,
    numbers: NumberCheck,
    max_batch: int,
    max_segments: int,
    *,
    exact: bool,
) -> BatchPlan:
    tos, params = parse_recipients(body.get("to"), max_batch)
    invalid: list[str] = []
    positions: list[int] | None = None  # original index of each kept recipient
    if not numbers.all_valid(tos):
        # The params of refused numbers are checked too (the render checks the rest).
        try:
            checks.check_params(params)
        except checks.BadParam as exc:
            raise _bad_param(exc.recipient, exc.position) from None
        good = [numbers.valid(t) for t in tos]
        invalid = [t for t, ok in zip(tos, good, strict=True) if not ok]
        positions = [i for i, ok in enumerate(good) if ok]
        tos = [tos[i] for i in positions]
        params = [params[i] for i in positions]
    if not tos:
        return BatchPlan(tos, invalid, None)

    def where(recipient: int) -> int:  # the position in the request's own "to"
        return recipient if positions is None else positions[recipient]

    try:
        if template.static:
            checks.check_params(params)
            measured = measure_one(options.text, max_segments)
        else:
            texts = template.render_all(params, exact=exact)
            measured = measure_many(texts, max_segments)
    except checks.MissingParam as exc:
        raise bad(
            f"placeholder {{{exc.index}}} has no param for to[{where(exc.recipient)}]"
        ) from None
    except checks.BadParam as exc:
        raise _bad_param(where(exc.recipient), exc.position) from None
    return BatchPlan(tos, invalid, measured)


def _bad_param(recipient: int, position: int) -> Refused:
    return bad(f"to[{recipient}].params[{position}] must be a string, number or boolean")
