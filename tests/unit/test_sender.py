"""The Sender on its own, against the real emulator on 127.0.0.1:0 (or a gateway that
holds its answers): each batch journaled before it leaves and sent under its key, 413
splits, the fatal stops (the key refused, the gateway unreachable), the mapping of the
gateway's refusals onto result statuses, and ambiguous failures with and without
idempotency."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from dispatcher.config import Secret
from dispatcher.control import Controls
from dispatcher.emulator import FaultSettings
from dispatcher.errors import AuthError, GatewayUnreachable
from dispatcher.gateway import GatewayClient
from dispatcher.journal import Journal, records
from dispatcher.limiter import RateLimits
from dispatcher.models import Batch, Entry, Group, Status, batch_key
from dispatcher.quota.shared import SharedQuota
from dispatcher.renderer import compile_template
from dispatcher.retry import RetryPolicy
from dispatcher.sender import Sender
from dispatcher.summary import Summary
from dispatcher.writers import NdjsonSink, Outputs
from tests.support.emulators import TEST_KEY, EmulatorFactory
from tests.support.exactly_once import number
from tests.support.held import held_gateway
from tests.support.loopback import serving
from tests.support.stub_gateway import accepted, stub_gateway

JOB = "job1"
UNLIMITED = {"shortcode": math.inf, "longcode": math.inf, "alphanumeric": math.inf}
#: A fatal stop must come quickly; this only keeps a broken build from hanging.
NO_HANG = 20


def make_batch(
    lines: range | list[int],
    *,
    sender: str = "12345",
    text: str = "Hi {0}",
    params: list[Any] | None = None,
    options: dict[str, Any] | None = None,
) -> Batch:
    group = Group(
        (sender, text),
        sender=sender,
        template=compile_template(text),
        options={"from": sender, "type": "MT", **(options or {})},
        capacity=math.inf,
    )
    batch = Batch(group, 0.0)
    for line in lines:
        values = params if params is not None else [f"n{line}"]
        batch.entries.append(Entry(line, number(line), values, None, 1, "GSM7", None))
    batch.units = len(batch)
    batch.close(JOB)
    return batch


@dataclass
class Run:
    """A Sender wired to real outputs and a real journal in ``directory``."""

    sender: Sender
    outputs: Outputs
    journal: Journal
    directory: Path
    gateway: GatewayClient

    async def send(self, *batches: Batch) -> None:
        """Submit and wait for every result; write them out."""
        for batch in batches:
            await self.sender.submit(batch)
        try:
            await asyncio.wait_for(self.sender.close(), NO_HANG)
        finally:
            self.outputs.flush()
            self.journal.commit()

    def results(self) -> dict[int, dict[str, Any]]:
        raw = (self.directory / "results.ndjson").read_bytes().splitlines()
        by_line = {}
        for result in map(orjson.loads, raw):
            assert result["line"] not in by_line, f"line {result['line']} written twice"
            by_line[result["line"]] = result
        return by_line

    def records(self) -> list[dict[str, Any]]:
        return list(records(str(self.directory / "journal")))

    @property
    def summary(self) -> Summary:
        return self.outputs.summary


@contextlib.asynccontextmanager
async def running_sender(
    directory: Path,
    base_url: str,
    *,
    key: str = TEST_KEY,
    max_attempts: int = 3,
    retry_ambiguous: bool = False,
    single: bool = False,
    concurrency: int = 4,
    limits: RateLimits | SharedQuota | None = None,
    controls: Controls | None = None,
    rebuilt: frozenset[str] = frozenset(),
    timeout: float = 5,
) -> AsyncIterator[Run]:
    outputs = Outputs(
        NdjsonSink.open(str(directory / "results.ndjson")),
        Summary(),
        invalid=NdjsonSink.open(str(directory / "invalid.ndjson")),
    )
    journal = Journal(str(directory / "journal"), JOB)
    async with GatewayClient(base_url, Secret(key), timeout=timeout, connect_timeout=2) as gateway:
        sender = Sender(
            gateway=gateway,
            limits=limits or RateLimits(rates={}, kind_rates=UNLIMITED),
            policy=RetryPolicy(max_attempts=max_attempts, retry_ambiguous=retry_ambiguous),
            outputs=outputs,
            journal=journal,
            concurrency=concurrency,
            single=single,
            clock=asyncio.get_running_loop().time,
            batch_size=1 if single else 1000,
            controls=controls,
            rebuilt=rebuilt,
        )
        try:
            yield Run(sender, outputs, journal, directory, gateway)
        finally:
            await sender.abandon(0)
            outputs.close()
            journal.close()


async def test_a_batch_is_journaled_then_sent_under_its_key(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False)
    batch = make_batch(range(1, 6))
    async with running_sender(tmp_path, emu.base_url) as run:
        await run.send(batch)
    results = run.results()
    assert sorted(results) == [1, 2, 3, 4, 5]
    assert {r["status"] for r in results.values()} == {"QUEUE"}
    assert all(r["attempts"] == 1 for r in results.values())
    ledger = emu.messages()
    assert {m["idempotencyKey"] for m in ledger} == {batch.key}
    assert {m["id"] for m in ledger} == {r["id"] for r in results.values()}
    assert run.records() == [{"sent": batch.key, "lines": [1, 2, 3, 4, 5]}, {"done": batch.key}]


async def test_413_splits_into_halves_with_their_own_keys(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, max_batch=3)
    batch = make_batch(range(1, 9))
    async with running_sender(tmp_path, emu.base_url) as run:
        await run.send(batch)
    assert {r["status"] for r in run.results().values()} == {"QUEUE"}
    assert sorted(run.results()) == list(range(1, 9))
    # 8 → 4 + 4 → 2 + 2 + 2 + 2: every piece under the key of its own lines
    keys = {m["idempotencyKey"] for m in emu.messages()}
    assert keys == {batch_key(JOB, lines) for lines in ([1, 2], [3, 4], [5, 6], [7, 8])}
    assert run.summary.retries["413-split"] == 3
    records = run.records()
    assert {"unsent": batch.key} in records  # the whole batch was never accepted
    assert (await emu.stats())["duplicates"] == 0


async def test_413_even_for_one_message_fails_that_line(tmp_path: Path) -> None:
    async def too_large(request: web.Request) -> web.Response:
        return web.json_response({"meta": {"explain": "too large"}}, status=413)

    app = web.Application()
    app.router.add_post("/raven/v3/messages/batch", too_large)
    async with (
        serving(app) as port,
        running_sender(tmp_path, f"http://127.0.0.1:{port}/raven") as run,
    ):
        await run.send(make_batch([7, 8]))
    results = run.results()
    assert {r["status"] for r in results.values()} == {"FAILED"}
    assert all("413" in r["error"] for r in results.values())
    keys = [batch_key(JOB, [7]), batch_key(JOB, [8])]
    assert {"sent": keys[0], "lines": [7]} in run.records()
    assert {"done": keys[1]} in run.records()


async def test_a_refused_key_stops_the_run_at_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False)
    async with running_sender(tmp_path, emu.base_url, key="expired-key") as run:
        sender = run.sender
        await sender.submit(make_batch(range(1, 4)))
        with pytest.raises(AuthError, match="expired or revoked"):
            await asyncio.wait_for(sender.watch(), NO_HANG)
        await sender.submit(make_batch(range(4, 7)))  # taken, never started
        with pytest.raises(AuthError):
            await asyncio.wait_for(sender.close(), NO_HANG)
        run.journal.commit()
        assert run.records() == [
            {"sent": make_batch(range(1, 4)).key, "lines": [1, 2, 3]},
            {"unsent": make_batch(range(1, 4)).key},
        ]
    assert run.results() == {}  # nothing to report: every line stays resumable
    assert (await emu.stats())["requests"]["batch"] == 1


async def test_an_unreachable_gateway_stops_the_run_without_hanging(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    batch = make_batch(range(1, 4))
    async with running_sender(tmp_path, f"http://127.0.0.1:{port}/raven", max_attempts=2) as run:
        await run.sender.submit(batch)
        with pytest.raises(GatewayUnreachable, match="cannot connect") as caught:
            await asyncio.wait_for(run.sender.close(), NO_HANG)
        assert "after 2 attempts" in str(caught.value)
        run.journal.commit()
        assert run.records()[-1] == {"unsent": batch.key}
    assert run.results() == {}
    assert run.summary.retries["connect"] == 1


async def test_the_gateways_refusals_become_result_statuses(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, deny_codes=frozenset({"999"}), max_segments=1)
    denied = make_batch([1, 2], sender="999")
    too_long = make_batch([3], text="{0}", params=["x" * 200])  # 2 segments, 1 allowed
    malformed = make_batch([4], options={"callbacks": "not a url"})
    async with running_sender(tmp_path, emu.base_url) as run:
        await run.send(denied, too_long, malformed)
    results = run.results()
    assert {line: r["status"] for line, r in results.items()} == {
        1: "CODE_NOT_ALLOWED",
        2: "CODE_NOT_ALLOWED",
        3: "SEGMENTS_EXCEEDED",
        4: "FAILED",
    }
    assert "HTTP 400" in results[4]["error"]
    assert all(r["attempts"] == 1 for r in results.values())  # a 4xx is never retried
    assert emu.messages() == []


async def test_a_number_the_single_endpoint_refuses_is_an_invalid_number(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, invalid_prefixes=("5215",))
    batch = make_batch([5])
    batch.entries[0] = batch.entries[0]._replace(text="Hi n5")
    async with running_sender(tmp_path, emu.base_url, single=True) as run:
        await run.send(batch)
    [result] = run.results().values()
    assert result["status"] == "INVALID_NUMBER"
    invalid = (tmp_path / "invalid.ndjson").read_bytes()
    assert orjson.loads(invalid)["source"] == "gateway"


async def test_a_500_after_acting_is_ambiguous_without_idempotency(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, faults=FaultSettings(fail_500_after=1.0))
    async with running_sender(tmp_path, emu.base_url) as run:
        await run.send(make_batch(range(1, 4)))
    results = run.results()
    assert {r["status"] for r in results.values()} == {"AMBIGUOUS"}
    assert all(r["attempts"] == 1 for r in results.values())  # not retried blindly
    assert all("may have sent" in r["error"] for r in results.values())
    assert len(emu.messages()) == 3  # the gateway did act: that is why it is ambiguous
    assert run.summary.ambiguous_segments == 3


async def test_a_500_after_acting_is_retried_under_the_same_key_with_idempotency(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, faults=FaultSettings(fail_500_after=1.0))
    batch = make_batch(range(1, 4))
    async with running_sender(tmp_path, emu.base_url, retry_ambiguous=True) as run:
        await run.send(batch)
    results = run.results()
    assert {r["status"] for r in results.values()} == {"QUEUE"}
    assert all(r["attempts"] == 2 for r in results.values())
    stats = await emu.stats()
    assert (stats["replays"], stats["duplicates"]) == (1, 0)  # the retry replayed the key
    ledger = {m["id"]: m for m in emu.messages()}
    assert {r["id"] for r in results.values()} == set(ledger)
    assert {m["idempotencyKey"] for m in ledger.values()} == {batch.key}
    assert run.summary.retries["500"] == 1


async def test_abandon_gives_in_flight_requests_the_grace_period(tmp_path: Path) -> None:
    async with held_gateway() as gateway, running_sender(tmp_path, gateway.base_url) as run:
        batch = make_batch(range(1, 4))
        await run.sender.submit(batch)
        await gateway.arrived.wait()
        abandoning = asyncio.create_task(run.sender.abandon(grace=60))
        await asyncio.sleep(0)  # let it start waiting on the held request
        assert not abandoning.done()
        gateway.release.set()
        assert await asyncio.wait_for(abandoning, NO_HANG) is True
        run.outputs.flush()
    assert {r["status"] for r in run.results().values()} == {"QUEUE"}


async def test_abandon_after_the_grace_period_leaves_the_batch_resumable(tmp_path: Path) -> None:
    async with held_gateway() as gateway, running_sender(tmp_path, gateway.base_url) as run:
        batch = make_batch(range(1, 4))
        await run.sender.submit(batch)
        await gateway.arrived.wait()
        assert await run.sender.abandon(grace=0) is False
        assert run.gateway.connections == 0  # the cancelled request's connection is closed
        run.journal.commit()
        # sent and never done: a resumed run rebuilds it under the same key
        assert run.records() == [{"sent": batch.key, "lines": [1, 2, 3]}]
    assert run.results() == {}


# --- connections: one per request in flight, never more than the concurrency ------------


@pytest.mark.parametrize("stall_every", [0, 4])
async def test_open_connections_never_outnumber_the_concurrency(
    tmp_path: Path, stall_every: int
) -> None:
    """The slots bound the requests in flight, hence the connections: even when requests
    time out and their retries open new ones (``stall_every``: every n-th request is
    never answered in time)."""
    observed: list[int] = []
    peers: set[object] = set()  # the client's end of every connection the server saw
    arrivals = itertools.count(1)
    run: Run | None = None

    async def answer(request: web.Request) -> web.StreamResponse:
        assert run is not None
        observed.append(run.gateway.connections)  # as the client sees it, right now
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        body = orjson.loads(await request.read())
        if stall_every and next(arrivals) % stall_every == 0:
            await asyncio.sleep(1)  # past the client's timeout
        return accepted(body)

    async with (
        stub_gateway(answer) as stub,
        running_sender(
            tmp_path, stub.base_url, concurrency=3, retry_ambiguous=True,
            timeout=0.3 if stall_every else 5, max_attempts=10,
        ) as started,
    ):  # fmt: skip
        run = started
        await run.send(*(make_batch([line]) for line in range(1, 41)))
        assert run.gateway.connections <= 3
    assert len(observed) >= 40
    assert max(observed) <= 3
    assert {r["status"] for r in run.results().values()} == {"QUEUE"}
    assert len(run.results()) == 40
    if not stall_every:  # kept alive: the same three connections throughout
        assert len(peers) <= 3
    else:  # the stalled ones timed out, closed their connections and went again
        assert run.summary.retries["timeout"] >= 1
        assert len(peers) > 3


@pytest.mark.parametrize("idempotent", [True, False])
async def test_a_kept_alive_connection_dropped_under_a_request_is_ambiguous_not_resent(
    tmp_path: Path, idempotent: bool
) -> None:
    """The gateway closes the connection the first batch went on as the second arrives
    on it (an idle timeout racing the request). The client never resends by itself:
    with idempotency the retry policy sends it again under the same key; without, the
    lines are AMBIGUOUS, sent once."""
    arrivals = itertools.count(1)
    peers: list[object] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        if next(arrivals) == 2:
            request.transport.close()  # no answer: the client sees the connection end
        return accepted(body)

    first, second = make_batch([1]), make_batch([2])
    async with (
        stub_gateway(answer) as stub,
        running_sender(tmp_path, stub.base_url, concurrency=1, retry_ambiguous=idempotent) as run,
    ):
        await run.send(first, second)  # one slot: the second goes on the first's connection
    assert peers[0] == peers[1]  # the kept-alive connection
    assert len(set(peers)) == (2 if idempotent else 1)  # the retry: on a new one
    keys = [r.headers.get("Idempotency-Key") for r in stub.sends]
    results = run.results()
    assert results[1]["status"] == "QUEUE"
    if idempotent:
        assert keys == [first.key, second.key, second.key]
        assert (results[2]["status"], results[2]["attempts"]) == ("QUEUE", 2)
    else:
        assert keys == [first.key, second.key]
        assert results[2]["status"] == "AMBIGUOUS"
        assert "closed the connection" in results[2]["error"]


# --- a job that is paused, cancelled or expired (issue 14) ---------------------------


def controls(expires_in: float | None = None) -> Controls:
    """The run's controls; an expiry ``expires_in`` seconds from now (on the loop clock)."""
    from datetime import UTC, datetime, timedelta

    from dispatcher.schedule import Schedule, Timeline
    from dispatcher.timing import WallClock

    now = datetime.now(UTC)
    expiry = None if expires_in is None else now + timedelta(seconds=expires_in)
    timeline = Timeline(Schedule(now, expire_at=expiry), WallClock())
    limits = RateLimits(rates={}, kind_rates=UNLIMITED)
    return Controls(limits=limits, summary=Summary(), timeline=timeline)


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.EXPIRED_UNSENT])
async def test_a_halted_job_sends_nothing_and_gives_the_halts_status(
    emulator_factory: EmulatorFactory, tmp_path: Path, status: Status
) -> None:
    emu = await emulator_factory(rate_limit=False)
    control = controls()
    control.halt.set(status, "why")
    async with running_sender(tmp_path, emu.base_url, controls=control) as run:
        await run.send(make_batch(range(1, 4)), make_batch(range(4, 6)))
    results = run.results()
    assert sorted(results) == [1, 2, 3, 4, 5]
    assert {(r["status"], r["error"], r["attempts"]) for r in results.values()} == {
        (status, "why", 0)
    }
    assert emu.messages() == []
    assert run.records() == []  # never journaled: nothing was sent


