"""The journal writes records and reads them back, trusting none it cannot check; what a
resume makes of them is tests/unit/test_resume.py."""

from __future__ import annotations

import zlib
from pathlib import Path

import orjson
import pytest

from dispatcher.errors import ConfigError, OutputError
from dispatcher.journal import DamagedJournal, Journal, JournalFile, journal_path, records, seal

HEADER = {"journal": 2, "job": "job1", "fingerprint": "f", "input": "in.ndjson", "input_size": 12}


def create(tmp_path: Path, *, replace: bool = False) -> Journal:
    return Journal.create(
        journal_path(str(tmp_path / "results.ndjson")),
        "job1",
        fingerprint="f",
        source="in.ndjson",
        input_size=12,
        replace=replace,
    )


def written(tmp_path: Path) -> Path:
    """A closed journal: header, k1 sent and done, k2 sent."""
    journal = create(tmp_path)
    journal.sent("k1", [1, 2])
    journal.done("k1")
    journal.commit()
    journal.sent("k2", [3])
    journal.close()
    return tmp_path / "results.ndjson.journal"


def oracle_seal(record: dict[str, object]) -> bytes:
    """The documented format, written independently: the checksum of the record's
    compact JSON, as its last field."""
    body = orjson.dumps(record)
    return body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)


def test_a_new_journal_starts_with_its_header_and_keeps_records_in_order(tmp_path: Path) -> None:
    journal = create(tmp_path)
    journal.sent("k1", [1, 2])
    journal.sent("k2", [3])
    journal.unsent("k2")
    journal.done("k1")
    journal.complete()
    journal.close()
    assert list(records(str(tmp_path / "results.ndjson.journal"))) == [
        HEADER,
        {"sent": "k1", "lines": [1, 2]},
        {"sent": "k2", "lines": [3]},
        {"unsent": "k2"},
        {"done": "k1"},
        {"complete": True},
    ]


def test_records_are_json_lines_sealed_with_their_checksum(tmp_path: Path) -> None:
    raw = written(tmp_path).read_bytes().splitlines(keepends=True)
    assert raw == [
        oracle_seal(HEADER),
        oracle_seal({"sent": "k1", "lines": [1, 2]}),
        oracle_seal({"done": "k1"}),
        oracle_seal({"sent": "k2", "lines": [3]}),
    ]
    assert orjson.loads(raw[1]) == {"sent": "k1", "lines": [1, 2], "crc": raw[1][-11:-3].decode()}


def test_compaction_records_are_sealed_and_read_back(tmp_path: Path) -> None:
    journal = create(tmp_path)
    journal.compaction("start")
    journal.compaction("done")
    journal.complete()
    journal.close()
    path = tmp_path / "results.ndjson.journal"
    raw = path.read_bytes().splitlines(keepends=True)
    assert raw[1:3] == [oracle_seal({"compaction": "start"}), oracle_seal({"compaction": "done"})]
    assert list(records(str(path)))[1:] == [
        {"compaction": "start"},
        {"compaction": "done"},
        {"complete": True},
    ]
    path.write_bytes(raw[0] + oracle_seal({"compaction": "halfway"}))
    with pytest.raises(DamagedJournal, match="line 2: its compaction stage is unknown"):
        list(records(str(path)))


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


def test_a_journal_is_created_once_and_replaced_only_when_asked(tmp_path: Path) -> None:
    create(tmp_path).close()
    with pytest.raises(ConfigError, match=r"exists .*--resume.*--force"):
        create(tmp_path)
    journal = create(tmp_path, replace=True)
    path = tmp_path / "results.ndjson.journal"
    assert len(path.read_bytes().splitlines()) == 1
    journal.discard()
    assert not path.exists()


def test_a_torn_last_record_is_left_out_and_cut_by_repair(tmp_path: Path) -> None:
    path = written(tmp_path)
    whole = path.read_bytes()
    torn = seal(b'{"sent":"k3","lines":[4]}')[:-9]
    with open(path, "ab") as f:
        f.write(torn)
    journal = JournalFile(str(path))
    assert [record for _, record in journal.records()][-1] == {"sent": "k2", "lines": [3]}
    assert journal.torn == len(torn)
    journal.repair()
    assert path.read_bytes() == whole


