"""Job-wide caps counted in a real Redis (`dispatcher.quota.caps`): several processes'
reservations never exceed a cap together, a run's part starts afresh from what its
results say, and what Redis cannot vouch for stops the run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from dispatcher.models import Batch, Entry, Group, Status
from dispatcher.pricing import Pricing
from dispatcher.quota import QuotaError
from dispatcher.quota.caps import CappedStage, SharedCaps, input_identity, job_name
from dispatcher.quota.shared import SharedQuota
from dispatcher.renderer import compile_template
from tests.support.redis_server import RedisServer
from tests.unit.quota.conftest import QuotaFactory

GROUP = Group("g", sender="12345", template=compile_template("Hi"), options={}, capacity=1000)


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[int, Status, str]] = []

    def local(self, line: int, to: str | None, status: Status, error: str, **_: Any) -> None:
        self.got.append((line, status, error))


def batch(*segments: int, start: int = 1) -> Batch:
    made = Batch(GROUP, 0.0)
    made.entries = [
        Entry(start + i, f"+52550000{start + i:04d}", [], None, n, "GSM7", None)
        for i, n in enumerate(segments)
    ]
    made.units = len(made.entries)
    made.close("job")
    return made


def caps(quota: SharedQuota, share: str = "1/1", **options: Any) -> SharedCaps:
    options.setdefault("name", "job")
    return SharedCaps(quota, share=share, **options)


async def totals(raw: aioredis.Redis, key: str) -> dict[str, str]:
    values = await raw.hgetall(key)
    return {k.decode(): v.decode() for k, v in values.items()}


async def test_processes_together_never_exceed_a_cap(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    quotas = [await quota_factory({}) for _ in range(3)]
    shares = [caps(q, f"{k}/3", max_messages=50) for k, q in enumerate(quotas, 1)]
    sinks = [Sink() for _ in shares]

    async def send(share: SharedCaps, sink: Sink, k: int) -> int:
        sent = 0
        for n in range(10):  # 10 batches of 3: 30 lines a process, 90 in all
            kept = await share.reserve([batch(1, 1, 1, start=1000 * k + 3 * n)], sink)
            sent += sum(len(b) for b in kept)
        return sent

    sent = await asyncio.gather(
        *(send(s, sink, k) for k, (s, sink) in enumerate(zip(shares, sinks, strict=True)))
    )
    assert sum(sent) == 50  # all that fits, and not one more
    refused = [got for sink in sinks for got in sink.got]
    assert len(refused) == 90 - 50
    assert {status for _, status, _ in refused} == {Status.NOT_SENT}
    assert all("max_messages 50 reached at line" in error for _, _, error in refused)
    counted = await totals(raw, shares[0].key)
    assert float(counted["m"]) == 50
    # each process's part is what it reserved
    assert [float(counted[f"m:{k}/3"]) for k in (1, 2, 3)] == sent


async def test_a_batch_is_cut_at_the_first_line_beyond_and_the_rest_never_goes(
    quota_factory: QuotaFactory,
) -> None:
    share = caps(await quota_factory({}), max_segments=6)
    sink = Sink()
    kept = await share.reserve([batch(2, 2), batch(1, 3, 1, start=3)], sink)
    assert [b.lines for b in kept] == [[1, 2], [3]]
    assert kept[1].key != batch(1, 3, 1, start=3).key  # the part is a batch of its own
    assert share.reached == ("max_segments", 4)
    assert [(line, status) for line, status, _ in sink.got] == [
        (4, Status.NOT_SENT),
        (5, Status.NOT_SENT),
    ]
    # reached: a later line that would fit is NOT_SENT too, as with the local caps
    later = Sink()
    assert share.check(GROUP, batch(1, start=6).entries, None, later) == []
    assert [line for line, _, _ in later.got] == [6]
    assert "max_segments 6 reached at line 4" in later.got[0][2]


async def test_the_cost_cap_prices_each_line(quota_factory: QuotaFactory) -> None:
    pricing = Pricing(0.01, {"52": 0.05})
    share = caps(await quota_factory({}), max_cost=0.12, pricing=pricing)
    sink = Sink()
    kept = await share.reserve([batch(1, 1, 1)], sink)  # 0.05 each: the third is over
    assert [b.lines for b in kept] == [[1, 2]]
    assert share.reached == ("max_cost", 3)


async def test_a_run_starts_its_part_afresh_from_its_results(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    quota = await quota_factory({})
    other = caps(quota, "2/2", max_messages=100)
    await other.reserve([batch(1, 1, 1, start=100)], Sink())
    first = caps(quota, "1/2", max_messages=100)
    await first.reserve([batch(*[1] * 10)], Sink())
    assert float((await totals(raw, first.key))["m"]) == 13
    # The run stopped; its results say 7 of its 10 may have been sent (3 were dropped
    # before they went). The resume's part starts there: nothing is counted twice.
    again = caps(quota, "1/2", max_messages=100, committed=(7, 7, 0.0))
    await again.reserve([batch(1, start=11)], Sink())
    counted = await totals(raw, first.key)
    assert float(counted["m"]) == 3 + 7 + 1
    assert float(counted["m:1/2"]) == 8


async def test_lines_left_in_flight_count_at_their_most_until_read_again(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    quota = await quota_factory({})
    share = caps(
        quota, max_segments=1000, committed=(5, 5, 0.0), pinned={6, 7}, max_message_segments=10
    )
    await share.reserve([batch(1, start=20)], Sink())
    assert float((await totals(raw, share.key))["s"]) == 5 + 2 * 10 + 1
    # the resume reads the in-flight lines again: they pass (they may have gone) and
    # their count becomes exact
    assert share.check(GROUP, batch(2, 3, start=6).entries, None, Sink()) is None
    await share.settle()
    assert float((await totals(raw, share.key))["s"]) == 5 + 2 + 3 + 1


async def test_an_answer_lost_and_asked_again_counts_once(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    share = caps(await quota_factory({}), max_messages=10)
    await share.reserve([batch(1, 1)], Sink())
    own = share.own
    await share._call((3, 3, 0.0))  # Redis acted; pretend the answer was lost
    share.own = own
    await share._call((3, 3, 0.0))  # asked again with the same absolute part
    assert float((await totals(raw, share.key))["m"]) == 5


async def test_the_same_share_in_two_processes_stops_the_later_caller(
    quota_factory: QuotaFactory,
) -> None:
    quota = await quota_factory({})
    first, second = caps(quota, "1/2", max_messages=10), caps(quota, "1/2", max_messages=10)
    await first.reserve([batch(1)], Sink())
    await second.reserve([batch(1, start=2)], Sink())  # claims the share
    with pytest.raises(QuotaError, match="another process took share 1/2"):
        await first.reserve([batch(1, start=3)], Sink())


async def test_counts_redis_lost_stop_the_run(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    share = caps(await quota_factory({}), max_messages=10)
    await share.reserve([batch(1)], Sink())
    await raw.delete(share.key)  # as a Redis restarted without persistence
    with pytest.raises(QuotaError, match="gone from Redis"):
        await share.reserve([batch(1, start=2)], Sink())


async def test_an_outage_pauses_reserving_and_the_count_goes_on_after(
    quota_factory: QuotaFactory, redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    quota = await quota_factory({}, io_timeout=0.3, max_ahead=0.1)
    share = caps(quota, max_messages=4)
    await share.reserve([batch(1, 1)], Sink())
    # Redis stops answering (paused: it keeps its data) for longer than a call may take
    await raw.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    sink = Sink()
    reserving = asyncio.create_task(share.reserve([batch(1, 1, 1, start=3)], sink))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not quota.available:
            break
    assert not quota.available
    assert not reserving.done()  # nothing reserved, so nothing sent, while Redis is away
    kept = await asyncio.wait_for(reserving, 10)
    assert [b.lines for b in kept] == [[3, 4]]  # counted on from the 2 before the outage
    assert [line for line, _, _ in sink.got] == [5]
    assert quota.stats.outages == 1


async def test_the_local_fallback_is_for_rates_only(
    quota_factory: QuotaFactory, redis_server: RedisServer
) -> None:
    quota = await quota_factory({}, io_timeout=0.3, max_ahead=0.1, fallback="local", peers=2)
    share = caps(quota, max_messages=4)
    await share.reserve([batch(1)], Sink())
    await asyncio.to_thread(redis_server.stop)
    reserving = asyncio.create_task(share.reserve([batch(1, start=2)], Sink()))
    await asyncio.sleep(1.0)  # well past the fallback's start (max_ahead)
    assert not reserving.done()
    reserving.cancel()
    await asyncio.gather(reserving, return_exceptions=True)


async def test_the_stage_reserves_what_waits_together_and_passes_rebuilt_batches(
    quota_factory: QuotaFactory,
) -> None:
    quota = await quota_factory({})
    share = caps(quota, max_messages=3)

    class Sender:
        def __init__(self) -> None:
            self.got: list[list[int]] = []

        async def submit(self, b: Batch) -> None:
            self.got.append(b.lines)

        async def close(self) -> None: ...
        async def abandon(self, grace: float) -> bool:
            return True

        async def watch(self) -> None:
            await asyncio.Event().wait()

    rebuilt = batch(1, 1, start=50)
    sender, sink = Sender(), Sink()
    stage = CappedStage(sender, share, sink, rebuilt={rebuilt.key})
    for b in (batch(1, start=1), batch(1, start=2), rebuilt, batch(1, 1, start=3)):
        await stage.submit(b)
    await stage.close()
    assert sender.got == [[1], [2], [50, 51], [3]]
    assert [line for line, _, _ in sink.got] == [4]
    calls = quota.stats.calls
    assert calls <= 5  # one call per group of waiting batches (and one at the edge)


async def test_a_quota_error_stops_the_stage(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    share = caps(await quota_factory({}), max_messages=10)
    await share.reserve([batch(1)], Sink())
    await raw.delete(share.key)

    class Sender:
        async def submit(self, b: Batch) -> None: ...
        async def close(self) -> None: ...
        async def abandon(self, grace: float) -> bool:
            return True

        async def watch(self) -> None:
            await asyncio.Event().wait()

    stage = CappedStage(Sender(), share, Sink())
    watching = asyncio.create_task(stage.watch())
    await stage.submit(batch(1, start=2))
    with pytest.raises(QuotaError):
        await asyncio.wait_for(watching, 5)
    with pytest.raises(QuotaError):
        await stage.close()


def test_the_default_name_is_the_same_for_every_copy_of_the_input(tmp_path: Any) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b'{"to": "+525500000001"}\n' * 100_000)
    b.write_bytes(a.read_bytes())
    c.write_bytes(a.read_bytes() + b"\n")
    assert job_name("C", "Hi", str(a)) == job_name("C", "Hi", b)
    assert job_name("C", "Hi", str(a)) != job_name("C", "Hi", str(c))
    assert job_name("C", "Hi", str(a)) != job_name("C", "Ho", str(a))
    assert input_identity("-") == b""
    assert input_identity(None) == b""
    assert len(job_name("C", None, "-")) == 16


async def test_an_answer_waiting_cannot_cure_is_a_quota_error(
    quota_factory: QuotaFactory, raw: aioredis.Redis
) -> None:
    share = caps(await quota_factory({}), max_messages=10)
    await raw.set(share.key, b"not a hash")  # WRONGTYPE: no outage, no waiting
    with pytest.raises(QuotaError, match="refused a script"):
        await share.reserve([batch(1)], Sink())
