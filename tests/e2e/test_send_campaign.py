"""``dispatcher send`` with campaign policies (issue 13, SPEC §10): opt-out lists,
duplicates, caps and smart encoding, the emulator's ledger proving what was sent."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.cli import CODE, KEY, by_line, dispatcher, send_args, write_lines
from tests.support.emulators import EmulatorFactory

NUMBERS = [f"+5255000000{n:02d}" for n in range(1, 11)]


def recipients(numbers: list[str], **extra: Any) -> list[dict[str, Any]]:
    return [{"to": n, "params": ["Ana", n[-2:]], **extra} for n in numbers]


async def send(emulator_url: str, tmp_path: Path, lines: list[Any], *flags: str) -> Any:
    source = write_lines(tmp_path / "in.ndjson", lines)
    run = await dispatcher(
        *send_args(emulator_url, source, "--results", "out.ndjson", *flags),
        "--summary", "summary.json",
        cwd=tmp_path,
    )  # fmt: skip
    return run


def results(tmp_path: Path) -> dict[int, Any]:
    raw = (tmp_path / "out.ndjson").read_bytes()
    return by_line([orjson.loads(line) for line in raw.splitlines()])


def summary(tmp_path: Path) -> dict[str, Any]:
    return orjson.loads((tmp_path / "summary.json").read_bytes())  # type: ignore[no-any-return]


def ledger_numbers(messages: list[Any]) -> list[str]:
    return sorted(m["to"] for m in messages)


@pytest.mark.parametrize("kind", ["ndjson", "csv", "plain", "gz"])
async def test_opt_out_lists_keep_their_numbers_from_the_gateway(
    emulator_factory: EmulatorFactory, tmp_path: Path, kind: str
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    listed = [NUMBERS[1], NUMBERS[4]]
    # Written as people keep them: spaces, no plus, another layout than the input.
    entries = ["+52 55 0000 0002", "525500000005"]
    if kind == "ndjson":
        body = b"".join(orjson.dumps({"to": e}) + b"\n" for e in entries)
    elif kind == "csv":
        body = ("name,phone\n" + "".join(f"x,{e}\n" for e in entries)).encode()
    else:
        body = "".join(f"{e}\n" for e in entries).encode()
    path = tmp_path / ("optout.txt.gz" if kind == "gz" else f"optout.{kind}")
    path.write_bytes(gzip.compress(body) if kind == "gz" else body)
    run = await send(emulator.base_url, tmp_path, recipients(NUMBERS), "--suppress", str(path))
    assert run.code == 0, run.stderr
    got = results(tmp_path)
    assert len(got) == len(NUMBERS)
    suppressed = {n for n, r in got.items() if r["status"] == "SUPPRESSED"}
    assert suppressed == {2, 5}
    assert ledger_numbers(emulator.messages()) == sorted(set(NUMBERS) - set(listed))
    assert summary(tmp_path)["policy"]["suppressed"] == 2


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("number+text", {3: 1}),  # line 3 repeats line 1; line 4 has another text
        ("number", {3: 1, 4: 1}),
        ("off", {}),
    ],
)
async def test_duplicates_by_mode(
    emulator_factory: EmulatorFactory, tmp_path: Path, mode: str, expected: dict[int, int]
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    lines = [
        {"to": NUMBERS[0], "params": ["Ana", 1]},
        {"to": NUMBERS[1], "params": ["Bob", 2]},
        {"to": "+52 5500000001", "params": ["Ana", 1]},  # line 1 again, written otherwise
        {"to": NUMBERS[0], "params": ["Ana", 2]},  # the same number, another text
    ]
    flags = () if mode == "number+text" else ("--dedupe", mode)
    run = await send(emulator.base_url, tmp_path, lines, *flags)
    assert run.code == 0, run.stderr
    got = results(tmp_path)
    duplicates = {n: r["first"] for n, r in got.items() if r["status"] == "DUPLICATE"}
    assert duplicates == expected
    assert len(emulator.messages()) == len(lines) - len(expected)
    assert summary(tmp_path)["policy"]["duplicates"] == len(expected)


@pytest.mark.parametrize(
    ("flags", "sent"),
    [
        (("--max-messages", "4"), 4),
        (("--max-segments", "5"), 5),  # one segment each
        (("--max-cost", "0.03", "--price-per-segment", "0.01"), 3),
        (("--max-cost", "0.05", "--price-per-segment", "0.01", "--price", "52=0.02"), 2),
    ],
    ids=["messages", "segments", "cost", "cost-by-prefix"],
)
async def test_caps_are_never_exceeded_and_the_rest_is_resumable(
    emulator_factory: EmulatorFactory, tmp_path: Path, flags: tuple[str, ...], sent: int
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    run = await send(emulator.base_url, tmp_path, recipients(NUMBERS), "--batch-size", "3", *flags)
    assert run.code == 4, run.stderr
    got = results(tmp_path)
    assert len(got) == len(NUMBERS)
    not_sent = sorted(n for n, r in got.items() if r["status"] == "NOT_SENT")
    assert not_sent == list(range(sent + 1, len(NUMBERS) + 1))
    assert "reached at line" in got[sent + 1]["error"]
    assert len(emulator.messages()) == sent
    document = summary(tmp_path)
    assert document["policy"]["cap_reached"]["line"] == sent + 1
    assert document["exit_code"] == 4


async def test_a_cap_counts_ambiguous_messages_as_sent(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    from dispatcher.emulator.settings import FaultSettings

    # Every request is recorded, then answered 500: without idempotency the client
    # cannot know, so its lines are AMBIGUOUS — and they spend the cap all the same.
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, faults=FaultSettings(fail_500_after=1.0)
    )
    run = await send(
        emulator.base_url, tmp_path, recipients(NUMBERS), "--batch-size", "2",
        "--max-messages", "5", "--max-attempts", "1",
    )  # fmt: skip
    assert run.code == 4, run.stderr
    got = results(tmp_path)
    statuses = sorted(r["status"] for r in got.values())
    assert statuses == ["AMBIGUOUS"] * 5 + ["NOT_SENT"] * 5
    assert len(emulator.messages()) == 5


async def test_smart_encoding_sends_gsm7_and_counts_what_it_saved(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    lines = [
        {"to": NUMBERS[0], "params": ["Ana’s “offer” — today…", 1]},  # 5 replaced
        {"to": NUMBERS[1], "params": ["Zoë ✓", 2]},  # stays UCS-2: the check mark
        {"to": NUMBERS[2], "params": ["plain", 3]},
    ]
    run = await send(emulator.base_url, tmp_path, lines, "--smart-encoding")
    assert run.code == 0, run.stderr
    got = results(tmp_path)
    assert (got[1]["encoding"], got[1]["replaced"]) == ("GSM7", 5)
    assert "replaced" not in got[2]
    assert got[2]["encoding"] == "UCS2"
    assert "replaced" not in got[3]
    texts = {m["to"]: m["text"] for m in emulator.messages()}
    assert texts[NUMBERS[0]] == 'Hi Ana\'s "offer" - today..., you owe 1'
    ledger = {m["to"]: m for m in emulator.messages()}
    assert ledger[NUMBERS[0]]["encoding"] == "GSM7"
    policy = summary(tmp_path)["policy"]
    assert (policy["smart_encoded"], policy["segments_saved"]) == (1, 0)


async def test_dry_run_says_where_a_cap_is_reached_and_what_lists_remove(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    (tmp_path / "optout.txt").write_text(NUMBERS[0] + "\n")
    lines = [*recipients(NUMBERS[:6]), recipients(NUMBERS[1:2])[0]]
    source = write_lines(tmp_path / "in.ndjson", lines)
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi {0}", "--dry-run", "--no-progress",
        "--suppress", "optout.txt", "--max-messages", "3", "--summary", "summary.json",
        "--explain",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 4, run.stderr
    policy = summary(tmp_path)["policy"]
    assert (policy["suppressed"], policy["duplicates"]) == (1, 1)
    assert policy["cap_reached"] == {"cap": "max_messages", "line": 5}
    assert "would be removed" in run.stderr
    assert "cap would be reached" in run.stderr
    assert NUMBERS[5] in run.stderr  # the preview rows of --explain


async def test_explain_needs_dry_run(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", recipients(NUMBERS[:1]))
    run = await dispatcher(*send_args("http://127.0.0.1:9", source, "--explain"), cwd=tmp_path)
    assert run.code == 2
    assert "--explain goes with --dry-run" in run.stderr


async def test_resume_with_a_higher_cap_sends_the_rest_and_compacts_the_results(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    run = await send(
        emulator.base_url, tmp_path, recipients(NUMBERS), "--batch-size", "3",
        "--max-messages", "4",
    )  # fmt: skip
    assert run.code == 4, run.stderr
    assert len(emulator.messages()) == 4
    # A compaction a crash cut short before its rename leaves its file behind.
    (tmp_path / "out.ndjson.compacting").write_bytes(b'{"line": 1, "status"')
    # The opt-out list may change between a run and its resume, and the cap too.
    (tmp_path / "optout.txt").write_text(NUMBERS[9] + "\n")
    again = await send(
        emulator.base_url, tmp_path, recipients(NUMBERS), "--batch-size", "3",
        "--max-messages", "8", "--resume", "--suppress", "optout.txt",
    )  # fmt: skip
    assert again.code == 4, again.stderr
    got = results(tmp_path)
    lines = (tmp_path / "out.ndjson").read_bytes().splitlines()
    assert len(lines) == len(NUMBERS)  # one line per input line
    statuses = [got[n]["status"] for n in range(1, 11)]
    assert statuses == ["QUEUE"] * 8 + ["NOT_SENT", "SUPPRESSED"]
    assert not (tmp_path / "out.ndjson.compacting").exists()
    document = summary(tmp_path)
    assert document["policy"]["superseded"] == 6  # lines 5 to 10 had NOT_SENT
    assert document["statuses"] == {"QUEUE": 8, "NOT_SENT": 1, "SUPPRESSED": 1}
    last = await send(
        emulator.base_url, tmp_path, recipients(NUMBERS), "--resume", "--suppress",
        "optout.txt",
    )  # fmt: skip
    assert last.code == 0, last.stderr
    assert ledger_numbers(emulator.messages()) == sorted(NUMBERS[:9])
    assert len((tmp_path / "out.ndjson").read_bytes().splitlines()) == len(NUMBERS)
    assert summary(tmp_path)["statuses"] == {"QUEUE": 9, "SUPPRESSED": 1}


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--smart-encoding",), "--smart-encoding"),
        (("--text", "Another text {0}"), "--text"),
        (("--smart-encoding", "--transliterate"), "--smart-encoding, --transliterate"),
    ],
)
async def test_resume_refuses_a_changed_body_option_naming_it(
    emulator_factory: EmulatorFactory, tmp_path: Path, flags: tuple[str, ...], named: str
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    run = await send(emulator.base_url, tmp_path, recipients(NUMBERS), "--max-messages", "4")
    assert run.code == 4, run.stderr
    before = (tmp_path / "out.ndjson").read_bytes()
    again = await send(
        emulator.base_url, tmp_path, recipients(NUMBERS), "--resume", "--max-messages", "9",
        *flags,
    )  # fmt: skip
    assert again.code == 2, again.stderr
    assert f"the message options differ from the run that wrote out.ndjson.journal ({named});" in (
        again.stderr
    )
    assert "Traceback" not in again.stderr
    assert len(emulator.messages()) == 4  # nothing more was sent
    assert (tmp_path / "out.ndjson").read_bytes() == before


async def test_resume_names_text_file_when_the_text_came_from_it(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(tmp_path / "in.ndjson", recipients(NUMBERS))
    (tmp_path / "text.txt").write_text("Hi {0}, you owe {1}\n", encoding="utf-8")
    common = [
        "send", source, "--from", CODE, "--base-url", emulator.base_url, "--no-progress",
        "--results", "out.ndjson",
    ]  # fmt: skip
    run = await dispatcher(*common, "--text-file", "text.txt", "--max-messages", "4", cwd=tmp_path)
    assert run.code == 4, run.stderr
    (tmp_path / "text.txt").write_text("Hello {0}, you owe {1}\n", encoding="utf-8")
    again = await dispatcher(*common, "--text-file", "text.txt", "--resume", cwd=tmp_path)
    assert again.code == 2, again.stderr
    assert "differ from the run that wrote out.ndjson.journal (--text-file);" in again.stderr
    # The same text given by the other option is the same job.
    (tmp_path / "text.txt").write_text("Hi {0}, you owe {1}\n", encoding="utf-8")
    last = await dispatcher(*common, "--text", "Hi {0}, you owe {1}", "--resume", cwd=tmp_path)
    assert last.code == 0, last.stderr
    assert len(emulator.messages()) == len(NUMBERS)


def _legacy_header(tmp_path: Path, fingerprint: str) -> None:
    """Rewrite the journal's header as written before the options were recorded."""
    from dispatcher.journal import seal

    path = tmp_path / "out.ndjson.journal"
    first, rest = path.read_bytes().split(b"\n", 1)
    header = orjson.loads(first)
    del header["crc"], header["options"]
    header["fingerprint"] = fingerprint
    path.write_bytes(seal(orjson.dumps(header)) + rest)


