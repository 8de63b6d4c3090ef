"""``dispatcher gateway`` as a real process: the listening line, flags, key, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import orjson
import pytest

from tests.support.gateway_process import LISTENING, first_line, gateway_process


def post(url: str, body: dict[str, object], key: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return orjson.loads(resp.read())


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "gateway", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_listening_line_then_clean_exit_on_signal(sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISPATCHER_API_KEY"}
    proc = start(env=env)
    try:
        line = first_line(proc, 20)
        assert line.startswith(LISTENING), line
        root = line[len(LISTENING) :].strip()
        host, port = root.removeprefix("http://").rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) > 0
        assert line == f"listening on http://127.0.0.1:{port}\n"
        assert get(f"{root}/_emulator/stats")["accepted"] == 0  # type: ignore[index]
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out == ""  # nothing after the first line
    # No key given: a random one is printed on stderr, and only there.
    assert "generated API key" in err


def test_flags_reach_the_emulator() -> None:
    with gateway_process(
        "--deny-code", "666", "--invalid-prefix", "999", "--rate", "12345=0.001", "--seed", "1"
    ) as base:
        ok = {"from": "12345", "text": "x", "to": "+15005550006"}
        assert post(f"{base}/v2/messages", ok, "test-key")[0] == 200
        assert post(f"{base}/v2/messages", ok, "wrong")[0] == 401
        status, body = post(f"{base}/v2/messages", {**ok, "from": "666"}, "test-key")
        assert (status, body["data"]) == (400, {"status": "CODE_NOT_ALLOWED"})
        status, body = post(f"{base}/v2/messages", {**ok, "to": "+99912345678"}, "test-key")
        assert (status, body["data"]) == (400, {"invalidNumber": ["+99912345678"]})
        # 0.001/s: the bucket holds one message and refills in 1000 s.
        assert post(f"{base}/v2/messages", ok, "test-key")[0] == 429
        stats = get(base.removesuffix("/raven") + "/_emulator/stats")
        assert stats["accepted"] == 1  # type: ignore[index]


def test_api_key_flag_and_usage_errors() -> None:
    proc = start("--api-key", "from-flag", "--flat-single")
    try:
        root = first_line(proc, 20)[len(LISTENING) :].strip()
        ok = {"from": "12345", "text": "x", "to": "+15005550006"}
        status, body = post(f"{root}/raven/v2/messages", ok, "from-flag")
        assert (status, body["status"]) == (200, "QUEUE")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "from-flag" not in err
    bad = subprocess.run(
        [sys.executable, "-m", "dispatcher", "gateway", "--fail-429", "0.7", "--fail-503", "0.7"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "add up" in bad.stderr


def test_access_log_goes_to_stderr_without_the_key() -> None:
    proc = start("--api-key", "sekrit-key-123", "--access-log")
    try:
        root = first_line(proc, 20)[len(LISTENING) :].strip()
        ok = {"from": "12345", "text": "x", "to": "+15005550006"}
        assert post(f"{root}/raven/v2/messages", ok, "sekrit-key-123")[0] == 200
        assert post(f"{root}/raven/v2/messages", ok, "wrong-key-456")[0] == 401
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "POST /raven/v2/messages" in err
    assert "sekrit-key-123" not in err + out
    assert "wrong-key-456" not in err + out
