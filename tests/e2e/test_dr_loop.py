"""The delivery-report loop end to end: send with --request-dr --callbacks pointing at
the real receiver (its secret in the URL), the emulator posts a report per message, and
`dispatcher report` joins results and reports into final counts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson

from dispatcher import pipeline
from dispatcher.receiver import running_receiver
from tests.support.emulators import EmulatorFactory
from tests.support.exactly_once import send_config, write_input

SECRET = "loop-Wm4sT9qXc2Rb7Ln"


async def test_send_receiver_report(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu = await emulator_factory(
        rate_limit=False, dr_delay_ms=20, dr_undeliv=0.1, dr_expired=0.05, seed=11
    )
    source = tmp_path / "in.ndjson"
    lines = write_input(source, 600, bad_every=100)
    dr_file = tmp_path / "dr.ndjson"
    async with running_receiver(dr_file, secret=SECRET) as receiver:
        assert receiver.url.endswith(f"/dr/{SECRET}")
        config = send_config(
            tmp_path, emu.base_url, request_dr=True, callbacks=receiver.url, batch_size=100
        )
        summary = await pipeline.run(str(source), config)
        assert summary.fatal is None
        for _ in range(200):  # the reports arrive asynchronously, after dr_delay_ms
            if receiver.stats().received >= len(lines):
                break
            await asyncio.sleep(0.05)
        assert receiver.stats().received == len(lines)
        assert receiver.stats().unauthorized == 0
    assert SECRET.encode() not in dr_file.read_bytes()  # the echoed callback URL is masked
    command = [sys.executable, "-m", "dispatcher", "report"]
    command += ["--results", str(tmp_path / "results.ndjson"), "--dr", str(dr_file)]
    command += ["--json", "--out", str(tmp_path / "delivery.ndjson")]
    proc = await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    report = orjson.loads(proc.stdout)
    stats = await emu.stats()
    assert stats["dr"]["sent"] == len(lines)
    assert report["accepted"] == len(lines)
    assert report["delivered"] + report["undelivered"] == len(lines)
    assert report["pending"] == 0
    assert set(report["undeliveredByStatus"]) <= {"UNDELIV", "EXPIRED"}
    assert report["undelivered"] > 0
    assert report["notSent"] == 600 - len(lines)  # the malformed lines
    assert report["unknownIds"] == 0
    delivery = [
        orjson.loads(raw) for raw in (tmp_path / "delivery.ndjson").read_bytes().splitlines()
    ]
    assert len(delivery) == 600
    assert sum(d["deliveryStatus"] == "DELIVRD" for d in delivery) == report["delivered"]
