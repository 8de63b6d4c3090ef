"""The API key appears nowhere — stdout, stderr, results, invalid numbers, summary,
journal — not even a run of 8 of its characters: whether a gateway echoes the
``Authorization`` header into an error body (cut by the 120-character snippet at every
offset of the key) or into ids, transaction ids, explanations and invalid numbers;
whatever the user types on the command line; whatever the key file holds."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from tests.support.cli import CODE, KEY, Run, dispatcher, env, ndjson, write_lines
from tests.support.stub_gateway import accepted, stub_gateway

PREFIX = "bad request: we got Authorization: Bearer "


def runs_of_key(length: int = 8) -> list[str]:
    return [KEY[i : i + length] for i in range(len(KEY) - length + 1)]


def assert_no_run_of_the_key(run: Run, directory: Path) -> None:
    """Neither the key nor any 8 characters of it in the run's output or files."""
    texts = {"stdout": run.stdout.decode("utf-8", "replace"), "stderr": run.stderr}
    for path in directory.rglob("*"):
        if path.is_file() and path.name not in ("key.txt", "in.ndjson"):
            texts[path.name] = path.read_bytes().decode("utf-8", "replace")
    assert any(name.endswith(".journal") for name in texts), "the journal was not written"
    for name, text in texts.items():
        for piece in runs_of_key():
            assert piece not in text, f"{piece!r} of the key is in {name}"


def recipients(count: int) -> list[dict[str, object]]:
    return [{"to": f"+5255{n:08d}", "params": [str(n)]} for n in range(count)]


async def test_an_echoed_authorization_header_is_masked_wherever_the_snippet_cuts_it(
    tmp_path: Path,
) -> None:
    # Request n gets a body whose first 120 characters end k = n characters into the
    # key (then the whole key, then the key twice further on): every cut is tried.
    cuts = len(KEY) + 3
    counter = itertools.count()

    async def echo(request: web.Request) -> web.Response:
        n = next(counter)
        header = request.headers["Authorization"]
        pad = "." * max(0, 120 - len(PREFIX) - n)
        body = f"{pad}{PREFIX}{header.removeprefix('Bearer ')} and again {header}"
        if n % 2:
            return web.Response(status=400, text=body)  # text: the snippet is shown
        return web.json_response({"meta": {"explain": body}}, status=400)

    source = write_lines(tmp_path / "in.ndjson", recipients(cuts))
    async with stub_gateway(echo) as gateway:
        run = await dispatcher(
            "send", source, "--from", CODE, "--text", "Hi {0}",
            "--base-url", gateway.base_url, "--batch-size", "1", "--concurrency", "1",
            "--results", "results.ndjson", "--invalid", "invalid.ndjson",
            "--summary", "summary.json", "--log-level", "debug",
            cwd=tmp_path,
        )  # fmt: skip
    assert run.code == 1, run.stderr
    assert len(gateway.sends) == cuts
    results = ndjson(tmp_path / "results.ndjson")
    assert len(results) == cuts
    assert all(r["status"] == "FAILED" for r in results)
    assert all("Bearer *" in r["error"] for r in results)  # the mask, maybe cut itself
    assert_no_run_of_the_key(run, tmp_path)


async def test_a_key_echoed_into_ids_and_transaction_ids_reaches_the_results_masked(
    tmp_path: Path,
) -> None:
    ids = itertools.count()
    refused = "+552500000003"

    async def echo(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        return accepted(
            orjson.loads(await request.read()),
            ids=ids,
            id_of=lambda n: f"{key[n % 5 :]}-{n}",
            transaction_id=f"tx-{key[2:14]}",
            explain=f"accepted for {key}",
            invalid=[refused, key[1:11]],
        )

    lines = [*recipients(3), {"to": refused, "params": ["x"]}, *recipients(8)[3:]]
    source = write_lines(tmp_path / "in.ndjson", lines)
    async with stub_gateway(echo) as gateway:
        run = await dispatcher(
            "send", source, "--from", CODE, "--text", "Hi {0}",
            "--base-url", gateway.base_url, "--batch-size", "3",
            "--results", "results.ndjson", "--invalid", "invalid.ndjson",
            "--summary", "summary.json", "--log-level", "debug", "--log-format", "json",
            cwd=tmp_path,
        )  # fmt: skip
    results = ndjson(tmp_path / "results.ndjson")
    assert len(results) == len(lines), run.stderr
    queued = [r for r in results if r["status"] == "QUEUE"]
    assert len(queued) == len(lines) - 1
    assert all(r["id"].startswith("********-") for r in queued)
    assert all(r["transactionId"] == "tx-********" for r in results)
    assert [r["line"] for r in results if r["status"] == "INVALID_NUMBER"] == [4]
    assert_no_run_of_the_key(run, tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ["--api-key", KEY],
        [f"--api-key={KEY}"],
        ["--api-key-fil", KEY],
        ["--token", KEY],
        ["--bogus", KEY],
        ["--api-key", f"-{KEY}"],
        [f"-{KEY}"],
        [f"--resume={KEY}"],
        [f"-h{KEY}"],
    ],
    ids=lambda argv: " ".join(a.replace(KEY, "K") for a in argv),
)
async def test_a_key_typed_on_the_command_line_is_never_echoed(
    tmp_path: Path, argv: list[str]
) -> None:
    source = write_lines(tmp_path / "in.ndjson", recipients(1))
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi", *argv, "--dry-run",
        cwd=tmp_path,
        environ=env(api_key=None),
    )  # fmt: skip
    assert run.code == 2, run.stderr
    assert "Traceback" not in run.stderr
    for piece in runs_of_key():
        assert piece not in run.stderr
    assert run.stdout == b""


async def send_with_key_file(tmp_path: Path, key_file: str) -> Run:
    """``send --api-key-file KEY_FILE`` (no key in the environment); it must exit 2
    before sending, without a traceback or any run of the key."""
    source = write_lines(tmp_path / "in.ndjson", recipients(1))
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi", "--api-key-file", key_file,
        "--base-url", "http://127.0.0.1:9/raven",
        cwd=tmp_path,
        environ=env(api_key=None),
        timeout=20,  # /dev/zero read to the end would never finish
    )  # fmt: skip
    assert run.code == 2, run.stderr
    assert "Traceback" not in run.stderr
    for piece in runs_of_key():
        assert piece not in run.stderr
    return run


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe" + KEY.encode() + b"\x80\n", ["not UTF-8"]),
        (b"\n  \n", ["is empty"]),
        (b"k" * (64 * 1024 + 1), ["larger than 64 KiB"]),
        (("caf\u00e9-" + KEY).encode(), ["printable ASCII"]),
    ],
    ids=["not-utf8", "blank", "too-big", "not-ascii"],
)
async def test_a_bad_key_file_is_exit_2_without_its_content(
    tmp_path: Path, content: bytes, words: list[str]
) -> None:
    (tmp_path / "key.txt").write_bytes(content)
    run = await send_with_key_file(tmp_path, "key.txt")
    for word in words:
        assert word in run.stderr
    assert "kkkkkkkk" not in run.stderr


async def test_dev_zero_as_key_file_is_refused_at_once(tmp_path: Path) -> None:
    run = await send_with_key_file(tmp_path, "/dev/zero")
    assert "larger than 64 KiB" in run.stderr


async def test_a_key_given_as_the_key_file_s_name_is_not_echoed(tmp_path: Path) -> None:
    run = await send_with_key_file(tmp_path, KEY)
    assert "does not exist" in run.stderr
