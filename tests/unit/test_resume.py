"""What a resumed run decides: the job it continues, the lines that are finished, the
batches that were in flight, and for each whether it is rebuilt line for line under its
key and sent again, or answered AMBIGUOUS — with no line written twice.

Real files in tmp_path, a real `Preparer`, `Outputs` and `Journal`; the stage the
rebuilt batches are submitted to is a list."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.batcher import Batcher
from dispatcher.config import Config
from dispatcher.errors import ConfigError
from dispatcher.journal import Journal, journal_path, records
from dispatcher.models import Batch, Recipient, Rejected, batch_key
from dispatcher.prepare import Preparer
from dispatcher.resume import IN_FLIGHT_AT_CRASH, LineSet, Resume, ResumeState, open_job
from dispatcher.summary import Summary
from dispatcher.writers import NdjsonSink, Outputs


def config(tmp_path: Path, **kw: Any) -> Config:
    values: dict[str, Any] = {
        "results": str(tmp_path / "results.ndjson"),
        "sender": "12345",
        "text": "Hi {0}",
    }
    values.update(kw)
    return Config(**values)


def result(line: int, **kw: object) -> bytes:
    fields = {"line": line, "status": "QUEUE", "id": f"m{line}", "segments": 1, "encoding": "GSM7"}
    return orjson.dumps({**fields, **kw}) + b"\n"


def recipient(line: int) -> Recipient:
    return Recipient(line=line, to=f"+5255000000{line:02d}", params=[f"n{line}"])


def read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in path.read_bytes().splitlines()]


# --- the job and what the earlier run left -------------------------------------------


def test_lineset_is_a_set_of_ints() -> None:
    lines = LineSet()
    for n in (1, 8, 9, 1_000_003, 8):
        lines.add(n)
    assert len(lines) == 4
    assert 8 in lines
    assert 1_000_003 in lines
    assert 2 not in lines
    assert 5_000_000 not in lines
    assert "8" not in lines


def test_a_new_run_refuses_an_existing_journal(tmp_path: Path) -> None:
    journal, state = open_job(config(tmp_path), "in.ndjson")
    journal.close()
    assert state is None
    with pytest.raises(ConfigError, match=r"--resume.*--force"):
        open_job(config(tmp_path), "in.ndjson")
    journal, state = open_job(config(tmp_path, force=True), "in.ndjson")
    journal.close()
    assert state is None


def test_resume_without_journal_or_on_stdout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no journal"):
        open_job(config(tmp_path, resume=True), "in")
    with pytest.raises(ConfigError, match="--results PATH"):
        open_job(config(tmp_path, resume=True, results="-"), "in")
    journal, state = open_job(config(tmp_path, results="-"), "in")
    assert (journal.path, state) == (None, None)


def test_resume_finds_in_flight_batches_and_finished_lines(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    journal, _ = open_job(cfg, "in")
    job = journal.job
    done_key, flight_key, unsent_key = (
        batch_key(job, [1, 2]),
        batch_key(job, [3, 4]),
        batch_key(job, [5]),
    )
    journal.sent(done_key, [1, 2])
    journal.done(done_key)
    journal.commit()
    journal.sent(flight_key, [3, 4])
    journal.sent(unsent_key, [5])
    journal.unsent(unsent_key)
    journal.close()
    results = Path(cfg.results)
    # lines 1, 2 done; 3 written before the crash (the batch's other line was not);
    # then a last line cut in half by the crash
    results.write_bytes(result(1) + result(2) + result(3) + b'{"line": 4, "sta')
    journal, state = open_job(config(tmp_path, resume=True), "in")
    journal.close()
    assert state is not None
    assert state.job == job
    assert state.in_flight == {flight_key: [3, 4]}
    assert sorted(n for n in range(10) if n in state.done) == [1, 2, 3]
    assert state.statuses == {"QUEUE": 3}
    assert state.segments == {"GSM7": 3}
    assert not state.complete
    assert results.read_bytes().endswith(result(3))  # the torn line is gone


def test_resume_refuses_changed_options(tmp_path: Path) -> None:
    open_job(config(tmp_path), "in")[0].close()
    with pytest.raises(ConfigError, match="differ"):
        open_job(config(tmp_path, resume=True, text="other"), "in")


def test_a_torn_journal_record_is_ignored(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    journal, _ = open_job(cfg, "in")
    journal.sent(batch_key(journal.job, [1]), [1])
    journal.close()
    with open(journal_path(cfg.results), "ab") as f:
        f.write(b'{"sent": "x", "li')
    _, state = open_job(config(tmp_path, resume=True), "in")
    assert state is not None
    assert list(state.in_flight.values()) == [[1]]


def test_complete_marker(tmp_path: Path) -> None:
    journal, _ = open_job(config(tmp_path), "in")
    journal.complete()
    journal.close()
    state = ResumeState.read(
        journal_path(str(tmp_path / "results.ndjson")),
        str(tmp_path / "results.ndjson"),
        expected_fingerprint=_fingerprint_of(tmp_path),
    )
    assert state.complete


def _fingerprint_of(tmp_path: Path) -> str:
    header = next(records(journal_path(str(tmp_path / "results.ndjson"))))
    return str(header["fingerprint"])


def test_resume_refuses_a_changed_input(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_text('{"to": "+525500000001"}\n')
    open_job(config(tmp_path), str(source))[0].close()
    open_job(config(tmp_path, resume=True), str(source))[0].close()  # same input: fine
    source.write_text('{"to": "+525500000001"}\n{"to": "+525500000002"}\n')
    with pytest.raises(ConfigError, match="the input has changed"):
        open_job(config(tmp_path, resume=True), str(source))
    open_job(config(tmp_path, resume=True), "-")[0].close()  # a pipe cannot be checked


def test_keep_finished_prunes_what_will_be_written_again(tmp_path: Path) -> None:
    invalid = tmp_path / "invalid.ndjson"
    invalid.write_bytes(
        b'{"line":1,"to":"x","reason":"r","source":"client"}\n'
        b'{"line":7,"to":"y","reason":"r","source":"gateway"}\n'
        b'{"line":9,"to":"z","re'
    )
    state = ResumeState(job="j")
    state.done.add(1)
    state.keep_finished(str(invalid))
    assert [r["line"] for r in read(invalid)] == [1]


# --- the resumed run: divert, rebuild, and never write a line twice ------------------


class Earlier:
    """An earlier run of job "job1" that stopped with batch [5, 3, 4] in flight: line 3
    of it had its result written, 4 and 5 not; batch [1, 2] was finished; batch [6]
    was recorded unsent (the gateway did not act on it)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.key = batch_key("job1", [5, 3, 4])
        self.results = tmp_path / "results.ndjson"
        self.results.write_bytes(result(1) + result(2) + result(3))
        self.state = ResumeState(job="job1")
        for line in (1, 2, 3):
            self.state.done.add(line)
        self.state.in_flight[self.key] = [5, 3, 4]
        self.state.statuses = {"QUEUE": 3}
        self.submitted: list[Batch] = []

    def resume(self, *, resend: bool) -> tuple[Resume, Outputs, Journal]:
        outputs = Outputs(NdjsonSink.open(str(self.results), append=True), Summary())
        journal = Journal(str(self.tmp_path / "results.ndjson.journal"), "job1")
        resume = Resume(self.state, outputs, journal, resend=resend, count_segments=False)
        return resume, outputs, journal

    async def submit(self, batch: Batch) -> None:
        self.submitted.append(batch)

    async def divert(self, resume: Resume, lines: range) -> list[int]:
        preparer = Preparer(config(self.tmp_path), capacity=lambda code: math.inf)
        chunk: list[Recipient | Rejected] = [recipient(n) for n in lines]
        fresh = await resume.divert(chunk, preparer, self.submit)
        return [item.line for item in fresh]