def test_a_whole_last_record_without_its_newline_counts_and_gets_it_back(tmp_path: Path) -> None:
    path = written(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])
    journal = JournalFile(str(path))
    assert [record for _, record in journal.records()][-1] == {"sent": "k2", "lines": [3]}
    journal.repair()
    assert path.read_bytes() == whole


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_changed_byte_before_the_last_newline_is_found(tmp_path: Path) -> None:
    path = written(tmp_path)
    whole = path.read_bytes()
    for at in range(len(whole) - 1):  # a changed newline joins its line to the next
        path.write_bytes(whole)
        flip(path, at)
        number = whole[:at].count(b"\n") + 1
        with pytest.raises(DamagedJournal, match=rf"damaged at line {number}: .*checksum"):
            list(records(str(path)))


def test_the_last_newline_changed_is_damage_never_a_torn_record(tmp_path: Path) -> None:
    # taken for a torn record, the batch the last record announces would be forgotten
    path = written(tmp_path)
    flip(path, len(path.read_bytes()) - 1)
    with pytest.raises(DamagedJournal, match="line 4: it has bytes after its end"):
        list(records(str(path)))


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"sent": "k", "lines": ["7"]}, "not a positive integer"),
        ({"sent": "k", "lines": [1.5]}, "not a positive integer"),
        ({"sent": "k", "lines": [True]}, "not a positive integer"),
        ({"sent": "k", "lines": [0]}, "not a positive integer"),
        ({"sent": "k", "lines": []}, "not a list"),
        ({"sent": 7, "lines": [1]}, "key is not text"),
        ({"done": ""}, "key is not text"),
        ({"complete": False}, "not true"),
        ({"resent": "k"}, "unknown kind"),
        ({"sent": "k", "lines": [1], "extra": 1}, "unknown kind"),
        (HEADER, "second header"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_sound_checksum_does_not_make_a_record_sound(
    tmp_path: Path, record: object, why: str
) -> None:
    path = written(tmp_path)
    with open(path, "ab") as f:
        body = orjson.dumps(record)
        f.write(body + b"\n" if isinstance(record, list) else oracle_seal(record))  # type: ignore[arg-type]
    reason = "checksum" if isinstance(record, list) else why
    with pytest.raises(DamagedJournal, match=rf"{path} is damaged at line 5: .*{reason}"):
        list(records(str(path)))


def test_a_journal_of_format_1_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "results.ndjson.journal"
    old_header = {**HEADER, "journal": 1}
    path.write_bytes(orjson.dumps(old_header) + b'\n{"sent":"k1","lines":[1]}\n')
    with pytest.raises(DamagedJournal, match=r"older version of sms-dispatcher.*--force"):
        list(records(str(path)))


def test_a_journal_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.ndjson.journal"
    path.write_bytes(oracle_seal({**HEADER, "journal": 3}))
    with pytest.raises(DamagedJournal, match="newer version"):
        list(records(str(path)))


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


@pytest.mark.parametrize(
    ("options", "sound"),
    [
        ({"--text": "0123abcd", "--smart-encoding": "ffee0011"}, True),
        ({}, True),
        ([], False),
        ({"--text": 7}, False),
        ({"--text": ""}, False),
    ],
)
def test_a_header_may_record_the_body_options_as_digests(
    tmp_path: Path, options: object, sound: bool
) -> None:
    path = tmp_path / "results.ndjson.journal"
    path.write_bytes(oracle_seal({**HEADER, "options": options}))
    if sound:
        assert next(records(str(path)))["options"] == options
    else:
        with pytest.raises(DamagedJournal, match="its options are not a table of digests"):
            list(records(str(path)))


@pytest.mark.parametrize(
    ("schedule", "sound"),
    [
        ({"started": "2026-12-01T10:00:00.000Z"}, True),
        (
            {
                "started": "2026-12-01T10:00:00.000Z",
                "start_at": "2026-12-01T10:05:00+01:00",
                "expire_at": "2026-12-01T16:00:00.000Z",
            },
            True,
        ),
        ({}, False),  # no first start
        ({"started": "yesterday"}, False),
        ({"started": "2026-12-01T10:00:00"}, False),  # no offset: not one moment
        ({"started": "2026-12-01T10:00:00Z", "ttl": "6h"}, False),
        ({"started": 1764583200}, False),
        ("2026-12-01T10:00:00Z", False),
    ],
)
def test_a_header_may_record_the_jobs_schedule(
    tmp_path: Path, schedule: object, sound: bool
) -> None:
    path = tmp_path / "results.ndjson.journal"
    path.write_bytes(oracle_seal({**HEADER, "schedule": schedule}))
    if sound:
        assert next(records(str(path)))["schedule"] == schedule
    else:
        with pytest.raises(DamagedJournal, match="its schedule"):
            list(records(str(path)))
