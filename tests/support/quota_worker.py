"""One process of the multi-process quota tests: books batches of one code through the
shared quota for a while, posting each batch to a gateway when given one.

    python -m tests.support.quota_worker SPEC_JSON

SPEC: {url, namespace, code, rate, units, start (time.monotonic() to begin at — the
clock is system-wide), seconds, worker (a digit), base_url?, api_key?}. Prints one JSON object:
{"sends": [[monotonic, slot on the Redis clock, units], ...], "stats": {...}}.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from typing import Any

import aiohttp
import orjson

from dispatcher.limiter import RateLimits
from dispatcher.quota import open_quota


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    code = spec["code"]
    limits = RateLimits(rates={code: spec["rate"]}, kind_rates={})
    quota = await open_quota(spec["url"], limits=limits, namespace=spec["namespace"])
    sends: list[tuple[float, float | None, float]] = []
    units = spec["units"]
    async with aiohttp.ClientSession() as session, quota:

        async def post(first: int) -> None:
            # as a sender lane does: the request runs while the next batch books its slot
            recipients = [{"to": f"+52{spec['worker']}{first + k:09d}"} for k in range(units)]
            body = {"from": code, "text": "quota test", "to": recipients}
            headers = {"Authorization": f"Bearer {spec['api_key']}"}
            url = spec["base_url"] + "/v3/messages/batch"
            async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"gateway answered {resp.status}: {await resp.text()}")

        requests: list[asyncio.Task[None]] = []
        await asyncio.sleep(max(0.0, spec["start"] - time.monotonic()))
        end = spec["start"] + spec["seconds"]
        while time.monotonic() < end:
            slot = await quota.acquire(code, units)
            sends.append((time.monotonic(), slot, units))
            if spec.get("base_url"):
                requests.append(asyncio.create_task(post(len(sends) * units)))
        await asyncio.gather(*requests)
    return {"sends": sends, "stats": dataclasses.asdict(quota.stats)}


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(run(spec))) + b"\n")


if __name__ == "__main__":
    main()