@pytest.mark.parametrize(
    ("then", "status", "sent"), [("resume", "QUEUE", 3), ("cancel", "CANCELLED", 0)]
)
async def test_a_paused_job_starts_no_request_until_resumed_or_cancelled(
    emulator_factory: EmulatorFactory, tmp_path: Path, then: str, status: str, sent: int
) -> None:
    emu = await emulator_factory(rate_limit=False)
    control = controls()
    control.do_pause(source="test")
    async with running_sender(tmp_path, emu.base_url, controls=control) as run:
        await run.sender.submit(make_batch(range(1, 4)))
        for _ in range(20):
            await asyncio.sleep(0.005)  # the lane has every chance to send
        assert emu.messages() == []
        getattr(control, "do_resume" if then == "resume" else "cancel")(source="test")
        await run.send()
    assert {r["status"] for r in run.results().values()} == {status}
    assert len(emu.messages()) == sent


async def test_a_safe_failure_whose_retry_would_end_after_the_expiry_is_expired_unsent(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    from dispatcher import retry

    retry.set_testing(False)  # the 429's Retry-After (5 s) is the wait
    emu = await emulator_factory(
        rate_limit=False, faults=FaultSettings(fail_429=1.0, retry_after_s=5)
    )
    batch = make_batch(range(1, 4))
    async with running_sender(tmp_path, emu.base_url, controls=controls(2.0)) as run:
        await run.send(batch)
    results = run.results()
    assert {r["status"] for r in results.values()} == {"EXPIRED_UNSENT"}
    assert all(r["attempts"] == 1 for r in results.values())
    assert "expires before the retry" in results[1]["error"]
    assert emu.messages() == []
    # recorded unsent: a resume knows the gateway never had it
    assert run.records() == [{"sent": batch.key, "lines": [1, 2, 3]}, {"unsent": batch.key}]


async def test_an_ambiguous_failure_stopped_by_the_expiry_is_ambiguous(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, faults=FaultSettings(fail_500_after=1.0))
    control = controls(0.0)  # expires now: no retry may follow
    async with running_sender(
        tmp_path, emu.base_url, retry_ambiguous=True, controls=control
    ) as run:
        await run.send(make_batch(range(1, 4)))
    results = run.results()
    assert {r["status"] for r in results.values()} == {"AMBIGUOUS"}
    assert "may have been accepted" in results[1]["error"]
    assert len(emu.messages()) == 3


@pytest.mark.parametrize(
    ("status", "expected"),
    [(Status.EXPIRED_UNSENT, "AMBIGUOUS"), (Status.CANCELLED, "CANCELLED")],
)
async def test_a_batch_left_in_flight_by_an_earlier_run_is_never_called_unsent(
    emulator_factory: EmulatorFactory, tmp_path: Path, status: Status, expected: str
) -> None:
    emu = await emulator_factory(rate_limit=False)
    control = controls()
    control.halt.set(status, "why")
    batch = make_batch(range(1, 4))
    async with running_sender(
        tmp_path, emu.base_url, controls=control, rebuilt=frozenset({batch.key})
    ) as run:
        await run.send(batch)
    assert {r["status"] for r in run.results().values()} == {expected}
    assert emu.messages() == []


async def test_a_rate_lowered_live_splits_batches_built_for_the_old_one(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False)
    limits = RateLimits(rates={"12345": 1000.0}, kind_rates=UNLIMITED)
    limits.set_rate("12345", 40.0)  # capacity 2 from now on
    async with running_sender(tmp_path, emu.base_url, limits=limits) as run:
        await run.send(make_batch(range(1, 6)))
    assert {r["status"] for r in run.results().values()} == {"QUEUE"}
    keys = {m["idempotencyKey"] for m in emu.messages()}
    assert len(emu.messages()) == 5
    assert len(keys) == 3  # 5 → 2 + 3 → 2 + 1 + 2: three requests of at most 2
    assert run.summary.requests == 3


async def test_a_batch_waiting_for_a_slot_when_the_job_is_halted_is_not_sent(
    tmp_path: Path,
) -> None:
    control = controls()
    async with (
        held_gateway() as gateway,
        running_sender(tmp_path, gateway.base_url, concurrency=1, controls=control) as run,
    ):
        # another code: its own lane passes its throttle and waits for the global slot
        first, second = make_batch(range(1, 3)), make_batch(range(3, 5), sender="54321")
        await run.sender.submit(first)
        await gateway.arrived.wait()  # in flight, holding the only slot
        await run.sender.submit(second)
        for _ in range(5):
            await asyncio.sleep(0)  # the second one is now waiting for the slot
        control.halt.set(Status.EXPIRED_UNSENT, "expired")
        gateway.release.set()
        await run.send()
    results = run.results()
    assert {results[n]["status"] for n in (1, 2)} == {"QUEUE"}  # in flight: it finishes
    assert {results[n]["status"] for n in (3, 4)} == {"EXPIRED_UNSENT"}
    assert gateway.keys == [first.key]
