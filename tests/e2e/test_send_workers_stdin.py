"""``send --workers 3 -``: the parent hands stdin out, line by line, to the worker that
keeps each line; the job's results and ledger are a single ``send -``'s, line for line,
on a file as people's files are (bench/_mixed.py: formatted numbers, a BOM, malformed,
blank and invalid lines) with what the reader judges by its bytes: CRLF, invalid UTF-8,
lines too long, and no newline at the end."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.exactly_once import ledger, send_command
from tests.support.gateway_process import gateway_process
from tests.support.gzipped import members

KEY = "e2e-Hb3nQ8sWk2LpV6tJ"
MAX_LINE_BYTES = 200

#: Lines of bench/_mixed.py (seed 1), and the reader's hard cases.
LINES = [
    b'\xef\xbb\xbf{"to":"+4930219867426","params":["Ana",4016]}',
    b'{"to":"+52 (55) 8731-2240","params":["Jos\xc3\xa9",10.65],"ref":"crm-1"}',
    b'{"to":"529149876543","params":["Zo\xc3\xab",120]}',
    b'{"to":"+44 20 7946 0958","params":["\xc5\x81ukasz",3.5],"text":"Tu c\xc3\xb3digo es {0}"}',
    b'{"to":"+1.415.555.0123","params":["Nguy\xe1\xbb\x85n",0]}',
    b'{"to":"14155550123","params":["Ann",1]}',  # line 5's number: DUPLICATE
    b'{"to":"+34 612-345-678","params":["S\xc3\xb8ren",77]}\r',
    b"",
    b"   ",
    b'{"to":"+12345","params":["Kai",1]}',
    b'{"to":"+1 415 CALL NOW","params":["Kai",2]}',
    b'{"to":"0412 345 678","params":["Kai",3]}',
    b'{"to":"","params":["Kai",4]}',
    b'{"to": "+15550001111", "params": ["Ann", 1',
    b'["+15550001111", "Ann"]',
    b'{"to": 15550001111, "params": ["Ann", 1]}',
    b'{"params": ["Ann", 1]}',
    b'{"to": "+15550001111", "params": "Ann"}',
    b"to=+15550001111",
    b'{"to":"+5511987654321","params":["\xff\xfe",5]}',  # invalid UTF-8
    b'{"to":"+5511987654322","params":["' + b"x" * 300 + b'",6]}',  # too long
    b'{"to":"+5511987654323","params":["' + b"y" * 300_000 + b'",7]}',  # longer than a read
    b"\t\r",
    *(b'{"to":"+1 (415) 555-%04d","params":["Wei",%d]}' % (i, i) for i in range(200)),
    b'{"to":"+919876543210","params":["Ren\xc3\xa9e",8]}',  # the last, without a newline
]


def _send(tmp_path: Path, data: bytes, *extra: str) -> tuple[list[dict[str, Any]], list[Any], int]:
    """``send -`` on LINES against its own gateway: its results, the messages the
    gateway took, and its exit code."""
    out = tmp_path / ("workers" if extra else "single")
    out.mkdir()
    with gateway_process("--no-rate-limit", api_key=KEY) as url:
        done = _run(tmp_path, data, out, url, *extra)
        assert done.returncode in (0, 1), done.stderr.decode()
        messages, _ = ledger(url)
    results = [orjson.loads(line) for line in (out / "results.ndjson").read_bytes().splitlines()]
    for result in results:  # the gateway's ids are each run's own
        result.pop("id", None)
        result.pop("transactionId", None)
    sent = sorted((m["to"], m["text"]) for m in messages)  # ids and times are each run's
    return sorted(results, key=lambda r: r["line"]), sent, done.returncode


def _run(
    tmp_path: Path, data: bytes, out: Path, url: str, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    """``send -`` of ``data`` to the gateway at ``url``, outputs in ``out``."""
    source = tmp_path / "in.ndjson"
    source.write_bytes(data)
    env = {**os.environ, "DISPATCHER_API_KEY": KEY, "DISPATCHER_MAX_LINE_BYTES": "200"}
    with source.open("rb") as stdin:
        return subprocess.run(
            [*send_command(Path("-"), out, url, "--dedupe", "number"), *extra],
            stdin=stdin, env=env, capture_output=True, timeout=120,
        )  # fmt: skip


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_workers_from_stdin_give_what_one_process_gives(tmp_path: Path, compress: bool) -> None:
    # gzip on stdin is inflated by the parent and handed out as plain stdin is
    data = b"\n".join(LINES)
    data = members(data) if compress else data
    single, single_sent, single_code = _send(tmp_path, data)
    workers, workers_sent, workers_code = _send(tmp_path, data, "--workers", "3")
    assert [r["line"] for r in single] == [n for n, line in enumerate(LINES, 1) if line.strip()]
    assert single[5]["status"] == "DUPLICATE"
    assert workers == single
    assert workers_sent == single_sent
    assert workers_code == single_code


@pytest.mark.parametrize("cut", ["truncated", "corrupt"])
def test_a_broken_gzip_stdin_ends_the_workers_job_as_it_ends_one_process(
    tmp_path: Path, cut: str
) -> None:
    whole = gzip.compress(b"\n".join(LINES) + b"\n")
    if cut == "truncated":
        data = whole[: len(whole) - 12]  # the end marker and the last bytes are missing
    else:
        middle = len(whole) // 2
        data = whole[:middle] + bytes(b ^ 0xFF for b in whole[middle : middle + 64])
        data += whole[middle + 64 :]
    runs = {}
    with gateway_process("--no-rate-limit", api_key=KEY) as url:
        for name, extra in (("single", ()), ("workers", ("--workers", "2"))):
            out = tmp_path / name
            out.mkdir()
            runs[name] = _run(tmp_path, data, out, url, *extra)
    single, workers = runs["single"], runs["workers"]
    assert single.returncode == 3, single.stderr.decode()
    error = next(line for line in single.stderr.decode().splitlines() if "<stdin>" in line)
    assert error.startswith("dispatcher: <stdin> ")
    assert workers.returncode == single.returncode, workers.stderr.decode()
    assert workers.stderr.decode().count(error) == 1, workers.stderr.decode()
    assert "Traceback" not in workers.stderr.decode()
    reasons = [
        orjson.loads((tmp_path / name / "summary.json").read_bytes())["exit_reason"]
        for name in ("single", "workers")
    ]
    assert reasons[1] == reasons[0] == "aborted: " + error.removeprefix("dispatcher: ")
    # the job is not complete: no joined results, the workers' own are left to resume
    assert not (tmp_path / "workers" / "results.ndjson").exists()
    assert (tmp_path / "workers" / "results.ndjson.workers").exists()
