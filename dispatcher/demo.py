"""``dispatcher demo``: the whole job, for real, with no account.

Starts the gateway emulator in this process on a free loopback port (with a light mix
of faults, so retries and idempotent replays show), generates recipients into a file,
sends them through the real pipeline over real HTTP, and checks the emulator's ledger
against the results: every accepted line once, nothing sent twice.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dispatcher import gen, pipeline
from dispatcher.config import Config, Secret, validate
from dispatcher.emulator import EmulatorSettings, FaultSettings, running_emulator
from dispatcher.summary import ACCEPTED, Summary

SENDER = "12345"
TEXT = "Hi {0}, your balance is ${1}. Reply STOP to opt out."
#: Faults on by default: about 3 % of requests fail one way or another.
DEMO_FAULTS = FaultSettings(fail_429=0.01, fail_503=0.005, fail_500_after=0.01, drop_after=0.005)


@dataclass(frozen=True, slots=True)
class DemoResult:
    """The send's summary and what the emulator's ledger says about it."""

    summary: Summary
    ledger: dict[str, Any]
    problems: list[str]


async def run_demo(
    *,
    count: int = 100_000,
    out: str | os.PathLike[str] = "demo-out",
    seed: int = 1,
    faults: FaultSettings = DEMO_FAULTS,
    progress: bool | None = None,
    shutdown: pipeline.Shutdown | None = None,
) -> DemoResult:
    """Generate, send through an in-process emulator (with ``faults``), and
    cross-check the ledger."""
    directory = Path(out)
    recipients = await asyncio.to_thread(_generate, directory, count, seed)
    settings = EmulatorSettings(rate_limit=False, faults=faults, seed=seed)
    async with running_emulator(settings, host="127.0.0.1", port=0) as emulator:
        config = validate(
            Config(
                base_url=emulator.base_url,
                api_key=Secret(settings.api_key),
                idempotency=True,  # the emulator honours Idempotency-Key
                sender=SENDER,
                text=TEXT,
                rates={SENDER: float("inf")},
                results=str(directory / "results.ndjson"),
                invalid=str(directory / "invalid.ndjson"),
                rejects=str(directory / "rejects.ndjson"),
                summary=str(directory / "summary.json"),
                force=True,  # a demo starts afresh every time
                progress=progress,
            )
        )
        summary = await pipeline.run(str(recipients), config, shutdown=shutdown)
        ledger = await emulator.stats()
    return DemoResult(summary, ledger, _cross_check(summary, ledger))


def _generate(directory: Path, count: int, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    recipients = directory / "recipients.ndjson"
    with open(recipients, "wb") as f:
        gen.write(count, f, seed=seed)
    return recipients


def _cross_check(summary: Summary, ledger: dict[str, Any]) -> list[str]:
    problems = []
    accepted = sum(summary.statuses[s] for s in ACCEPTED)
    if summary.fatal is None and summary.interrupted is None and ledger["accepted"] != accepted:
        problems.append(
            f"the emulator accepted {ledger['accepted']:,} messages, the results show {accepted:,}"
        )
    if ledger["duplicates"]:
        problems.append(f"the emulator recorded {ledger['duplicates']:,} duplicate messages")
    return problems


def ledger_lines(result: DemoResult) -> str:
    """What the emulator's ledger proves, for the end of the demo's output."""
    ledger = result.ledger
    faults = ", ".join(f"{kind} {n:,}" for kind, n in ledger["faults"].items() if n)
    lines = [
        f"emulator ledger    {ledger['accepted']:,} accepted, {ledger['duplicates']:,} duplicates, "
        f"{ledger['replays']:,} idempotent replays",
        f"faults injected    {faults or 'none'}",
    ]
    if result.problems:
        lines += [f"PROBLEM            {p}" for p in result.problems]
    else:
        lines.append(
            "check              every accepted line is in the ledger once; nothing sent twice"
        )
    return "\n".join(lines)


def write_ledger(result: DemoResult, directory: str | os.PathLike[str]) -> None:
    """Keep the emulator's stats next to the demo's outputs."""
    Path(directory, "emulator-stats.json").write_bytes(
        orjson.dumps(result.ledger, option=orjson.OPT_INDENT_2)
    )
