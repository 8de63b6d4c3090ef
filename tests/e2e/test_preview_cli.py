"""``dispatcher preview`` in a subprocess on real files: table, JSON, limits, samples,
gzip, stdin and usage errors — with no API key and nothing listening anywhere."""

from __future__ import annotations

import asyncio
import gzip
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.cli import (
    ALPHA,
    CODE,
    RUN_TIMEOUT,
    dispatcher,
    env,
    parse_ndjson,
    write_lines,
)

TEXT = "Hi {0}, you owe {1}"
LINES = [
    {"to": "+525500000001", "params": ["Ana", 10.65]},
    {"to": "52 (55) 0000-0002", "params": ["O’Brien " + "x" * 60, 20.5]},  # UCS-2: 2 → 1
    {"to": "+15005550006", "params": ["Zoë 🎉", 3]},
    {"to": "12ab", "params": ["x", 1]},
    "",
    "{oops",
    {"to": "+447700900123", "params": ["Carl"]},
    {"to": "+17875550100", "text": "Code {0}", "from": ALPHA, "params": ["4417"]},
]
ARGS = ["--from", CODE, "--text", TEXT]


async def preview(
    tmp_path: Path, *args: str | Path, stdin: bytes | None = None, **environ: str
) -> tuple[int, str, str]:
    """Run ``dispatcher preview ARGS`` with no API key, 100 columns wide."""
    environ = env(api_key=None, COLUMNS="100", **environ)
    run = await dispatcher("preview", *args, cwd=tmp_path, stdin=stdin, environ=environ)
    assert "Traceback" not in run.stderr, run.stderr
    return run.code, run.stdout.decode(), run.stderr


