"""The afternoon script: `dispatcher send`'s necessary work, written the straightforward way.

What a competent engineer writes in an afternoon for "send this NDJSON file through the
batch endpoint": read the lines, normalise the numbers, render the template, count the
segments, post batches of 1000 with 16 requests in flight (asyncio + aiohttp, one
session), write one result per line. No retries, journal, rate limits, linger or
progress: the comparison is about the work every sender must do. JSON is the standard
library's (``--json orjson`` swaps in orjson, to show how much of the gap that is).

    python bench/_afternoon.py INPUT --base-url URL --from 12345 --text 'Hi {0}' \
        --results OUT [--batch-size 1000] [--concurrency 16]

The API key comes from DISPATCHER_API_KEY. Prints one JSON line with its own timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from typing import Any

import aiohttp

GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")
GSM7_ALL = GSM7 | GSM7_EXTENSION
SEPARATORS = re.compile(r"[\s\-.()]")
E164 = re.compile(r"\+?([1-9][0-9]{7,14})")
PLACEHOLDER = re.compile(r"\{([0-9]+)\}")

loads, dumps = json.loads, json.dumps


def normalize(raw: str) -> str | None:
    match = E164.fullmatch(SEPARATORS.sub("", raw))
    return "+" + match[1] if match else None


def render(template: str, params: list[Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        value = params[int(match[1])]
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)

    return PLACEHOLDER.sub(fill, template)


def segments(text: str) -> tuple[str, int]:
    chars = set(text)
    if chars <= GSM7_ALL:
        septets = len(text) + sum(text.count(c) for c in chars & GSM7_EXTENSION)
        return "GSM7", -(-septets // 160)
    units = len(text.encode("utf-16-le")) // 2
    return "UCS2", -(-units // 70)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    headers = {
        "Authorization": f"Bearer {os.environ['DISPATCHER_API_KEY']}",
        "Content-Type": "application/json",
    }
    url = args.base_url + "/v3/messages/batch"
    slots = asyncio.Semaphore(args.concurrency)
    counts = {"lines": 0, "accepted": 0, "requests": 0}
    out = open(args.results, "w", encoding="utf-8")  # noqa: SIM115

    def result(**fields: Any) -> None:
        out.write(dumps(fields, ensure_ascii=False) + "\n")
        counts["lines"] += 1

    async def send(text: str, batch: list[tuple[int, str, list[Any], str, int, Any]]) -> None:
        try:
            body = {
                "from": args.sender,
                "text": text,
                "type": "MT",
                "to": [{"to": to, "params": params} for _, to, params, _, _, _ in batch],
            }
            async with session.post(url, data=dumps(body)) as resp:
                status = resp.status
                answer = loads(await resp.read())
            counts["requests"] += 1
            if status != 200:
                for line, to, _, _, _, ref in batch:
                    error = str(answer.get("meta", {}).get("explain"))
                    result(line=line, to=to, status="FAILED", error=error, ref=ref)
                return
            data, meta = answer["data"], answer["meta"]
            ids = iter(data["ids"])
            invalid = set(data["invalidNumber"])
            for line, to, _, encoding, segs, ref in batch:
                if to in invalid:
                    result(line=line, to=to, status="INVALID_NUMBER", error="gateway")
                    continue
                fields = {
                    "line": line,
                    "to": to,
                    "status": data["status"],
                    "id": next(ids)["id"],
                    "segments": segs,
                    "encoding": encoding,
                    "attempts": 1,
                    "transactionId": meta["transactionId"],
                }
                if ref is not None:
                    fields["ref"] = ref
                result(**fields)
                counts["accepted"] += 1
        finally:
            slots.release()

    tasks: set[asyncio.Task[None]] = set()

    async def flush(text: str, batch: list[Any]) -> None:
        await slots.acquire()
        task = asyncio.create_task(send(text, batch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        # One batch per text: a line may carry its own text instead of the template.
        batches: dict[str, list[tuple[int, str, list[Any], str, int, Any]]] = {}
        with open(args.input, encoding="utf-8-sig") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    record = loads(raw)
                    to_raw, params, ref = record["to"], record.get("params", []), record.get("ref")
                    template = record.get("text", args.text)
                    if not isinstance(to_raw, str) or not isinstance(params, list):
                        raise TypeError("to must be a string and params a list")
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    result(line=number, status="REJECTED", error=str(exc))
                    continue
                to = normalize(to_raw)
                if to is None:
                    result(line=number, to=to_raw, status="INVALID_NUMBER", error="bad number")
                    continue
                try:
                    text = render(template, params)
                except (IndexError, TypeError):
                    result(line=number, to=to, status="REJECTED", error="missing param")
                    continue
                encoding, segs = segments(text)
                if segs > 10:
                    result(line=number, to=to, status="SEGMENTS_EXCEEDED", ref=ref)
                    continue
                batch = batches.setdefault(template, [])
                batch.append((number, to, params, encoding, segs, ref))
                if len(batch) == args.batch_size:
                    await flush(template, batch)
                    batches[template] = []
        for template, batch in batches.items():
            if batch:
                await flush(template, batch)
        while tasks:
            await asyncio.gather(*tasks)
    out.close()
    return {**counts, "elapsed_s": round(time.perf_counter() - started, 3)}


def run() -> None:
    global loads, dumps
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("input")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", choices=["stdlib", "orjson"], default="stdlib")
    args = parser.parse_args()
    if args.json == "orjson":
        import orjson

        loads = orjson.loads

        def dumps(value: Any, **_: Any) -> str:
            return orjson.dumps(value).decode()

    print(json.dumps(asyncio.run(main(args))))


if __name__ == "__main__":
    run()
