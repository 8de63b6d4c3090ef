"""A batch the linger task is still handing to a full sender when the input ends is
sent, never lost.

Regression: the task that closes lingering batches was cancelled at the end of input
while it waited to hand a batch to a saturated sender, and those lines got no result.
The race is reproduced with events, not pauses: the test hands the input over piece
by piece (each piece one chunk for the reader, so the only partial batch is the one
meant to linger); a gateway that holds its answers keeps the sender full; the test sees
the linger task start handing that batch over, and only then ends the input; then it
releases the gateway.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dispatcher import pipeline
from dispatcher.batcher import Batcher
from dispatcher.halt import Halt
from dispatcher.journal import Journal
from dispatcher.limiter import RateLimits
from dispatcher.metrics import Recorder
from dispatcher.models import Batch, Recipient, Rejected
from dispatcher.prepare import Preparer
from dispatcher.reader import Reader
from dispatcher.summary import Summary
from dispatcher.writers import NdjsonSink, Outputs
from tests.support.exactly_once import read_results, send_config
from tests.support.held import HeldInput, held_gateway

BATCH = 1000
#: one request in flight, one batch held by the lane, two in its queue (2048 // 1000)
FILLS_THE_SENDER = 4 * BATCH
LINGERING = 7
NO_HANG = 30


class Watched:
    """The real sender, telling the test when a task other than the feeder — the
    linger task — starts handing it a batch, and whether that hand-over is pending."""

    def __init__(self, stage: pipeline.Stage) -> None:
        self.stage = stage
        self.feeder: asyncio.Task[Any] | None = None
        self.linger_hands_over = asyncio.Event()
        self.pending = 0

    async def submit(self, batch: Batch) -> None:
        if asyncio.current_task() is not self.feeder:
            self.linger_hands_over.set()
        self.pending += 1
        try:
            await self.stage.submit(batch)
        finally:
            self.pending -= 1

    async def close(self) -> None:
        await self.stage.close()

    async def abandon(self, grace: float) -> bool:
        return await self.stage.abandon(grace)

    async def watch(self) -> None:
        await self.stage.watch()


class Chunks:
    """The reader's chunks, and an event once the input has ended."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.ended = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[list[Recipient | Rejected]]:
        async for chunk in self.reader:
            yield chunk
        self.ended.set()


async def test_a_batch_the_linger_task_is_handing_over_at_the_end_of_input_is_sent(
    tmp_path: Path,
) -> None:
    source = HeldInput()
    async with held_gateway() as gateway:
        config = send_config(
            tmp_path, gateway.base_url, batch_size=BATCH, concurrency=1, linger_ms=1
        )
        limits = RateLimits(rates={"12345": math.inf}, kind_rates=config.kind_rates)
        outputs = Outputs(NdjsonSink.open(config.results), Summary())
        journal = Journal(None, "job1")
        batcher = Batcher(
            batch_size=BATCH,
            linger=config.linger_ms / 1000,
            max_buffered=config.max_buffered,
            count_segments=False,
            clock=asyncio.get_running_loop().time,
            job=journal.job,
        )
        preparer = Preparer(config, capacity=limits.capacity)
        async with pipeline._stage(config, limits, outputs, journal, None) as sender:
            stage = Watched(sender)
            chunks = Chunks(Reader(source))  # type: ignore[arg-type]
            job = pipeline._Job(
                source=None,  # type: ignore[arg-type]  # the reader below is given
                config=config,
                shutdown=pipeline.Shutdown(),
                outputs=outputs,
                journal=journal,
                resume=None,
                sending=limits,
                metrics=Recorder(enabled=False),
                halt=Halt(),
                windows=None,
            )
            feeding = asyncio.create_task(
                pipeline._feed(job, chunks, preparer, batcher, stage)  # type: ignore[arg-type]
            )
            stage.feeder = feeding
            try:
                source.give(range(1, FILLS_THE_SENDER + 1))  # whole batches only
                await gateway.arrived.wait()  # the first request is held: the sender fills
                source.give(range(FILLS_THE_SENDER + 1, FILLS_THE_SENDER + 1 + LINGERING))
                await stage.linger_hands_over.wait()
                assert stage.pending == 1  # the hand-over waits: nothing moves while held
                source.end()  # the input ends while the linger task holds a batch
                await chunks.ended.wait()
                assert stage.pending == 1
                gateway.release.set()
                assert await asyncio.wait_for(feeding, NO_HANG) is None
                await asyncio.wait_for(sender.close(), NO_HANG)
            finally:
                source.end()
        outputs.close()
    lines = [r["line"] for r in read_results(Path(config.results))]
    assert sorted(lines) == list(range(1, FILLS_THE_SENDER + LINGERING + 1))
    sent = [r["to"] for body in gateway.bodies for r in body["to"]]
    assert len(sent) == len(set(sent)) == FILLS_THE_SENDER + LINGERING
