"""The emulated gateway: its state (ledger, rate limits, stored responses, faults,
delivery reports) and what each endpoint does with a request.

:mod:`app` mounts the endpoints in an aiohttp application; :mod:`control` adds the
test controls, which act on the same `Emulator`.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from dispatcher.emulator.checks import NumberCheck
from dispatcher.emulator.dr import DeliveryReports
from dispatcher.emulator.faults import AFTER, BEFORE, FaultInjector, check_fault_change, drop
from dispatcher.emulator.idempotency import Claim, IdempotencyStore, Stored, request_fingerprint
from dispatcher.emulator.ledger import Ledger
from dispatcher.emulator.ratelimit import GatewayRateLimits, retry_after
from dispatcher.emulator.sends import (
    Measured,
    Options,
    Refused,
    bad,
    code_not_allowed,
    measure_one,
    parse_body,
    parse_options,
    plan_batch,
)
from dispatcher.emulator.settings import EmulatorSettings, fault_update
from dispatcher.timefmt import iso_utc

_JSON = "application/json"
#: What an Idempotency-Key may be: printable ASCII, as a header value should be.
_KEY = re.compile(r"[ -~]{1,255}")
_STATUS_FIELDS = ("id", "from", "to", "text", "status", "date", "requestDR")


def _shown(text: str, limit: int = 100) -> str:
    """Part of something the caller sent, short enough to echo in ``explain``."""
    return text if len(text) <= limit else f"{text[:limit]}…"


class SendOutcome(NamedTuple):
    """What processing a send request produced; ``recorded`` if messages were kept."""

    status: int
    body: bytes
    headers: dict[str, str] | None
    recorded: bool


_second = [-1, ""]


def _iso_now() -> str:
    """Now as `iso_utc` with microseconds; the part up to the second is cached."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[0], _second[1] = second, iso_utc(second, "seconds")[:-1]
    return f"{_second[1]}.{int((now - second) * 1_000_000):06d}Z"


