"""The floor of issue 16's targets: what `send`'s necessary work costs per line when
every step is one C-level call over a whole column, with no Python code per line.

Issue 16 asks ``dispatcher send`` on the mixed file (bench/_mixed.py) for at least
0.35 × the transport ceiling and 3 × the hand-written script. Both are budgets of CPU
per recipient on one core: the ceiling's rate R_c gives 1 / (0.35 R_c) for everything,
the transport included. This measures, on the same mixed lines, the cheapest form of
each step that `send` cannot skip — each a single ``map``/``starmap``/library call over
the column, as no real pipeline can be (no error handling, no per-line branching, no
Python between steps) — and adds them up, beside the transport's own CPU (the ceiling
client: pre-built bodies posted by aiohttp, `bench_pipeline.ceiling_phase`, in its own
process against bench/_sink.py). If the floor already exceeds the budget, no Python
design of the same work meets the target; the gap says how much of the work would have
to leave Python.

The steps (every one optimistic: a lower bound of what it stands for):

- ``split``: the file's bytes into lines (``bytes.split``);
- ``decode``: each well-formed line into `dispatcher.models.Recipient` by msgspec (the
  malformed ones are dropped before timing: no error path);
- ``normalise``: separators dropped from each number's bytes (``bytes.translate``) — no
  country rules, no validity check, no decoding back to str;
- ``render``: ``TEMPLATE.format(*params)`` (``starmap``) — no own texts, no escapes;
- ``count``: ``str.isascii`` and ``len`` — no GSM-7 table, no extension characters;
- ``dedupe``: XXH3 of each text's UTF-8 and a Python set of ``(number, hash)`` — no line
  numbers, no packed memory;
- ``body``: ``orjson.dumps`` of 1000 ``(number, params)`` pairs a batch (arrays, not
  the API's objects: no dict per recipient);
- ``answer``: ``orjson.loads`` of the sink's answer of 1000 ids and the ids picked out;
- ``results``: one result line per recipient from a ``%`` template (cheaper than
  ``str.format``), joined and
  encoded — no refs, no escaping, no journal.

CPU time (``time.process_time``), best of ``--repeat`` rounds, in this process pinned
to the client core; the ceiling in its own process, as bench_pipeline runs it.

    .venv/bin/python bench/bench_floor.py [--count 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from itertools import repeat, starmap
from operator import attrgetter, itemgetter, mod
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import _mixed
import msgspec
import orjson
import xxhash

from dispatcher.models import Recipient

BATCH = 1000
_RESULT = (
    '{"line":%d,"to":"%s","status":"ACCEPTED","id":"%s","segments":1,'
    '"encoding":"GSM-7","attempts":1,"transactionId":"sink-1"}\n'
)
_SEPARATORS = b" -.()"


def _best(rounds: int, step: Callable[[], object]) -> float:
    """Best CPU seconds of ``step`` over ``rounds`` runs, with the collector paused."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            started = time.process_time()
            step()
            best = min(best, time.process_time() - started)
        finally:
            gc.enable()
    return best


def floor(count: int, rounds: int) -> dict[str, Any]:
    """µs per line of each step over ``count`` mixed lines, and their sum."""
    data = b"".join(_mixed.lines(count, seed=1)).removeprefix("\ufeff".encode())
    raw = data.split(b"\n")
    decode = msgspec.json.Decoder(Recipient).decode
    good = []
    for line in raw:
        try:
            record = decode(line)
        except msgspec.DecodeError:
            continue
        if record.text is None and len(record.params) == 2:
            good.append(line)
    records = list(map(decode, good))
    numbers = list(map(attrgetter("to"), records))
    params = list(map(attrgetter("params"), records))
    normal = [n.encode().translate(None, _SEPARATORS).decode() for n in numbers]
    texts = list(starmap(_mixed.TEMPLATE.format, params))
    hashes = list(map(xxhash.xxh3_64_intdigest, map(str.encode, texts)))
    pairs = list(zip(normal, params, strict=True))
    batches = [pairs[i : i + BATCH] for i in range(0, len(pairs), BATCH)]
    bodies = [orjson.dumps({"from": "12345", "text": _mixed.TEMPLATE, "to": b}) for b in batches]
    answer = orjson.dumps(
        {"meta": {}, "data": {"ids": [{"id": f"{i:016x}", "mobile": "+1"} for i in range(BATCH)]}}
    )
    ids = [f"{i:016x}" for i in range(len(good))]
    line_numbers = list(range(1, len(good) + 1))

    steps: dict[str, Callable[[], object]] = {
        "split": lambda: data.split(b"\n"),
        "decode": lambda: list(map(decode, good)),
        "normalise": lambda: list(
            map(bytes.translate, map(str.encode, numbers), repeat(None), repeat(_SEPARATORS))
        ),
        "render": lambda: list(starmap(_mixed.TEMPLATE.format, params)),
        "count": lambda: (list(map(str.isascii, texts)), list(map(len, texts))),
        "dedupe": lambda: set(
            zip(normal, map(xxhash.xxh3_64_intdigest, map(str.encode, texts)), strict=True)
        ),
        "body": lambda: [
            orjson.dumps({"from": "12345", "text": _mixed.TEMPLATE, "to": b}) for b in batches
        ],
        "answer": lambda: [
            list(map(itemgetter("id"), orjson.loads(answer)["data"]["ids"])) for _ in batches
        ],
        "results": lambda: "".join(
            map(mod, repeat(_RESULT), zip(line_numbers, normal, ids, strict=True))
        ).encode(),
    }
    per_line = {
        name: round(_best(rounds, step) / len(good) * 1e6, 3) for name, step in steps.items()
    }
    del hashes, bodies
    return {
        "lines": len(raw),
        "timed_lines": len(good),
        "us_per_line": per_line,
        "floor_us_per_line": round(sum(per_line.values()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", help="keep the mixed file here (default: a temp dir)")
    args = parser.parse_args()

    from bench_pipeline import ceiling_phase

    machine = h.machine()
    workdir = h.workdir(args.workdir, "bench-floor-")
    os.makedirs(workdir, exist_ok=True)
    source = os.path.join(workdir, f"mixed-{args.count}.ndjson")
    _mixed.write(source, args.count, seed=1)
    server = h.start_sink()
    try:
        ceilings = [ceiling_phase(server, source) for _ in range(args.repeat)]
    finally:
        server.stop()
    ceiling = max(ceilings, key=lambda run: run["recipients_per_s"])
    transport_us = ceiling["own"]["posting_cpu_s"] / ceiling["own"]["recipients"] * 1e6

    h.pin_to(h.CLIENT_CORE)()
    work = floor(args.count, args.repeat)
    rate = ceiling["recipients_per_s"]
    budget_ceiling = 1e6 / (0.35 * rate)
    total = work["floor_us_per_line"] + transport_us
    h.emit(
        {
            "bench": "floor",
            **machine,
            "count": args.count,
            **work,
            "transport_us_per_line": round(transport_us, 3),
            "floor_with_transport_us": round(total, 3),
            "ceiling_recipients_per_s": rate,
            "budget_us_for_0.35_ceiling": round(budget_ceiling, 3),
            "floor_over_budget": round(total / budget_ceiling, 2),
            "load": round(os.getloadavg()[0], 2),
        }
    )


if __name__ == "__main__":
    main()
