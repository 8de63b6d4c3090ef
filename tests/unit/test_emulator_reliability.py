"""Rate limits, Idempotency-Key, seeded faults and delivery reports, over real HTTP.

Time-dependent behaviour runs on an injected clock; the only real waits are the
emulator's own latency (to overlap requests) and delivery reports arriving.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.emulator import EmulatorSettings
from dispatcher.emulator.state import Emulator
from tests.support.emulator_api import Api, Reply
from tests.support.emulators import EmulatorFactory


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def recipients(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"to": f"+1500555{start + i:04d}", "params": [f"N{i}"]} for i in range(n)]


def batch(n: int, start: int = 0, sender: str = "12345", **extra: Any) -> dict[str, Any]:
    return {"from": sender, "text": "Hi {0}", "to": recipients(n, start), **extra}


# --- rate limits ---------------------------------------------------------------------


async def test_rate_limit_429_records_nothing(emulator_factory: EmulatorFactory, http: Any) -> None:
    clock = FakeClock()
    api = Api(http, await emulator_factory(rates={"12345": 5.0}, clock=clock))
    assert (await api.batch(batch(3))).status == 200
    refused = await api.batch(batch(3, start=10))
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert "12345" in refused.explain
    stats = await api.stats()
    assert (stats["accepted"], stats["rate_limited"]) == (3, 1)
    assert len(api.emulator.messages()) == 3
    clock.now += 0.2  # one more token: exactly enough for 3
    assert (await api.batch(batch(3, start=10))).status == 200
    assert (await api.stats())["accepted"] == 6


async def test_retry_after_rounds_up(emulator_factory: EmulatorFactory, http: Any) -> None:
    clock = FakeClock()
    api = Api(http, await emulator_factory(rates={"ACME": 2.0}, clock=clock))
    assert (await api.batch(batch(2, sender="ACME"))).status == 200
    clock.now += 0.1
    refused = await api.batch(batch(2, sender="ACME"))
    assert refused.headers["Retry-After"] == "1"  # 0.9 s rounds up to 1
    long_code = Api(http, await emulator_factory(clock=clock))
    assert (
        await long_code.single({"from": "5550001234", "text": "x", "to": "+15005550006"})
    ).status == 200
    clock.now += 0.25
    refused = await long_code.single({"from": "5550001234", "text": "x", "to": "+15005550006"})
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"


async def test_batch_larger_than_a_seconds_worth_is_413(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    # A long code sends 1/s by default: a batch of 2 can never fit the bucket.
    api = Api(http, await emulator_factory())
    reply = await api.batch(batch(2, sender="5550001234"))
    assert reply.status == 413
    assert "rate" in reply.explain
    assert (await api.stats())["rate_limited"] == 0


async def test_window_stats_follow_the_clock(emulator_factory: EmulatorFactory, http: Any) -> None:
    clock = FakeClock()
    api = Api(http, await emulator_factory(rate_limit=False, clock=clock))
    for dt, n in [(0.0, 3), (0.5, 2), (0.7, 4), (2.0, 1)]:
        clock.now += dt
        assert (await api.batch(batch(n))).status == 200
    code = (await api.stats())["codes"]["12345"]
    assert (code["accepted"], code["max_window"], code["max_window_segments"]) == (10, 6, 6)
    assert (code["first"], code["last"]) == (1000.0, 1003.2)


# --- idempotency ---------------------------------------------------------------------


async def test_replay_is_byte_for_byte_and_records_once(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    api = Api(http, await emulator_factory(rate_limit=False))
    key = {"Idempotency-Key": "batch-0001"}
    first = await api.batch(batch(3), headers=key)
    second = await api.batch(batch(3), headers=key)
    assert first.status == second.status == 200
    assert first.raw == second.raw
    stats = await api.stats()
    assert (stats["accepted"], stats["replays"]) == (3, 1)
    assert {m["idempotencyKey"] for m in api.emulator.messages()} == {"batch-0001"}


async def test_refusals_are_replayed_too(emulator_factory: EmulatorFactory, http: Any) -> None:
    api = Api(http, await emulator_factory(rate_limit=False))
    bad = {"from": "12345", "text": "", "to": "+15005550006"}
    first = await api.single(bad, headers={"Idempotency-Key": "k"})
    second = await api.single(bad, headers={"Idempotency-Key": "k"})
    assert first.status == second.status == 400
    assert first.raw == second.raw


async def test_same_key_different_body_is_422(emulator_factory: EmulatorFactory, http: Any) -> None:
    api = Api(http, await emulator_factory(rate_limit=False))
    key = {"Idempotency-Key": "k"}
    assert (await api.batch(batch(2), headers=key)).status == 200
    conflict = await api.batch(batch(2, start=5), headers=key)
    assert conflict.status == 422
    assert "Idempotency-Key" in conflict.explain
    # The same body on the other endpoint is another request too.
    assert (await api.single(batch(2), headers=key)).status == 422
    stats = await api.stats()
    assert (stats["accepted"], stats["idempotency_conflicts"]) == (2, 2)


async def test_concurrent_same_key_records_once(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    # The latency keeps the first request "being processed" while the others arrive.
    emu = await emulator_factory(rate_limit=False)
    await emu.set_faults(latency_ms=150)
    api = Api(http, emu)
    key = {"Idempotency-Key": "same"}
    replies = await asyncio.gather(*(api.batch(batch(5), headers=key) for _ in range(6)))
    assert {r.status for r in replies} == {200}
    assert len({r.raw for r in replies}) == 1
    stats = await api.stats()
    assert (stats["accepted"], stats["replays"]) == (5, 5)
    other = await asyncio.gather(
        api.batch(batch(1), headers={"Idempotency-Key": "x"}),
        api.batch(batch(2), headers={"Idempotency-Key": "x"}),
    )
    assert sorted(r.status for r in other) == [200, 422]


async def test_rate_limited_request_stores_nothing(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    clock = FakeClock()
    api = Api(http, await emulator_factory(rates={"12345": 2.0}, clock=clock))
    key = {"Idempotency-Key": "r"}
    assert (await api.batch(batch(2))).status == 200
    assert (await api.batch(batch(2, start=9), headers=key)).status == 429
    clock.now += 1
    retried = await api.batch(batch(2, start=9), headers=key)
    assert retried.status == 200
    assert (await api.stats())["replays"] == 0


# --- faults --------------------------------------------------------------------------


async def send_or_disconnect(
    api: Api, payload: dict[str, Any], key: str | None = None
) -> Reply | str:
    headers = {"Idempotency-Key": key} if key else None
    try:
        return await api.batch(payload, headers=headers)
    except aiohttp.ServerDisconnectedError:
        return "disconnected"


@pytest.mark.parametrize(
    ("share", "seen", "recorded"),
    [
        ("fail_429", 429, False),
        ("fail_503", 503, False),
        ("fail_500_before", 500, False),
        ("fail_500_after", 500, True),
        ("drop_before", "disconnected", False),
        ("drop_after", "disconnected", True),
    ],
)
async def test_each_fault_kind(
    emulator_factory: EmulatorFactory, http: Any, share: str, seen: Any, recorded: bool
) -> None:
    emu = await emulator_factory(rate_limit=False, seed=1)
    await emu.set_faults(**{share: 1.0})
    api = Api(http, emu)
    outcome = await send_or_disconnect(api, batch(4), key="k")
    assert (outcome if isinstance(outcome, str) else outcome.status) == seen
    if seen in (429, 503):
        assert isinstance(outcome, Reply)
        assert outcome.headers["Retry-After"] == "1"
    kind = share.removeprefix("fail_")
    stats = await emu.stats()
    assert stats["faults"][kind] == 1
    assert sum(stats["faults"].values()) == 1
    assert stats["accepted"] == (4 if recorded else 0)
    # The retry with the same key: the original ids if it recorded, a fresh send if not.
    await emu.set_faults(**{share: 0.0})
    retry = await api.batch(batch(4), headers={"Idempotency-Key": "k"})
    assert retry.status == 200
    stats = await emu.stats()
    assert stats["accepted"] == 4
    assert stats["replays"] == (1 if recorded else 0)
    assert [i["id"] for i in retry.data["ids"]] == [m["id"] for m in emu.messages()]


async def test_faults_skip_requests_that_record_nothing(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    emu = await emulator_factory(rate_limit=False, seed=1)
    await emu.set_faults(fail_500_after=1.0)
    api = Api(http, emu)
    refused = await api.batch({"from": "12345", "text": "", "to": recipients(1)})
    assert refused.status == 400  # nothing recorded, so nothing to fail after
    assert (await emu.stats())["faults"]["500_after"] == 0


async def test_seeded_fault_mix_is_exact_and_repeatable(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    emu = await emulator_factory(rate_limit=False, seed=42)
    shares = {
        "fail_429": 0.1, "fail_503": 0.1, "fail_500_before": 0.1, "fail_500_after": 0.1,
        "drop_before": 0.05, "drop_after": 0.05,
    }  # fmt: skip
    await emu.set_faults(**shares)
    api = Api(http, emu)

    async def run() -> tuple[list[Any], dict[str, Any]]:
        seen = []
        for i in range(120):
            outcome = await send_or_disconnect(api, batch(2, start=2 * i))
            seen.append(outcome if isinstance(outcome, str) else outcome.status)
        return seen, await emu.stats()

    seen, stats = await run()
    faults = stats["faults"]
    assert Counter(seen)[429] == faults["429"] > 0
    assert Counter(seen)[503] == faults["503"] > 0
    assert Counter(seen)[500] == faults["500_before"] + faults["500_after"]
    assert seen.count("disconnected") == faults["drop_before"] + faults["drop_after"]
    recorded_requests = seen.count(200) + faults["500_after"] + faults["drop_after"]
    assert stats["accepted"] == 2 * recorded_requests == len(emu.messages())
    assert all(v > 0 for v in faults.values())
    # The same seed after a reset: the very same sequence.
    await api.post("/_emulator/reset", key=None)
    again, stats_again = await run()
    assert again == seen
    assert stats_again["faults"] == faults


async def test_faults_route_updates_and_validates(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    api = Api(http, await emulator_factory())
    reply = await api.post("/_emulator/faults", {"fail_429": 0.25, "latency_ms": 5}, key=None)
    assert reply.status == 200
    assert (reply.json["fail_429"], reply.json["latency_ms"], reply.json["fail_503"]) == (
        0.25,
        5,
        0,
    )
    for bad in ({"fail_429": 2}, {"nope": 0.1}, [1], {"fail_429": 0.7, "fail_503": 0.7}):
        assert (await api.post("/_emulator/faults", bad, key=None)).status == 400
    assert (await api.post("/_emulator/faults", data=b"{", key=None)).status == 400
    assert (await api.get("/_emulator/faults", key=None)).json["fail_429"] == 0.25


@pytest.mark.parametrize(
    ("body", "explain"),
    [
        (b'{"latency_ms": 1e300}', "latency_ms must be between 0 and 3600000"),
        (b'{"jitter_ms": -1}', "jitter_ms must be between 0 and 3600000"),
        (b'{"retry_after_s": 1.5}', "retry_after_s must be a whole number of seconds"),
        (b'{"retry_after_s": 1e30}', "retry_after_s must be a whole number of seconds"),
        (b'{"retry_after_s": -1}', "retry_after_s must be a whole number of seconds"),
        (b'{"fail_429": true}', "fail_429 must be a number"),
        (b'{"fail_429": "0.5"}', "fail_429 must be a number"),
        (b'{"fail_429": null}', "fail_429 must be a number"),
        (b'{"fail_429": 1.5}', "fail_429 must be a share from 0 to 1"),
        (b'{"fail_429": 18446744073709551616}', "fail_429 must be a share from 0 to 1"),
        (b'{"nope": 0.1}', "unknown fault settings: nope"),
        (b'{"": 0.1}', "unknown fault settings"),
        (b"[1]", "body must be a JSON object"),
        (b"{", "body is not valid JSON"),
        (b"", "body is not valid JSON"),
        (b'{"latency_ms": 1e999}', "body is not valid JSON"),
    ],
)
async def test_fault_control_refuses_bad_values_with_a_400(
    emulator_factory: EmulatorFactory, http: Any, body: bytes, explain: str
) -> None:
    api = Api(http, await emulator_factory())
    before = (await api.get("/_emulator/faults", key=None)).json
    reply = await api.post("/_emulator/faults", data=body, key=None)
    assert reply.status == 400
    assert explain in reply.explain
    assert set(reply.json) == {"meta"}
    assert (await api.get("/_emulator/faults", key=None)).json == before


async def test_fault_control_takes_the_bounds(emulator_factory: EmulatorFactory, http: Any) -> None:
    api = Api(http, await emulator_factory())
    edge = {"latency_ms": 3_600_000, "jitter_ms": 0, "retry_after_s": 86_400.0, "fail_503": 1}
    reply = await api.post("/_emulator/faults", edge, key=None)
    assert reply.status == 200
    assert reply.json["retry_after_s"] == 86_400


fault_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)  # fmt: skip
fault_names = st.sampled_from(
    ["fail_429", "fail_500_before", "fail_500_after", "fail_503", "drop_before", "drop_after",
     "latency_ms", "jitter_ms", "retry_after_s", "nope"]
)  # fmt: skip


@given(st.dictionaries(fault_names, fault_values, max_size=4))
@settings(max_examples=300, deadline=None)
def test_set_faults_updates_or_raises_value_error_and_changes_nothing(
    changes: dict[str, Any],
) -> None:
    emulator = Emulator(EmulatorSettings(api_key="k"))
    before = emulator.faults.settings
    try:
        after = emulator.set_faults(**changes)
    except ValueError:
        assert emulator.faults.settings == before
        return
    assert after == emulator.faults.settings.as_dict()
    assert 0 <= after["latency_ms"] <= 3_600_000
    assert after["retry_after_s"] == int(after["retry_after_s"])


async def test_faults_do_not_touch_status_lookups(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    emu = await emulator_factory(rate_limit=False)
    api = Api(http, emu)
    sent = await api.single({"from": "12345", "text": "x", "to": "+15005550006"})
    await emu.set_faults(fail_503=1.0)
    assert (await api.get(f"/v2/messages/{sent.data['id']}")).status == 200


# --- delivery reports ---------------------------------------------------------------


class Receiver:
    """A real webhook server on loopback collecting delivery reports."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.expected = 0
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.reports.append((request.path, orjson.loads(await request.read())))
        if len(self.reports) >= self.expected:
            self.done.set()
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield rec, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_delivery_reports(
    emulator_factory: EmulatorFactory, http: Any, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    emu = await emulator_factory(
        rate_limit=False, seed=5, dr_delay_ms=10, dr_undeliv=0.25, dr_expired=0.25,
        dr_rejectd=0.25, owner="acme@example.com",
    )  # fmt: skip
    api = Api(http, emu)
    callbacks = f"{url}/one, {url}/two"
    sent = await api.batch(
        batch(200, requestDR=True, callbacks=callbacks, externalId="camp", clientId="cli")
    )
    assert sent.status == 200
    rec.expected = 400
    await asyncio.wait_for(rec.done.wait(), 10)
    ids = {i["id"]: i["mobile"] for i in sent.data["ids"]}
    by_path: dict[str, dict[str, str]] = {"/one": {}, "/two": {}}
    for path, report in rec.reports:
        assert set(report) == {
            "id", "from", "to", "status", "date", "timestamp", "externalId", "clientId",
            "message", "username", "callback",
        }  # fmt: skip
        assert report["to"] == ids[report["id"]]
        assert (report["from"], report["externalId"], report["clientId"]) == (
            "12345",
            "camp",
            "cli",
        )
        assert report["username"] == "acme@example.com"
        assert report["callback"] == f"{url}{path}"
        assert report["date"].endswith("Z")
        assert isinstance(report["timestamp"], int)
        assert report["message"]
        by_path[path][report["id"]] = report["status"]
    assert by_path["/one"] == by_path["/two"]
    assert set(by_path["/one"]) == set(ids)
    counts = Counter(by_path["/one"].values())
    assert set(counts) == {"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD"}
    assert all(25 <= c <= 75 for c in counts.values()), counts
    for id_, status in list(by_path["/one"].items())[:5]:
        assert (await api.get(f"/v2/messages/{id_}")).data["status"] == status
    assert (await emu.stats())["dr"] == {"sent": 400, "failed": 0}


async def test_undeliverable_reports_are_counted(
    emulator_factory: EmulatorFactory, http: Any, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    emu = await emulator_factory(rate_limit=False, dr_delay_ms=0)
    api = Api(http, emu)
    dead = "http://127.0.0.1:9/x"  # the discard port: nothing listens, connection refused
    sent = await api.single(
        {"from": "12345", "text": "x", "to": "+15005550006", "requestDR": True,
         "callbacks": f"{dead},{url}/ok"}
    )  # fmt: skip
    assert sent.status == 200
    rec.expected = 1
    await asyncio.wait_for(rec.done.wait(), 10)
    for _ in range(200):
        if (await emu.stats())["dr"]["failed"] == 1:
            break
        await asyncio.sleep(0.01)
    assert (await emu.stats())["dr"] == {"sent": 1, "failed": 1}
    assert (await api.single({"from": "12345", "text": "y", "to": "+15005550006"})).status == 200


async def test_no_report_without_request_dr(
    emulator_factory: EmulatorFactory, http: Any, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    # One worker posts in order: had /a been reported, it would arrive before /b.
    emu = await emulator_factory(rate_limit=False, dr_delay_ms=0, dr_concurrency=1)
    api = Api(http, emu)
    sent = await api.single(
        {"from": "1", "text": "x", "to": "+15005550006", "callbacks": url + "/a"}
    )
    await api.single(
        {"from": "1", "text": "x", "to": "+15005550006", "callbacks": url + "/b", "requestDR": True}
    )
    rec.expected = 1
    await asyncio.wait_for(rec.done.wait(), 10)
    assert [path for path, _ in rec.reports] == ["/b"]
    assert (await api.get(f"/v2/messages/{sent.data['id']}")).data["status"] == "QUEUE"


async def test_latency_is_a_floor_even_when_the_loop_s_timers_fire_early(
    emulator_factory: EmulatorFactory, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--latency-ms`` promises an answer no sooner (a load test's ``min`` latency is
    checked against it): a timer that fires early (as uvloop's millisecond clock may;
    here by 3 ms every time, on purpose) is topped up by the precise clock."""
    real_sleep = asyncio.sleep

    async def early(delay: float, result: Any = None) -> Any:
        return await real_sleep(max(0.0, delay - 0.003), result)

    emu = await emulator_factory(rate_limit=False)
    await emu.set_faults(latency_ms=20)
    api = Api(http, emu)
    monkeypatch.setattr("dispatcher.emulator.state.asyncio.sleep", early)
    for n in range(5):
        started = time.perf_counter()
        reply = await api.batch(batch(1, start=n))
        assert reply.status == 200
        assert time.perf_counter() - started >= 0.020
