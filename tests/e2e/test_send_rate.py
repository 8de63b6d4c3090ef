"""Rate accuracy measured at the gateway (SPEC §4), never by the test's own clock.

SLOW (about 3 s by construction): 60 messages of one code at 20/s through an emulator
that enforces 20/s for that code. The emulator's ledger keeps, per code, the largest
number of messages accepted in any sliding 1-second window; that is what the assertion
reads. How close a long send keeps to the rate (at least 95 %) is a wall-clock
measurement, so it belongs to ``bench/bench_rate.py``, not to a test.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.support.cli import KEY, by_line, dispatcher, send_args, write_lines
from tests.support.emulators import EmulatorFactory

RATE = 20
COUNT = 60  # about three seconds at RATE


async def test_a_code_at_20_per_second_stays_within_the_window(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    code = "54321"
    emulator = await emulator_factory(api_key=KEY, rates={code: RATE})  # rate limiting on
    source = write_lines(
        tmp_path / "in.ndjson",
        [{"to": f"+5255{n:08d}", "params": [n]} for n in range(1, COUNT + 1)],
    )
    args = send_args(emulator.base_url, source, "--rate", f"{code}=20", text="Code {0}")
    args[args.index("--from") + 1] = code
    run = await dispatcher(*args, "--summary", "summary.json", cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert {r["status"] for r in by_line(run.results()).values()} == {"QUEUE"}

    stats = await emulator.stats()
    ledger = stats["codes"][code]
    assert ledger["accepted"] == COUNT
    # No sliding 1-second window above 1.1 x the rate, the first second included.
    assert ledger["max_window"] <= 1.1 * RATE, ledger
    # The gateway never had to push back.
    assert stats["rate_limited"] == 0
    assert stats["responses"].get("429", 0) == 0
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["codes"][code]["configured_rate"] == RATE
    assert summary["codes"][code]["messages"] == COUNT
