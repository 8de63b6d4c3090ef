"""``loadtest``'s quota options that ``send`` has too — ``--account-rate``,
``--quota-fallback``, ``--quota-peers`` and ``--quota-unit`` (send's ``--rate-unit``) —
read by send's own configuration keys, against a real Redis (or Valkey) and the real
emulator. What is checked is what the quota let through (the emulator's ledger), which
a slow machine can only make smaller."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dispatcher.cli import main
from dispatcher.config import Secret
from dispatcher.errors import ConfigError
from dispatcher.loadtest import LoadTest, job, run_loadtest
from tests.support.emulators import TEST_KEY, EmulatorFactory
from tests.support.redis_server import RedisServer
from tests.unit.quota import conftest as quota_fixtures

redis_server = quota_fixtures.redis_server

CODE = "12345"
#: 200 GSM characters: two segments a message
LONG = "x" * 200


async def _run(base_url: str, redis: RedisServer, **settings: Any) -> dict[str, Any]:
    """40 requests/s for 1.5 s of code 12345 through the shared quota (10/s unless set)."""
    settings.setdefault("quota_rate", 10)
    test = LoadTest(
        rate=40,
        duration=1.5,
        sender=CODE,
        base_url=base_url,
        api_key=Secret(TEST_KEY),
        quota_url=redis.url,
        **settings,
    )
    return await run_loadtest(test, live=None)


async def test_the_quota_can_charge_segments_as_send_does(
    emulator_factory: EmulatorFactory, redis_server: RedisServer
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    report = await _run(emulator.base_url, redis_server, text=LONG, quota_unit="segments")
    assert report["quota"]["unit"] == "segments"
    ledger = (await emulator.stats())["codes"][CODE]
    assert ledger["accepted"] == report["sent"] > 0
    # 10 segments/s of 2-segment messages: 5 messages/s (the bound's 11 segments: 5);
    # counted in messages it would be 10 or 11
    assert ledger["max_window"] <= 6, ledger


async def test_the_account_rate_holds_a_code_that_may_go_faster(
    emulator_factory: EmulatorFactory, redis_server: RedisServer
) -> None:
    emulator = await emulator_factory(rate_limit=False)
    report = await _run(
        emulator.base_url,
        redis_server,
        quota_rate=1000,
        account_rate=10,
        quota_fallback="local",
        quota_peers=3,
    )
    quota = report["quota"]
    assert (quota["account_rate"], quota["fallback"], quota["peers"]) == (10, "local", 3)
    ledger = (await emulator.stats())["codes"][CODE]
    assert ledger["accepted"] == report["sent"] > 0
    assert ledger["max_window"] <= 11, ledger  # the account's bound, not the code's 1000/s


def test_the_values_are_read_by_send_s_keys() -> None:
    test = job.prepare(
        quota_url="redis://127.0.0.1:6379/0",
        account_rate="250",
        quota_fallback="local",
        quota_peers="4",
        quota_unit="segments",
    )
    assert (test.account_rate, test.quota_fallback, test.quota_peers, test.quota_unit) == (
        250.0,
        "local",
        4,
        "segments",
    )
    # inf is send's "no account limit"
    assert job.prepare(quota_url="redis://h:1/0", account_rate="inf").account_rate is None
    assert LoadTest(quota_url="redis://h:1/0", account_rate=math.inf).account_rate == math.inf


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account-rate", "50"], "--account-rate needs --quota-url"),
        (["--quota-peers", "2"], "--quota-peers needs --quota-url"),
        (["--quota-unit", "segments"], "--quota-unit needs --quota-url"),
        (["--quota-fallback", "local"], "--quota-fallback needs --quota-url"),
        (["--quota-url", "redis://h:1/0", "--account-rate", "fast"], "--account-rate"),
        (["--quota-url", "redis://h:1/0", "--account-rate", "-3"], "--account-rate"),
        (["--quota-url", "redis://h:1/0", "--quota-peers", "0"], "--quota-peers"),
        (["--quota-url", "redis://h:1/0", "--quota-fallback", "hope"], "--quota-fallback"),
        (["--quota-url", "redis://h:1/0", "--quota-unit", "bytes"], "--quota-unit"),
    ],
)
def test_bad_quota_options_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["loadtest", *args])
    except SystemExit as exc:  # refused by the parser (choices)
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_settings_built_in_code_are_checked_as_well() -> None:
    with pytest.raises(ConfigError, match="--quota-peers"):
        LoadTest(quota_url="redis://h:1/0", quota_peers=0)
    with pytest.raises(ConfigError, match="--quota-unit"):
        LoadTest(quota_url="redis://h:1/0", quota_unit="bytes")
