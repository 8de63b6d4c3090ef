"""The receiver's secret: only URLs ending in it are taken, it is masked in what the
receiver writes, it must fit a URL, and without it the receiver stays on loopback."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest

from dispatcher.config import Secret, callback_secrets
from dispatcher.errors import ConfigError
from dispatcher.logs import MASK
from dispatcher.receiver import (
    SECRET_ENV,
    STATS_PATH,
    check_host,
    check_secret,
    find_secret,
    is_loopback,
    running_receiver,
)
from tests.support.cli import ndjson
from tests.support.receiver import post

SECRET = "rcv-Zq3xW8pLm2Nt7Vb5Ky"
OTHER = "rcv-Zq3xW8pLm2Nt7Vb5Kz"  # one character off, same length


async def test_only_urls_ending_in_the_secret_are_taken(tmp_path: Path) -> None:
    out = tmp_path / "dr.ndjson"
    async with (
        running_receiver(out, secret=SECRET) as receiver,
        aiohttp.ClientSession() as session,
    ):
        base = receiver.base_url
        assert receiver.url == f"{base}/dr/{SECRET}"
        assert SECRET not in repr(receiver)
        for path in (
            "/dr",
            f"/dr/{OTHER}",
            f"/dr/{SECRET[:-1]}",
            f"/dr/{SECRET}x",
            f"/dr/{SECRET}/",
            f"/{SECRET}/dr",
            f"/dr?secret={SECRET}",
            f"/dr/{SECRET[:4]}%{SECRET[4:6]}{SECRET[6:]}",
        ):
            for body in (b'{"id": "forged", "status": "DELIVRD"}', b"not json"):
                status, answer = await post(session, base + path, body)
                assert status == 401, path
                assert "secret" in answer["error"]
        assert await post(session, receiver.url, b'{"id": "a"}') == (200, {"received": 1})
        assert await post(session, f"{base}/{SECRET}?x=1", b'{"id": "b"}') == (
            200,
            {"received": 1},
        )
        async with session.get(base + STATS_PATH) as r:
            assert r.status == 401
        async with session.get(f"{base}{STATS_PATH}/{OTHER}") as r:
            assert r.status == 401
        async with session.get(receiver.stats_url) as r:
            assert r.status == 200
            counts = await r.json()
        assert counts["unauthorized"] == 8 * 2 + 2
        assert counts["written"] == 2
    assert [line["id"] for line in ndjson(out)] == ["a", "b"]
    # nothing of a refused request is kept, not even in the side file of bad bodies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dr.ndjson"]


async def test_the_secret_is_masked_in_everything_written(tmp_path: Path) -> None:
    out, bad = tmp_path / "dr.ndjson", tmp_path / "bad.ndjson"
    async with (
        running_receiver(out, malformed_out=bad, secret=Secret(SECRET)) as receiver,
        aiohttp.ClientSession() as session,
    ):
        report = {"id": "a", "callback": receiver.url}  # the gateway echoes the URL
        assert (await post(session, receiver.url, orjson.dumps(report)))[0] == 200
        torn = orjson.dumps(report)[:-1]
        assert (await post(session, receiver.url, torn))[0] == 400
    assert SECRET.encode() not in out.read_bytes() + bad.read_bytes()
    assert ndjson(out)[0]["callback"] == f"{receiver.base_url}/dr/{MASK}"
    kept = ndjson(bad)[0]
    assert kept["path"] == f"/dr/{MASK}"
    assert f"/dr/{MASK}" in kept["body"]


async def test_unauthorized_requests_are_logged_boundedly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running_receiver(tmp_path / "dr.ndjson", secret=SECRET) as receiver,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(25):
            await post(session, receiver.base_url + "/dr", b"{}")
    refusals = [r for r in caplog.records if "without the secret" in r.getMessage()]
    assert len(refusals) == 2  # the 1st and the 10th
    assert receiver.stats().unauthorized == 25


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("short-secret", "12 characters"),
        ("x" * 257, "257 characters"),
        ("has/a/slash/in/it/0123", "escaped"),
        ("has%2Fpercent-0123456", "escaped"),
        ("has space in it 012345", "escaped"),
        ("has?query=in-it-012345", "escaped"),
        ("has#fragment-in-it-0123", "escaped"),
        ("non-ascii-señor-0123456", "escaped"),
    ],
)
def test_a_secret_must_fit_a_url_path_segment(secret: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        check_secret(secret)
    assert secret not in str(caught.value)


def test_a_good_secret_passes() -> None:
    check_secret("A-z0._~" * 3)


def test_the_secret_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "secret"
    file.write_text(f"\n  {SECRET}  \nsecond line\n")
    assert find_secret(file, env={}) == Secret(SECRET)
    assert find_secret(file, env={SECRET_ENV: OTHER}) == Secret(SECRET)  # the file wins
    assert find_secret(None, env={SECRET_ENV: f" {OTHER}\n"}) == Secret(OTHER)
    assert find_secret(None, env={SECRET_ENV: "  "}) is None
    assert find_secret(None, env={}) is None
    with pytest.raises(ConfigError, match=SECRET_ENV):
        find_secret(None, env={SECRET_ENV: "too-short"})


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b" \n\t\n", "empty"),
        (b"\xff\xfe" + SECRET.encode(), "not UTF-8"),
        (SECRET.encode() + b"x" * (64 << 10), "larger than 64 KiB"),
        (b"short\n", "5 characters"),
    ],
)
def test_a_bad_secret_file_is_a_config_error(tmp_path: Path, content: bytes, problem: str) -> None:
    file = tmp_path / "secret"
    file.write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as caught:
        find_secret(file, env={})
    assert SECRET not in str(caught.value)


def test_an_endless_or_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    if Path("/dev/zero").exists():
        with pytest.raises(ConfigError, match="larger than 64 KiB"):
            find_secret("/dev/zero", env={})
    with pytest.raises(ConfigError, match="does not exist") as caught:
        find_secret(tmp_path / SECRET, env={})  # a secret typed where its file belongs
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match=r"cannot read .*: Is a directory"):
        find_secret(tmp_path, env={})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_without_a_secret_only_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    check_host(host, Secret(SECRET))  # a secret allows any address
    if loopback:
        check_host(host, None)
    else:
        with pytest.raises(ConfigError, match="secret"):
            check_host(host, None)


async def test_running_receiver_refuses_to_expose_itself_without_a_secret(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0 without a secret"):
        async with running_receiver(tmp_path / "dr.ndjson", host="0.0.0.0"):
            pass
    assert not (tmp_path / "dr.ndjson").exists()


@pytest.mark.parametrize(
    ("callbacks", "secrets"),
    [
        (None, []),
        ("", []),
        ("http://127.0.0.1:8090/dr", []),
        (f"http://127.0.0.1:8090/dr/{SECRET}", [SECRET]),
        (f"https://hooks.example.com/{SECRET}?x=1", [SECRET]),
        (f"http://a/dr/{SECRET}, http://b/{OTHER}", [SECRET, OTHER]),
        (f"http://a/dr/{SECRET}/", []),
        ("http://a/dr/short", []),
        ("http://a/dr/has%20escapes-in-it-0123", []),
        ("http://[::1/dr/whatever-this-is-0123", []),  # not a URL: nothing to find
    ],
)
def test_callback_secrets(callbacks: str | None, secrets: list[str]) -> None:
    assert callback_secrets(callbacks) == secrets
