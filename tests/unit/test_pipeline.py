"""pipeline.run in process, against a real emulator on 127.0.0.1:0 (or in a dry run).

Property: whatever the mix of good and bad lines, batch size and endpoint, every
non-blank line gets exactly one result with the status its kind demands, every QUEUE
id is one ledger message rendered from that line's params, and nothing else is in
the ledger.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import job, pipeline
from dispatcher.config import Config, Secret, validate
from dispatcher.emulator import EmulatorSettings, running_emulator
from dispatcher.errors import AuthError, ConfigError
from dispatcher.journal import journal_path, records
from dispatcher.lock import JobBusy, JobLock
from dispatcher.paths import Place
from dispatcher.summary import Summary
from tests.support.emulators import EmulatorFactory
from tests.support.exactly_once import read_results, send_config, write_input
from tests.support.held import HeldInput, held_gateway

KEY = "pipeline-test-key"
TEMPLATE = "T {0}"
POOL = ["+525500000001", "525500000002", "+52 55 0000 0003", "+15005550006"]
GATEWAY_INVALID = "+525599000000"

#: kind → the status its line must end with (None: blank, no result)
KINDS: dict[str, str | None] = {
    "valid": "QUEUE",
    "valid-acme": "QUEUE",
    "valid-ext": "QUEUE",
    "unicode": "QUEUE",
    "gateway-invalid": "INVALID_NUMBER",
    "client-invalid": "INVALID_NUMBER",
    "missing-param": "REJECTED",
    "not-json": "REJECTED",
    "not-object": "REJECTED",
    "bad-type": "REJECTED",
    "blank": None,
}


def line_bytes(kind: str, n: int, number: str) -> bytes:
    """The input line of a kind; ``n`` makes each text unique."""
    params = [f"L{n}"]
    body: dict[str, Any]
    if kind == "valid":
        body = {"to": number, "params": params, "ref": n}
    elif kind == "valid-acme":
        body = {"to": number, "params": params, "from": "ACME"}
    elif kind == "valid-ext":
        body = {"to": number, "params": params, "externalId": f"e{n % 2}"}
    elif kind == "unicode":
        body = {"to": number, "params": [f"Ж{n}"]}
    elif kind == "gateway-invalid":
        body = {"to": GATEWAY_INVALID, "params": params}
    elif kind == "client-invalid":
        body = {"to": f"x{n}", "params": params}
    elif kind == "missing-param":
        body = {"to": number, "params": []}
    elif kind == "not-json":
        return b"{not json"
    elif kind == "not-object":
        return b'["to"]'
    elif kind == "bad-type":
        body = {"to": number, "params": {"a": 1}}
    else:
        return b"  "
    return orjson.dumps(body)


def expected_text(kind: str, n: int) -> str:
    return f"T Ж{n}" if kind == "unicode" else f"T L{n}"


def e164(number: str) -> str:
    digits = number.replace(" ", "")
    return digits if digits.startswith("+") else "+" + digits


async def send(
    directory: Path, lines: list[bytes], crlf: bool, **changes: Any
) -> tuple[Summary, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    source = directory / "in.ndjson"
    newline = b"\r\n" if crlf else b"\n"
    source.write_bytes(b"".join(line + newline for line in lines))
    settings = EmulatorSettings(
        api_key=KEY, rate_limit=False, invalid_prefixes=(GATEWAY_INVALID[1:],)
    )
    async with running_emulator(settings) as emulator:
        config = validate(
            Config(
                base_url=emulator.base_url,
                api_key=Secret(KEY),
                sender="12345",
                text=TEMPLATE,
                rates={"12345": math.inf, "ACME": math.inf},
                linger_ms=5,
                results=str(directory / "results.ndjson"),
                invalid=str(directory / "invalid.ndjson"),
                progress=False,
                **changes,
            )
        )
        summary = await pipeline.run(str(source), config)
        messages = emulator.messages()
        stats = await emulator.stats()
    results = [orjson.loads(x) for x in (directory / "results.ndjson").read_bytes().splitlines()]
    return summary, results, messages, stats


LINE_KINDS = st.lists(
    st.tuples(st.sampled_from(sorted(KINDS)), st.sampled_from(POOL)), min_size=1, max_size=40
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    LINE_KINDS,
    st.integers(1, 6),
    st.sampled_from(["batch", "single"]),
    st.booleans(),
)
def test_one_result_per_line_and_the_ledger_agrees(
    kinds: list[tuple[str, str]], batch_size: int, endpoint: str, crlf: bool
) -> None:
    lines = [line_bytes(kind, n, number) for n, (kind, number) in enumerate(kinds, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        summary, results, messages, stats = asyncio.run(
            send(Path(tmp), lines, crlf, batch_size=batch_size, endpoint=endpoint)
        )
    expected = {n: KINDS[kind] for n, (kind, _) in enumerate(kinds, 1) if KINDS[kind]}
    got = {r["line"]: r for r in results}
    assert len(got) == len(results), "a line has two results"
    assert {n: r["status"] for n, r in got.items()} == expected
    assert summary.fatal is None
    assert summary.exit_code() == 0

    ledger = {m["id"]: m for m in messages}
    queued = {n: r for n, r in got.items() if r["status"] == "QUEUE"}
    assert {r["id"] for r in queued.values()} == set(ledger)
    for n, result in queued.items():
        kind, number = kinds[n - 1]
        message = ledger[result["id"]]
        assert message["to"] == e164(number) == result["to"]
        assert message["text"] == expected_text(kind, n)
        assert message["from"] == ("ACME" if kind == "valid-acme" else "12345")
        assert message["externalId"] == (f"e{n % 2}" if kind == "valid-ext" else None)
        assert (message["segments"], message["encoding"]) == (
            result["segments"],
            result["encoding"],
        )
        if kind == "valid":
            assert result["ref"] == n
    assert stats["duplicates"] == 0
    if endpoint == "single" or batch_size == 1:
        assert stats["requests"]["batch"] == 0
    else:
        assert stats["requests"]["single"] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LINE_KINDS, st.integers(1, 6))
def test_a_dry_run_accounts_for_every_line_too(
    kinds: list[tuple[str, str]], batch_size: int
) -> None:
    lines = [line_bytes(kind, n, number) for n, (kind, number) in enumerate(kinds, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        source = directory / "in.ndjson"
        source.write_bytes(b"\n".join(lines))
        config = validate(
            Config(
                base_url="http://127.0.0.1:9/raven",
                sender="12345",
                text=TEMPLATE,
                batch_size=batch_size,
                dry_run=True,
                results=str(directory / "results.ndjson"),
                progress=False,
            )
        )
        summary = asyncio.run(pipeline.run(str(source), config))
        results = [
            orjson.loads(x) for x in (directory / "results.ndjson").read_bytes().splitlines()
        ]
        assert not (directory / "results.ndjson.journal").exists()
    # A dry run cannot know what the gateway will refuse: those lines are DRY_RUN too.
    expected = {}
    for n, (kind, _) in enumerate(kinds, 1):
        status = KINDS[kind]
        if status is not None:
            sendable = status == "QUEUE" or kind == "gateway-invalid"
            expected[n] = "DRY_RUN" if sendable else status
    assert {r["line"]: r["status"] for r in results} == expected
    assert len(results) == len(expected)
    dry_runs = sum(1 for status in expected.values() if status == "DRY_RUN")
    assert summary.statuses["DRY_RUN"] == dry_runs
    assert summary.exit_code() == 0


def _sevens(base_url: str, tmp_path: Path, text: str) -> Config:
    """A job of batches of 7, no rate limit, results in ``tmp_path``."""
    return validate(
        Config(
            base_url=base_url,
            api_key=Secret(KEY),
            sender="12345",
            text=text,
            batch_size=7,
            rates={"12345": math.inf},
            results=str(tmp_path / "results.ndjson"),
            progress=False,
        )
    )


async def test_the_journal_closes_every_batch_it_opened(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = tmp_path / "in.ndjson"
    source.write_bytes(
        b"".join(orjson.dumps({"to": f"+5255{n:08d}", "params": [n]}) + b"\n" for n in range(1, 51))
    )
    summary = await pipeline.run(str(source), _sevens(emulator.base_url, tmp_path, TEMPLATE))
    assert summary.statuses == {"QUEUE": 50}
    journal = list(records(str(tmp_path / "results.ndjson.journal")))
    sent = {r["sent"]: r["lines"] for r in journal if "sent" in r}
    done = {r["done"] for r in journal if "done" in r}
    assert set(sent) == done
    assert sorted(line for lines in sent.values() for line in lines) == list(range(1, 51))
    assert journal[-1] == {"complete": True}
    keys = {m["idempotencyKey"] for m in emulator.messages()}
    assert keys == set(sent)  # each batch went out under the key the journal recorded


async def test_the_sender_gets_batches_packed_as_they_close(
    emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch endpoint's sender gets its batches packed (`api.pack`): their entries
    freed as they close, the bodies and result lines made from the packed form."""
    from dispatcher import api, native

    if native.core is None:
        pytest.skip("the C part is not built: nothing is packed")  # pragma: no cover
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = tmp_path / "in.ndjson"
    source.write_bytes(
        b"".join(
            orjson.dumps({"to": f"+5255{n:08d}", "params": [n, "Zoë", n / 4], "ref": n}) + b"\n"
            for n in range(1, 51)
        )
    )
    packed: list[bool] = []
    real = api.pack

    def pack(batch: Any) -> None:
        real(batch)
        packed.append(batch.packed is not None)

    monkeypatch.setattr(pipeline.api, "pack", pack)
    summary = await pipeline.run(str(source), _sevens(emulator.base_url, tmp_path, "{0} {1} {2}"))
    assert summary.statuses == {"QUEUE": 50}
    assert packed == [True] * 8
    results = sorted(read_results(tmp_path / "results.ndjson"), key=lambda r: r["line"])
    assert [(r["line"], r["ref"], r["segments"]) for r in results] == [
        (n, n, 1) for n in range(1, 51)
    ]
    texts = sorted(m["text"] for m in emulator.messages())
    assert texts == sorted(f"{n} Zoë {n / 4}" for n in range(1, 51))


