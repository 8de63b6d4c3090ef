"""``dispatcher send`` through the single endpoint (``POST v2/messages``).

``--batch-size 1`` and ``--endpoint single`` send each message with its rendered text;
the gateway's documented envelope and the flat ``{status, messageId, description}``
shape are both understood; gateway-refused numbers become INVALID_NUMBER (source
gateway) while the other lines still go out.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.support.cli import (
    ALPHA,
    CODE,
    KEY,
    by_line,
    check_against_ledger,
    dispatcher,
    ndjson,
    render,
    send_args,
    write_lines,
)
from tests.support.emulators import EmulatorFactory

TEMPLATE = "Hello {0}, {1} left"
LINES = [
    {"to": "+525500000001", "params": ["Ana", 3]},
    {"to": "+525500000002", "params": ["Zoë ✓", 2.5], "ref": {"k": 1}},  # UCS-2
    {"to": "+525500000001", "params": ["Ana again", True]},  # the same number twice
    {"to": "+525599000004", "params": ["refused", 4]},  # invalid at the gateway
    {"to": "not a number", "params": ["x", 5]},  # invalid at the client
    {"to": "+525500000006", "text": "Code {0}", "from": ALPHA, "params": ["77"]},
    {"to": "+525500000007", "params": ["x" * 200, 7]},  # two segments
]


@pytest.mark.parametrize(
    ("flags", "flat"),
    [
        (("--batch-size", "1"), False),
        (("--endpoint", "single"), False),
        (("--endpoint", "single"), True),
    ],
    ids=["batch-size-1", "endpoint-single", "flat-answers"],
)
async def test_single_endpoint_sends_rendered_texts(
    emulator_factory: EmulatorFactory, tmp_path: Path, flags: tuple[str, ...], flat: bool
) -> None:
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, flat_single=flat, invalid_prefixes=("525599",)
    )
    source = write_lines(tmp_path / "in.ndjson", LINES)
    run = await dispatcher(
        *send_args(emulator.base_url, source, *flags, text=TEMPLATE),
        "--invalid", "invalid.ndjson",
        "--summary", "summary.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    results = run.results()
    got = by_line(results)
    assert set(got) == set(range(1, len(LINES) + 1))
    statuses = {n: r["status"] for n, r in got.items()}
    assert statuses == {
        1: "QUEUE",
        2: "QUEUE",
        3: "QUEUE",
        4: "INVALID_NUMBER",
        5: "INVALID_NUMBER",
        6: "QUEUE",
        7: "QUEUE",
    }
    assert got[2]["ref"] == {"k": 1}
    assert (got[2]["segments"], got[2]["encoding"]) == (1, "UCS2")
    assert (got[7]["segments"], got[7]["encoding"]) == (2, "GSM7")
    expected = {
        n: (
            str(line["to"]),
            str(line.get("from", CODE)),
            render(str(line.get("text", TEMPLATE)), line["params"]),  # type: ignore[arg-type]
        )
        for n, line in enumerate(LINES, 1)
        if statuses[n] == "QUEUE"
    }
    check_against_ledger(results, emulator.messages(), expected)

    stats = await emulator.stats()
    assert stats["requests"]["batch"] == 0
    assert stats["requests"]["single"] == 6  # every valid line, the refused one included
    invalid = ndjson(tmp_path / "invalid.ndjson")
    assert sorted((i["line"], i["source"]) for i in invalid) == [(4, "gateway"), (5, "client")]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["requests"] == 6
    assert summary["statuses"] == {"QUEUE": 5, "INVALID_NUMBER": 2}


async def test_max_batch_of_one_in_the_config_uses_the_single_endpoint(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    config = tmp_path / "one.toml"
    config.write_text("[gateway]\nmax_batch = 1\n")
    source = write_lines(tmp_path / "in.ndjson", LINES[:3])
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--config", config, text=TEMPLATE), cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    assert [r["status"] for r in run.results()] == ["QUEUE"] * 3
    assert (await emulator.stats())["requests"]["single"] == 3
