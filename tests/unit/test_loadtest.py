"""Load tests against a real emulator over real HTTP (short: about a second each).

Assertions rest on lower bounds a slow machine cannot break: an emulator that waits
50 ms answers no sooner, and one slot cannot start request k before k × 50 ms.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher import api
from dispatcher.config import Secret
from dispatcher.emulator import FaultSettings
from dispatcher.errors import (
    AuthError,
    BadResponse,
    BatchTooLarge,
    ConfigError,
    ConnectError,
    ConnectionLost,
    GatewayError,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    ServerError,
    Unavailable,
)
from dispatcher.loadtest import LoadTest, parse_threshold, run_loadtest
from dispatcher.loadtest.run import accepted_single
from dispatcher.loadtest.stats import RequestOutcome, classify
from tests.support.emulators import TEST_KEY, EmulatorFactory


def outcomes_add_up(report: dict[str, object]) -> None:
    outcomes = report["outcomes"]
    assert isinstance(outcomes, dict)
    assert sum(outcomes.values()) == report["requests"]
    assert report["errors"] == report["requests"] - outcomes["ok"]  # type: ignore[operator]


async def test_injected_latency_shows_in_the_percentiles() -> None:
    test = LoadTest(
        rate=40,
        duration=1.0,
        faults=FaultSettings(latency_ms=50),
        thresholds=(parse_threshold("p50<10ms"), parse_threshold("p99<30s")),
    )
    report = await run_loadtest(test, live=None)
    assert report["requests"] == 40
    assert report["outcomes"]["ok"] == 40
    assert report["error_rate"] == 0.0
    latency = report["latency_ms"]
    assert latency["min"] >= 50
    assert latency["p50"] >= 50
    assert latency["p50"] <= latency["p99"] <= latency["max"]
    assert [v["passed"] for v in report["thresholds"]] == [False, True]
    assert report["passed"] is False
    assert report["late_starts"] == 0


async def test_a_gateway_slower_than_the_arrivals_shows_as_latency() -> None:
    # Coordinated omission: one slot, 50 ms per answer, a request due every 10 ms. A
    # closed loop would report ~50 ms and a rate of 20/s as if that had been asked.
    # Here request k cannot start before k × 50 ms, so its latency from its due time is
    # at least 50 + 40 k ms; the ones still waiting at the end are dropped, with their
    # wait counted.
    test = LoadTest(
        rate=100,
        duration=1.0,
        concurrency=1,
        faults=FaultSettings(latency_ms=50),
        thresholds=(parse_threshold("rate>=0.95"),),
    )
    report = await run_loadtest(test, live=None)
    outcomes_add_up(report)
    ok = report["outcomes"]["ok"]
    assert report["requests"] == 100
    assert 1 <= ok <= 21
    assert report["dropped"] == 100 - ok - report["unfinished"]
    assert report["late_starts"] >= ok - 1
    assert report["achieved_rate"] <= 21
    assert report["rate_ratio"] <= 0.21
    latency = report["latency_ms"]
    assert latency["max"] >= 50 + 40 * (ok - 1)
    assert latency["p50"] >= 200  # a closed loop would say 50
    assert report["start_lag_ms"]["max"] >= 40 * (ok - 1)
    assert "slots were busy" in report["notes"][0]
    assert report["passed"] is False


async def test_outcomes_by_kind_match_the_faults_the_emulator_injected(
    emulator_factory: EmulatorFactory,
) -> None:
    faults = FaultSettings(
        fail_429=0.15, fail_503=0.1, fail_500_after=0.1, drop_after=0.05, fail_500_before=0.05
    )
    emulator = await emulator_factory(rate_limit=False, faults=faults, seed=7, ledger="counts")
    test = LoadTest(
        rate=100,
        duration=1.0,
        batch_size=10,
        base_url=emulator.base_url,
        api_key=Secret(TEST_KEY),
        input=None,
    )
    report = await run_loadtest(test, live=None)
    outcomes_add_up(report)
    injected = (await emulator.stats())["faults"]
    outcomes = report["outcomes"]
    assert report["requests"] == 100
    assert outcomes["429"] == injected["429"] > 0
    assert outcomes["5xx"] == injected["503"] + injected["500_after"] + injected["500_before"]
    assert outcomes["connection_lost"] == injected["drop_after"]
    assert outcomes["ok"] == 100 - sum(injected.values())
    assert report["error_rate"] == pytest.approx(sum(injected.values()) / 100)
    assert report["target"]["endpoint"] == "batch"
    assert report["achieved_recipients_rate"] == pytest.approx(10 * report["achieved_rate"])


async def test_a_refused_key_aborts_the_run(emulator_factory: EmulatorFactory) -> None:
    emulator = await emulator_factory(rate_limit=False)
    test = LoadTest(rate=50, duration=1.0, base_url=emulator.base_url, api_key=Secret("wrong"))
    report = await run_loadtest(test, live=None)
    assert report["aborted"] is not None
    assert "wrong" not in report["aborted"]
    assert report["outcomes"]["4xx"] >= 1
    assert report["requests"] < 50  # it stopped at the first refusal


async def test_stop_ends_the_run_early(emulator_factory: EmulatorFactory) -> None:
    """A stop set once the gateway has seen a few requests (not after a fixed time,
    which a loaded machine can spend starting up) ends a 30 s test at once."""
    emulator = await emulator_factory(rate_limit=False)
    stop = asyncio.Event()

    async def stop_after_some_requests() -> None:
        while len(emulator.messages()) < 5:
            await asyncio.sleep(0.01)
        stop.set()

    test = LoadTest(rate=100, duration=30.0, base_url=emulator.base_url, api_key=Secret(TEST_KEY))
    stopper = asyncio.create_task(stop_after_some_requests())
    report = await asyncio.wait_for(run_loadtest(test, stop=stop, live=None), 25)
    await stopper
    assert report["interrupted"] is True
    assert 5 <= report["requests"] < 3000  # far fewer than the 30 s schedule's 3000
    outcomes_add_up(report)


async def test_input_file_recipients(tmp_path: Path) -> None:
    source = tmp_path / "numbers.ndjson"
    source.write_text(
        '{"to": "+15005550006", "params": ["Ann", 1]}\n'
        '{"to": "not a number", "params": ["Bob", 2]}\n'
        '{"to": "525511111111", "params": ["Cy"]}\n'  # cannot fill {1}: skipped
    )
    report = await run_loadtest(
        LoadTest(rate=20, duration=0.5, batch_size=3, input=str(source)), live=None
    )
    assert report["outcomes"]["ok"] == report["requests"] == 10
    empty = tmp_path / "empty.ndjson"
    empty.write_text('{"to": "12"}\n')
    with pytest.raises(ConfigError, match="no usable recipient"):
        await run_loadtest(LoadTest(rate=20, duration=0.5, input=str(empty)), live=None)


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="rate"):
        LoadTest(rate=0)
    with pytest.raises(ConfigError, match="API key"):
        LoadTest(base_url="http://127.0.0.1:9/raven")
    with pytest.raises(ConfigError, match="embedded emulator"):
        LoadTest(
            base_url="http://127.0.0.1:9/raven",
            api_key=Secret("k"),
            faults=FaultSettings(latency_ms=1),
        )
    assert LoadTest(rate=500, rate_unit="recipients", batch_size=100).request_rate == 5.0
    assert "api_key" not in repr(LoadTest(base_url="http://x/raven", api_key=Secret("k")))


def test_outcome_names_are_stable() -> None:
    # They are keys of the JSON report: renaming one breaks users' dashboards.
    assert [str(o) for o in RequestOutcome] == [
        "ok",
        "4xx",
        "429",
        "5xx",
        "timeout",
        "connect_error",
        "connection_lost",
        "bad_response",
        "refused",
        "dropped",
        "unfinished",
    ]


async def test_timeouts_unfinished_and_refused_connections_are_counted(
    emulator_factory: EmulatorFactory,
) -> None:
    slow = await emulator_factory(rate_limit=False, faults=FaultSettings(latency_ms=400))
    key = Secret(TEST_KEY)
    timed_out, unfinished = await asyncio.gather(
        run_loadtest(
            LoadTest(rate=20, duration=0.5, timeout=0.1, base_url=slow.base_url, api_key=key),
            live=None,
        ),
        run_loadtest(
            LoadTest(rate=20, duration=0.5, drain=0.05, base_url=slow.base_url, api_key=key),
            live=None,
        ),
    )
    assert timed_out["outcomes"]["timeout"] == timed_out["requests"] == 10
    assert timed_out["latency_ms"]["min"] >= 100
    # The window ends at 0.5 s and the drain at 0.55 s: the requests due from 0.2 s on
    # cannot have been answered by then.
    assert unfinished["outcomes"]["unfinished"] == unfinished["unfinished"] >= 6
    assert unfinished["achieved_rate"] < 20

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        refused = await run_loadtest(
            LoadTest(rate=20, duration=0.5, base_url=f"http://127.0.0.1:{port}/raven", api_key=key),
            live=None,
        )
    assert refused["outcomes"]["connect_error"] == refused["requests"] == 10
    assert refused["error_rate"] == 1.0


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RateLimited("x", status=429), RequestOutcome.RATE_LIMITED),
        (Unavailable("x", status=503), RequestOutcome.SERVER_ERROR),
        (Unavailable("x", status=408), RequestOutcome.CLIENT_ERROR),
        (ServerError("x", status=502), RequestOutcome.SERVER_ERROR),
        (RequestRejected("x", status=400), RequestOutcome.CLIENT_ERROR),
        (BatchTooLarge("x", status=413), RequestOutcome.CLIENT_ERROR),
        (AuthError("x", status=401), RequestOutcome.CLIENT_ERROR),
        (RequestRejected("x", gateway_status="REJECTD"), RequestOutcome.REFUSED),
        (RequestTimeout("x"), RequestOutcome.TIMEOUT),
        (ConnectError("x"), RequestOutcome.CONNECT_ERROR),
        (ConnectionLost("x"), RequestOutcome.CONNECTION_LOST),
        (BadResponse("x", status=200), RequestOutcome.BAD_RESPONSE),
    ],
)
def test_each_gateway_error_has_its_outcome(error: GatewayError, outcome: RequestOutcome) -> None:
    assert classify(error) is outcome


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson writes
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_SINGLE_ANSWERS = st.fixed_dictionaries(
    {},
    optional={
        "meta": _JSON,
        "data": _JSON
        | st.fixed_dictionaries({}, optional=dict.fromkeys(("id", "to", "status"), _JSON)),
        "messageId": _JSON,
        "status": _JSON,
        "description": _JSON,
    },
)


@given(payload=_SINGLE_ANSWERS.map(orjson.dumps) | _JSON.map(orjson.dumps) | st.binary(max_size=20))
def test_the_fast_check_of_a_single_answer_agrees_with_the_careful_one(payload: bytes) -> None:
    """`accepted_single` says ok only when `api.check_answer` and `api.parse_single`
    would, and misses only the flat shape (``messageId``), which then goes their way."""
    try:
        answer = api.parse_single(api.check_answer(200, {}, payload))
    except GatewayError:
        answer = None
    fast = accepted_single(payload)
    if fast:
        assert answer is not None
    elif answer is not None:
        assert orjson.loads(payload).get("messageId") is not None
