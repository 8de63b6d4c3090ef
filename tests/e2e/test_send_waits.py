"""Every wait is bounded by the retry policy: a gateway answering 429 with a huge,
infinite, far-future or garbage ``Retry-After`` delays neither the retry nor the other
batches of the sender code beyond ``retry_max_wait``, and the pause is logged."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.cli import CODE, dispatcher, ndjson, write_lines
from tests.support.stub_gateway import accepted, stub_gateway

LINES = [{"to": f"+52550000000{n}", "params": [str(n)]} for n in range(3)]


@pytest.mark.parametrize(
    "retry_after",
    [
        "999999999",
        "9" * 400,
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "inf",
        "1e400",
        "nan",
        "-5",
        "soon",
        "Mon, 01 Jan 1990 00:00:00 GMT",
    ],
)
async def test_a_huge_or_bad_retry_after_is_clamped(tmp_path: Path, retry_after: str) -> None:
    answers = itertools.count()
    ids = itertools.count()

    async def rate_limit_once(request: web.Request) -> web.Response:
        body = await request.json()
        if next(answers) == 0:
            return web.json_response(
                {"meta": {"explain": "slow down"}}, status=429, headers={"Retry-After": retry_after}
            )
        return accepted(body, ids=ids)

    (tmp_path / "c.toml").write_text("[retry]\nretry_max_wait = 0.5\n")
    source = write_lines(tmp_path / "in.ndjson", LINES)
    async with stub_gateway(rate_limit_once) as gateway:
        run = await dispatcher(
            "send", source, "--from", CODE, "--text", "Hi {0}", "--config", "c.toml",
            "--base-url", gateway.base_url, "--batch-size", "1", "--concurrency", "1",
            "--results", "results.ndjson", "--log-level", "info", "--no-progress",
            cwd=tmp_path,
            timeout=30,  # an unclamped wait would be 300 s (the deadline) or for ever
        )  # fmt: skip
    assert run.code == 0, run.stderr
    results = ndjson(tmp_path / "results.ndjson")
    assert sorted(r["status"] for r in results) == ["QUEUE"] * 3
    assert len(gateway.sends) == 4
    if retry_after in ("999999999", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"):
        assert f"code {CODE} paused 0.5 s after 429 (Retry-After" in run.stderr
        assert "clamped to 0.5 s" in run.stderr
