"""``dispatcher receiver`` in a subprocess: the listening line, the secret, loopback
without one, reports acknowledged only once written (503 on a full disk, nothing lost),
bounded memory and time per request, and every bad option refused before listening."""

from __future__ import annotations

import asyncio
import io
import re
import resource
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support.cli import dispatcher, env, ndjson
from tests.support.receiver import post

SECRET = "e2e-rcv-Hq8wN3zLk5Pt2Xv"


async def start(
    *args: str, environ: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher",
        "receiver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ if environ is not None else env(None),
    )
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    return proc, first


def base_url(first: str) -> str:
    match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", first)
    assert match, first
    return match[1]


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    return stderr.decode()


def report(i: int) -> bytes:
    return orjson.dumps({"id": f"m{i}", "status": "DELIVRD", "to": "+525500000001"})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_reports_are_written_before_the_answer_and_a_signal_exits_0(
    tmp_path: Path, sig: signal.Signals, session: aiohttp.ClientSession
) -> None:
    out = tmp_path / "dr.ndjson"
    proc, first = await start(
        "--port", "0", "--out", str(out), environ=env(None, DISPATCHER_RECEIVER_SECRET=SECRET)
    )
    url = f"{base_url(first)}/dr/{SECRET}"
    for i in range(20):
        assert await post(session, url, report(i)) == (200, {"received": 1})
    status, answer = await post(session, url, b"oops")
    assert status == 400
    assert answer["error"].startswith("body is not JSON")
    # acknowledged, so already in the file: no flush tick, no shutdown needed
    assert [line["id"] for line in ndjson(out)] == [f"m{i}" for i in range(20)]
    stderr = await stop(proc, sig)
    assert proc.returncode == 0, stderr
    assert [line["id"] for line in ndjson(out)] == [f"m{i}" for i in range(20)]
    assert "20 delivery reports written" in stderr
    assert "1 malformed bodies refused, 0 not kept" in stderr
    assert "no secret" not in stderr
    assert "Traceback" not in stderr


async def test_a_wrong_secret_gets_401_and_nothing_is_stored(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    out = tmp_path / "dr.ndjson"
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    proc, first = await start("--port", "0", "--out", str(out), "--secret-file", str(secret_file))
    base = base_url(first)
    assert SECRET not in first
    for path in ("/dr", f"/dr/{SECRET[:-1]}X", "/_receiver/stats"):
        assert (await post(session, base + path, report(0)))[0] == 401
        assert (await post(session, base + path, b"not json"))[0] == 401
    async with session.get(base + "/_receiver/stats") as r:
        assert r.status == 401
    async with session.get(f"{base}/_receiver/stats/{SECRET}") as r:
        assert (await r.json())["unauthorized"] == 7
    forged = orjson.dumps({"id": "a", "callback": f"{base}/dr/{SECRET}"})
    assert await post(session, f"{base}/dr/{SECRET}", forged) == (200, {"received": 1})
    stderr = await stop(proc)
    assert proc.returncode == 0, stderr
    assert [line["id"] for line in ndjson(out)] == ["a"]
    assert SECRET not in out.read_text() + stderr  # the echoed callback URL is masked
    assert "7 requests without the secret" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dr.ndjson", "secret"]


async def test_without_a_secret_it_says_so_and_stays_on_loopback(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    proc, first = await start("--port", "0", "--out", str(out))
    base_url(first)
    stderr = await stop(proc)
    assert proc.returncode == 0
    assert "no secret: listening on loopback only; anyone on this host can post reports" in stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10"])
async def test_beyond_loopback_without_a_secret_exits_2(tmp_path: Path, host: str) -> None:
    run = await dispatcher(
        "receiver", "--host", host, "--port", "0", "--out", tmp_path / "dr.ndjson", cwd=tmp_path
    )
    assert run.code == 2
    assert run.stdout == b""
    assert "without a secret" in run.stderr
    assert "--secret-file" in run.stderr
    assert not (tmp_path / "dr.ndjson").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"short\n", "5 characters"),
        (b"with/a/slash/and-long-enough\n", "escaped"),
        (b"\xffnot-utf8-but-long-enough", "not UTF-8"),
        (b"\n\n", "empty"),
    ],
)
async def test_a_bad_secret_file_exits_2_without_showing_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(content)
    run = await dispatcher(
        "receiver", "--port", "0", "--out", "dr.ndjson", "--secret-file", secret_file, cwd=tmp_path
    )
    assert run.code == 2, run.stderr
    assert problem in run.stderr
    assert "Traceback" not in run.stderr
    shown = content.strip().decode("utf-8", "replace")
    assert not shown or shown not in run.stderr


