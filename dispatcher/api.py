"""The Messangi protocol, apart from the I/O: bodies, answers, ids, errors. Pure.

`dispatcher.gateway` makes the requests and hands each answer (status, headers, body
bytes) to `check_answer`, which maps every HTTP status onto the error tree — including
the distinction that makes exactly-once possible: *safe* failures (the gateway refused
before acting: 408, 429, 503) versus *ambiguous* ones (it may have acted: a 5xx, an
unreadable 2xx). Then `parse_batch` / `parse_single` read the answer (both shapes the
single endpoint is known to give), and `match_ids` maps its ids back to the lines.
`batch_answer` is the batch endpoint's way through: the usual answer is read straight
from its bytes by the C part, anything else by `check_answer` and `parse_batch`.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson

from dispatcher import native
from dispatcher.errors import (
    AuthError,
    BadResponse,
    BatchTooLarge,
    RateLimited,
    RequestRejected,
    ServerError,
    Unavailable,
)
from dispatcher.models import PACKED_KINDS, Batch, Entry, Packed, json_default


class _Context(TypedDict):
    status: int
    explain: str | None
    transaction_id: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """What the gateway accepted: its ids in order, each one's mobile (None where the
    gateway did not say), and the numbers it refused. ``mobiles`` is None when the C
    part checked them as it read them: the numbers sent, in order, none refused."""

    ids: list[str]
    mobiles: list[str | None] | None
    invalid: list[str]
    status: str
    transaction_id: str | None


#: ``Retry-After`` in seconds (RFC 9110: digits; a fraction is tolerated).
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None if absent or bad.

    Only the header's own forms are read: digits (a fraction tolerated), or a date. A
    number too long for a float is ``inf``, a date in the past 0; anything else
    (``-5``, ``inf``, ``nan``, ``1e400``, garbage) is None: the normal backoff applies.
    Bounding what is read is the retry policy's work (`RetryPolicy.clamp`), not the
    protocol's.
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)  # a string of 400 digits is inf, which the policy clamps
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        stamp = when.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return max(0.0, stamp - (time.time() if now is None else now))


def _document(payload: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _explain(document: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    if document is None:
        return None, None
    meta = document.get("meta")
    if not isinstance(meta, dict):
        text = document.get("description") or document.get("message")
        return (str(text) if text else None), None
    explain, transaction = meta.get("explain"), meta.get("transactionId")
    return (str(explain) if explain else None), (str(transaction) if transaction else None)


def check_answer(status: int, headers: Mapping[str, str], payload: bytes) -> dict[str, Any]:
    """The JSON document of a 2xx answer, or raise the error its status stands for."""
    document = _document(payload)
    explain, transaction = _explain(document)
    if 200 <= status < 300:
        if document is None:
            raise BadResponse(
                f"HTTP {status} with a body that is not a JSON object: {_snippet(payload)}",
                status=status,
            )
        return document
    detail = f": {explain}" if explain else (f": {_snippet(payload)}" if payload else "")
    context = _Context(status=status, explain=explain, transaction_id=transaction)
    if status in (401, 403):
        raise AuthError(
            f"the gateway refused the API key (HTTP {status}); it may be expired or revoked — "
            "check DISPATCHER_API_KEY or --api-key-file",
            **context,
        )
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if status == 429:
        raise RateLimited(f"rate limited (HTTP 429){detail}", retry_after=retry_after, **context)
    if status in (408, 503):
        raise Unavailable(
            f"gateway unavailable (HTTP {status}){detail}",
            retry_after=retry_after,
            cause=str(status),
            **context,
        )
    if status == 413:
        raise BatchTooLarge(f"batch too large for the gateway (HTTP 413){detail}", **context)
    if status >= 500:
        raise ServerError(f"gateway error (HTTP {status}){detail}", cause=str(status), **context)
    data = document.get("data") if document else None
    gateway_status = data.get("status") if isinstance(data, dict) else None
    invalid = data.get("invalidNumber") if isinstance(data, dict) else None
    hint = " — check --base-url" if status < 400 or status in (404, 405) else ""
    raise RequestRejected(
        f"gateway refused the request (HTTP {status}){detail}{hint}",
        gateway_status=str(gateway_status) if gateway_status else None,
        invalid=[str(n) for n in invalid] if isinstance(invalid, list) else None,
        **context,
    )


def _snippet(payload: bytes, limit: int = 120) -> str:
    text = payload[:limit].decode("utf-8", "replace").replace("\n", " ")
    return repr(text + ("…" if len(payload) > limit else ""))


def parse_batch(document: dict[str, Any]) -> Answer:
    """The ``data`` of a batch answer: ids with their mobiles, and invalid numbers."""
    _, transaction = _explain(document)
    data = document.get("data")
    if not isinstance(data, dict):
        raise BadResponse("batch answer has no 'data' object", transaction_id=transaction)
    raw_ids = data.get("ids") or []
    invalid = data.get("invalidNumber") or []
    if not isinstance(raw_ids, list) or not isinstance(invalid, list):
        raise BadResponse(
            "batch answer: 'ids' or 'invalidNumber' is not a list", transaction_id=transaction
        )
    ids: list[str] = []
    mobiles: list[str | None] = []
    for item in raw_ids:
        if isinstance(item, dict) and item.get("id") is not None:
            mobile = item.get("mobile")
            ids.append(str(item["id"]))
            mobiles.append(None if mobile is None else str(mobile))
        else:
            raise BadResponse(
                f"batch answer: id entry {item!r} has no id", transaction_id=transaction
            )
    status = str(data.get("status") or "QUEUE")
    return Answer(
        ids=ids,
        mobiles=mobiles,
        invalid=[str(n) for n in invalid],
        status=status,
        transaction_id=transaction,
    )


def batch_answer(
    status: int,
    headers: Mapping[str, str],
    payload: bytes,
    sent: list[Entry] | bytes | None = None,
) -> Answer:
    """The batch endpoint's answer: `parse_batch` of `check_answer`'s document, or the
    error it stands for.

    The usual answer (a 2xx whose ids each have an id and a mobile string, none refused)
    is read straight from its bytes by the C part, without a dict an id (for 1 M
    recipients, ~2.5 G instructions of orjson's dicts and the maps over them); given the
    batch's entries (``sent``), it also checks each mobile against the number sent at
    its place, and gives no mobiles. It reads strictly and leaves anything else, valid
    or not, to the Python code here: ``tests/unit/test_api.py`` checks the two against
    each other."""
    if 200 <= status < 300 and native.core is not None:
        read = native.core.batch_answer(payload, sent)
        if read is not None:
            ids, mobiles, state, transaction = read
            return Answer(
                ids=ids,
                mobiles=mobiles,
                invalid=[],
                status=state or "QUEUE",
                transaction_id=transaction or None,
            )
    return parse_batch(check_answer(status, headers, payload))


def parse_single(document: dict[str, Any]) -> Answer:
    """A single-message answer in either shape: ``{meta, data:{id, …}}`` or flat."""
    _, transaction = _explain(document)
    data = document.get("data")
    if isinstance(data, dict) and data.get("id") is not None:
        status = str(data.get("status") or "QUEUE")
        to = data.get("to")
        return Answer(
            ids=[str(data["id"])],
            mobiles=[None if to is None else str(to)],
            invalid=[],
            status=status,
            transaction_id=transaction,
        )
    if document.get("messageId") is not None:  # the flat shape seen by live integrations
        status = str(document.get("status") or "QUEUE")
        return Answer(
            ids=[str(document["messageId"])],
            mobiles=[None],
            invalid=[],
            status=status,
            transaction_id=None,
        )
    if document.get("status") and document.get("description"):
        raise RequestRejected(
            f"gateway refused the message: {document['description']}",
            gateway_status=str(document["status"]),
            explain=str(document["description"]),
        )
    raise BadResponse(
        "single-message answer has neither data.id nor messageId", transaction_id=transaction
    )


def match_ids(tos: Sequence[str], answer: Answer) -> list[str | None]:
    """Map the gateway's ids back to the batch's numbers, in order.

    Returns one entry per number: its id, or None when the gateway listed it as
    invalid. The same number twice maps in order. Any disagreement between what was
    sent and what came back is a `BadResponse` for the whole batch: guessing could
    attribute a message to the wrong line.
    """
    ids, mobiles = answer.ids, answer.mobiles
    if len(ids) + len(answer.invalid) != len(tos):
        raise BadResponse(
            f"gateway answered {len(ids)} ids and {len(answer.invalid)} invalid numbers "
            f"for a batch of {len(tos)}",
            transaction_id=answer.transaction_id,
        )
    matched: list[str | None] = list(ids)
    if mobiles is None:  # checked by the C part as it read them: the numbers sent
        return matched
    if not answer.invalid:
        if mobiles == list(tos):  # the usual answer, checked in C
            return matched
        for message_id, mobile, to in zip(ids, mobiles, tos, strict=True):
            if mobile is not None and mobile != to and _digits(mobile) != _digits(to):
                raise BadResponse(
                    f"gateway id {message_id} is for {mobile}, expected {to}",
                    transaction_id=answer.transaction_id,
                )
        return matched
    refused: dict[str, int] = {}
    for number in answer.invalid:
        refused[_digits(number)] = refused.get(_digits(number), 0) + 1
    mapped: list[str | None] = []
    position = 0
    for to in tos:
        digits = _digits(to)
        mobile = mobiles[position] if position < len(ids) else ""
        if mobile is not None and mobile and _digits(mobile) == digits:
            mapped.append(ids[position])
            position += 1
            continue
        if refused.get(digits, 0) > 0:
            refused[digits] -= 1
            mapped.append(None)
            continue
        if mobile is None:  # ids without mobiles: only the order can tell
            mapped.append(ids[position])
            position += 1
            continue
        raise BadResponse(
            f"gateway answer does not account for {to}", transaction_id=answer.transaction_id
        )
    return mapped


def _digits(number: str) -> str:
    return number[1:] if number.startswith("+") else number


def batch_body(options: Mapping[str, Any], text: str, recipients: list[dict[str, Any]]) -> bytes:
    """The JSON body of a batch: job options, the template, ``to: [{to, params}]``."""
    # params may hold integers beyond 64 bits (models.BigInt): written as the digits
    return orjson.dumps({**options, "text": text, "to": recipients}, default=json_default)


def single_body(options: Mapping[str, Any], text: str, to: str) -> bytes:
    """The JSON body of one message with its rendered text."""
    return orjson.dumps({**options, "text": text, "to": to})


def body(batch: Batch, *, single: bool) -> bytes:
    """The request body of a batch: the batch endpoint's, or (``single``) the one
    message with its rendered text.

    The batch endpoint's recipients are written by the C part where it is built
    (`dispatcher.native`: ``batch_recipients``, the same bytes without a dict a
    recipient), by orjson otherwise and for what the C part leaves to it (a str to
    escape, an integer beyond 64 bits)."""
    group = batch.group
    if batch.packed is not None and not single:
        return batch.packed.body
    if single:
        entry = batch.entries[0]
        assert entry.text is not None
        return single_body(group.options, entry.text, entry.to)
    core = native.core
    head = _head(batch) if core is not None else None
    if core is not None and head is not None:
        written: bytes | None = core.batch_recipients(batch.entries, orjson.dumps, head, b"}")
        if written is not None:
            return written
    recipients = [{"to": e.to, "params": e.params} for e in batch.entries]
    return batch_body(group.options, group.template.text, recipients)


#: How a batch body with no recipients ends (`batch_body`: "to" is its last key).
_EMPTY_TO = b'"to":[]}'


def _head(batch: Batch) -> bytes | None:
    """A batch body up to its recipients' array (the C part writes the array and the
    closing ``}``), from where orjson writes ``"to": []``; None if it ends otherwise."""
    group = batch.group
    empty = batch_body(group.options, group.template.text, [])
    if not empty.endswith(_EMPTY_TO):
        return None
    return empty[: -len(_EMPTY_TO)] + b'"to":'


def pack(batch: Batch) -> None:
    """Pack a batch for the batch endpoint (`dispatcher.models.Packed`) where the
    C part is built and its entries are of the usual form; else leave it as it is.

    Called by the batcher as it closes the batch, when its entries were made a moment
    ago and are still in the CPU's cache: the body and the result lines' pieces are
    written then, and the entries freed."""
    core = native.core
    head = _head(batch) if core is not None else None
    if core is None or head is None:
        return
    made = core.pack_batch(batch.entries, PACKED_KINDS, orjson.dumps, head, b"}")
    if made is not None:
        batch.pack(Packed(*made))


def parse_status(document: dict[str, Any], message_id: str, *, status: int = 200) -> dict[str, Any]:
    """The message of a status look-up answer (``data``, or the flat document)."""
    data = document.get("data", document)
    if not isinstance(data, dict):
        raise BadResponse(f"status of {message_id}: 'data' is not an object", status=status)
    return data
