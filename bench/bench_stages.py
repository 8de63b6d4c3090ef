"""Per-recipient cost of the pure stages: parse, normalise, render, count.

Beside them, what the options of issue 13 would add per recipient on the same texts:
``count_3gpp`` (the other segment model) and ``smart_encode`` (smart encoding, which only
works on the UCS-2 ones: the pipeline need not call it on a GSM-7 text).

Standalone: generates realistic one-segment NDJSON lines in memory, runs each stage over
all of them a few times (best run kept), and prints ONE JSON object with microseconds
per recipient. Run on an idle core, e.g.:

    python bench/bench_stages.py --lines 200000 --repeat 5
    taskset -c 1 python bench/bench_stages.py --gc freeze

The set-up objects are moved out of the collector's sight (``gc.freeze()``), then every
stage is timed twice: with CPython's default GC thresholds (``gc_default``) and with the
collector disabled (``gc_off``), which shows what GC tuning in the pipeline could win.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from dispatcher.models import Recipient
from dispatcher.numbers import normalize
from dispatcher.reader import LineParser, Reader
from dispatcher.renderer import compile_template
from dispatcher.segments import count
from dispatcher.smart import encode

# At most 70 characters once rendered: one segment even when a name makes it UCS-2.
TEMPLATE = "Hola {0}, tu saldo es ${1} MXN. Paga en example.com/pago"
# Spanish names: "é" is in GSM 03.38, "í" is not (about 1 text in 5 is UCS-2 here).
NAMES = ["Elizabeth", "Joshua", "Ana", "Luis", "Fernanda", "Jorge", "Sofía", "José", "Chloé"]
CHUNK = 1 << 20


def generate(n: int, seed: int) -> bytes:
    """NDJSON like a CRM export: numbers in several formats, an amount, a ref on some."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        digits = f"5255{rng.randrange(10**8):08d}"
        style = rng.random()
        if style < 0.8:
            to = f"+{digits}"
        elif style < 0.95:
            to = digits
        else:
            to = f"+52 55 {digits[4:8]} {digits[8:]}"
        amount = round(rng.uniform(1, 9999), 2)
        line: dict[str, Any] = {"to": to, "params": [rng.choice(NAMES), amount]}
        if i % 3 == 0:
            line["ref"] = f"crm-{i}"
        out.append(orjson.dumps(line))
    return b"\n".join(out) + b"\n"


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    data = generate(args.lines, args.seed)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    template = compile_template(TEMPLATE)

    def parse_all() -> list[Recipient]:
        parser = LineParser()
        out: list[Any] = []
        for chunk in chunks:
            out.extend(parser.feed(chunk))
        out.extend(parser.finish())
        return out

    def parse() -> None:
        # Chunk by chunk, each chunk's records dropped after it, as in the pipeline.
        parser = LineParser()
        for chunk in chunks:
            parser.feed(chunk)
        parser.finish()

    def each(fn: Callable[[Any], object], items: list[Any]) -> Callable[[], None]:
        def run() -> None:
            for item in items:
                fn(item)

        return run

    recipients = parse_all()
    assert len(recipients) == args.lines
    assert all(type(r) is Recipient for r in recipients)
    numbers = [r.to for r in recipients]
    params = [r.params for r in recipients]
    texts = [template.render(p) for p in params]

    def all_four() -> None:
        # Chunk by chunk, as the pipeline will: parse, then the per-recipient work.
        parser = LineParser()
        render = template.render
        for chunk in chunks:
            for r in parser.feed(chunk):
                normalize(r.to)  # type: ignore[union-attr]
                count(render(r.params))  # type: ignore[union-attr]

    def read_file(path: Path) -> Callable[[], None]:
        # The async Reader end to end: file I/O and gunzip on its thread, one hop per chunk.
        async def read() -> None:
            async for _records in Reader(path):
                pass

        return lambda: asyncio.run(read())

    tmp = tempfile.TemporaryDirectory()
    plain, packed = Path(tmp.name) / "in.ndjson", Path(tmp.name) / "in.ndjson.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data, compresslevel=6))

    stages: dict[str, Callable[[], object]] = {
        "parse": parse,
        "normalize": each(normalize, numbers),
        "render": each(template.render, params),
        "count": each(count, texts),
        "count_3gpp": each(lambda text: count(text, "3gpp"), texts),
        "smart_encode": each(encode, texts),
        "all_four": all_four,
        "reader_file": read_file(plain),
        "reader_gzip_file": read_file(packed),
    }
    gc.collect()
    gc.freeze()
    results = {}
    for mode in ("gc_default", "gc_off"):
        if mode == "gc_off":
            gc.disable()
        us = {name: best_of(args.repeat, fn) / args.lines * 1e6 for name, fn in stages.items()}
        us["sum_of_stages"] = sum(us[k] for k in ("parse", "normalize", "render", "count"))
        results[mode] = {k: round(v, 3) for k, v in us.items()}
    gc.enable()
    tmp.cleanup()

    segs = [count(t) for t in texts]
    assert {s.segments for s in segs} == {1}, "the bench is about one-segment texts"
    print(
        json.dumps(
            {
                "bench": "stages",
                "unit": "us_per_recipient",
                **results,
                "target_all_four": 1.5,
                "lines": args.lines,
                "input_bytes": len(data),
                "repeat": args.repeat,
                "template": TEMPLATE,
                "gsm7_share": round(sum(s.encoding == "GSM7" for s in segs) / len(segs), 3),
                "python": platform.python_version(),
                "orjson": orjson.__version__,
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
