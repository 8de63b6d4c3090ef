"""``dispatcher send``'s HTTP: its own HTTP/1.1 client (`dispatcher.http1`), so the run
never imports aiohttp (0.17 s of start-up), and an https gateway whose certificate the
system does not trust stops the run at once with a clear message."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from aiohttp import web

from tests.support.cli import KEY, dispatcher, env, send_args, write_lines
from tests.support.emulators import EmulatorFactory
from tests.support.loopback import serving
from tests.support.tls import self_signed, server_context

LINES = [{"to": f"+5255000000{n:02d}", "params": [f"n{n}", n]} for n in range(1, 11)]


async def test_a_send_never_imports_aiohttp(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(tmp_path / "in.ndjson", LINES)
    for flags in ((), ("--batch-size", "1")):
        run = await dispatcher(
            *send_args(emulator.base_url, source, *flags),
            cwd=tmp_path,
            environ=env(PYTHONPROFILEIMPORTTIME="1"),  # python -X importtime
        )
        assert run.code == 0, run.stderr
        assert {r["status"] for r in run.results()} == {"QUEUE"}
        imported = re.findall(r"^import time:.*\|\s*(\S+)$", run.stderr, re.MULTILINE)
        assert "dispatcher.pipeline" in imported  # the real send path was taken
        assert [m for m in imported if m.split(".")[0] == "aiohttp"] == []
    assert len(emulator.messages()) == 2 * len(LINES)


async def test_an_untrusted_https_gateway_stops_the_run_with_a_clear_message(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path)
    asked: list[str] = []

    async def never(request: web.Request) -> web.Response:  # the handshake fails first
        asked.append(request.path)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", never)
    source = write_lines(tmp_path / "in.ndjson", LINES[:3])
    async with serving(app, ssl_context=server_context(cert, key)) as port:
        base_url = f"https://127.0.0.1:{port}/raven"
        run = await dispatcher(
            *send_args(base_url, source, "--max-attempts", "2"),
            "--summary", "summary.json",
            cwd=tmp_path,
            timeout=30,
        )  # fmt: skip
    assert run.code == 3, run.stderr  # aborted: the gateway cannot be reached
    assert "certificate verify failed" in run.stderr
    assert f"cannot connect to 127.0.0.1:{port}/raven/v3/messages/batch" in run.stderr
    assert "Traceback" not in run.stderr
    assert KEY not in run.stderr
    assert asked == []
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert "certificate verify failed" in summary["exit_reason"]
    assert summary["retries"] == {"total": 1, "connect": 1}  # safe: tried again, as asked
