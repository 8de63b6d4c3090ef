"""Integrity, never trust (issue 12): ``--resume`` of a job whose journal or results are
damaged stops with exit 2 naming the file and the line, sends nothing and changes no
file; only what a crash leaves — a last record or line cut short — is repaired, and
said so. An input that turns out not to be the job's stops the run (exit 3) and leaves
the job resumable.

One job is interrupted for real (kill -9 mid-send against a gateway process); each
probe damages a copy of its files, then runs the real CLI against a fresh emulator
whose ledger must stay empty."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.emulator.runner import RunningEmulator
from tests.support.cli import Run, dispatcher, env
from tests.support.exactly_once import (
    read_results,
    send_command,
    wait_until_sending,
    write_input,
)
from tests.support.gateway_process import gateway_process

LINES = 1000
FILES = ("in.ndjson", "results.ndjson", "results.ndjson.journal", "invalid.ndjson")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A send of 1000 lines killed (-9) with results written and batches in flight."""
    directory = tmp_path_factory.mktemp("interrupted")
    write_input(directory / "in.ndjson", LINES)
    with gateway_process("--no-rate-limit", "--latency-ms", "200", api_key="k") as url:
        for _ in range(5):
            for name in FILES[1:]:
                (directory / name).unlink(missing_ok=True)
            proc = subprocess.Popen(
                send_command(directory / "in.ndjson", directory, url),
                env=env(api_key="k"), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_until_sending(proc, directory / "results.ndjson")
            proc.kill()
            proc.wait(timeout=10)
            job = Job(directory)
            if job.in_flight() and job.done_record() and job.unsent_line():
                return directory
    pytest.fail("no kill landed with batches in flight")


class Job:
    """The files of a copy of the interrupted job, raw, to damage them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.journal = directory / "results.ndjson.journal"
        self.results = directory / "results.ndjson"
        self.records = self.journal.read_bytes().splitlines(keepends=True)
        self.finished = {r["line"] for r in read_results(self.results)}

    def parsed(self, index: int) -> dict[str, Any]:
        return orjson.loads(self.records[index])  # type: ignore[no-any-return]

    def in_flight(self) -> int:
        """The index of the first `sent` record with a line without a result (0: none)."""
        for index in range(1, len(self.records)):
            record = self.parsed(index)
            if "sent" in record and not set(record["lines"]) <= self.finished:
                return index
        return 0

    def done_record(self) -> int:
        return next((i for i in range(1, len(self.records)) if b'"done"' in self.records[i]), 0)

    def unsent_line(self) -> int:
        """A line no batch was sent with."""
        sent = {n for i in range(1, len(self.records)) for n in self.parsed(i).get("lines", [])}
        return max(set(range(1, LINES + 1)) - sent, default=0)

    def offset(self, index: int, within: bytes) -> int:
        """Where ``within`` starts in record ``index``, from the start of the file."""
        return sum(map(len, self.records[:index])) + self.records[index].index(within)

    def write(self, records: list[bytes]) -> None:
        self.journal.write_bytes(b"".join(records))


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def reseal(record: dict[str, Any]) -> bytes:
    """A record with a checksum that matches (the documented format, independently)."""
    record = {k: v for k, v in record.items() if k != "crc"}
    body = orjson.dumps(record)
    return body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)


@pytest.fixture
def job(interrupted: Path, tmp_path: Path) -> Job:
    for name in FILES:
        shutil.copy(interrupted / name, tmp_path / name)
    return Job(tmp_path)


async def resume(
    job: Job, emulator: RunningEmulator, source: str = "in.ndjson", stdin: bytes | None = None
) -> Run:
    command = send_command(Path(source), job.directory, emulator.base_url)
    return await dispatcher(
        *command[3:], "--resume", cwd=job.directory, stdin=stdin,
        environ=env(api_key=emulator.api_key),
    )  # fmt: skip


def snapshot(job: Job) -> dict[str, bytes]:
    return {name: (job.directory / name).read_bytes() for name in FILES}


async def assert_refused(job: Job, emulator: RunningEmulator, path: Path, line: int) -> str:
    """Exit 2 naming the file and the line; nothing sent; no file changed."""
    before = snapshot(job)
    run = await resume(job, emulator)
    assert run.code == 2, run.stderr
    assert f"{path} is damaged at line {line}: " in run.stderr
    assert "nothing was sent" in run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.messages() == []
    assert snapshot(job) == before, "a refused resume changed a file"
    return run.stderr


# --- the journal ------------------------------------------------------------------------

Damage = Callable[[Job], int]  # damages the journal; returns the line it should name


def header_field(name: bytes) -> Damage:
    def damage(job: Job) -> int:
        flip(job.journal, job.offset(0, name) + len(name) + 4)
        return 1

    return damage


def in_flight_byte(within: bytes, skip: int) -> Damage:
    def damage(job: Job) -> int:
        index = job.in_flight()
        flip(job.journal, job.offset(index, within) + skip)
        return index + 1

    return damage


def done_byte(job: Job) -> int:
    index = job.done_record()
    flip(job.journal, job.offset(index, b'"done":"') + 9)
    return index + 1


def checksum_byte(job: Job) -> int:
    flip(job.journal, job.offset(1, b'"crc":"') + 8)
    return 2


def middle_newline(job: Job) -> int:
    flip(job.journal, sum(map(len, job.records[:2])) - 1)  # line 2 runs into line 3
    return 2


def last_newline(job: Job) -> int:
    flip(job.journal, len(job.journal.read_bytes()) - 1)
    return len(job.records)


def record_cut_in_the_middle(job: Job) -> int:
    records = list(job.records)
    records[2] = records[2][: len(records[2]) // 2]  # runs into line 4
    job.write(records)
    return 3


def version_altered(job: Job) -> int:
    records = list(job.records)
    records[0] = records[0].replace(b'"journal":2', b'"journal":1')
    job.write(records)
    return 1


def line_not_an_integer(job: Job) -> int:
    index = job.in_flight()
    records = list(job.records)
    record = job.parsed(index)
    record["lines"][0] = str(record["lines"][0])
    records[index] = reseal(record)
    job.write(records)
    return index + 1


def unknown_kind(job: Job) -> int:
    records = list(job.records)
    records.insert(2, reseal({"resent": job.parsed(1).get("sent", "x")}))
    job.write(records)
    return 3


def job_id_resealed(job: Job) -> int:
    records = list(job.records)
    header = job.parsed(0)
    header["job"] = "0" * len(header["job"])
    records[0] = reseal(header)
    job.write(records)
    return 2  # the header is sound; the first record's key is not of its job


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(header_field(b'"job"'), id="header-job-id"),
        pytest.param(header_field(b'"fingerprint"'), id="header-fingerprint"),
        pytest.param(version_altered, id="header-version"),
        pytest.param(in_flight_byte(b'"lines":[', 9), id="in-flight-line-digit"),
        pytest.param(in_flight_byte(b'"sent":"', 10), id="in-flight-key"),
        pytest.param(done_byte, id="done-key"),
        pytest.param(checksum_byte, id="checksum"),
        pytest.param(middle_newline, id="middle-newline"),
        pytest.param(last_newline, id="last-newline"),
        pytest.param(record_cut_in_the_middle, id="record-cut-in-the-middle"),
        pytest.param(line_not_an_integer, id="line-not-an-integer-resealed"),
        pytest.param(unknown_kind, id="unknown-kind-resealed"),
        pytest.param(job_id_resealed, id="job-id-resealed"),
    ],
)
async def test_a_damaged_journal_stops_the_resume_before_anything_is_sent(
    job: Job, emulator: RunningEmulator, damage: Damage
) -> None:
    line = damage(job)
    await assert_refused(job, emulator, job.journal, line)


async def test_a_journal_of_an_older_version_is_refused_with_a_message(
    job: Job, emulator: RunningEmulator
) -> None:
    old = []
    for index in range(len(job.records)):
        record = {k: v for k, v in job.parsed(index).items() if k != "crc"}
        old.append(orjson.dumps({**record, "journal": 1} if index == 0 else record) + b"\n")
    job.write(old)
    before = snapshot(job)
    run = await resume(job, emulator)
    assert run.code == 2, run.stderr
    assert "written by an older version of sms-dispatcher" in run.stderr
    assert "finish it with that version or start over with --force" in run.stderr
    assert emulator.messages() == []
    assert snapshot(job) == before


async def test_an_empty_journal_is_refused(job: Job, emulator: RunningEmulator) -> None:
    job.journal.write_bytes(b"")
    run = await resume(job, emulator)
    assert run.code == 2, run.stderr
    assert "has no header" in run.stderr
    assert emulator.messages() == []


async def test_a_journal_cut_short_at_its_end_is_repaired_and_the_job_finished(
    job: Job, emulator: RunningEmulator
) -> None:
    job.journal.write_bytes(job.journal.read_bytes()[:-7])  # a crash mid-write
    run = await resume(job, emulator)
    assert run.code in (0, 1), run.stderr  # 1: the batches in flight are AMBIGUOUS
    assert "cut off its last record" in run.stderr
    assert_one_result_per_line(job)


# --- the results ------------------------------------------------------------------------


def results_lines(job: Job) -> list[bytes]:
    return job.results.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("not-json", "not JSON"),
        ("line-as-text", "line is not a positive integer"),
        ("line-missing", "line is not a positive integer"),
        ("cut-in-the-middle", "not JSON"),
        ("two-results", "second result for line"),
        ("id-never-sent", "no batch of the journal"),
        ("dry-run", "dry run"),
    ],
)
async def test_a_damaged_results_line_stops_the_resume_before_anything_is_sent(
    job: Job, emulator: RunningEmulator, how: str, reason: str
) -> None:
    lines = results_lines(job)
    first = orjson.loads(lines[1])
    assert "id" in first
    number = 2
    if how == "not-json":
        lines[1] = b"x" + lines[1][1:]
    elif how == "line-as-text":
        lines[1] = orjson.dumps({**first, "line": str(first["line"])}) + b"\n"
    elif how == "line-missing":
        lines[1] = orjson.dumps({k: v for k, v in first.items() if k != "line"}) + b"\n"
    elif how == "cut-in-the-middle":
        lines[1] = lines[1][:20]
    elif how == "two-results":
        lines.insert(3, lines[1])
        number = 4
    elif how == "id-never-sent":
        lines[1] = orjson.dumps({**first, "line": job.unsent_line()}) + b"\n"
    else:
        lines[1] = orjson.dumps({**first, "status": "DRY_RUN"}) + b"\n"
    job.results.write_bytes(b"".join(lines))
    stderr = await assert_refused(job, emulator, job.results, number)
    assert reason in stderr


async def test_a_results_line_cut_short_at_the_end_is_cut_off_with_a_warning(
    job: Job, emulator: RunningEmulator
) -> None:
    job.results.write_bytes(job.results.read_bytes()[:-9])
    run = await resume(job, emulator)
    assert run.code in (0, 1), run.stderr
    assert "WARNING" in run.stderr
    assert "cut off its last line" in run.stderr
    assert_one_result_per_line(job)


def assert_one_result_per_line(job: Job) -> None:
    results = read_results(job.results)
    assert sorted(r["line"] for r in results) == list(range(1, LINES + 1))


# --- an input that is not the job's (stdin cannot be checked before) --------------------


@pytest.mark.parametrize("how", ["shorter", "line-changed"])
async def test_in_flight_lines_missing_from_stdin_stop_the_run_and_keep_the_job(
    job: Job, emulator: RunningEmulator, how: str
) -> None:
    index = job.in_flight()
    first = min(job.parsed(index)["lines"])
    source = (job.directory / "in.ndjson").read_bytes().splitlines(keepends=True)
    if how == "shorter":
        stdin = b"".join(source[: first - 1])
    else:
        source[first - 1] = b'{"to": "not a number"}\n'
        stdin = b"".join(source)
    run = await resume(job, emulator, "-", stdin)
    assert run.code == 3, run.stderr
    assert f"line {first} was in flight" in run.stderr
    assert "Traceback" not in run.stderr
    assert b'"complete"' not in job.journal.read_bytes()
    results = read_results(job.results)
    assert first not in {r["line"] for r in results}
    # the job's own input finishes it
    done = await resume(job, emulator)
    assert done.code in (0, 1), done.stderr
    assert_one_result_per_line(job)
    assert (await emulator.stats())["duplicates"] == 0
