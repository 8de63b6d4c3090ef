"""Lingering batches from a slow producer are sent, and never lost at the end of input.

Regression: the task that closes lingering batches could be cancelled at end of input
while it was still handing a batch to a saturated sender, losing those lines."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson

from dispatcher import pipeline
from dispatcher.emulator import FaultSettings
from tests.support.emulators import EmulatorFactory
from tests.support.exactly_once import check_exactly_once, number, read_results, send_config


def produce(fd: int, parts: list[tuple[range, float]]) -> None:
    with os.fdopen(fd, "wb") as pipe:
        for lines, pause in parts:
            for line in lines:
                pipe.write(orjson.dumps({"to": number(line), "params": ["x", line]}) + b"\n")
            pipe.flush()
            time.sleep(pause)


async def test_a_lingering_batch_waiting_on_a_full_sender_is_not_lost(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(rate_limit=False, faults=FaultSettings(latency_ms=500))
    read_end, write_end = os.pipe()
    # 500 lines fill the sender (one batch in flight, one held by its lane, two queued,
    # one waiting to be queued). 7 more arrive, are read once the sender takes the fifth
    # batch, and linger until the linger task closes them — while the sender is full
    # again — and the input ends before the sender has room.
    producer = threading.Thread(
        target=produce, args=(write_end, [(range(1, 501), 0.15), (range(501, 508), 0.6)])
    )
    producer.start()
    config = send_config(tmp_path, emu.base_url, batch_size=100, concurrency=1, linger_ms=20)
    with os.fdopen(read_end, "rb") as source:
        summary = await pipeline.run(source, config)
    producer.join()
    assert summary.fatal is None
    check_exactly_once(
        read_results(tmp_path / "results.ndjson"),
        range(1, 508),
        emu.messages(),
        await emu.stats(),
        idempotent=True,
    )
