"""The ledger cross-check on hand-made results and ledgers: it passes a clean account
and names each way an account can break."""

from pathlib import Path
from typing import Any

import pytest

from dispatcher.emulator.audit import (
    ExactlyOnceViolation,
    audit,
    check_exactly_once,
    number,
    write_input,
)


def result(line: int, status: str = "QUEUE") -> dict[str, Any]:
    return {"line": line, "to": number(line), "status": status, "id": f"id{line}"}


def message(line: int) -> dict[str, Any]:
    return {"id": f"id{line}", "to": number(line)}


CLEAN = {"duplicates": 0}


def test_a_clean_account_passes_with_zero_figures() -> None:
    results = [result(1), result(2), result(3, "REJECTED")]
    account = check_exactly_once(
        results, {1, 2, 3}, [message(1), message(2)], CLEAN, idempotent=True
    )
    assert account.by_status == {"QUEUE": 2, "REJECTED": 1}
    assert account.problems == []
    assert set(account.figures.values()) == {0}


@pytest.mark.parametrize(
    ("results", "ledger", "stats", "figure", "words"),
    [
        ([result(1)], [message(1)], CLEAN, "lost_lines", "missing results: [2]"),
        (
            [result(1), result(2), result(2)],
            [message(1), message(2)],
            CLEAN,
            "lines_with_two_results",
            "more than one result: [2]",
        ),
        (
            [result(1), result(2)],
            [message(1), message(2)],
            {"duplicates": 3},
            "ledger_duplicates",
            "recorded 3 duplicates",
        ),
        (
            [result(1), result(2)],
            [message(1)],
            CLEAN,
            "queue_ids_missing_from_ledger",
            "id id2 is not in the ledger",
        ),
        (
            [result(1), result(2, "FAILED")],
            [message(1), message(2)],
            CLEAN,
            "failed_lines_in_ledger",
            "FAILED lines reached the ledger",
        ),
    ],
)
def test_each_violation_is_named(
    results: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
    stats: dict[str, Any],
    figure: str,
    words: str,
) -> None:
    account = audit(results, {1, 2}, ledger, stats, idempotent=True)
    assert account.figures[figure] > 0
    assert any(words in problem for problem in account.problems), account.problems
    with pytest.raises(ExactlyOnceViolation, match=words.replace("[", r"\[").replace("]", r"\]")):
        check_exactly_once(results, {1, 2}, ledger, stats, idempotent=True)


def test_without_idempotency_an_ambiguous_line_may_be_in_the_ledger() -> None:
    results = [result(1), result(2, "AMBIGUOUS")]
    ledger = [message(1), message(2)]
    account = check_exactly_once(results, {1, 2}, ledger, CLEAN, idempotent=False)
    assert account.figures["ledger_messages_without_queue_result"] == 1
    assert account.figures["ledger_messages_without_any_result"] == 0
    with pytest.raises(ExactlyOnceViolation, match="have no QUEUE result"):
        check_exactly_once(results, {1, 2}, ledger, CLEAN, idempotent=True)
    stray = audit([result(1)], {1}, [message(1), message(7)], CLEAN, idempotent=False)
    assert stray.figures["ledger_messages_without_any_result"] == 1


def test_write_input_gives_each_line_its_own_number(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    assert write_input(path, 10, bad_every=4) == {1, 2, 3, 5, 6, 7, 9, 10}
    lines = path.read_bytes().splitlines()
    assert len(lines) == 10
    assert lines[3] == b'{"to": oops}'
    assert number(1) in lines[0].decode()