async def test_finished_lines_are_dropped_and_in_flight_lines_rebuilt_exactly(
    tmp_path: Path,
) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    assert outputs.summary.resumed_lines == 3
    assert await earlier.divert(resume, range(1, 5)) == []  # 3, 4 wait for 5
    assert earlier.submitted == []
    assert await earlier.divert(resume, range(5, 9)) == [6, 7, 8]
    [batch] = earlier.submitted
    assert batch.lines == [5, 3, 4]  # the order it was sent in, so the same body
    assert batch.key == earlier.key  # and the key the gateway saw
    assert batch.key == batch_key("job1", batch.lines)
    assert [e.to for e in batch.entries] == ["+525500000005", "+525500000003", "+525500000004"]
    assert batch.units == 3
    journal.close()
    outputs.close()


async def test_a_resent_batch_writes_only_the_lines_without_a_result(tmp_path: Path) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    await earlier.divert(resume, range(1, 9))
    [batch] = earlier.submitted
    # what the sender does with the gateway's (replayed) answer
    resume.results.accepted(
        batch, ["m5", "m3", "m4"], status="QUEUE", attempts=1, transaction_id="t", started=0.0
    )
    outputs.close()
    journal.close()
    assert [r["line"] for r in read(earlier.results)] == [1, 2, 3, 5, 4]
    assert outputs.summary.statuses == {"QUEUE": 5}
    assert outputs.summary.codes["12345"].messages == 2


