"""The journal writes records and reads them back; what a resume makes of them is
tests/unit/test_resume.py."""

from pathlib import Path

import orjson
import pytest

from dispatcher.errors import OutputError
from dispatcher.journal import Journal, journal_path, records


def create(tmp_path: Path) -> Journal:
    return Journal.create(
        journal_path(str(tmp_path / "results.ndjson")),
        "job1",
        fingerprint="f",
        source="in.ndjson",
        input_size=12,
    )


def test_a_new_journal_starts_with_its_header_and_keeps_records_in_order(tmp_path: Path) -> None:
    journal = create(tmp_path)
    journal.sent("k1", [1, 2])
    journal.sent("k2", [3])
    journal.unsent("k2")
    journal.done("k1")
    journal.complete()
    journal.close()
    assert list(records(str(tmp_path / "results.ndjson.journal"))) == [
        {"journal": 1, "job": "job1", "fingerprint": "f", "input": "in.ndjson", "input_size": 12},
        {"sent": "k1", "lines": [1, 2]},
        {"sent": "k2", "lines": [3]},
        {"unsent": "k2"},
        {"done": "k1"},
        {"complete": True},
    ]


def test_done_records_wait_for_commit(tmp_path: Path) -> None:
    journal = create(tmp_path)
    path = str(tmp_path / "results.ndjson.journal")
    journal.sent("k1", [1])
    journal.done("k1")
    assert {"done": "k1"} not in list(records(path))  # the results are not flushed yet
    journal.commit()
    assert list(records(path))[-1] == {"done": "k1"}
    journal.done("k2")
    journal.close()  # an uncommitted done record is dropped: the batch stays in flight
    assert list(records(path))[-1] == {"done": "k1"}


def test_create_replaces_an_old_journal_and_discard_removes_it(tmp_path: Path) -> None:
    create(tmp_path).close()
    journal = create(tmp_path)
    path = tmp_path / "results.ndjson.journal"
    assert len(path.read_bytes().splitlines()) == 1
    journal.discard()
    assert not path.exists()


def test_a_torn_record_is_skipped(tmp_path: Path) -> None:
    journal = create(tmp_path)
    journal.sent("k1", [1])
    journal.close()
    path = tmp_path / "results.ndjson.journal"
    with open(path, "ab") as f:
        f.write(b'{"sent": "x", "li')
    assert list(records(str(path)))[-1] == {"sent": "k1", "lines": [1]}


def test_without_a_path_nothing_is_written(tmp_path: Path) -> None:
    journal = Journal(None, "job1")
    journal.sent("k1", [1])
    journal.done("k1")
    journal.complete()
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_journal_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write the journal"):
        Journal(str(blocker / "results.journal"), "job1")


def test_records_are_compact_json_lines(tmp_path: Path) -> None:
    journal = create(tmp_path)
    journal.sent("k1", [1, 2])
    journal.close()
    raw = (tmp_path / "results.ndjson.journal").read_bytes().splitlines()
    assert raw[1] == b'{"sent":"k1","lines":[1,2]}'
    assert orjson.loads(raw[0])["journal"] == 1