async def test_the_table(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", LINES)
    code, out, err = await preview(
        tmp_path, source, *ARGS, "--price-per-segment", "0.01", "--price", "52=0.03"
    )
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["LINE", "NUMBER", "ENC", "SEG", "COST", "TEXT"]
    assert lines[1] == "      1  +525500000001     GSM7    1    0.03  Hi Ana, you owe 10.65"
    assert "written 52 (55) 0000-0002" in out
    assert "UCS-2 because of ’ U+2019 at 4 → '" in out
    assert "smart encoding makes it GSM7, 1 segment: saves 1 segment" in out
    assert "🎉 U+1F389 at 7 (no GSM-7 look-alike)" in out
    assert "12ab              INVALID_NUMBER: has letters" in out
    assert "REJECTED: invalid JSON" in out
    assert "REJECTED: template needs param {1} but the line has 1 param" in out
    assert "from COMPANY, its own text" in out
    assert "7 lines previewed (every line of the input): 4 OK, 2 REJECTED, 1 INVALID_NUMBER" in out
    assert "would send 4 messages, 5 segments" in out
    assert "cost: 0.11 (0.01 per segment; 1 prefix priced apart)" in out
    assert "smart encoding would make 1 line GSM-7 and save 1 segment (--smart-encoding)" in out


async def test_json_rows_and_the_totals_on_stderr(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", LINES)
    code, out, err = await preview(tmp_path, source, *ARGS, "--json", "--segment-model", "3gpp")
    assert code == 0, err
    rows = parse_ndjson(out.encode())
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 6, 7, 8]
    statuses = ["OK", "OK", "OK", "INVALID_NUMBER", "REJECTED", "REJECTED", "OK"]
    assert [r["status"] for r in rows] == statuses
    two = rows[1]
    assert (two["to"], two["number"], two["from"]) == ("52 (55) 0000-0002", "+525500000002", CODE)
    assert (two["encoding"], two["segments"]) == ("UCS2", 2)
    assert two["non_gsm"] == [
        {
            "char": "’",
            "code": "U+2019",
            "name": "RIGHT SINGLE QUOTATION MARK",
            "at": [4],
            "replacement": "'",
        }
    ]
    assert two["smart"]["segments"] == 1
    assert two["smart"]["saved"] == 1
    assert two["cost"] is None  # no prices given
    assert (rows[6]["from"], rows[6]["own_text"], rows[6]["text"]) == (ALPHA, True, "Code 4417")
    assert "7 lines previewed" in err


async def test_limit_and_smart_encoding(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", LINES)
    code, out, err = await preview(tmp_path, source, *ARGS, "--limit", "2", "--smart-encoding")
    assert code == 0, err
    assert "2 lines previewed (the first 2): 2 OK" in out
    assert "smart encoding replaced 1 (was UCS2, 2 segments, saved 1 segment)" in out
    assert "would send 2 messages, 2 segments (GSM7 2 messages, 2 segments)" in out
    assert "      3  " not in out


async def test_a_seeded_sample_is_repeatable(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.ndjson", [{"to": f"+5255000{n:05}", "params": [n, 1]} for n in range(500)]
    )
    runs = [
        await preview(tmp_path, source, *ARGS, "--sample", "5", "--seed", "42", "--json")
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    code, out, err = runs[0]
    assert code == 0, err
    lines = [r["line"] for r in parse_ndjson(out.encode())]
    assert len(lines) == 5
    assert lines == sorted(lines)
    assert "a random sample of 5 of 500 lines, seed 42" in err
    code, _, err = await preview(tmp_path, source, *ARGS, "--sample", "5", "--json")
    assert code == 0, err
    assert "seed " in err  # the random seed is shown, so the sample can be repeated


async def test_gzip_and_stdin(tmp_path: Path) -> None:
    plain = write_lines(tmp_path / "in.ndjson", LINES)
    gz = tmp_path / "in.ndjson.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    code, from_file, err = await preview(tmp_path, plain, *ARGS, "--json")
    assert code == 0, err
    code, from_gz, err = await preview(tmp_path, gz, *ARGS, "--json")
    assert code == 0, err
    code, from_stdin, err = await preview(tmp_path, "-", *ARGS, "--json", stdin=plain.read_bytes())
    assert code == 0, err
    assert from_file == from_gz == from_stdin
    assert len(from_file.splitlines()) == 7


async def test_an_open_pipe_is_not_waited_for_once_the_limit_is_read(tmp_path: Path) -> None:
    # `producer | dispatcher preview - --limit 3`: the producer has not finished (stdin
    # stays open), yet the preview of its first lines ends.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", "preview", *ARGS, "--limit", "3", "--json",
        cwd=tmp_path,
        env=env(api_key=None),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(b"".join(orjson.dumps(line) + b"\n" for line in LINES[:4]))
    await proc.stdin.drain()
    try:
        out = await asyncio.wait_for(proc.stdout.read(), RUN_TIMEOUT)
        assert await asyncio.wait_for(proc.wait(), RUN_TIMEOUT) == 0
    finally:
        proc.stdin.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert [r["line"] for r in parse_ndjson(out)] == [1, 2, 3]


async def test_the_config_file_and_the_environment(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", LINES[:1])
    config = tmp_path / "campaign.toml"
    # The whole campaign file is accepted (send's sections too), as send reads it.
    config.write_text(
        f'[message]\nfrom = "{CODE}"\ntext = "Hello {{0}}"\n[sending]\nbatch_size = 10\n'
    )
    code, out, err = await preview(tmp_path, source, "--config", config, "--json")
    assert code == 0, err
    assert parse_ndjson(out.encode())[0]["text"] == "Hello Ana"
    code, out, err = await preview(
        tmp_path, source, "--config", config, "--json", DISPATCHER_TEXT="Hey {0}"
    )
    assert code == 0, err
    assert parse_ndjson(out.encode())[0]["text"] == "Hey Ana"
    code, out, err = await preview(
        tmp_path, source, "--config", config, "--text", "Yo {0}", "--json", DISPATCHER_TEXT="x"
    )
    assert parse_ndjson(out.encode())[0]["text"] == "Yo Ana"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", TEXT], "a sender code is needed: --from CODE"),
        (["--from", CODE], "a text is needed: --text T or --text-file F"),
        (["--from", CODE, "--text", "Hi {1000}"], "placeholder {1000} is above {999}"),
        ([*ARGS, "--seed", "1"], "--seed goes with --sample N"),
        ([*ARGS, "--limit", "0"], "--limit must be at least 1"),
        ([*ARGS, "--sample", "0"], "--sample must be at least 1"),
        ([*ARGS, "--limit", "1", "--sample", "1"], "not allowed with argument"),
        ([*ARGS, "--price", "44=0.04"], "a price table needs price_per_segment too"),
        ([*ARGS, "--price-per-segment", "1", "--price", "0=1"], "'0' is not a number prefix"),
        ([*ARGS, "--price-per-segment", "1", "--price", "44=-1"], "--price 44 must be a finite"),
        ([*ARGS, "--segment-model", "gsm"], "invalid choice"),
        ([*ARGS, "--text-file", "nope.txt"], "give --text or --text-file, not both"),
        (["--from", CODE, "--text-file", "nope.txt"], "cannot read --text-file nope.txt"),
        ([*ARGS, "--config", "nope.toml"], "config file nope.toml does not exist"),
        ([*ARGS, "--api-key", "s3cret"], "unrecognized arguments: --api-key"),
    ],
)
async def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    source = write_lines(tmp_path / "in.ndjson", LINES)
    code, out, err = await preview(tmp_path, source, *args)
    assert code == 2, err
    assert message in err
    assert out == ""
    assert "s3cret" not in err


async def test_bad_inputs(tmp_path: Path) -> None:
    code, out, err = await preview(tmp_path, "missing.ndjson", *ARGS)
    assert (code, out) == (2, "")
    assert "input missing.ndjson does not exist" in err
    code, out, err = await preview(tmp_path, tmp_path, *ARGS)
    assert (code, out) == (2, "")
    assert "is not a file" in err
    (tmp_path / "fake.gz").write_bytes(b'{"to": "+525500000001"}\n')
    code, out, err = await preview(tmp_path, "fake.gz", *ARGS)
    assert (code, out) == (2, "")
    assert "is named .gz but is not gzip data" in err
    whole = gzip.compress(b"".join(orjson.dumps(line) + b"\n" for line in LINES[:3]) * 50)
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) - 12])
    code, out, err = await preview(tmp_path, "cut.gz", *ARGS, "--sample", "2")
    assert code == 3
    assert "cut.gz is truncated" in err