async def test_a_split_resent_batch_writes_each_line_once(tmp_path: Path) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    await earlier.divert(resume, range(1, 9))
    [batch] = earlier.submitted
    first, second = batch.split()  # the gateway answered 413
    assert (first.lines, second.lines) == ([5], [3, 4])
    results = resume.results
    results.accepted(first, ["m5"], status="QUEUE", attempts=1, transaction_id=None, started=0)
    results.unsent(second, "FAILED", "refused", attempts=1)
    outputs.close()
    journal.close()
    lines = read(earlier.results)
    assert [(r["line"], r["status"]) for r in lines[3:]] == [(5, "QUEUE"), (4, "FAILED")]


async def test_without_idempotency_an_in_flight_batch_becomes_ambiguous(tmp_path: Path) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=False)
    assert await earlier.divert(resume, range(1, 9)) == [6, 7, 8]
    assert earlier.submitted == []  # never sent again
    outputs.flush()
    journal.commit()
    journal.close()
    outputs.close()
    written = read(earlier.results)[3:]
    assert [(r["line"], r["status"], r["attempts"]) for r in written] == [
        (5, "AMBIGUOUS", 0),
        (4, "AMBIGUOUS", 0),
    ]
    assert {r["error"] for r in written} == {IN_FLIGHT_AT_CRASH}
    assert outputs.summary.ambiguous_segments == 2  # line 3's segment was counted before
    assert list(records(str(tmp_path / "results.ndjson.journal"))) == [{"done": earlier.key}]


async def test_other_batches_pass_the_results_filter_untouched(tmp_path: Path) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    preparer = Preparer(config(tmp_path), capacity=lambda code: math.inf)
    chunk: list[Recipient | Rejected] = [recipient(n) for n in range(1, 9)]
    diverted = await resume.divert(chunk, preparer, earlier.submit)
    fresh = [item for item in diverted if item.line == 7]
    batcher = Batcher(
        batch_size=10, linger=1, max_buffered=10, count_segments=False, clock=lambda: 0.0, job="j"
    )
    preparer.feed(fresh, batcher, outputs)
    batcher.drain()
    [batch] = batcher.take()
    resume.results.accepted(
        batch, ["m7"], status="QUEUE", attempts=1, transaction_id=None, started=0
    )
    outputs.close()
    journal.close()
    assert [r["line"] for r in read(earlier.results)] == [1, 2, 3, 7]  # 5, 4: not answered


async def test_without_anything_in_flight_only_finished_lines_are_dropped(tmp_path: Path) -> None:
    state = ResumeState(job="job1")
    state.done.add(2)
    outputs = Outputs(NdjsonSink.open(str(tmp_path / "r.ndjson")), Summary())
    resume = Resume(state, outputs, Journal(None, "job1"), resend=True, count_segments=False)
    preparer = Preparer(config(tmp_path), capacity=lambda code: math.inf)

    async def submit(batch: Batch) -> None:
        raise AssertionError("nothing to rebuild")

    fresh = await resume.divert([recipient(n) for n in (1, 2, 3)], preparer, submit)
    assert [item.line for item in fresh] == [1, 3]
    outputs.close()
