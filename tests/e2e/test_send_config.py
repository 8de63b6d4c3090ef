"""Usage and configuration errors (exit 2, a message naming the problem, nothing on
stdout, no traceback), exit codes 0/1 of completed runs, and the summary's schema."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiohttp import web

from tests.support.cli import CODE, KEY, by_line, dispatcher, env, write_lines
from tests.support.emulators import EmulatorFactory
from tests.support.stub_gateway import stub_gateway

BASE = "http://127.0.0.1:9/raven"  # never contacted: every case fails before sending


@pytest.mark.parametrize(
    ("case", "args", "toml", "with_key", "expected"),
    [
        (
            "unknown TOML key",
            ["--config", "c.toml"],
            "[sending]\nbatchsize = 5\n",
            True,
            ["batchsize", "batch_size"],
        ),
        ("unknown TOML section", ["--config", "c.toml"], "[sendin]\n", True, ["sendin"]),
        (
            "bad TOML value",
            ["--config", "c.toml"],
            '[sending]\nconcurrency = "many"\n',
            True,
            ["concurrency", "many"],
        ),
        ("TOML that is not TOML", ["--config", "c.toml"], "[sending\n", True, ["TOML"]),
        ("missing config file", ["--config", "nope.toml"], None, True, ["nope.toml"]),
        ("bad flag value", ["--batch-size", "0"], None, True, ["--batch-size"]),
        ("bad base URL", ["--base-url", "ftp://x"], None, True, ["--base-url", "http://"]),
        ("missing --from", ["--no-from"], None, True, ["--from"]),
        ("missing --text", ["--no-text"], None, True, ["--text"]),
        ("missing API key", [], None, False, ["API key", "DISPATCHER_API_KEY"]),
        ("missing key file", ["--api-key-file", "nokey"], None, False, ["API key file"]),
        (
            "--text with --text-file",
            ["--text-file", "t.txt"],
            None,
            True,
            ["--text", "--text-file"],
        ),
        ("nonexistent input", ["--input", "missing.ndjson"], None, True, ["missing.ndjson"]),
        ("--rate without =", ["--rate", "12345"], None, True, ["--rate", "12345"]),
        ("--rate not a number", ["--rate", "12345=fast"], None, True, ["--rate 12345", "fast"]),
        ("--rate zero", ["--rate", "12345=0"], None, True, ["--rate 12345", "positive"]),
        ("--rate without code", ["--rate", "=5"], None, True, ["--rate"]),
        ("--resume with --force", ["--resume", "--force"], None, True, ["--resume", "--force"]),
    ],
)
async def test_config_errors_exit_2_naming_the_problem(
    tmp_path: Path,
    case: str,
    args: list[str],
    toml: str | None,
    with_key: bool,
    expected: list[str],
) -> None:
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["a"]}])
    (tmp_path / "t.txt").write_text("Hello {0}\n")
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
    args = list(args)
    message = [] if "--no-from" in args else ["--from", CODE]
    message += [] if "--no-text" in args else ["--text", "Hi {0}"]
    args = [a for a in args if a not in ("--no-from", "--no-text")]
    if "--input" in args:
        at = args.index("--input")
        source = tmp_path / args[at + 1]
        del args[at : at + 2]
    run = await dispatcher(
        "send",
        source,
        "--base-url",
        BASE,
        *message,
        *args,
        "--results",
        "results.ndjson",
        cwd=tmp_path,
        environ=env(api_key=KEY if with_key else None),
    )
    assert run.code == 2, (case, run.code, run.stderr)
    assert run.stdout == b""
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith(("dispatcher: ", "usage: ")), run.stderr
    for word in expected:
        assert word in run.stderr, (case, word, run.stderr)
    assert "nokey" not in run.stderr  # a key file's name is not shown unless it exists
    assert not (tmp_path / "results.ndjson").exists(), "nothing is written on a usage error"


async def test_a_bad_environment_value_is_exit_2(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["a"]}])
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi {0}", "--base-url", BASE,
        cwd=tmp_path,
        environ=env(DISPATCHER_CONCURRENCY="lots"),
    )  # fmt: skip
    assert run.code == 2, run.stderr
    assert "DISPATCHER_CONCURRENCY" in run.stderr
    assert "Traceback" not in run.stderr


async def test_a_config_file_sets_the_job_and_flags_win(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    (tmp_path / "c.toml").write_text(
        f'[gateway]\nbase_url = "{emulator.base_url}"\n'
        '[message]\nfrom = "11111"\ntext = "From file {0}"\nexternal_id = "job-7"\n'
        '[output]\nresults = "from-file.ndjson"\n'
    )
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["a"]}])
    run = await dispatcher(
        "send", source, "--config", "c.toml", "--from", CODE, "--no-progress", cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    [result] = [
        orjson.loads(line) for line in (tmp_path / "from-file.ndjson").read_bytes().splitlines()
    ]
    assert result["status"] == "QUEUE"
    [message] = emulator.messages()
    assert (message["from"], message["text"], message["externalId"]) == (
        CODE,
        "From file a",
        "job-7",
    )


async def test_text_file_is_the_template(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    (tmp_path / "t.txt").write_text("Dear {0},\nsee you at {1}.\n")
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["Al", 9]}])
    run = await dispatcher(
        "send", source, "--from", CODE, "--text-file", "t.txt",
        "--base-url", emulator.base_url,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    [message] = emulator.messages()
    assert message["text"] == "Dear Al,\nsee you at 9."  # the file's final newline dropped


SUMMARY_KEYS = {
    "lines",
    "statuses",
    "segments",
    "requests",
    "retries",
    "elapsed_s",
    "recipients_per_s",
    "latency_ms",
    "codes",
    "exit_reason",
    "exit_code",
}


async def test_summary_schema_and_ambiguous_lines_exit_1(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A batch the gateway answers with 500 on every attempt ends AMBIGUOUS (a 500 may
    come after the gateway acted) with the last error; the run goes on and exits 1;
    the summary has every key of SPEC §6, with its retries counted by cause."""
    from dispatcher.emulator import FaultSettings

    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, faults=FaultSettings(fail_500_before=1.0)
    )
    (tmp_path / "c.toml").write_text("[retry]\nretry_max_wait = 0\n")  # no real backoff
    source = write_lines(
        tmp_path / "in.ndjson",
        [{"to": "+525500000001", "params": ["a"]}, {"to": "x", "params": ["b"]}],
    )
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi {0}", "--config", "c.toml",
        "--base-url", emulator.base_url,
        "--max-attempts", "3", "--retry-ambiguous",
        "--summary", "summary.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 1, run.stderr
    got = by_line(run.results())
    assert got[1]["status"] == "AMBIGUOUS"
    assert got[1]["attempts"] == 3
    assert "500" in got[1]["error"]
    assert got[2]["status"] == "INVALID_NUMBER"
    assert emulator.messages() == []
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["statuses"] == {"AMBIGUOUS": 1, "INVALID_NUMBER": 1}
    assert set(summary["segments"]) >= {"billable", "by_encoding", "ambiguous"}
    assert summary["segments"]["billable"] == 0
    assert summary["segments"]["ambiguous"] == 1
    assert summary["requests"] == 3
    assert summary["retries"]["total"] == 2
    assert summary["retries"]["500"] == 2
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99", "max"}
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert isinstance(summary["elapsed_s"], float)
    assert summary["elapsed_s"] > 0
    assert summary["recipients_per_s"] > 0
    assert summary["exit_code"] == 1
    assert isinstance(summary["exit_reason"], str)
    assert summary["exit_reason"]


