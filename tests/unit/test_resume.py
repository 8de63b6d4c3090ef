"""What a resumed run decides: the job it continues, the lines that are finished, the
batches that were in flight, and for each whether it is rebuilt line for line under its
key and sent again, or answered AMBIGUOUS — with no line written twice.

Real files in tmp_path, a real `Preparer`, `Outputs` and `Journal`; the stage the
rebuilt batches are submitted to is a list."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.batcher import Batcher
from dispatcher.config import Config
from dispatcher.errors import ConfigError
from dispatcher.finished import DamagedResults, LineSet
from dispatcher.journal import DamagedJournal, Journal, journal_path, records, seal
from dispatcher.models import Batch, Recipient, Rejected, batch_key
from dispatcher.prepare import Preparer
from dispatcher.resume import IN_FLIGHT_AT_CRASH, InputChanged, Resume, ResumeState, open_job
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


# --- trusting neither the journal nor the results blindly ----------------------------


def interrupted(tmp_path: Path, results: bytes) -> tuple[str, list[str]]:
    """A job whose batch [1, 2] finished and [3, 4] was in flight; ``results`` written.
    Returns the job id and the two keys."""
    journal, _ = open_job(config(tmp_path), "in")
    keys = [batch_key(journal.job, [1, 2]), batch_key(journal.job, [3, 4])]
    journal.sent(keys[0], [1, 2])
    journal.done(keys[0])
    journal.commit()
    journal.sent(keys[1], [3, 4])
    journal.close()
    Path(config(tmp_path).results).write_bytes(results)
    return journal.job, keys


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"status": "QUEUE"}\n', "line is not a positive integer"),
        (b'{"line": "2", "status": "QUEUE"}\n', "line is not a positive integer"),
        (b'{"line": 2.0, "status": "QUEUE"}\n', "line is not a positive integer"),
        (b'{"line": true, "status": "QUEUE"}\n', "line is not a positive integer"),
        (b'{"line": 0, "status": "QUEUE"}\n', "line is not a positive integer"),
        (b'{"line": 1, "status": "QUEUE"}\n', "second result for line 1"),
        (b'{"line": 2}\n', "status is not text"),
        (b'{"line": 2, "status": "DRY_RUN"}\n', "dry run"),
        (b'{"line": 2, "status": "QUEUE", "id": "m", "segments": "1"}\n', "segments"),
        (b'{"line": 9, "status": "QUEUE", "id": "m9", "segments": 1}\n', "no batch of the journal"),
    ],
)
def test_a_results_line_that_disagrees_is_refused_and_nothing_changed(
    tmp_path: Path, line: bytes, why: str
) -> None:
    path = tmp_path / "results.ndjson"
    interrupted(tmp_path, result(1) + line + result(3) + b'{"line": 4, "sta')
    before = path.read_bytes()
    with pytest.raises(DamagedResults, match=rf"{path} is damaged at line 2: .*{why}"):
        open_job(config(tmp_path, resume=True), "in")
    assert path.read_bytes() == before  # not even the torn last line is cut


def test_a_resumable_result_may_be_followed_by_a_newer_one(tmp_path: Path) -> None:
    not_sent = b'{"line": 3, "to": "x", "status": "NOT_SENT", "error": "cap"}\n'
    cancelled = b'{"line": 4, "to": "x", "status": "CANCELLED", "error": "c"}\n'
    interrupted(tmp_path, result(1) + result(2) + not_sent + cancelled + not_sent + result(4))
    _, state = open_job(config(tmp_path, resume=True), "in")
    assert state is not None
    assert (len(state.done), 3 in state.done, 4 in state.done) == (3, False, True)
    assert 3 in state.pending
    assert 4 not in state.pending
    # 3's older NOT_SENT, 4's CANCELLED, and 3's newest NOT_SENT that this run replaces
    assert state.superseded == 3
    assert state.statuses == {"QUEUE": 3}


@pytest.mark.parametrize("status", ["NOT_SENT", "OUTSIDE_WINDOW", "CANCELLED"])
def test_a_resumable_result_after_a_final_one_is_refused(tmp_path: Path, status: str) -> None:
    late = orjson.dumps({"line": 1, "to": "x", "status": status, "error": "e"}) + b"\n"
    interrupted(tmp_path, result(1) + result(2) + late)
    with pytest.raises(DamagedResults, match=r"line 3: it is a second result for line 1"):
        open_job(config(tmp_path, resume=True), "in")


def test_a_compacted_job_resumes(tmp_path: Path) -> None:
    job, keys = interrupted(tmp_path, result(1) + result(2))
    journal = Journal(str(tmp_path / "results.ndjson.journal"), job)
    journal.compaction("start")
    journal.compaction("done")
    journal.close()
    _, state = open_job(config(tmp_path, resume=True), "in")
    assert state is not None
    assert list(state.in_flight) == [keys[1]]


def test_results_without_an_id_need_no_batch(tmp_path: Path) -> None:
    local = b'{"line": 9, "to": "x", "status": "INVALID_NUMBER", "error": "e"}\n'
    interrupted(tmp_path, result(1) + local)
    _, state = open_job(config(tmp_path, resume=True), "in")
    assert state is not None
    assert 9 in state.done
    assert state.last_line == 9


def test_a_key_of_another_job_is_refused(tmp_path: Path) -> None:
    interrupted(tmp_path, result(1) + result(2))
    with open(journal_path(config(tmp_path).results), "ab") as f:
        f.write(seal(b'{"done":"%s"}' % batch_key("otherjob", [5]).encode()))
    with pytest.raises(DamagedJournal, match="line 5: its batch key is not of the header's job"):
        open_job(config(tmp_path, resume=True), "in")


def test_a_line_in_two_batches_in_flight_is_refused(tmp_path: Path) -> None:
    job, _ = interrupted(tmp_path, result(1) + result(2))
    with open(journal_path(config(tmp_path).results), "ab") as f:
        f.write(seal(b'{"sent":"%s","lines":[4,5]}' % batch_key(job, [4, 5]).encode()))
    with pytest.raises(DamagedJournal, match=r"line 5: .* shares a line with another batch"):
        open_job(config(tmp_path, resume=True), "in")


def test_a_damaged_journal_leaves_a_torn_results_line_in_place(tmp_path: Path) -> None:
    interrupted(tmp_path, result(1) + b'{"line": 2, "sta')
    path = Path(journal_path(config(tmp_path).results))
    data = bytearray(path.read_bytes())
    data[30] ^= 1
    path.write_bytes(bytes(data))
    results = tmp_path / "results.ndjson"
    before = results.read_bytes()
    with pytest.raises(DamagedJournal, match="damaged at line 1"):
        open_job(config(tmp_path, resume=True), "in")
    assert results.read_bytes() == before


def test_a_journal_without_a_header_is_refused(tmp_path: Path) -> None:
    Path(journal_path(config(tmp_path).results)).write_bytes(b'{"journal":2,"jo')
    with pytest.raises(DamagedJournal, match="has no header"):
        open_job(config(tmp_path, resume=True), "in")


def test_a_dry_run_never_overwrites_a_job_it_would_leave_behind(tmp_path: Path) -> None:
    interrupted(tmp_path, result(1))
    path = Path(journal_path(config(tmp_path).results))
    with pytest.raises(ConfigError, match="dry run would overwrite"):
        open_job(config(tmp_path, dry_run=True), "in")
    assert path.exists()
    journal, state = open_job(config(tmp_path, dry_run=True, force=True), "in")
    assert (journal.path, state) == (None, None)
    assert not path.exists()  # a resume can never take DRY_RUN results for a job's


def test_results_on_a_character_device_keep_no_journal(tmp_path: Path) -> None:
    journal, state = open_job(config(tmp_path, results=os.devnull), "in")
    assert (journal.path, state) == (None, None)
    with pytest.raises(ConfigError, match="--results PATH"):
        open_job(config(tmp_path, results=os.devnull, resume=True), "in")


def test_first_not_in() -> None:
    ours, theirs = LineSet(), LineSet()
    for n in (3, 9, 70):
        ours.add(n)
    for n in (3, 70):
        theirs.add(n)
    assert ours.first_not_in(theirs) == 9
    theirs.add(9)
    assert ours.first_not_in(theirs) is None
    assert LineSet().first_not_in(theirs) is None


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


# --- an input that is not the job's ---------------------------------------------------


async def test_an_in_flight_line_the_reader_passed_stops_the_run(tmp_path: Path) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    chunk: list[Recipient | Rejected] = [recipient(n) for n in (1, 2, 3, 5, 6)]  # 4 is blank
    with pytest.raises(InputChanged, match=r"line 4 was in flight .* no such line"):
        await resume.divert(
            chunk, Preparer(config(tmp_path), capacity=lambda c: math.inf), earlier.submit
        )
    assert earlier.submitted == []
    journal.close()
    outputs.close()


async def test_an_input_that_ends_before_an_in_flight_line_stops_the_run(tmp_path: Path) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    assert await earlier.divert(resume, range(1, 5)) == []
    with pytest.raises(InputChanged, match="line 5 was in flight"):
        resume.finish(4)
    journal.close()
    outputs.close()


async def test_results_beyond_the_input_stop_the_run(tmp_path: Path) -> None:
    earlier = Earlier(tmp_path)
    earlier.state.in_flight.clear()
    earlier.state.last_line = 9
    resume, outputs, journal = earlier.resume(resend=True)
    resume.finish(9)
    with pytest.raises(InputChanged, match="results hold line 9, but this input ends at line 8"):
        resume.finish(8)
    journal.close()
    outputs.close()


@pytest.mark.parametrize(
    ("item", "why"),
    [
        (Rejected(line=4, reason="not JSON", excerpt="x"), "now malformed"),
        (Recipient(line=4, to="12ab", params=["n4"]), "now cannot be sent .*INVALID_NUMBER"),
        (Recipient(line=4, to="+525500000004", params=[]), "now cannot be sent .*REJECTED"),
        (Recipient(line=4, to="+525500000004", params=["n4"], text="other {0}"), "another"),
    ],
)
async def test_an_in_flight_line_that_came_back_changed_stops_the_run_unanswered(
    tmp_path: Path, item: Recipient | Rejected, why: str
) -> None:
    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    preparer = Preparer(config(tmp_path), capacity=lambda c: math.inf)
    chunk: list[Recipient | Rejected] = [recipient(n) for n in (1, 2, 3)] + [item, recipient(5)]
    with pytest.raises(InputChanged, match=rf"line 4 was in flight.*{why}"):
        await resume.divert(chunk, preparer, earlier.submit)
    outputs.close()
    journal.close()
    assert [r["line"] for r in read(earlier.results)] == [1, 2, 3]  # nothing answered


def test_the_header_names_body_options_by_digest_never_by_value(tmp_path: Path) -> None:
    secret = "cb-secret-0123456789abcdef"
    open_job(config(tmp_path, callbacks=f"https://hooks.example/dr/{secret}"), "in")[0].close()
    raw = Path(journal_path(str(tmp_path / "results.ndjson"))).read_bytes()
    assert secret.encode() not in raw
    header = next(records(journal_path(str(tmp_path / "results.ndjson"))))
    assert {"--callbacks", "--text", "--smart-encoding", "--dedupe"} <= header["options"].keys()
    assert "--max-messages" not in header["options"]  # caps may change on a resume
    again = config(tmp_path, resume=True, callbacks="https://hooks.example/dr/other-secret-xyz")
    with pytest.raises(ConfigError, match=r"\(--callbacks\)") as caught:
        open_job(again, "in")
    assert "other-secret-xyz" not in str(caught.value)
    assert secret not in str(caught.value)


def test_a_resume_may_change_caps_opt_out_lists_rates_and_prices(tmp_path: Path) -> None:
    open_job(config(tmp_path, max_messages=1), "in")[0].close()
    changed = config(
        tmp_path,
        resume=True,
        max_messages=5,
        max_job_segments=9,
        suppress=("optout.txt",),
        rates={"12345": 3.0},
        price_per_segment=0.5,
    )
    open_job(changed, "in")[0].close()


async def test_with_dedupe_finished_lines_are_replayed_and_in_flight_ones_rebuilt(
    tmp_path: Path,
) -> None:
    """Lines 1 and 2 are replayed through the duplicate check (line 9 repeats line 1:
    DUPLICATE); line 3 is finished but in flight, so it is rebuilt, not replayed — a
    replay would make it a duplicate of itself."""
    from dispatcher.dedupe import Dedupe
    from dispatcher.policy import Duplicates

    earlier = Earlier(tmp_path)
    resume, outputs, journal = earlier.resume(resend=True)
    duplicates = Duplicates(Dedupe("number+text"), texts=True)
    preparer = Preparer(config(tmp_path), capacity=lambda code: math.inf, policies=[duplicates])
    chunk: list[Recipient | Rejected] = [recipient(n) for n in range(1, 9)]
    chunk.append(Recipient(line=9, to=recipient(1).to, params=recipient(1).params))
    fresh = await resume.divert(chunk, preparer, earlier.submit)
    assert [item.line for item in fresh] == [6, 7, 8, 9]
    [batch] = earlier.submitted
    assert batch.lines == [5, 3, 4]
    assert outputs.summary.statuses == {"QUEUE": 3}  # the replay wrote nothing
    batcher = Batcher(
        batch_size=10, linger=1, max_buffered=10, count_segments=False, clock=lambda: 0.0, job="j"
    )
    preparer.feed(fresh, batcher, outputs)
    outputs.close()
    journal.close()
    [duplicate] = [r for r in read(earlier.results) if r["status"] == "DUPLICATE"]
    assert (duplicate["line"], duplicate["first"]) == (9, 1)