# --- task lifetimes: a stop or a fatal error ends the run at once, resumably ---------

#: A stop or a fatal error must end the run promptly; this only keeps a bug from hanging.
NO_HANG = 30


async def test_a_stop_request_abandons_in_flight_requests_and_resume_finishes(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.ndjson"
    write_input(source, 3000)
    async with held_gateway() as gateway:
        config = send_config(
            tmp_path, gateway.base_url, batch_size=1000, concurrency=1, grace_period=0
        )
        shutdown = pipeline.Shutdown()
        running = asyncio.create_task(pipeline.run(str(source), config, shutdown=shutdown))
        await gateway.arrived.wait()  # lines 1-1000 are in flight, held
        shutdown.request(signal.SIGTERM)
        summary = await asyncio.wait_for(running, NO_HANG)
        assert summary.interrupted == signal.SIGTERM
        assert summary.fatal is None
        assert read_results(tmp_path / "results.ndjson") == []
        journal = list(records(journal_path(config.results)))
        sent = [r for r in journal if "sent" in r]
        assert [r["lines"] for r in sent] == [list(range(1, 1001))]  # nothing else started
        assert not any("done" in r or "complete" in r for r in journal)

        gateway.release.set()
        resumed = send_config(
            tmp_path, gateway.base_url, batch_size=1000, idempotency=True, resume=True
        )
        summary = await asyncio.wait_for(pipeline.run(str(source), resumed), NO_HANG)
    assert summary.fatal is None
    results = read_results(tmp_path / "results.ndjson")
    assert sorted(r["line"] for r in results) == list(range(1, 3001))
    assert {r["status"] for r in results} == {"QUEUE"}
    assert gateway.keys.count(sent[0]["sent"]) == 2  # rebuilt and re-sent under its key
    assert list(records(journal_path(config.results)))[-1] == {"complete": True}


async def test_a_fatal_error_ends_the_run_even_while_the_input_waits(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    source = HeldInput()
    config = send_config(
        tmp_path, emulator.base_url, batch_size=5, api_key=Secret("expired-key-123")
    )
    try:
        source.give(range(1, 11))  # two batches; the input stays open
        summary = await asyncio.wait_for(pipeline.run(source, config), NO_HANG)  # type: ignore[arg-type]
    finally:
        source.end()
    assert isinstance(summary.fatal, AuthError)
    assert read_results(tmp_path / "results.ndjson") == []
    assert not any("complete" in r for r in records(journal_path(config.results)))


# --- the places a send reads and writes, checked before anything is written ----------


def test_places_name_every_file_a_send_reads_and_writes(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    toml = tmp_path / "c.toml"
    toml.write_text(f'api_key_file = "{key}"\n')
    inputs = job.settings_files(config_file=str(toml), text_file="t.txt")
    assert [(p.option, p.path) for p in inputs] == [
        ("--config", str(toml)),
        ("--text-file", "t.txt"),
        (f"api_key_file of {toml}", str(key)),
    ]
    flag = job.settings_files(config_file=str(toml), api_key_file="k")
    assert flag[-1] == Place("--api-key-file", "k")  # the flag wins, as in config.load
    config = send_config(tmp_path, "http://127.0.0.1:9/raven", invalid="i", summary="s")
    read, written = job.places("in.ndjson", config, inputs)
    assert read[0] == Place("INPUT", "in.ndjson")
    assert read[1:] == inputs
    results = str(tmp_path / "results.ndjson")
    assert [p.path for p in written] == [
        results, "i", "s", results + ".journal", os.path.realpath(results) + ".lock",
        results + ".ctl",
    ]  # fmt: skip
    stdout = send_config(tmp_path, "http://127.0.0.1:9/raven", results="-")
    _, to_stdout = job.places("in.ndjson", stdout)
    assert [p.path for p in to_stdout] == ["-"]  # no job: no journal, no lock


async def test_a_clash_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_bytes(b'{"to": "+525500000001", "params": [1]}\n')
    text = tmp_path / "text.txt"
    text.write_text("T {0}")
    config = send_config(tmp_path, "http://127.0.0.1:9/raven", summary=str(text))
    with pytest.raises(ConfigError, match=r"--summary .* would overwrite --text-file"):
        await pipeline.run(str(source), config, inputs=[Place("--text-file", str(text))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ndjson", "text.txt"]


async def test_a_running_job_is_busy_for_a_second_run(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_bytes(b'{"to": "+525500000001", "params": [1]}\n')
    config = send_config(tmp_path, "http://127.0.0.1:9/raven", force=True)
    with JobLock.acquire(config.results), pytest.raises(JobBusy, match=str(os.getpid())):
        await pipeline.run(str(source), config)
    assert not Path(journal_path(config.results)).exists()