async def test_resume_reads_a_journal_without_options(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    from dispatcher.config import Config
    from dispatcher.resume import legacy_fingerprint

    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    run = await send(emulator.base_url, tmp_path, recipients(NUMBERS), "--max-messages", "4")
    assert run.code == 4, run.stderr
    config = Config(sender=CODE, text="Hi {0}, you owe {1}", endpoint=Config().endpoint)
    _legacy_header(tmp_path, legacy_fingerprint(config))
    changed = await send(
        emulator.base_url, tmp_path, recipients(NUMBERS), "--resume", "--text", "Other {0}"
    )
    assert changed.code == 2, changed.stderr
    assert "(sender, text, request options, endpoint, segment model or encoding)" in changed.stderr
    assert len(emulator.messages()) == 4
    again = await send(emulator.base_url, tmp_path, recipients(NUMBERS), "--resume")
    assert again.code == 0, again.stderr
    assert ledger_numbers(emulator.messages()) == sorted(NUMBERS)


PRICED = [
    {"to": NUMBERS[0], "params": ["Ana", "1"]},  # 52: 0.5 a segment
    {"to": "+12025550123", "params": ["Bo", "2"]},  # 1: 0.25
    {"to": "+447700900123", "params": ["Cy", "3"]},  # no prefix: 1.0
    {"to": NUMBERS[1], "text": "x" * 200},  # 52, two segments
    {"to": "+12025550124", "text": "y" * 200},  # 1, two segments
]
PRICE_FLAGS = ("--price-per-segment", "1", "--price", "52=0.5", "--price", "1=0.25")
PRICED_COST = 0.5 + 0.25 + 1.0 + 2 * 0.5 + 2 * 0.25


@pytest.mark.parametrize("dry_run", [True, False])
async def test_the_summary_cost_uses_the_price_table(
    emulator_factory: EmulatorFactory, tmp_path: Path, dry_run: bool
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    flags = ("--dry-run",) if dry_run else ()
    run = await send(emulator.base_url, tmp_path, PRICED, *PRICE_FLAGS, *flags)
    assert run.code == 0, run.stderr
    document = summary(tmp_path)
    assert document["segments"]["billable"] == 7
    assert document["cost"] == PRICED_COST


async def test_a_resumed_summary_prices_the_earlier_runs_messages_by_the_table(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    run = await send(emulator.base_url, tmp_path, PRICED, *PRICE_FLAGS, "--max-messages", "2")
    assert run.code == 4, run.stderr
    assert summary(tmp_path)["cost"] == 0.5 + 0.25
    again = await send(emulator.base_url, tmp_path, PRICED, *PRICE_FLAGS, "--resume")
    assert again.code == 0, again.stderr
    assert len(emulator.messages()) == len(PRICED)
    assert summary(tmp_path)["cost"] == PRICED_COST


def _crash_after_the_sent_lines(tmp_path: Path) -> None:
    """Leave the job as a crash just after its sent batches' results would: only the
    results of the lines the gateway took, no end-of-job record in the journal."""
    results = tmp_path / "out.ndjson"
    kept = [raw for raw in results.read_bytes().splitlines(True) if b'"id"' in raw]
    results.write_bytes(b"".join(kept))
    journal = tmp_path / "out.ndjson.journal"
    records = journal.read_bytes().splitlines(True)
    journal.write_bytes(b"".join(r for r in records if b'"complete"' not in r))


async def test_a_resume_rebuilds_the_duplicate_check_from_the_finished_lines(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    # line 4 repeats line 1; line 6 repeats line 4 (a duplicate's duplicate)
    numbers = [NUMBERS[0], NUMBERS[1], NUMBERS[2], NUMBERS[0], NUMBERS[3], NUMBERS[0]]
    lines = recipients(numbers)
    run = await send(emulator.base_url, tmp_path, lines, "--max-messages", "2")
    assert run.code == 4, run.stderr
    _crash_after_the_sent_lines(tmp_path)
    assert sorted(results(tmp_path)) == [1, 2]
    again = await send(emulator.base_url, tmp_path, lines, "--resume")
    assert again.code == 0, again.stderr
    got = results(tmp_path)
    assert [got[n]["status"] for n in (1, 2, 3, 5)] == ["QUEUE"] * 4
    assert (got[4]["status"], got[4]["first"]) == ("DUPLICATE", 1)
    assert (got[6]["status"], got[6]["first"]) == ("DUPLICATE", 1)
    assert ledger_numbers(emulator.messages()) == sorted(NUMBERS[:4])  # line 1's once
    assert summary(tmp_path)["policy"]["duplicates"] == 2


async def test_a_resume_does_not_replay_a_duplicate_before_a_pending_first(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Line 2 is sent, line 3 held back by the cap, line 4 (repeating line 3) is a
    DUPLICATE: the resume sends line 3, and line 4 stays a duplicate of it."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    lines = recipients([NUMBERS[0], NUMBERS[1], NUMBERS[2], NUMBERS[2]])
    run = await send(emulator.base_url, tmp_path, lines, "--max-messages", "2")
    assert run.code == 4, run.stderr
    assert results(tmp_path)[4]["first"] == 3
    again = await send(emulator.base_url, tmp_path, lines, "--resume")
    assert again.code == 0, again.stderr
    got = results(tmp_path)
    assert [got[n]["status"] for n in (1, 2, 3)] == ["QUEUE"] * 3
    assert (got[4]["status"], got[4]["first"]) == ("DUPLICATE", 3)
    assert ledger_numbers(emulator.messages()) == sorted(NUMBERS[:3])
