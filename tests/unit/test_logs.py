"""Masking: a secret, and any run of 8 or more of its characters, never reaches a log
line, a document or an answer read from the gateway."""

from __future__ import annotations

import logging
import subprocess
import sys
import timeit
from collections.abc import Iterator

import orjson
import pytest

from dispatcher import logs

SECRET = "sk_live_Qx7Vb2Np9Lr4Tz8Wd3Hs"


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    saved = (set(logs._SECRETS), logs._PROBES, logs._WINDOWS, logs._HIDDEN)
    logs.register_secret(SECRET)
    yield
    logs._SECRETS.clear()
    logs._SECRETS.update(saved[0])
    logs._PROBES, logs._WINDOWS, logs._HIDDEN = saved[1:]


def runs(secret: str, length: int) -> Iterator[str]:
    for start in range(len(secret) - length + 1):
        yield secret[start : start + length]


def test_the_whole_secret_is_masked() -> None:
    assert logs.redact(f"key={SECRET}; again {SECRET}") == "key=********; again ********"


@pytest.mark.parametrize("length", [8, 9, 15, 27])
def test_every_run_of_8_or_more_is_masked_wherever_a_cut_left_it(length: int) -> None:
    for piece in runs(SECRET, length):
        text = f"Authorization: Bearer {piece}"
        masked = logs.redact(text)
        assert masked == "Authorization: Bearer ********", (piece, masked)


def test_a_snippet_that_cuts_the_key_at_any_offset_shows_no_run_of_it() -> None:
    echoed = f'{{"error": "bad header: Authorization: Bearer {SECRET}"}}'
    for cut in range(len(echoed)):
        for snippet in (echoed[:cut], echoed[cut:]):
            masked = logs.redact(snippet)
            for piece in runs(SECRET, 8):
                assert piece not in masked, (cut, masked)


def test_shorter_runs_are_left_alone() -> None:
    assert logs.redact("sk_live") == "sk_live"
    assert logs.redact("Qx7Vb2N and Hs") == "Qx7Vb2N and Hs"


def test_documents_are_masked_in_every_string_and_key() -> None:
    document = {
        "exit_reason": f"aborted: refused key {SECRET[:12]}",
        SECRET: [1, 2.5, None, True, {"nested": SECRET[-10:]}],
    }
    masked = logs.redact_document(document)
    assert masked == {
        "exit_reason": "aborted: refused key ********",
        "********": [1, 2.5, None, True, {"nested": "********"}],
    }


def answer(ids: list[str], *, transaction: str = "tx-1", explain: str | None = None) -> bytes:
    meta = {"transactionId": transaction, **({"explain": explain} if explain else {})}
    data = {
        "ids": [{"id": i, "mobile": f"+52550000{n:04d}"} for n, i in enumerate(ids)],
        "invalidNumber": [],
        "status": "QUEUE",
    }
    return orjson.dumps({"meta": meta, "data": data})


def test_an_answer_without_the_secret_is_returned_as_is() -> None:
    payload = answer([f"64f0a1b2c3d4e5f6a7b8{n:04x}" for n in range(1000)])
    assert not logs.may_hold_secret(payload)
    assert logs.scrub_answer(payload) is payload


@pytest.mark.parametrize(
    "where", ["id", "transactionId", "explain", "invalidNumber", "status", "key"]
)
def test_an_answer_echoing_the_secret_is_masked_in_every_field(where: str) -> None:
    document: dict[str, object] = orjson.loads(answer(["a", "b"]))
    echoed = f"Bearer {SECRET[3:20]}"
    data = document["data"]
    assert isinstance(data, dict)
    if where == "id":
        data["ids"][1]["id"] = echoed
    elif where == "transactionId":
        document["meta"] = {"transactionId": echoed}
    elif where == "explain":
        document["meta"] = {"explain": echoed}
    elif where == "invalidNumber":
        data["invalidNumber"] = [echoed]
    elif where == "status":
        data["status"] = echoed
    else:
        data[echoed] = 1
    scrubbed = logs.scrub_answer(orjson.dumps(document))
    for piece in runs(SECRET, 8):
        assert piece.encode() not in scrubbed
    assert b"Bearer ********" in scrubbed


def test_a_secret_spelt_with_json_escapes_is_found_too() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in SECRET[:10])
    payload = b'{"meta": {"explain": "' + escaped.encode() + b'"}, "data": {}}'
    assert logs.may_hold_secret(payload)
    assert orjson.loads(logs.scrub_answer(payload))["meta"]["explain"] == "********"


