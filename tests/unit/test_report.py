"""dispatcher report: every category, DR precedence, unknown ids, malformed lines."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.delivery import DeliveryCounts, join_delivery_reports
from dispatcher.errors import InputError, OutputError


def result(line: int, status: str, mid: Any = None, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"line": line, "to": f"+5255000000{line:02d}", "status": status}
    if mid is not None:
        rec["id"] = mid
    return {**rec, **extra}


def dr(mid: Any, status: str, ts: int | None = None, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": mid, "status": status, "to": "+52", "from": "12345"}
    if ts is not None:
        rec["timestamp"] = ts
    return {**rec, **extra}


def dump(rows: list[Any]) -> bytes:
    return b"".join(row if isinstance(row, bytes) else orjson.dumps(row) + b"\n" for row in rows)


RESULTS = [
    result(1, "QUEUE", "m1", ref="crm-1", segments=1),  # ENROUTE then DELIVRD: delivered
    result(2, "QUEUE", "m2"),  # DELIVRD@300 and an older UNDELIV@250 after it: delivered
    result(3, "QUEUE", "m3"),  # UNDELIV, then a later ACCEPTD: final wins, undelivered
    result(4, "QUEUE", "m4"),  # EXPIRED
    result(5, "QUEUE", "m5"),  # REJECTD then DELETED, no timestamps: file order, DELETED
    result(6, "QUEUE", "m6"),  # only ENROUTE: pending
    result(7, "QUEUE", "m7"),  # no DR: pending NO_DR
    result(8, "QUEUE", "m8"),  # DELIVRD with a date but no timestamp
    result(9, "QUEUE", "9"),  # the DR carries the id as a number
    result(10, "QUEUE", "m10"),  # DELIVRD@100 then UNDELIV@100: same time, later line
    result(11, "INVALID_NUMBER", error="not E.164"),
    result(12, "REJECTED"),
    b"\n",
    result(14, "AMBIGUOUS"),
    result(15, "INVALID_NUMBER", ref={"crm": 15}),
    b"not json\n",
    b"[1, 2]\n",
    b'{"line": 18, "id": "m18"}\n',  # no status
    result(19, "QUEUE", "m6"),  # a second result with the same id
]

DRS = [
    dr("m1", "ENROUTE", 100),
    dr("m2", "DELIVRD", 300),
    dr("m3", "UNDELIV", 100),
    dr("zz1", "DELIVRD", 100),
    dr("m1", "DELIVRD", 200),
    dr("m2", "UNDELIV", 250),
    dr("m3", "ACCEPTD", 500),
    dr("m4", "EXPIRED", 100, unknownField=[1]),
    dr("m5", "REJECTD"),
    dr("m5", "DELETED"),
    b"   \n",
    dr("m6", "ENROUTE", 100),
    dr("m8", "DELIVRD", date="2021-08-17T04:25:40.117592194Z"),
    dr(9, "DELIVRD", 1629174340117),
    dr("m10", "DELIVRD", 100),
    dr("m10", "UNDELIV", 100),
    dr("zz1", "DELIVRD", 150),
    dr("zz2", "UNDELIV", 150),
    b"garbage\n",
    b'{"status": "DELIVRD"}\n',
    b'{"id": "m1"}\n',
    b"[]\n",
    b'{"id": "m7", "status": "DELIVRD"',  # a truncated last line, as while still appending
]

EXPECTED = DeliveryCounts(
    results=15,
    accepted=11,
    delivered=4,  # m1, m2, m8, 9
    undelivered={"UNDELIV": 2, "EXPIRED": 1, "DELETED": 1},  # m3, m10, m4, m5
    pending={"ENROUTE": 2, "NO_DR": 1},  # m6 twice (lines 6 and 19), m7
    not_sent={"INVALID_NUMBER": 2, "REJECTED": 1, "AMBIGUOUS": 1},
    dr_lines=17,
    dr_ids=11,
    unknown_ids=2,
    unknown_id_drs=3,
    malformed_results=3,
    malformed_drs=5,
)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    results, drs = tmp_path / "results.ndjson", tmp_path / "dr.ndjson"
    results.write_bytes(dump(RESULTS))
    drs.write_bytes(dump(DRS))
    return results, drs


def test_counts_cover_every_category(files: tuple[Path, Path]) -> None:
    assert join_delivery_reports(*files) == EXPECTED


def test_as_dict(files: tuple[Path, Path]) -> None:
    counts = join_delivery_reports(*files).as_dict()
    assert counts["delivered"] == 4
    assert counts["undelivered"] == 4
    assert counts["undeliveredByStatus"] == {"UNDELIV": 2, "EXPIRED": 1, "DELETED": 1}
    assert counts["pending"] == 3
    assert counts["notSent"] == 4
    assert counts["unknownIds"] == 2
    assert counts["unknownIdDeliveryReports"] == 3
    assert counts["malformedResults"] == 3
    assert counts["malformedDeliveryReports"] == 5
    assert orjson.loads(orjson.dumps(counts)) == counts


def test_out_has_one_line_per_result(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "delivery.ndjson"
    join_delivery_reports(*files, out=out)
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 19]
    by_line = {row["line"]: row for row in rows}
    assert by_line[1] == {
        "line": 1,
        "to": "+525500000001",
        "id": "m1",
        "sendStatus": "QUEUE",
        "deliveryStatus": "DELIVRD",
        "deliveredAt": "1970-01-01T00:00:00.200Z",
        "ref": "crm-1",
    }
    assert by_line[8]["deliveredAt"] == "2021-08-17T04:25:40.117592194Z"
    assert by_line[9]["deliveredAt"] == "2021-08-17T04:25:40.117Z"
    assert by_line[3] == {
        "line": 3,
        "to": "+525500000003",
        "id": "m3",
        "sendStatus": "QUEUE",
        "deliveryStatus": "UNDELIV",
    }
    assert by_line[6]["deliveryStatus"] == "ENROUTE"
    assert by_line[7]["deliveryStatus"] is None
    assert by_line[5]["deliveryStatus"] == "DELETED"
    assert by_line[10]["deliveryStatus"] == "UNDELIV"
    assert by_line[15] == {
        "line": 15,
        "to": "+525500000015",
        "id": None,
        "sendStatus": "INVALID_NUMBER",
        "deliveryStatus": None,
        "ref": {"crm": 15},
    }
    assert sum("deliveredAt" in row for row in rows) == 4


def test_precedence_does_not_depend_on_arrival_order(tmp_path: Path) -> None:
    results, drs = tmp_path / "r.ndjson", tmp_path / "d.ndjson"
    results.write_bytes(dump([result(1, "QUEUE", "a")]))
    sequence = [dr("a", "ENROUTE", 50), dr("a", "DELIVRD", 10), dr("a", "SENT", 60)]
    for order in (sequence, sequence[::-1]):
        drs.write_bytes(dump(order))
        assert join_delivery_reports(results, drs).delivered == 1
    drs.write_bytes(dump([dr("a", "SENT", 60), dr("a", "ENROUTE", 50)]))
    assert join_delivery_reports(results, drs).pending == {"SENT": 1}


def test_gzipped_inputs(files: tuple[Path, Path], tmp_path: Path) -> None:
    results_gz, dr_gz = tmp_path / "results.ndjson.gz", tmp_path / "dr.ndjson.gz"
    results_gz.write_bytes(gzip.compress(files[0].read_bytes()))
    dr_gz.write_bytes(gzip.compress(files[1].read_bytes()))
    assert join_delivery_reports(results_gz, dr_gz) == EXPECTED


def test_missing_input_and_unwritable_out(files: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        join_delivery_reports(tmp_path / "nope.ndjson", files[1])
    with pytest.raises(InputError, match="cannot read"):
        join_delivery_reports(files[0], tmp_path / "nope.ndjson")
    with pytest.raises(OutputError, match="cannot write"):
        join_delivery_reports(*files, out=tmp_path)


def test_the_old_names_in_dispatcher_report_still_work(files: tuple[Path, Path]) -> None:
    from dispatcher import report

    assert report.Report is DeliveryCounts
    assert report.build_report is join_delivery_reports
    assert report.build_report(*files) == EXPECTED
