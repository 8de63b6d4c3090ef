"""The emulator's gateway API over real HTTP: documented shapes, auth, validation,
invalid numbers, segments, codes, batch size, status by id, stats and the dump."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
import pytest

from dispatcher.emulator.runner import RunningEmulator
from tests.support.emulator_api import Api, Reply
from tests.support.emulators import EmulatorFactory

# Copied verbatim from outbound-sms-api.txt ("Send an SMS", the cURL example).
DOC_CURL_BODY = (
    b'{"from":"2222","text":"We detect an incident outside of us due to a Power Cut that '
    b'affects your \xc3\xa1rea. It is not necessary to report it","to":"+525500000000",'
    b'"requestDR":true,"type":"MT"}'
)
DOC_CURL_HEADERS = {
    "accept": "application/json",
    "Authorization": "Bearer YOUR_API_KEY",
    "Content-Type": "application/json",
}

# Copied verbatim from outbound-sms-api.txt ("Sending Batch SMS messages"), typo and all.
DOC_BATCH_BODY = b"""{
   "from":"12345",
   "text":"Hi {0}, your balance is ${1}",
   "to":[
      {
         "to:":"+525500000000",
         "params":[
            "Elizabeth",
            10.65
         ]
      },
      {
         "to:":"+525511111111",
         "params":[
            "Joshua",
            20.5
         ]
      }
   ],
   "type":"MT"
}"""

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
async def api(http: aiohttp.ClientSession, emulator: RunningEmulator) -> Api:
    return Api(http, emulator)


def assert_meta(body: dict[str, Any]) -> None:
    meta = body["meta"]
    assert isinstance(meta["timestamp"], int)
    assert meta["timestamp"] > 1_600_000_000_000
    assert UUID.match(meta["transactionId"])


def message(text: str = "hello", to: str = "+525500000000", **extra: Any) -> dict[str, Any]:
    return {"from": "12345", "text": text, "to": to, **extra}


def batch(text: str = "Hi {0}", *recipients: Any, **extra: Any) -> dict[str, Any]:
    to = [r if isinstance(r, dict) else {"to": r, "params": ["A"]} for r in recipients]
    return {"from": "12345", "text": text, "to": to, **extra}


# --- the documentation's own examples ------------------------------------------------


async def test_doc_curl_example(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory(api_key="YOUR_API_KEY")
    async with aiohttp.ClientSession() as session:  # noqa: SIM117
        async with session.post(
            f"{emu.base_url}/v2/messages", data=DOC_CURL_BODY, headers=DOC_CURL_HEADERS
        ) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            body = await resp.json()
    assert_meta(body)
    data = body["data"]
    assert set(data) == {
        "id", "from", "text", "to", "requestDR", "type", "owner", "operator", "status", "date",
    }  # fmt: skip
    sent = orjson.loads(DOC_CURL_BODY)
    assert (data["from"], data["text"], data["to"]) == (sent["from"], sent["text"], sent["to"])
    assert (data["requestDR"], data["type"], data["status"]) == (True, "MT", "QUEUE")
    assert ISO_Z.match(data["date"])
    [stored] = emu.messages()
    assert stored["id"] == data["id"]
    # "área": á is outside GSM 03.38, so 113 UCS-2 units, 2 segments of 70.
    assert (stored["encoding"], stored["segments"]) == ("UCS2", 2)


async def test_doc_batch_example_with_its_typo(api: Api) -> None:
    reply = await api.post("/v3/messages/batch", data=DOC_BATCH_BODY)
    assert reply.status == 200
    assert_meta(reply.json)
    data = reply.data
    assert set(data) == {
        "ids", "invalidNumber", "from", "text", "type", "owner", "operator", "status", "date",
    }  # fmt: skip
    assert [i["mobile"] for i in data["ids"]] == ["+525500000000", "+525511111111"]
    assert len({i["id"] for i in data["ids"]}) == 2
    assert data["invalidNumber"] == []
    assert (data["text"], data["status"], data["type"]) == (
        "Hi {0}, your balance is ${1}", "QUEUE", "MT",
    )  # fmt: skip
    assert ISO_Z.match(data["date"])
    texts = [m["text"] for m in api.emulator.messages()]
    assert texts == ["Hi Elizabeth, your balance is $10.65", "Hi Joshua, your balance is $20.5"]


async def test_flat_single_shape(emulator_factory: EmulatorFactory, http: Any) -> None:
    api = Api(http, await emulator_factory(flat_single=True))
    reply = await api.single(message())
    assert reply.status == 200
    body = reply.json
    assert set(body) == {"status", "messageId", "description"}
    assert body["status"] == "QUEUE"
    assert api.emulator.messages()[0]["id"] == body["messageId"]


async def test_single_echoes_optional_fields(api: Api) -> None:
    reply = await api.single(
        message(externalId="camp-1", clientId="c-9", email="a@b.c", connection="movistar")
    )
    data = reply.data
    assert (data["externalId"], data["clientId"], data["email"], data["connection"]) == (
        "camp-1", "c-9", "a@b.c", "movistar",
    )  # fmt: skip
    [stored] = api.emulator.messages()
    assert (stored["externalId"], stored["clientId"]) == ("camp-1", "c-9")


# --- auth --------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong", "test-key2", ""])
async def test_auth_refuses_missing_or_wrong_key(api: Api, key: str | None) -> None:
    for path in ("/v2/messages", "/v3/messages/batch"):
        reply = await api.post(path, message(), key=key)
        assert reply.status == 401
        assert reply.explain == "invalid or missing API key"
        assert_meta(reply.json)
        assert b"test-key" not in reply.raw
    assert (await api.get("/v2/messages/whatever", key=key)).status == 401
    stats = await api.stats()
    assert stats["accepted"] == 0
    assert stats["responses"] == {"401": 3}


async def test_auth_needs_the_bearer_scheme(api: Api) -> None:
    reply = await api.single(message(), key=None, headers={"Authorization": "test-key"})
    assert reply.status == 401


# --- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "x", "to": "+525500000000"}, "from"),
        ({"from": 12345, "text": "x", "to": "+525500000000"}, "from"),
        ({"from": "12345", "to": "+525500000000"}, "text"),
        ({"from": "12345", "text": ["x"], "to": "+525500000000"}, "text"),
        ({"from": "12345", "text": "", "to": "+525500000000"}, "text"),
        ({"from": "12345", "text": "x"}, "to"),
        ({"from": "12345", "text": "x", "to": 525500000000}, "to"),
        (message(requestDR="yes"), "requestDR"),
        (message(type="MO"), "type"),
        (message(externalId=7), "externalId"),
        (message(clientId={"a": 1}), "clientId"),
        (message(email=False), "email"),
        (message(connection=1), "connection"),
        (message(callbacks="ftp://x"), "callbacks"),
    ],
)
async def test_single_validation(api: Api, payload: dict[str, Any], field: str) -> None:
    reply = await api.single(payload)
    assert reply.status == 400
    assert field in reply.explain
    assert_meta(reply.json)
    assert (await api.stats())["accepted"] == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"from": "12345", "text": "x"}, "to"),
        ({"from": "12345", "text": "x", "to": "+525500000000"}, "to"),
        ({"from": "12345", "text": "x", "to": []}, "to"),
        ({"from": "12345", "text": "x", "to": ["+525500000000"]}, "to[0]"),
        ({"from": "12345", "text": "x", "to": [{"params": []}]}, "to[0].to"),
        ({"from": "12345", "text": "x", "to": [{"to": "+15005550006"}, {"to": 1}]}, "to[1].to"),
        ({"from": "12345", "text": "x", "to": [{"to": "+15005550006", "params": 1}]}, "params"),
        ({"from": "12345", "text": "{0}", "to": [{"to": "+15005550006", "params": [None]}]},
         "params"),
        ({"text": "x", "to": [{"to": "+15005550006"}]}, "from"),
    ],
)  # fmt: skip
async def test_batch_validation(api: Api, payload: dict[str, Any], field: str) -> None:
    reply = await api.batch(payload)
    assert reply.status == 400
    assert field in reply.explain


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b"[1, 2]", b'"x"', b"null"])
async def test_non_json_or_non_object_bodies(api: Api, raw: bytes) -> None:
    for path in ("/v2/messages", "/v3/messages/batch"):
        reply = await api.post(path, data=raw)
        assert reply.status == 400
        assert "JSON" in reply.explain


async def test_missing_placeholder_param(api: Api) -> None:
    reply = await api.batch(
        {
            "from": "12345",
            "text": "Hi {0}, you owe {2}",
            "to": [
                {"to": "+15005550006", "params": ["A", 1, 2]},
                {"to": "1"},  # invalid number: skipped, not counted in to[...] positions
                {"to": "+15005550007", "params": ["B", 1]},
            ],
        }
    )
    assert reply.status == 400
    assert reply.explain == "placeholder {2} has no param for to[2]"
    assert (await api.stats())["accepted"] == 0


async def test_params_render_as_json_scalars(api: Api) -> None:
    reply = await api.batch(
        {
            "from": "ACME",
            "text": "{0}|{1}|{2}|{3}|{4}|{x}",
            "to": [{"to": "+15005550006", "params": ["s", 3, 10.65, True, 1e-05]}],
        }
    )
    assert reply.status == 200
    assert api.emulator.messages()[0]["text"] == "s|3|10.65|true|0.00001|{x}"


async def test_rendered_empty_text_is_refused(api: Api) -> None:
    reply = await api.batch(
        {"from": "12345", "text": "{0}", "to": [{"to": "+15005550006", "params": [""]}]}
    )
    assert reply.status == 400
    assert "empty" in reply.explain


# --- invalid numbers -----------------------------------------------------------------


async def test_batch_invalid_numbers_are_listed_and_not_recorded(api: Api) -> None:
    numbers = ["+525500000000", "12ab", "525511111111", " +525522222222", "+15005550006", "0"]
    reply = await api.batch(batch("Hi {0}", *numbers))
    assert reply.status == 200
    data = reply.data
    assert [i["mobile"] for i in data["ids"]] == ["+525500000000", "525511111111", "+15005550006"]
    assert data["invalidNumber"] == ["12ab", " +525522222222", "0"]
    assert [m["to"] for m in api.emulator.messages()] == [i["mobile"] for i in data["ids"]]
    assert [m["id"] for m in api.emulator.messages()] == [i["id"] for i in data["ids"]]
    stats = await api.stats()
    assert (stats["accepted"], stats["invalid_numbers"]) == (3, 3)


async def test_batch_with_only_invalid_numbers(api: Api) -> None:
    reply = await api.batch(batch("Hi {0}", "1", "2"))
    assert reply.status == 200
    assert (reply.data["ids"], reply.data["invalidNumber"]) == ([], ["1", "2"])
    assert (await api.stats())["accepted"] == 0


async def test_invalid_prefix(emulator_factory: EmulatorFactory, http: Any) -> None:
    api = Api(http, await emulator_factory(invalid_prefixes=("999",), rate_limit=False))
    reply = await api.batch(batch("Hi {0}", "+99912345678", "+15005550006", "99912345679"))
    assert reply.data["invalidNumber"] == ["+99912345678", "99912345679"]
    assert [i["mobile"] for i in reply.data["ids"]] == ["+15005550006"]
    single = await api.single(message(to="+99912345678"))
    assert single.status == 400
    assert single.data["invalidNumber"] == ["+99912345678"]


async def test_single_invalid_number(api: Api) -> None:
    reply = await api.single(message(to="+52-55-0000"))
    assert reply.status == 400
    assert reply.data == {"invalidNumber": ["+52-55-0000"]}
    assert "number" in reply.explain
    stats = await api.stats()
    assert (stats["accepted"], stats["invalid_numbers"]) == (0, 1)


# --- segments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a" * 1600, True),
        ("a" * 1601, False),
        ("{" * 800, True),  # extension characters count two septets
        ("{" * 800 + "a", False),
        ("é" * 1600, True),  # é is GSM-7
        ("ж" * 700, True),
        ("ж" * 701, False),
        ("😀" * 350, True),  # two UTF-16 units each
        ("😀" * 350 + "a", False),
    ],
)
async def test_segment_limit(api: Api, text: str, ok: bool) -> None:
    single = await api.single(message(text=text))
    many = await api.batch(
        {"from": "12345", "text": "{0}", "to": [{"to": "+15005550006", "params": [text]}]}
    )
    for reply in (single, many):
        if ok:
            assert reply.status == 200
        else:
            assert reply.status == 400
            assert reply.explain == "Text exceeds the limit of allowed segments"
            assert reply.data["status"] == "SEGMENTS_EXCEEDED"
    stats = await api.stats()
    assert stats["accepted"] == (2 if ok else 0)
    assert stats["accepted_segments"] == (20 if ok else 0)


async def test_one_long_recipient_refuses_the_whole_batch(api: Api) -> None:
    reply = await api.batch(
        {
            "from": "12345",
            "text": "Hi {0}",
            "to": [
                {"to": "+15005550006", "params": ["A"]},
                {"to": "+15005550007", "params": ["B" * 1598]},
            ],
        }
    )
    assert reply.status == 400
    assert reply.data["status"] == "SEGMENTS_EXCEEDED"
    assert (await api.stats())["accepted"] == 0


async def test_mixed_encodings_in_one_batch(api: Api) -> None:
    reply = await api.batch(
        {
            "from": "12345",
            "text": "{0}",
            "to": [
                {"to": "+15005550006", "params": ["a" * 161]},
                {"to": "+15005550007", "params": ["ж" * 71]},
                {"to": "+15005550008", "params": ["[]"]},
            ],
        }
    )
    assert reply.status == 200
    got = [(m["encoding"], m["segments"]) for m in api.emulator.messages()]
    assert got == [("GSM7", 2), ("UCS2", 2), ("GSM7", 1)]
    assert (await api.stats())["accepted_segments"] == 5


# --- codes and sizes -----------------------------------------------------------------


async def test_code_not_allowed(emulator_factory: EmulatorFactory, http: Any) -> None:
    api = Api(http, await emulator_factory(deny_codes=frozenset({"99999"})))
    for reply in (
        await api.single({**message(), "from": "99999"}),
        await api.batch({**batch("x", "+15005550006"), "from": "99999"}),
    ):
        assert reply.status == 400
        assert reply.data["status"] == "CODE_NOT_ALLOWED"
        assert "99999" in reply.explain
    assert (await api.single(message())).status == 200


async def test_batch_over_max_batch_is_413(emulator_factory: EmulatorFactory, http: Any) -> None:
    api = Api(http, await emulator_factory(max_batch=3, rate_limit=False))
    reply = await api.batch(batch("x", *["+15005550006"] * 4))
    assert reply.status == 413
    assert "3" in reply.explain
    assert (await api.batch(batch("x", *["+15005550006"] * 3))).status == 200


# --- status by id, stats, dump ------------------------------------------------------


async def test_status_by_id(api: Api) -> None:
    sent = await api.single(message(externalId="e", clientId="c"))
    reply = await api.get(f"/v2/messages/{sent.data['id']}")
    assert reply.status == 200
    assert_meta(reply.json)
    assert reply.data == {
        "id": sent.data["id"],
        "from": "12345",
        "to": "+525500000000",
        "text": "hello",
        "status": "QUEUE",
        "date": sent.data["date"],
        "requestDR": False,
        "externalId": "e",
        "clientId": "c",
    }


@pytest.mark.parametrize("unknown", ["nope", "0" * 24, "ffffffff" + "0" * 16])
async def test_status_of_unknown_id_is_404_json(api: Api, unknown: str) -> None:
    reply = await api.get(f"/v2/messages/{unknown}")
    assert reply.status == 404
    assert reply.explain == "message not found"


async def test_stats_shape_and_duplicates(api: Api) -> None:
    await api.batch(batch("Hi {0}", "+15005550006", "+15005550006", "+15005550007"))
    await api.single(message(text="Hi A", to="+15005550007"))
    await api.get("/v2/messages/nope")
    stats = await api.stats()
    assert set(stats) >= {
        "requests", "responses", "accepted", "accepted_segments", "duplicates", "replays",
        "idempotency_conflicts", "rate_limited", "invalid_numbers", "faults", "codes", "dr",
    }  # fmt: skip
    assert stats["requests"] == {"single": 1, "batch": 1, "status": 1}
    assert stats["responses"] == {"200": 2, "404": 1}
    assert (stats["accepted"], stats["accepted_segments"], stats["duplicates"]) == (4, 4, 2)
    assert stats["faults"] == {
        "429": 0, "500_before": 0, "500_after": 0, "503": 0, "drop_before": 0, "drop_after": 0,
    }  # fmt: skip
    assert stats["dr"] == {"sent": 0, "failed": 0}
    code = stats["codes"]["12345"]
    assert (code["accepted"], code["segments"], code["max_window"]) == (4, 4, 4)
    assert code["first"] <= code["last"]


async def test_messages_dump_is_ndjson(api: Api) -> None:
    await api.batch(
        batch("Hi {0}", "+15005550006", "+15005550007"), headers={"Idempotency-Key": "k1"}
    )
    reply = await api.get("/_emulator/messages", key=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in reply.raw.splitlines()]
    assert lines == api.emulator.messages()
    for line in lines:
        assert set(line) >= {
            "id", "from", "to", "text", "segments", "encoding", "status", "idempotencyKey", "t",
            "externalId", "clientId",
        }  # fmt: skip
        assert (line["idempotencyKey"], line["status"], line["text"]) == ("k1", "QUEUE", "Hi A")


async def test_large_dump_streams_in_chunks(api: Api) -> None:
    for _ in range(3):
        await api.batch(batch("Hi {0}", *[f"+1500555{i:04d}" for i in range(1000)]))
    reply = await api.get("/_emulator/messages", key=None)
    assert len(reply.raw.splitlines()) == 3000


async def test_counts_ledger_keeps_counters_only(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    api = Api(http, await emulator_factory(ledger="counts", rate_limit=False))
    sent = await api.batch(batch("Hi {0}", "+15005550006", "+15005550006"))
    assert sent.status == 200
    stats = await api.stats()
    assert (stats["accepted"], stats["duplicates"]) == (2, 0)
    assert stats["codes"]["12345"]["max_window"] == 2
    assert api.emulator.messages() == []
    assert (await api.get("/_emulator/messages", key=None)).raw == b""
    assert (await api.get(f"/v2/messages/{sent.data['ids'][0]['id']}")).status == 404


async def test_reset_clears_ledger_and_stats(api: Api) -> None:
    await api.single(message())
    reply = await api.post("/_emulator/reset", key=None)
    assert reply.status == 200
    stats = await api.stats()
    assert (stats["accepted"], stats["requests"]["single"], stats["codes"]) == (0, 0, {})
    assert api.emulator.messages() == []


async def test_in_process_api(emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    assert emulator.base_url == f"http://127.0.0.1:{emulator.port}/raven"
    assert emulator.root_url == f"http://127.0.0.1:{emulator.port}"
    api = Api(http, emulator)
    await api.single(message())
    assert await emulator.stats() == await api.stats()
    faults = await emulator.set_faults(fail_503=0.5)
    assert faults["fail_503"] == 0.5
    assert (await api.get("/_emulator/faults", key=None)).json == faults


def test_public_names() -> None:
    import dispatcher.emulator as emulator

    assert sorted(emulator.__all__) == emulator.__all__
    for name in ("EmulatorSettings", "FaultSettings", "create_app", "running_emulator"):
        assert name in emulator.__all__
        assert getattr(emulator, name) is not None


# --- every bad request: 400/404/405/413 in the API's JSON shape, never a 500 ----------


def assert_error(reply: Any, status: int, explain: str | None = None) -> None:
    assert reply.status == status, reply.raw[:300]
    assert reply.headers["Content-Type"].startswith("application/json")
    assert set(reply.json) == {"meta"}
    assert_meta(reply.json)
    if explain is not None:
        assert explain in reply.explain, reply.explain


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/raven/v2/messages", "POST"),
        ("PUT", "/raven/v2/messages", "POST"),
        ("DELETE", "/raven/v3/messages/batch", "POST"),
        ("GET", "/raven/v3/messages/batch", "POST"),
        ("POST", "/raven/v2/messages/abc", "GET, HEAD"),
        ("PATCH", "/raven/v2/messages/abc", "GET, HEAD"),
        ("POST", "/_emulator/stats", "GET, HEAD"),
        ("DELETE", "/_emulator/faults", "GET, HEAD, POST"),
        ("GET", "/_emulator/reset", "POST"),
        ("POST", "/_emulator/openapi.json", "GET, HEAD"),
    ],
)
async def test_other_methods_are_405_json_with_allow(
    http: aiohttp.ClientSession, emulator: RunningEmulator, method: str, path: str, allow: str
) -> None:
    headers = {"Authorization": "Bearer test-key"}
    async with http.request(method, emulator.root_url + path, headers=headers) as resp:
        reply = Reply(resp.status, resp.headers, await resp.read())
    assert_error(reply, 405, f"{method} is not allowed here; use {allow}")
    assert reply.headers["Allow"] == allow


@pytest.mark.parametrize(
    "path",
    ["/", "/raven", "/raven/v2", "/raven/v2/messages/", "/raven/v1/messages", "/_emulator/x"],
)
async def test_unknown_paths_are_404_json(api: Api, path: str) -> None:
    async with api.session.get(api.emulator.root_url + path) as resp:
        reply = Reply(resp.status, resp.headers, await resp.read())
    assert_error(reply, 404, "no such endpoint: GET ")


async def test_a_body_over_the_limit_is_413_json(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    api = Api(http, await emulator_factory(max_body_bytes=2000, rate_limit=False))
    for path in ("/v2/messages", "/v3/messages/batch"):
        reply = await api.post(path, data=b'{"text": "' + b"x" * 3000 + b'"}')
        assert_error(reply, 413, "request body exceeds the limit of 2000 bytes")
    assert_error(await api.post("/_emulator/faults", data=b"[" * 3000, key=None), 413)
    assert (await api.single(message())).status == 200  # the connection is still good


async def test_too_many_recipients_is_413_json(
    emulator_factory: EmulatorFactory, http: Any
) -> None:
    api = Api(http, await emulator_factory(max_batch=2, rate_limit=False))
    assert_error(await api.batch(batch("x", *["+15005550006"] * 3)), 413, "limit of 2")


HUGE_INDEX = "{" + "9" * 5000 + "}"


@pytest.mark.parametrize(
    ("text", "explain"),
    [
        (HUGE_INDEX, "placeholder {99999999999999999999…} (5000 digits) is above {999}"),
        ("Hi {12345678901234567890}", "placeholder {12345678901234567890} is above {999}"),
        ("{0} {1000}", "placeholder {1000} is above {999}"),
    ],
)
async def test_a_placeholder_above_999_is_400(api: Api, text: str, explain: str) -> None:
    reply = await api.batch(
        {"from": "12345", "text": text, "to": [{"to": "+15005550006", "params": ["A"]}]}
    )
    assert_error(reply, 400, explain)
    assert (await api.stats())["accepted"] == 0
    # The single endpoint has no placeholders: the same text is just text.
    assert (await api.single(message(text=text[:700]))).status == 200


async def test_index_999_is_fine(api: Api) -> None:
    params = [str(i) for i in range(1000)]
    reply = await api.batch(
        {"from": "12345", "text": "{999}{0001}", "to": [{"to": "+15005550006", "params": params}]}
    )
    assert reply.status == 200
    assert api.emulator.messages()[0]["text"] == "9991"


@pytest.mark.parametrize("text", ["{0}", "{1}", "static", "{0}{1}{0}"])
@pytest.mark.parametrize("bad", [None, [1], {"a": 1}])
async def test_every_param_must_be_a_scalar_used_or_not(api: Api, text: str, bad: Any) -> None:
    one, two = {"to": "+15005550006", "params": ["a", "b"]}, {"to": "+15005550007"}
    for to, where in (
        ([one, {**two, "params": ["c", bad]}], "to[1].params[1]"),
        ([{**one, "params": ["a", "b", bad]}], "to[0].params[2]"),
        ([one, {"to": "1", "params": [bad]}], "to[1].params[0]"),  # an invalid number's too
    ):
        reply = await api.batch({"from": "12345", "text": text, "to": to})
        assert_error(reply, 400, f"{where} must be a string, number or boolean")
    assert (await api.stats())["accepted"] == 0


@pytest.mark.parametrize(
    "digits",
    [
        "18446744073709551616",  # 2**64: orjson reads it as a float
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1" + "0" * 400,  # beyond a double: orjson refuses the body
        "7" * 1500,
    ],
)
async def test_integers_of_any_size_render_exactly(api: Api, digits: str) -> None:
    body = (
        b'{"from": "ACME", "text": "Ref {0} / {1} / {2}", "to": ['
        b'{"to": "+15005550006", "params": [' + digits.encode() + b', 1e19, 18446744073709551615]},'
        b'{"to": "1", "params": [' + digits.encode() + b", 1, 2]}]}"
    )  # fmt: skip
    reply = await api.batch(None, data=body)
    assert reply.status == 200, reply.raw[:300]
    assert reply.data["invalidNumber"] == ["1"]
    [stored] = api.emulator.messages()
    assert stored["text"] == f"Ref {digits} / 1e+19 / 18446744073709551615"


async def test_an_integer_beyond_what_int_takes_is_measured_not_a_500(api: Api) -> None:
    body = b'{"from": "A", "text": "{0}", "to": [{"to": "+15005550006", "params": ['
    reply = await api.batch(None, data=body + b"7" * 5000 + b"]}]}")
    assert reply.status == 400
    assert reply.explain == "Text exceeds the limit of allowed segments"
    assert reply.data == {"status": "SEGMENTS_EXCEEDED"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"from": "A", "text": "{0}", "to": [{"to": "+15005550006", "params": [1' + b"0" * 400
        + b', "\\ud800"]}]}',
        b'{"from": "A", "text": "{0}", "to": [{"to": "+15005550006", "params": [1' + b"0" * 400
        + b", NaN]}]}",
        b'{"from": "A", "text": "{0}", "to": [{"to": "+15005550006", "params": [1' + b"0" * 400
        + b"]}]" + b"[" * 100_000,
        b"[" + b"1" * 400 + b"]",
    ],
)  # fmt: skip
async def test_bodies_only_the_exact_parse_could_read_are_still_refused(
    api: Api, raw: bytes
) -> None:
    for path in ("/v2/messages", "/v3/messages/batch"):
        reply = await api.post(path, data=raw)
        assert_error(reply, 400, "JSON")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"from": "A", "text": "x", "to": "+15005550006", "callbacks": 1}',
        b'{"from": "A", "text": "x", "to": [{"to": "+15005550006", "params": [1]}]}',
        b'{"from": "A", "text": "x", "to": 18446744073709551616}',
        b'{"from": "A", "text": "x", "to": ' + b"9" * 400 + b"}",
        b'{"from": ' + b"9" * 400 + b', "text": "x", "to": "+15005550006"}',
        b'{"from": ["A"], "text": "x", "to": "+15005550006"}',
        b'{"from": "A", "text": "x", "to": "+15005550006", "requestDR": 1}',
        b'{"from": "A", "text": "x", "to": "+15005550006", "type": null, "requestDR": null}',
    ],
)
async def test_single_bodies_are_200_or_400_never_500(api: Api, raw: bytes) -> None:
    reply = await api.single(None, data=raw)
    assert reply.status in (200, 400), reply.raw
    if reply.status == 400:
        assert_error(reply, 400)


@pytest.mark.parametrize(
    ("key", "ok"),
    [("k", True), ("x" * 255, True), ("a b~!", True), ("x" * 256, False), ("é", False)],
)
async def test_idempotency_key_must_be_printable_ascii(api: Api, key: str, ok: bool) -> None:
    headers = {"Idempotency-Key": key}
    async with api.session.post(
        api.emulator.base_url + "/v2/messages",
        data=orjson.dumps(message()),
        headers={"Authorization": "Bearer test-key", **headers},
    ) as resp:
        reply = Reply(resp.status, resp.headers, await resp.read())
    if ok:
        assert reply.status == 200
    else:
        assert_error(reply, 400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
        assert (await api.stats())["accepted"] == 0


async def test_an_id_must_be_exactly_what_was_issued(api: Api) -> None:
    sent = await api.single(message())
    id_ = sent.data["id"]
    assert (await api.get(f"/v2/messages/{id_.upper()}")).status == 200
    for alias in (id_[:20] + "+000", id_[:12] + "0_00" + id_[16:], id_[:-1] + " ", id_ + "0"):
        assert_error(await api.get(f"/v2/messages/{alias}"), 404, "message not found")
