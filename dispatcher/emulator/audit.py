"""The ledger cross-check: every input line has exactly one result, and the emulator's
ledger recorded no message twice (SPEC §5 and §9).

It compares a send's results with what the emulator accepted (``GET
/_emulator/messages`` and ``GET /_emulator/stats``). The chaos and crash tests assert
it, and ``bench/chaos_resume.py`` reports it. `write_input` makes an input it can judge:
one distinct number per line, so a message recorded twice is a duplicate in the ledger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

#: Result lines, or the ledger's message dump, as parsed JSON objects.
Rows = list[dict[str, Any]]

#: The template that fits `write_input`'s params.
TEXT = "Hi {0}, you owe {1}"


def number(line: int) -> str:
    """A valid number, distinct for each line."""
    return f"+5215{line:09d}"


def write_input(path: Path, count: int, *, bad_every: int = 0) -> set[int]:
    """``count`` recipient lines (every ``bad_every``-th malformed); returns the line
    numbers that are valid recipients."""
    valid: set[int] = set()
    with open(path, "wb") as f:
        for line in range(1, count + 1):
            if bad_every and line % bad_every == 0:
                f.write(b'{"to": oops}\n')
                continue
            valid.add(line)
            f.write(orjson.dumps({"to": number(line), "params": [f"n{line}", line]}) + b"\n")
    return valid


@dataclass
class Account:
    """Results checked against the ledger: counts per status, the figures of each
    check (0 when it holds), and what broke the rules (empty when nothing did)."""

    results: Rows
    by_status: Counter[str]
    figures: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class ExactlyOnceViolation(AssertionError):
    """Some line has no result or several, or the ledger holds a message it should not."""


def audit(
    results: Rows, lines: Iterable[int], ledger: Rows, stats: dict[str, Any], *, idempotent: bool
) -> Account:
    """Check, without raising:

    - every input line has exactly one result;
    - the ledger recorded no message twice;
    - every QUEUE result's id is in the ledger with the line's number;
    - with idempotency, every ledger message has a QUEUE result; without it, every
      ledger message without one belongs to an AMBIGUOUS line;
    - no FAILED line reached the ledger.
    """
    problems: list[str] = []
    seen = Counter(r["line"] for r in results)
    repeated = [line for line, n in seen.items() if n > 1]
    if repeated:
        problems.append(f"lines with more than one result: {repeated[:10]}")
    expected = set(lines)
    lost, unexpected = expected - set(seen), set(seen) - expected
    if lost or unexpected:
        problems.append(
            f"missing results: {sorted(lost)[:10]}, unexpected: {sorted(unexpected)[:10]}"
        )
    if stats["duplicates"]:
        problems.append(f"the ledger recorded {stats['duplicates']} duplicates")
    ledger_by_id = {m["id"]: m for m in ledger}
    if len(ledger_by_id) != len(ledger):
        problems.append(f"{len(ledger) - len(ledger_by_id)} ledger ids appear twice")
    queued = [r for r in results if r["status"] == "QUEUE"]
    missing_ids = wrong_numbers = 0
    for r in queued:
        message = ledger_by_id.get(r["id"])
        if message is None:
            missing_ids += 1
            if missing_ids <= 5:
                problems.append(f"line {r['line']}: id {r['id']} is not in the ledger")
        elif message["to"] != r["to"]:
            wrong_numbers += 1
            if wrong_numbers <= 5:
                problems.append(f"line {r['line']}: ledger has {message['to']}")
    queued_ids = {r["id"] for r in queued}
    uncovered = [m for m in ledger if m["id"] not in queued_ids]
    ambiguous = {r["to"] for r in results if r["status"] == "AMBIGUOUS"}
    strays = [m["to"] for m in uncovered if m["to"] not in ambiguous]
    if idempotent and uncovered:
        problems.append(f"{len(uncovered)} ledger messages have no QUEUE result")
    elif strays:
        problems.append(f"ledger messages belonging to no QUEUE or AMBIGUOUS line: {strays[:5]}")
    failed = {r["to"] for r in results if r["status"] == "FAILED"}
    failed_sent = failed & {m["to"] for m in ledger}
    if failed_sent:
        problems.append(f"FAILED lines reached the ledger: {sorted(failed_sent)[:5]}")
    figures = {
        "lost_lines": len(lost),
        "unexpected_lines": len(unexpected),
        "lines_with_two_results": len(repeated),
        "ledger_duplicates": stats["duplicates"],
        "queue_ids_missing_from_ledger": missing_ids,
        "queue_results_with_another_number": wrong_numbers,
        "ledger_messages_without_queue_result": len(uncovered),
        "ledger_messages_without_any_result": len(strays),
        "failed_lines_in_ledger": len(failed_sent),
    }
    by_status = Counter(r["status"] for r in results)
    return Account(results, by_status, figures, problems)


def check_exactly_once(
    results: Rows, lines: Iterable[int], ledger: Rows, stats: dict[str, Any], *, idempotent: bool
) -> Account:
    """`audit`, raising `ExactlyOnceViolation` (an AssertionError) with every problem."""
    account = audit(results, lines, ledger, stats, idempotent=idempotent)
    if account.problems:
        raise ExactlyOnceViolation("; ".join(account.problems))
    return account
