"""``send --shard K/N`` on each "host" and ``dispatcher merge`` joining them: every
input line gets exactly one result across the shards, and the gateway sees each
message once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.cli import KEY, dispatcher, ndjson, send_args, write_lines
from tests.support.emulators import EmulatorFactory

N = 3


def mixed_input(tmp_path: Path) -> tuple[Path, int]:
    lines: list[Any] = [{"to": f"+52550000{i:04d}", "params": ["Ana", i]} for i in range(1, 41)]
    lines[5] = {"to": "+52 5500000002", "params": ["Ana", 2]}  # line 2 again: DUPLICATE
    lines[9] = {"to": "12", "params": ["x", 0]}  # invalid number
    lines[14] = b'{"to": '  # malformed
    lines[20] = b""  # blank: no result
    lines[25] = b"   "  # blank too
    source = write_lines(tmp_path / "in.ndjson", lines)
    return source, len(lines) - 2


async def run_shards(url: str, tmp_path: Path, source: Path) -> list[Path]:
    outs = []
    for k in range(1, N + 1):
        out = tmp_path / f"shard{k}.ndjson"
        run = await dispatcher(
            *send_args(url, source, "--results", out, "--shard", f"{k}/{N}"), cwd=tmp_path
        )
        assert run.code == 0, run.stderr
        outs.append(out)
    return outs


async def test_shards_send_each_message_once_and_merge_exactly(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source, records = mixed_input(tmp_path)
    shards = await run_shards(emulator.base_url, tmp_path, source)
    per_shard = [len(ndjson(path)) for path in shards]
    assert all(per_shard), per_shard  # the rule spreads 40 lines over every share
    assert sum(per_shard) == records

    run = await dispatcher(
        "merge", source, *shards, "--results", "all.ndjson", "--summary", "all.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    merged = ndjson(tmp_path / "all.ndjson")
    assert sorted(r["line"] for r in merged) == [n for n in range(1, 41) if n not in (21, 26)]
    statuses = {r["line"]: r["status"] for r in merged}
    assert statuses[6] == "DUPLICATE"  # its first, line 2, was in the same share
    assert statuses[10] == "INVALID_NUMBER"
    assert statuses[15] == "REJECTED"
    sent = [m["to"] for m in emulator.messages()]
    assert len(sent) == len(set(sent)) == records - 3
    summary = orjson.loads((tmp_path / "all.json").read_bytes())
    assert summary["lines"] == records
    assert summary["statuses"]["DUPLICATE"] == 1
    assert summary["job_exit_code"] == 0
    assert [s["results_lines"] for s in summary["shards"]] == per_shard


async def test_a_missing_or_doubled_shard_is_named_and_nothing_is_written(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source, _ = mixed_input(tmp_path)
    shards = await run_shards(emulator.base_url, tmp_path, source)
    missing = {r["line"] for r in ndjson(shards[2])}

    run = await dispatcher("merge", source, *shards[:2], "--results", "all.ndjson", cwd=tmp_path)
    assert run.code == 1
    assert f"{len(missing)} input lines have no result" in run.stderr
    assert str(min(missing)) in run.stderr
    assert not (tmp_path / "all.ndjson").exists()

    run = await dispatcher(
        "merge", source, *shards, shards[0], "--results", "all.ndjson", cwd=tmp_path
    )
    assert run.code == 1
    assert "more than one result" in run.stderr
    assert not (tmp_path / "all.ndjson").exists()


async def test_merge_refuses_what_is_not_a_results_file(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001"}])
    other = write_lines(tmp_path / "other.ndjson", [{"to": "+525500000001"}])
    run = await dispatcher("merge", source, other, "--results", "all.ndjson", cwd=tmp_path)
    assert run.code == 2
    assert "line number and a status" in run.stderr
    run = await dispatcher("merge", source, source, "--results", "all.ndjson", cwd=tmp_path)
    assert run.code == 2  # the input given as a shard: refused before reading
    run = await dispatcher("merge", source, other, "--results", source, cwd=tmp_path)
    assert run.code == 2
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--shard", "4/3"), "K must be from 1"),
        (("--shard", "1/3", "--max-messages", "5"), "caps are job-wide"),
    ],
)
async def test_bad_shards_are_refused(tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001"}])
    run = await dispatcher(
        *send_args("http://127.0.0.1:9/raven", source, "--results", "o.ndjson", *flags),
        cwd=tmp_path,
    )
    assert run.code == 2
    assert message in run.stderr


async def test_a_resume_keeps_its_share(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source, _ = mixed_input(tmp_path)
    out = tmp_path / "s.ndjson"
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--results", out, "--shard", "1/3"), cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--results", out, "--shard", "2/3", "--resume"),
        cwd=tmp_path,
    )
    assert run.code == 2
    assert "--shard" in run.stderr
