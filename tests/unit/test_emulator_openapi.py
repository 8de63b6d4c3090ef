"""The OpenAPI document of the emulated gateway API: valid, served as kept in the repo,
covering every route, and Schemathesis against the running emulator finds nothing.

The Schemathesis run is the real CLI (``python -m schemathesis.cli run``) in a
subprocess, pointed at the document the emulator serves, while the emulator runs in this
test's event loop on 127.0.0.1:0 with fault-free settings (no injected faults, no rate
limits). Its checks: no 5xx, status codes, content types, headers and bodies as
documented, schema-violating requests refused, missing auth refused, 405 with ``Allow``
for undocumented methods, and stateful sequences following the document's links (send,
then look the id up). Bounded by a fixed seed and a number of examples per operation: it
takes about 10-20 s here.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatcher.emulator.control import OPENAPI_PATH, openapi_document
from dispatcher.emulator.runner import RunningEmulator
from tests.support.emulators import TEST_KEY, EmulatorFactory

DOCUMENT = Path(__file__).parents[2] / "dispatcher" / "emulator" / "openapi.json"
#: The checks that a schema cannot keep true: a text too long for 10 segments, or a
#: placeholder without its param, is valid by any JSON schema and still refused (400).
NOT_CHECKED = "positive_data_acceptance"
MAX_EXAMPLES = 60
SEED = 12


def document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_bytes())  # type: ignore[no-any-return]


def needs_schemathesis() -> Any:
    return pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")


def test_the_document_is_valid_openapi_3() -> None:
    schemathesis = needs_schemathesis()
    doc = document()
    assert doc["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # against the OpenAPI 3.0 meta-schema
    operations = {(op.ok().method, op.ok().path) for op in schema.get_all_operations()}
    assert operations == {
        ("post", "/v2/messages"),
        ("post", "/v3/messages/batch"),
        ("get", "/v2/messages/{id}"),
    }


def test_the_document_describes_what_the_issue_asks() -> None:
    doc = document()
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path in ("/v2/messages", "/v3/messages/batch"):
        post = doc["paths"][path]["post"]
        assert post["parameters"] == [{"$ref": "#/components/parameters/IdempotencyKey"}]
        assert set(post["responses"]) == {"200", "400", "401", "413", "422", "429", "500", "503"}
    assert set(doc["paths"]["/v2/messages/{id}"]["get"]["responses"]) == {"200", "401", "404"}
    meta = doc["components"]["schemas"]["Meta"]
    assert set(meta["properties"]) == {"timestamp", "transactionId", "explain"}


async def test_the_emulator_serves_the_document_kept_in_the_repo(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    assert openapi_document() == DOCUMENT.read_bytes()  # as package data too
    async with http.get(emulator.root_url + OPENAPI_PATH) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.read() == DOCUMENT.read_bytes()


def test_every_gateway_route_is_documented() -> None:
    from dispatcher.emulator import EmulatorSettings, create_app

    app = create_app(EmulatorSettings(api_key="k"))
    served = {
        (route.method.lower(), route.resource.canonical.removeprefix("/raven"))
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/raven/")
        and route.method not in ("*", "HEAD")
    }
    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    assert served == documented


async def test_schemathesis_finds_nothing(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    needs_schemathesis()
    # Fault-free: no injected faults, no rate limits (a 429 is documented, but would
    # only slow the run), the default batch size and segment limit.
    emulator = await emulator_factory(rate_limit=False, seed=SEED)
    report = tmp_path / "report.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "run",
        emulator.root_url + OPENAPI_PATH,
        "--header", f"Authorization: Bearer {TEST_KEY}",
        "--checks", "all",
        "--exclude-checks", NOT_CHECKED,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "10",
        "--suppress-health-check", "all",  # too_slow on a loaded machine is not a finding
        "--continue-on-failure",
        "--report", "json",
        "--report-json-path", str(report),
        cwd=tmp_path,  # its .hypothesis database and reports stay out of the repo
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    text = output.decode(errors="replace")
    result = json.loads(report.read_bytes())
    assert (process.returncode, result["failures"], result["errors"]) == (0, [], []), text
    assert result["operations"]["tested"] == 3, text
    phases = {name: phase["status"] for name, phase in result["phases"].items()}
    assert phases == dict.fromkeys(("examples", "coverage", "fuzzing", "stateful"), "success")
    # The emulator's own count of its answers: never a 5xx, and many requests got past
    # validation (accepted messages), so the run reached the rendering and the ledger.
    stats = await emulator.stats()
    assert not [status for status in stats["responses"] if status.startswith("5")], stats
    assert stats["responses"]["200"] >= 50, stats["responses"]
    assert stats["accepted"] >= 50, stats