async def test_a_request_the_gateway_refuses_fails_its_lines_and_exits_1(
    tmp_path: Path,
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"meta": {"explain": "connection unknown"}}, status=400)

    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["a"]}])
    async with stub_gateway(refuse) as gateway:
        run = await dispatcher(
            "send", source, "--from", CODE, "--text", "Hi {0}",
            "--base-url", gateway.base_url, "--connection", "nope",
            cwd=tmp_path,
        )  # fmt: skip
    assert run.code == 1, run.stderr
    [result] = run.results()
    assert result["status"] == "FAILED"
    assert result["attempts"] == 1  # a 400 is not retried
    assert len(gateway.sends) == 1
    assert "connection unknown" in result["error"]


async def test_a_refused_sender_code_is_not_a_successful_run(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False, deny_codes=frozenset({CODE}))
    source = write_lines(tmp_path / "in.ndjson", [{"to": "+525500000001", "params": ["a"]}])
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "Hi {0}", "--base-url", emulator.base_url,
        cwd=tmp_path,
    )  # fmt: skip
    [result] = run.results()
    assert result["status"] == "CODE_NOT_ALLOWED"
    assert emulator.messages() == []
    assert run.code == 1


async def test_summary_per_code_sent_and_rates(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(
        tmp_path / "in.ndjson",
        [{"to": f"+5255000000{n:02d}", "params": ["ж" * 80]} for n in range(1, 11)]
        + [{"to": "+525500000099", "from": "ACME", "params": ["b"]}],
    )
    run = await dispatcher(
        "send", source, "--from", CODE, "--text", "{0}",
        "--base-url", emulator.base_url, "--rate", f"{CODE}=inf",
        "--summary", "summary.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    codes = summary["codes"]
    assert set(codes) == {CODE, "ACME"}
    assert (codes[CODE]["messages"], codes[CODE]["segments"]) == (10, 20)
    assert codes[CODE]["configured_rate"] is None  # inf: no limit
    assert (codes["ACME"]["messages"], codes["ACME"]["segments"]) == (1, 1)
    assert codes["ACME"]["configured_rate"] == 100  # the alphanumeric default
    for stats in codes.values():
        assert "achieved_rate" in stats
    assert summary["segments"]["by_encoding"] == {"UCS2": 20, "GSM7": 1}
