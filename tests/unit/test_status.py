"""`dispatcher status`: lookups by id against the emulator, from the command line or a
results file, with failures reported per id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from dispatcher import pipeline
from dispatcher.config import Secret
from dispatcher.gateway import GatewayClient
from dispatcher.lookup import ids_from_results, lookup
from tests.support.emulators import TEST_KEY, EmulatorFactory
from tests.support.exactly_once import send_config, write_input


async def send(emulator_factory: EmulatorFactory, tmp_path: Path, count: int) -> tuple[str, Path]:
    emu = await emulator_factory(rate_limit=False, dr_delay_ms=0)
    source = tmp_path / "in.ndjson"
    write_input(source, count, bad_every=10)
    results = tmp_path / "results.ndjson"
    config = send_config(tmp_path, emu.base_url, request_dr=True)
    await pipeline.run(str(source), config)
    return emu.base_url, results


def test_ids_from_results_all_and_sampled(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"
    rows = [{"line": n, "status": "QUEUE", "id": f"m{n}"} for n in range(1, 101)]
    rows.append({"line": 101, "status": "REJECTED", "error": "x"})
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"not json\n")
    assert ids_from_results(str(path)) == [f"m{n}" for n in range(1, 101)]
    sample = ids_from_results(str(path), sample=10, seed=3)
    assert len(sample) == 10
    assert len(set(sample)) == 10
    assert set(sample) <= {f"m{n}" for n in range(1, 101)}
    assert sample == ids_from_results(str(path), sample=10, seed=3)


async def test_lookup_reports_each_id(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    base_url, results = await send(emulator_factory, tmp_path, 30)
    ids = ids_from_results(str(results))
    assert len(ids) == 27
    await asyncio.sleep(0.1)  # let the delivery reports settle the statuses
    async with GatewayClient(base_url, Secret(TEST_KEY), timeout=5, connect_timeout=5) as gateway:
        answers = [a async for a in lookup(gateway, [*ids, "no-such-id"], rate=1000)]
    by_id = {a["id"]: a for a in answers}
    assert set(by_id) == {*ids, "no-such-id"}
    assert all(by_id[i]["status"] == "DELIVRD" for i in ids)
    assert "404" in by_id["no-such-id"]["error"]