def test_a_slash_written_as_an_escape_hides_nothing() -> None:
    logs.register_secret("abc/def/ghi/jkl")
    payload = b'{"data": {"id": "x abc\\/def\\/g y"}}'
    assert logs.may_hold_secret(payload)
    assert orjson.loads(logs.scrub_answer(payload))["data"]["id"] == "x ******** y"


def test_escapes_of_an_echoed_text_do_not_cost_a_second_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = orjson.dumps({"data": {"text": 'Hi "{0}",\n\tcafé \\o/', "ids": []}})
    assert b"\\" in payload
    calls: list[bytes] = []
    monkeypatch.setattr(logs.orjson, "loads", lambda data: calls.append(data))
    assert not logs.may_hold_secret(payload)
    assert calls == []
    ascii_escaped = payload.replace(b"caf\xc3\xa9", b"caf\\u00e9")
    assert not logs.may_hold_secret(ascii_escaped)  # \u00e9 cannot spell an ASCII key
    assert calls == []


def test_a_secret_holding_a_quote_is_found_in_its_escaped_form() -> None:
    logs.register_secret('pa"ss\\word-0123')
    payload = orjson.dumps({"data": {"id": 'x pa"ss\\word-01'}})
    assert logs.may_hold_secret(payload)
    assert orjson.loads(logs.scrub_answer(payload))["data"]["id"] == "x ********"


def test_a_body_that_is_not_json_is_masked_as_text() -> None:
    payload = f"<html>Authorization: Bearer {SECRET}</html>".encode() + b"\xff"
    assert logs.scrub_answer(payload).startswith(b"<html>Authorization: Bearer ********</html>")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_are_masked_in_both_formats(fmt: str) -> None:
    logs.register_secret('quote"inside-the-key')
    formatter = logs.RedactingFormatter(fmt)
    record = logging.LogRecord(
        "dispatcher.x",
        logging.INFO,
        __file__,
        1,
        "echo %s and %s",
        (SECRET[2:14], 'quote"inside-t'),
        None,
    )
    line = formatter.format(record)
    assert SECRET[2:14] not in line
    assert "inside-t" not in line
    assert line.count("********") == 2


@pytest.mark.parametrize(
    "key", ["Kq7vX2pLw9ZtR4mN-u_3bYc8Hd0eFg1J", "3f9a0c1d2e4b5a6978fedcba01234567"]
)
def test_the_scan_of_a_clean_answer_is_cheap(key: str) -> None:
    """Measured, not asserted against a clock: the figure is printed for the record
    (pytest -s). The assertions keep a clean answer on the fast path, also for a hex
    key among hex ids (every byte of the key occurs in the answer)."""
    logs.register_secret(key)
    payload = answer([f"64f0a1b2c3d4e5f6a7b8{n:04x}" for n in range(1000)])
    assert not logs.may_hold_secret(payload)
    assert logs.scrub_answer(payload) is payload
    number = 200
    scan = timeit.timeit(lambda: logs.scrub_answer(payload), number=number) / number
    parse = timeit.timeit(lambda: orjson.loads(payload), number=number) / number
    print(f"\n{key[:6]}…: scan {scan * 1e6:.1f} µs, orjson.loads {parse * 1e6:.1f} µs per 1000 ids")


@pytest.mark.parametrize("length", [4, 5, 8, 9, 12, 13, 40])
def test_the_probes_find_every_run_of_8_of_a_secret_of_any_length(length: int) -> None:
    key = "".join(chr(ord("A") + (i * 7) % 26) + str(i % 10) for i in range(length))[:length]
    logs.register_secret(key)
    for size in range(min(8, length), length + 1):
        for piece in runs(key, size):
            payload = orjson.dumps({"data": {"id": f"x{piece}y"}})
            assert logs.may_hold_secret(payload), piece
            assert piece not in logs.scrub_answer(payload).decode()


def test_loggers_outside_the_dispatcher_s_are_masked_too() -> None:
    """asyncio's and aiohttp's loggers have no handler in the CLI's process: Python's
    last resort prints them, masked once `configure` ran (a process of its own: pytest
    gives the root logger handlers of its own)."""
    script = (
        "import logging, sys\n"
        "from dispatcher import logs\n"
        "logs.register_secret(sys.argv[1])\n"
        "logs.configure('info')\n"
        "logging.getLogger('dispatcher.x').info('key %s', sys.argv[1])\n"
        "logging.getLogger('asyncio').error('Task exception: %s', sys.argv[1][4:16])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, SECRET], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "key ********" in done.stderr
    assert "Task exception: ********" in done.stderr
    assert SECRET[4:12] not in done.stderr
