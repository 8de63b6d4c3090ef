"""``dispatcher status`` in a subprocess, on the ids a real ``dispatcher send`` wrote."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from tests.support.cli import KEY, dispatcher, ndjson, parse_ndjson, send_args, write_lines
from tests.support.emulators import EmulatorFactory
from tests.support.stub_gateway import stub_gateway


async def test_status_of_sent_ids(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(
        tmp_path / "in.ndjson",
        [{"to": f"+5255000000{n:02d}", "params": ["a", n]} for n in range(20)],
    )
    sent = await dispatcher(
        *send_args(emulator.base_url, source, "--results", "results.ndjson"), cwd=tmp_path
    )
    assert sent.code == 0, sent.stderr
    assert len(ndjson(tmp_path / "results.ndjson")) == 20
    status = ["status", "--base-url", emulator.base_url]

    run = await dispatcher(*status, "--results", "results.ndjson", "--sample", "5", cwd=tmp_path)
    assert run.code == 0, run.stderr
    answers = run.results()
    assert len(answers) == 5
    assert all("status" in a and "error" not in a for a in answers)

    missing = await dispatcher(*status, "nope", cwd=tmp_path)
    assert missing.code == 1
    assert "error" in parse_ndjson(missing.stdout)[0]

    usage = await dispatcher(*status, cwd=tmp_path)
    assert usage.code == 2
    assert "give message ids" in usage.stderr


IDS = ["../../x", "a/b?c#d", "..", ".", "%2e%2e", "..%2F..%2Fadmin", "é ü", "ok-1"]


async def test_each_id_is_one_path_segment(tmp_path: Path) -> None:
    """An id cannot point the authenticated request at another path: whatever it holds
    (``..``, ``/``, ``?``, ``#``, ``%``), it arrives as one segment under v2/messages."""

    async def found(request: web.Request) -> web.Response:
        return web.json_response({"data": {"status": "DELIVRD"}})

    async with stub_gateway(found) as gateway:
        run = await dispatcher(
            "status", "--base-url", gateway.base_url, "--rate", "1000", "--", *IDS, cwd=tmp_path
        )
    assert run.code == 0, run.stderr
    assert sorted(a["id"] for a in run.results()) == sorted(IDS)
    prefix = "/raven/v2/messages/"
    paths = [r.raw_path for r in gateway.requests]
    assert len(paths) == len(IDS)
    segments = []
    for path in paths:
        assert path.startswith(prefix), path
        segment = path.removeprefix(prefix)
        assert not set("/?#") & set(segment), path
        assert segment not in (".", ".."), path
        segments.append(unquote(segment))
    assert sorted(segments) == sorted(IDS)
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in gateway.requests)