async def test_an_endless_secret_file_and_a_bad_env_secret_exit_2(tmp_path: Path) -> None:
    run = await dispatcher(
        "receiver", "--port", "0", "--out", "dr.ndjson", "--secret-file", "/dev/zero", cwd=tmp_path
    )
    assert (run.code, "larger than 64 KiB" in run.stderr) == (2, True)
    bad = "has spaces in it, too many"
    run = await dispatcher(
        "receiver",
        "--port",
        "0",
        "--out",
        "dr.ndjson",
        cwd=tmp_path,
        environ=env(None, DISPATCHER_RECEIVER_SECRET=bad),
    )
    assert run.code == 2
    assert "DISPATCHER_RECEIVER_SECRET" in run.stderr
    assert bad not in run.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--flush-interval", "0"],
        ["--flush-interval", "-1"],
        ["--flush-interval", "nan"],
        ["--flush-interval", "inf"],
        ["--read-timeout", "0"],
        ["--max-body", "0"],
        ["--max-reports", "many"],
        ["--max-malformed", "-1"],
        ["--port", "65536"],
        ["--port", "-1"],
        ["--secret", SECRET],  # no such option, and its value is not echoed
        ["--secret-f", "x"],  # no abbreviations
    ],
)
async def test_bad_options_exit_2_before_listening(tmp_path: Path, args: list[str]) -> None:
    run = await dispatcher("receiver", "--out", "dr.ndjson", *args, cwd=tmp_path, timeout=30)
    assert run.code == 2, run.stderr
    assert run.stdout == b""
    assert "Traceback" not in run.stderr
    assert SECRET not in run.stderr
    assert not (tmp_path / "dr.ndjson").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--out", "same.ndjson", "--malformed", "same.ndjson"],
        ["--out", "secret", "--secret-file", "secret"],
        ["--out", "dr.ndjson", "--malformed", "secret", "--secret-file", "secret"],
        ["--out", "link", "--secret-file", "secret"],
    ],
)
async def test_outputs_never_touch_the_secret_file_or_each_other(
    tmp_path: Path, args: list[str]
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    (tmp_path / "link").symlink_to(secret_file)
    run = await dispatcher("receiver", "--port", "0", *args, cwd=tmp_path, timeout=30)
    assert run.code == 2, run.stderr
    assert "give each output its own file" in run.stderr
    assert secret_file.read_text() == SECRET + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "secret"]


@pytest.mark.parametrize("where", ["directory", "missing-folder"])
async def test_an_unwritable_output_exits_3_before_listening(tmp_path: Path, where: str) -> None:
    target = tmp_path if where == "directory" else tmp_path / "missing" / "dr.ndjson"
    run = await dispatcher("receiver", "--port", "0", "--out", target, cwd=tmp_path, timeout=30)
    assert run.code == 3, run.stderr
    assert run.stdout == b""
    assert "cannot write --out" in run.stderr