class Emulator:
    """The emulated gateway: its ledger, rate limits, stored responses and faults."""

    def __init__(
        self, settings: EmulatorSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.ledger = Ledger(settings.ledger)
        self.numbers = NumberCheck(settings.invalid_prefixes)
        self.limits = GatewayRateLimits(settings.rate_for, clock)
        self.idempotency = IdempotencyStore(settings.idempotency_max_bytes)
        self.faults = FaultInjector(settings.faults, settings.seed)
        self.reports = DeliveryReports(settings, self.ledger)
        self._auth = f"Bearer {settings.api_key}".encode()
        # Transaction ids shaped like UUIDs: a random stem and a counter, no uuid4 each.
        u = uuid.uuid4().hex
        self._tx_stem = f"{u[:8]}-{u[8:12]}-4{u[13:16]}-a{u[17:20]}-"
        self._tx = itertools.count()

    # --- responses ------------------------------------------------------------------

    def _meta(self, explain: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "timestamp": int(time.time() * 1000),
            "transactionId": f"{self._tx_stem}{next(self._tx):012x}",
        }
        if explain is not None:
            meta["explain"] = explain
        return meta

    def _answer(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.ledger.stats.responses[status] += 1
        return web.Response(status=status, body=body, content_type=_JSON, headers=headers)

    def _refusal(self, r: Refused) -> SendOutcome:
        payload: dict[str, Any] = {"meta": self._meta(r.explain)}
        if r.data is not None:
            payload["data"] = r.data
        return SendOutcome(r.status, orjson.dumps(payload), r.headers, False)

    def error(
        self, status: int, explain: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        """An error answer in the API's shape: ``{"meta": {…, "explain": explain}}``."""
        return self._answer(status, orjson.dumps({"meta": self._meta(explain)}), headers)

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._auth)

    def _unauthorized(self) -> web.Response:
        headers = {"WWW-Authenticate": "Bearer"}
        return self.error(401, "invalid or missing API key", headers)

    # --- the send endpoints -----------------------------------------------------------

    async def single(self, request: web.Request) -> web.StreamResponse:
        """POST /raven/v2/messages"""
        return await self._send(request, "single", self._process_single)

    async def batch(self, request: web.Request) -> web.StreamResponse:
        """POST /raven/v3/messages/batch"""
        return await self._send(request, "batch", self._process_batch)

    async def _send(
        self,
        request: web.Request,
        kind: str,
        process: Callable[[bytes, str | None], SendOutcome],
    ) -> web.StreamResponse:
        self.ledger.stats.requests[kind] += 1
        if not self._authorized(request):
            return self._unauthorized()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = self.settings.max_body_bytes
            return self.error(413, f"request body exceeds the limit of {limit} bytes")
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _KEY.fullmatch(key):
            return self.error(400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
        if key is not None:
            fp = request_fingerprint(request.path, raw)
            claim, stored = await self.idempotency.claim(key, fp)
            if claim is Claim.REPLAY:
                assert stored is not None
                self.ledger.stats.replays += 1
                return self._answer(stored.status, stored.body)
            if claim is Claim.CONFLICT:
                self.ledger.stats.idempotency_conflicts += 1
                return self.error(422, "Idempotency-Key was used with a different request")
        # From here the key (if any) is claimed: a second request with it waits, and
        # the latency below is "still being processed".
        kept = None
        try:
            fault = None
            if self.faults.active:
                delay = self.faults.delay()
                if delay:
                    await _at_least(delay)
                fault = self.faults.draw()
            if fault in BEFORE:
                return self._fault_before(request, fault)
            outcome = process(raw, key)
            # A 429 recorded nothing: the same request may succeed later.
            if key is not None and outcome.status != 429:
                kept = Stored(fp, outcome.status, outcome.body)
        finally:
            if key is not None:
                self.idempotency.release(key, kept)
        if outcome.recorded and fault in AFTER:
            self.ledger.stats.faults[fault] += 1
            if fault == "drop_after":
                return drop(request)
            return self.error(500, "internal error after the messages were queued")
        return self._answer(outcome.status, outcome.body, outcome.headers)

    def _fault_before(self, request: web.Request, fault: str) -> web.StreamResponse:
        self.ledger.stats.faults[fault] += 1
        if fault == "drop_before":
            return drop(request)
        retry_after = {"Retry-After": str(self.faults.settings.retry_after_s)}
        if fault == "429":
            return self.error(429, "too many requests", retry_after)
        if fault == "503":
            return self.error(503, "service unavailable", retry_after)
        return self.error(500, "internal error")

    def _check_code(self, code: str) -> None:
        if code in self.settings.deny_codes:
            raise code_not_allowed(code)

    def _take_rate(self, code: str, n: int) -> None:
        rate = self.limits.rate(code)
        if n > max(rate, 1.0):
            raise Refused(
                413, f"{n} messages exceed the rate limit of {rate:g}/s for {code}; split them"
            )
        wait = self.limits.take(code, n)
        if wait:
            self.ledger.stats.rate_limited += 1
            raise Refused(
                429,
                f"rate limit of {rate:g} messages/s for {code} exceeded",
                headers={"Retry-After": str(retry_after(wait))},
            )

    def _record(
        self, options: Options, tos: list[str], measured: Measured, key: str | None
    ) -> tuple[list[str], str]:
        date = _iso_now()
        ids = self.ledger.accept(
            sender=options.sender,
            tos=tos,
            texts=measured.texts,
            encodings=measured.encodings,
            segments=measured.segments,
            t=self.clock(),
            date=date,
            key=key,
            external_id=options.external_id,
            client_id=options.client_id,
            request_dr=options.request_dr,
        )
        if options.request_dr and (options.callbacks or self.ledger.full):
            self.reports.schedule(
                ids=ids,
                sender=options.sender,
                tos=tos,
                callbacks=options.callbacks,
                external_id=options.external_id,
                client_id=options.client_id,
            )
        return ids, date

    def _process_single(self, raw: bytes, key: str | None) -> SendOutcome:
        try:
            body = parse_body(raw)
            options = parse_options(body)
            to = body.get("to")
            if type(to) is not str:
                raise bad("to is required and must be a string")
            self._check_code(options.sender)
            if not self.numbers.valid(to):
                self.ledger.stats.invalid_numbers += 1
                raise Refused(400, f"invalid destination number {to}", {"invalidNumber": [to]})
            measured = measure_one(options.text, self.settings.max_segments)
            self._take_rate(options.sender, 1)
        except Refused as refused:
            return self._refusal(refused)
        ids, date = self._record(options, [to], measured, key)
        s = self.settings
        if s.flat_single:
            flat = {"status": "QUEUE", "messageId": ids[0], "description": "Message queued"}
            return SendOutcome(200, orjson.dumps(flat), None, True)
        data = {
            "id": ids[0],
            "from": options.sender,
            "text": options.text,
            "to": to,
            "requestDR": options.request_dr,
            "type": options.type,
            "owner": s.owner,
            "operator": s.operator,
            "status": "QUEUE",
            "date": date,
            **options.echo(),
        }
        return SendOutcome(200, orjson.dumps({"meta": self._meta(), "data": data}), None, True)

    def _process_batch(self, raw: bytes, key: str | None) -> SendOutcome:
        s = self.settings
        try:
            body = parse_body(raw)
            options = parse_options(body)
            self._check_code(options.sender)
            plan = plan_batch(raw, body, options, self.numbers, s.max_batch, s.max_segments)
            if plan.tos:
                self._take_rate(options.sender, len(plan.tos))
        except Refused as refused:
            return self._refusal(refused)
        self.ledger.stats.invalid_numbers += len(plan.invalid)
        if plan.measured is not None:
            ids, date = self._record(options, plan.tos, plan.measured, key)
        else:
            ids, date = [], _iso_now()
        data = {
            "ids": [{"id": i, "mobile": m} for i, m in zip(ids, plan.tos, strict=True)],
            "invalidNumber": plan.invalid,
            "from": options.sender,
            "text": options.text,
            "type": options.type,
            "owner": s.owner,
            "operator": s.operator,
            "status": "QUEUE",
            "date": date,
        }
        payload = orjson.dumps({"meta": self._meta(), "data": data})
        return SendOutcome(200, payload, None, bool(ids))

    # --- status -----------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        """GET /raven/v2/messages/{id}"""
        self.ledger.stats.requests["status"] += 1
        if not self._authorized(request):
            return self._unauthorized()
        message = self.ledger.get(request.match_info["id"])
        if message is None:
            return self.error(404, "message not found")
        data = {name: message[name] for name in _STATUS_FIELDS}
        data["externalId"] = message["externalId"]
        data["clientId"] = message["clientId"]
        return self._answer(200, orjson.dumps({"meta": self._meta(), "data": data}))

    # --- what the gateway does not have ------------------------------------------------

    async def not_found(self, request: web.Request) -> web.Response:
        """Any path the gateway does not have: 404 in the API's JSON shape."""
        return self.error(404, f"no such endpoint: {request.method} {_shown(request.path)}")

    def method_not_allowed(self, *allowed: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler answering 405, in the API's JSON shape, for a path's other methods."""
        allow = ", ".join(allowed)

        async def handler(request: web.Request) -> web.Response:
            explain = f"{request.method} is not allowed here; use {allow}"
            return self.error(405, explain, {"Allow": allow})

        return handler

    # --- what the test controls act on ---------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The same dict as ``GET /_emulator/stats``."""
        self.ledger.stats.idempotency_evicted = self.idempotency.evicted
        return self.ledger.stats.as_dict()

    def set_faults(self, **changes: Any) -> dict[str, float]:
        """Partial update of the fault settings; returns all of them.

        ValueError, and nothing changed, for an unknown name or a value out of range:
        shares in 0..1, latency and jitter finite and at most an hour, Retry-After a
        whole number of seconds up to a day.
        """
        for name, value in changes.items():
            check_fault_change(name, value)
        self.faults.update(fault_update(self.faults.settings, changes))
        return self.faults.settings.as_dict()

    def reset(self) -> None:
        """Forget messages, stats, stored responses and rate buckets; restart the draws."""
        self.ledger.reset()
        self.idempotency.clear()
        self.idempotency.evicted = 0
        self.limits.reset()
        self.faults.reseed()
        self.reports.reseed()

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.reports.start()
        yield
        await self.reports.close()


async def _at_least(seconds: float) -> None:
    """Sleep ``seconds`` at least, by the precise clock: the event loop's timers may fire
    early (uvloop's clock is libuv's millisecond, cached at the start of each loop
    iteration), and ``--latency-ms`` promises an answer no sooner. What a timer left is
    slept again — not a poll: each wait is the time still owed."""
    deadline = time.perf_counter() + seconds
    await asyncio.sleep(seconds)
    while (left := deadline - time.perf_counter()) > 0:  # noqa: ASYNC110 (owed, not polled)
        await asyncio.sleep(left)
