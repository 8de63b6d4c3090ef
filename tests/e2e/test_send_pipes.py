"""``producer | dispatcher send - | consumer``: NDJSON in, NDJSON out, nothing else.

A real shell pipeline of three processes. The producer writes in two bursts with a
pause between (so batches close on linger while stdin is still open); the dispatcher
runs with forced progress and debug logs in JSON, so that anything that leaked to
stdout would show; the consumer keeps exactly the bytes it received.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

import orjson

from tests.support.cli import CODE, KEY, by_line, env, parse_ndjson, render
from tests.support.emulators import EmulatorFactory

PRODUCER = """
import sys, time, json
out = sys.stdout.buffer
def burst(first, last):
    for n in range(first, last + 1):
        if n % 10 == 0:
            out.write(b"\\n")  # a blank line: no result, but it keeps the numbering
        elif n % 7 == 0:
            out.write(b'{"to": "bad-%d"}\\n' % n)
        elif n % 13 == 0:
            out.write(b"{not json\\n")
        else:
            out.write(json.dumps({"to": "+5255%08d" % n, "params": ["p%d" % n]}).encode() + b"\\n")
    out.flush()
burst(1, 60)
time.sleep(0.3)
burst(61, 120)
"""

CONSUMER = """
import sys
data = sys.stdin.buffer.read()
open(sys.argv[1], "wb").write(data)
"""


async def test_stdin_to_stdout_carries_only_result_lines(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    (tmp_path / "producer.py").write_text(PRODUCER)
    (tmp_path / "consumer.py").write_text(CONSUMER)
    py = shlex.quote(sys.executable)
    send = [
        "-m", "dispatcher", "send", "-",
        "--from", CODE, "--text", "Hi {0}",
        "--base-url", emulator.base_url,
        "--rate", f"{CODE}=inf",
        "--progress", "--log-level", "debug", "--log-format", "json",
        "--summary", "summary.json",
    ]  # fmt: skip
    command = (
        f"{py} producer.py | {py} {shlex.join(send)} 2> stderr.txt | {py} consumer.py got.ndjson"
        '; echo "${PIPESTATUS[@]}" > codes.txt'
    )
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=tmp_path, env=env(), stdin=asyncio.subprocess.DEVNULL
    )
    await asyncio.wait_for(proc.wait(), 60)
    assert (tmp_path / "codes.txt").read_text().split() == ["0", "0", "0"], (
        tmp_path / "stderr.txt"
    ).read_text()

    data = (tmp_path / "got.ndjson").read_bytes()
    results = parse_ndjson(data, where="the dispatcher's stdout")  # every line is JSON
    got = by_line(results)
    expected_lines = {n for n in range(1, 121) if n % 10}
    assert set(got) == expected_lines
    for n, result in got.items():
        want = "INVALID_NUMBER" if n % 7 == 0 else "REJECTED" if n % 13 == 0 else "QUEUE"
        assert result["status"] == want, result
    texts = {m["to"]: m["text"] for m in emulator.messages()}
    assert texts == {
        f"+5255{n:08d}": render("Hi {0}", [f"p{n}"]) for n in expected_lines if n % 7 and n % 13
    }

    stderr = (tmp_path / "stderr.txt").read_text()
    assert "lines" in stderr  # the summary table went to stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["lines"] == len(expected_lines)


async def test_results_stream_out_while_stdin_is_still_open(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A piped job must not hold results until the producer finishes: the lines written
    so far come back (after the linger) while stdin stays open."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", "send", "-",
        "--from", CODE, "--text", "Hi {0}", "--base-url", emulator.base_url,
        cwd=tmp_path,
        env=env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(b'{"to": "+525500000001", "params": ["a"]}\n{"to": "bad"}\n')
        await proc.stdin.drain()
        early = [orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) for _ in "ab"]
        assert sorted((r["line"], r["status"]) for r in early) == [
            (1, "QUEUE"),
            (2, "INVALID_NUMBER"),
        ]
        proc.stdin.write(b'{"to": "+525500000003", "params": ["c"]}')  # no final newline
        proc.stdin.close()
        rest = await asyncio.wait_for(proc.stdout.read(), 20)
        assert [orjson.loads(x)["line"] for x in rest.splitlines()] == [3]
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