async def test_a_full_disk_gets_503_and_no_acknowledged_report_is_lost(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # The disk "fills up" for real: a file-size limit (RLIMIT_FSIZE) on the receiver
    # process, set and lifted from outside with prlimit; no privileges, no mounts.
    out = tmp_path / "dr.ndjson"
    proc, first = await start("--port", "0", "--out", str(out), "--fsync")
    url = base_url(first) + "/dr"
    _, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1000, hard))
    acknowledged, refused = [], 0
    for i in range(40):  # ~60 bytes a line: the limit is reached half-way, mid-line
        status, answer = await post(session, url, report(i))
        if status == 200:
            acknowledged.append(f"m{i}")
        else:
            assert status == 503
            assert "File too large" in answer["error"]
            refused += 1
    assert acknowledged
    assert refused
    # a torn line never appears, not even while the disk is full
    assert [line["id"] for line in ndjson(out)] == acknowledged
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))  # space again
    for i in range(40, 45):
        assert await post(session, url, report(i)) == (200, {"received": 1})
        acknowledged.append(f"m{i}")
    stderr = await stop(proc)
    assert proc.returncode == 0, stderr
    assert [line["id"] for line in ndjson(out)] == acknowledged
    assert f"{refused} requests answered 503" in stderr
    assert "cannot write delivery reports: File too large" in stderr
    assert stderr.count("cannot write delivery reports") == 1  # logged once, not per request
    assert "writing delivery reports again" in stderr
    assert "Traceback" not in stderr


async def test_an_output_removed_for_good_exits_3(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    proc, first = await start("--port", "0", "--out", str(folder / "dr.ndjson"))
    assert await post(session, base_url(first) + "/dr", report(1)) == (200, {"received": 1})
    (folder / "dr.ndjson").unlink()
    folder.rmdir()  # nowhere to re-create it
    stderr = await stop(proc)
    assert proc.returncode == 3, stderr
    assert "was removed and cannot be re-created" in stderr
    assert "Traceback" not in stderr


async def test_broken_requests_are_one_line_in_the_log_not_a_traceback(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    out = tmp_path / "dr.ndjson"
    proc, first = await start("--port", "0", "--out", str(out))
    base = base_url(first)
    port = int(base.rpartition(":")[2])
    for _ in range(12):  # bad chunked framing: aiohttp's own 400
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /dr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 30)).startswith(b"HTTP/1.0 400 ")
        writer.close()
    for _ in range(3):  # a client that hangs up half-way through its body
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /dr HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /dr HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 8\r\n"
        b"\r\nnot gzip"
    )
    assert (await asyncio.wait_for(reader.read(), 30)).startswith(b"HTTP/1.1 400 ")
    writer.close()
    assert await post(session, base + "/dr", report(1)) == (200, {"received": 1})
    stderr = await stop(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.count("Invalid character in chunk size") == 2  # the 1st and the 10th
    assert "(10 so far)" in stderr
    assert "the body cannot be read: Can not decode content-encoding: gzip" in stderr
    assert [line["id"] for line in ndjson(out)] == ["m1"]


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_memory_stays_bounded_whatever_the_body(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    out = tmp_path / "dr.ndjson"
    proc, first = await start("--port", "0", "--out", str(out))
    url = base_url(first) + "/dr"
    before = peak_rss_mib(proc.pid)
    one = {"id": "611b3a42c5f7904590c17d1f", "status": "DELIVRD", "to": "+525500000001"}
    big = orjson.dumps([one] * 200_000)  # ~13 MB of valid reports
    status, answer = await post(session, url, io.BytesIO(big))
    assert status == 413
    assert "limit" in answer["error"]
    status, answer = await post(session, url, orjson.dumps([one] * 1001))
    assert (status, answer) == (413, {"error": "1001 reports in one request; at most 1000"})
    assert await post(session, url, orjson.dumps([one] * 1000)) == (200, {"received": 1000})
    grown = peak_rss_mib(proc.pid) - before
    await stop(proc)
    assert grown < 100, f"peak RSS grew by {grown} MiB"  # it grew by ~500 MiB before


async def test_a_stalled_request_is_cut_off(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    proc, first = await start("--port", "0", "--out", str(out), "--read-timeout", "0.5")
    port = int(base_url(first).rpartition(":")[2])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /dr HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)  # bounded wait, not a timing assert
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    stderr = await stop(proc)
    assert proc.returncode == 0
    assert "1 requests timed out" in stderr
    assert out.read_bytes() == b""
