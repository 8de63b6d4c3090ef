"""``dispatcher send --window`` (issue 14): the real CLI against the real emulator, the
recipients' local time set with ``--now`` (a rehearsal on loopback), the emulator's
ledger proving what was sent and when — never a wall-clock assertion."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.segments import count
from tests.support.cli import CODE, KEY, by_line, dispatcher, env, send_args, write_lines
from tests.support.emulators import EmulatorFactory

NEW_YORK = [f"+1212555{n:04d}" for n in range(1, 4)]  # America/New_York
LONDON = "+442079460001"  # Europe/London
WINDOW = ("--window", "09:00-20:00")
RUN_TIMEOUT = 60.0


def recipients(numbers: list[str]) -> list[dict[str, Any]]:
    return [{"to": n, "params": ["Ana", n[-2:]]} for n in numbers]


def results(tmp_path: Path) -> dict[int, Any]:
    raw = (tmp_path / "out.ndjson").read_bytes()
    return by_line([orjson.loads(line) for line in raw.splitlines()])


def summary(tmp_path: Path) -> dict[str, Any]:
    return orjson.loads((tmp_path / "summary.json").read_bytes())  # type: ignore[no-any-return]


def ledger(emulator: Any) -> list[str]:
    return sorted(m["to"] for m in emulator.messages())


async def send(emulator_url: str, tmp_path: Path, *flags: str) -> Any:
    return await dispatcher(
        *send_args(emulator_url, "in.ndjson", "--results", "out.ndjson", *WINDOW, *flags),
        "--summary", "summary.json",
        cwd=tmp_path,
    )  # fmt: skip


async def test_a_closed_window_sends_nothing_and_skip_leaves_the_lines_resumable(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    write_lines(tmp_path / "in.ndjson", recipients(NEW_YORK))
    # 03:00 in New York: the window opens at 09:00 EST, 14:00 UTC.
    run = await send(
        emulator.base_url, tmp_path, "--outside-window", "skip",
        "--now", "2026-12-02T03:00:00-05:00",
    )  # fmt: skip
    assert run.code == 4, run.stderr
    assert ledger(emulator) == []
    got = results(tmp_path)
    assert {r["status"] for r in got.values()} == {"OUTSIDE_WINDOW"}
    assert len(got) == len(NEW_YORK)
    assert "it opens 2026-12-02 09:00 EST, 2026-12-02 14:00 UTC" in got[1]["error"]
    assert summary(tmp_path)["windows"]["skipped"] == len(NEW_YORK)

    run = await send(
        emulator.base_url, tmp_path, "--outside-window", "skip", "--resume",
        "--now", "2026-12-02T10:00:00-05:00",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert ledger(emulator) == sorted(NEW_YORK)
    got = results(tmp_path)  # compacted: one result per line
    assert {r["status"] for r in got.values()} == {"QUEUE"}
    assert len(got) == len(NEW_YORK)


async def _until_waiting(stderr: asyncio.StreamReader, seen: bytearray) -> None:
    """Read the progress line until it says lines wait for their window."""
    while b"waiting=" not in seen:
        piece = await stderr.read(4096)
        assert piece, f"the run ended before any line waited: {seen.decode()}"
        seen += piece


async def start_waiting(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    now: str,
    *flags: str,
    lines: list[dict[str, Any]] | None = None,
) -> tuple[Any, asyncio.subprocess.Process, bytearray]:
    """The emulator, and a send of ``lines`` (London's and New York's) started at
    ``now``, once its progress line says lines wait (and what it wrote so far)."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    write_lines(tmp_path / "in.ndjson", lines or recipients([LONDON, *NEW_YORK]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher",
        *map(str, send_args(emulator.base_url, "in.ndjson", "--results", "out.ndjson", *WINDOW)),
        "--summary", "summary.json", "--progress", "--now", now, *flags,
        cwd=tmp_path,
        env=env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = bytearray()
    await asyncio.wait_for(_until_waiting(proc.stderr, seen), RUN_TIMEOUT)
    return emulator, proc, seen


