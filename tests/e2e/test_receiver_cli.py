"""``dispatcher receiver`` in a subprocess: the listening line, every report written on
a signal, exit 3 on an unwritable output."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support.cli import ndjson


async def start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher",
        "receiver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    return proc, first


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, object]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_writes_everything_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "dr.ndjson"
    proc, first = await start("--port", "0", "--out", str(out), "--flush-interval", "60")
    match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))\n", first)
    assert match, first
    async with aiohttp.ClientSession() as session:
        for i in range(20):
            report = orjson.dumps({"id": f"m{i}", "status": "DELIVRD", "to": "+525500000001"})
            assert await post(session, match[1] + "/dr", report) == (200, {"received": 1})
        status, answer = await post(session, match[1] + "/dr", b"oops")
        assert status == 400
        assert isinstance(answer, dict)
        assert answer["error"].startswith("body is not JSON")
    assert out.read_bytes() == b""  # a 60 s flush interval: nothing written yet
    proc.send_signal(sig)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr
    assert [line["id"] for line in ndjson(out)] == [f"m{i}" for i in range(20)]
    assert b"20 delivery reports written" in stderr
    assert b"Traceback" not in stderr


async def test_an_unwritable_output_exits_3(tmp_path: Path) -> None:
    proc, first = await start("--port", "0", "--out", str(tmp_path))  # a directory
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3
    assert first == ""
    assert b"cannot open" in stderr