@pytest.mark.parametrize("model", ["flat", "3gpp"])
async def test_the_same_decisions_as_a_dry_run_of_send(tmp_path: Path, model: str) -> None:
    lines = [
        *LINES,
        {"to": "+525500000020", "params": ["ж" * 135, 1]},
        {"to": "+525500000021", "params": ["a" * 1700, 1]},  # SEGMENTS_EXCEEDED
        {"to": "+525500000022", "params": ["a" * 152 + "€" + "a" * 140, 1]},
        {"to": "+525500000023", "from": "", "params": ["x", 1]},
        {"to": "+525500000024", "params": [None, 1]},
    ]
    source = write_lines(tmp_path / "in.ndjson", lines)
    args = [*ARGS, "--segment-model", model, "--price-per-segment", "0.25"]
    sent = await dispatcher(
        "send", source, *args, "--dry-run", "--results", "results.ndjson",
        "--summary", "summary.json", "--no-progress",
        cwd=tmp_path, environ=env(api_key=None),
    )  # fmt: skip
    assert sent.code == 0, sent.stderr
    results = {r["line"]: r for r in parse_ndjson((tmp_path / "results.ndjson").read_bytes())}
    code, out, err = await preview(tmp_path, source, *args, "--json", "--limit", "100")
    assert code == 0, err
    rows = {r["line"]: r for r in parse_ndjson(out.encode())}
    assert set(rows) == set(results)
    for line, result in results.items():
        row = rows[line]
        status = "OK" if result["status"] == "DRY_RUN" else result["status"]
        assert (row["status"], row.get("error")) == (status, result.get("error")), line
        if status == "OK":
            assert (row["number"], row["segments"], row["encoding"]) == (
                result["to"],
                result["segments"],
                result["encoding"],
            ), line
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert sum(r["cost"] for r in rows.values()) == pytest.approx(summary["cost"])


def test_a_closed_pipe_ends_it_quietly(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.ndjson", [{"to": f"+5255{n:08}", "params": ["a", 1]} for n in range(5000)]
    )
    command = [sys.executable, "-m", "dispatcher", "preview", str(source), *ARGS, "--limit", "5000"]
    script = f"{shlex.join(command)} | head -1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env(api_key=None),
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.split() == [b"LINE", b"NUMBER", b"ENC", b"SEG", b"TEXT"]