async def test_a_window_that_opens_during_the_run_sends_its_lines_then(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    # 08:59:54 in New York (held six seconds), 13:59:54 in London (open).
    emulator, proc, seen = await start_waiting(
        emulator_factory, tmp_path, "2026-12-02T08:59:54-05:00"
    )
    assert proc.stderr is not None
    # While New York's lines wait, none of them is at the gateway.
    assert set(ledger(emulator)).isdisjoint(NEW_YORK), seen.decode()
    seen += await asyncio.wait_for(proc.stderr.read(), RUN_TIMEOUT)
    assert await proc.wait() == 0, seen.decode()
    assert ledger(emulator) == sorted([LONDON, *NEW_YORK])
    got = results(tmp_path)
    assert {r["status"] for r in got.values()} == {"QUEUE"}
    assert len(got) == 1 + len(NEW_YORK)
    windows = summary(tmp_path)["windows"]
    assert windows["waited"] == len(NEW_YORK)
    assert windows["openings"] == [
        {"zones": "America/New_York", "opens": "2026-12-02T14:00:00Z", "lines": len(NEW_YORK)}
    ]
    assert not list(tmp_path.glob(".out.ndjson.held-*")), "the spill directory is left"


#: A name smart encoding makes GSM-7: "Hi {0}, you owe {1}" then needs one segment, not
#: the two of UCS-2 (the apostrophe).
LONG_NAME = "Ana’s " + "x" * 60


def saved_on_the_ledger(emulator: Any, lines: list[dict[str, Any]]) -> int:
    """The segments smart encoding saved on the messages the gateway received: each
    one's text as the job renders it, less what the gateway counted."""
    params = {line["to"]: line["params"] for line in lines}
    return sum(
        count("Hi {}, you owe {}".format(*params[m["to"]])).segments - m["segments"]
        for m in emulator.messages()
    )


@pytest.mark.parametrize(
    ("flags", "sent"),
    [
        ((), 1 + len(NEW_YORK)),
        # The cap cuts the released lines: the last one is not sent, nor counted.
        (("--max-messages", str(len(NEW_YORK))), len(NEW_YORK)),
    ],
    ids=["all", "capped"],
)
async def test_smart_encoding_counts_what_it_saved_on_lines_released_by_their_window(
    emulator_factory: EmulatorFactory, tmp_path: Path, flags: tuple[str, ...], sent: int
) -> None:
    lines = [{"to": n, "params": [LONG_NAME, n[-2:]]} for n in [LONDON, *NEW_YORK]]
    # 08:59:54 in New York (held six seconds), 13:59:54 in London (open).
    emulator, proc, seen = await start_waiting(
        emulator_factory,
        tmp_path,
        "2026-12-02T08:59:54-05:00",
        "--smart-encoding",
        *flags,
        lines=lines,
    )
    assert proc.stderr is not None
    seen += await asyncio.wait_for(proc.stderr.read(), RUN_TIMEOUT)
    assert await proc.wait() == (4 if flags else 0), seen.decode()
    assert len(emulator.messages()) == sent
    assert {m["encoding"] for m in emulator.messages()} == {"GSM7"}
    policy = summary(tmp_path)["policy"]
    assert policy["segments_saved"] == saved_on_the_ledger(emulator, lines) == sent
    assert policy["smart_encoded"] == sent


async def test_a_crash_while_lines_wait_loses_none_and_doubles_none(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    # 12:00 UTC: London is open, New York (07:00) waits two hours.
    emulator, proc, _ = await start_waiting(emulator_factory, tmp_path, "2026-12-02T12:00:00Z")
    while LONDON not in ledger(emulator):  # bounded by the test's timeout
        await asyncio.sleep(0.05)
    assert list(tmp_path.glob(".out.ndjson.held-*")), "the held lines are not spilled"
    proc.kill()
    await proc.wait()

    # The held lines had no result: the resume reads them from the input again.
    run = await send(emulator.base_url, tmp_path, "--resume", "--now", "2026-12-02T15:00:00Z")
    assert run.code == 0, run.stderr
    assert ledger(emulator) == sorted([LONDON, *NEW_YORK])  # each once
    got = results(tmp_path)
    assert len(got) == 1 + len(NEW_YORK)
    assert {r["status"] for r in got.values()} == {"QUEUE"}
    assert not list(tmp_path.glob(".out.ndjson.held-*")), "the crashed run's spill is left"


async def test_a_dry_run_reports_what_the_windows_would_do_without_waiting(
    tmp_path: Path,
) -> None:
    write_lines(tmp_path / "in.ndjson", recipients([LONDON, *NEW_YORK, "+99912345678"]))
    run = await dispatcher(
        "send", "in.ndjson", "--from", CODE, "--text", "Hi {0}", "--dry-run", *WINDOW,
        "--now", "2026-12-02T12:00:00Z", "--results", "out.ndjson",
        "--summary", "summary.json", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert {r["status"] for r in results(tmp_path).values()} == {"DRY_RUN"}
    windows = summary(tmp_path)["windows"]
    assert windows["waited"] == len(NEW_YORK)
    assert windows["default_zone"] == 1  # +999: no known zone, UTC: open at 12:00
    assert windows["openings"][0]["opens"] == "2026-12-02T14:00:00Z"
    assert "3 would wait" in run.stderr
    assert "opens 2026-12-02 14:00Z" in run.stderr


async def test_now_is_refused_against_a_gateway_that_is_not_on_loopback(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.ndjson", recipients(NEW_YORK))
    run = await dispatcher(
        *send_args("https://elastic.messangi.me/raven", "in.ndjson", *WINDOW),
        "--now", "2026-12-02T10:00:00Z",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 2
    assert "--now rehearses" in run.stderr
    assert KEY not in run.stderr
