"""The campaign-safety engines of issue 13 on their own: opt-out lists and dedupe.
Prints ONE JSON object.

- **list load**: wall time, and resident memory added (steady, after the load, and peak)
  of `SuppressionList.load` on lists of 1 M and 10 M numbers, one per line and NDJSON
  (``{"to": …}`` lines with a few other keys, as a CRM export or a results file has).
  The numbers are E.164 mobiles of a dozen countries, a tenth without the ``+`` and a
  tenth spaced out, as people keep them.
- **contains_many**: ns per line on chunks of 3000 normalised numbers (2 % of them
  listed), against each list.
- **dedupe**: ns per line of `Dedupe.check_many` on chunks of 3000 lines (2 % repeat an
  earlier line, from anywhere in the job) while it grows to 1 M and 10 M distinct
  recipients: over the whole job and over its last tenth; resident memory added, steady
  and peak, over the same loop with ``--dedupe off`` (which shows the loop's own).

Every figure is measured in a child process pinned to one core (``_harness.CLIENT_CORE``),
which imports what it needs before its baseline. ns per line are CPU time (the machine is
shared): the wall time is beside it.

    .venv/bin/python bench/bench_campaign.py [--sizes 1000000 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness as h
import orjson

CHUNK = 3000
DUPLICATES = 0.02
# Country code, national length, leading national digits: mobiles, roughly.
COUNTRIES = [
    ("52", 10, "55"), ("52", 10, "33"), ("1", 10, "202"), ("1", 10, "415"), ("44", 10, "7"),
    ("33", 9, "6"), ("49", 11, "15"), ("34", 9, "6"), ("55", 11, "119"), ("57", 10, "3"),
    ("54", 10, "911"), ("91", 10, "9"), ("39", 10, "3"), ("81", 10, "90"),
]  # fmt: skip
NAMES = ["Ana", "Luis", "Sofía", "José", "Chloé", "Jorge", "Fernanda", "Elizabeth"]


# --- data ------------------------------------------------------------------------------


def numbers(count: int, seed: int) -> list[str]:
    """``count`` distinct E.164 numbers (with the +), realistic prefixes and lengths."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        code, length, lead = rng.choice(COUNTRIES)
        rest = length - len(lead)
        out.add(f"+{code}{lead}{rng.randrange(10**rest):0{rest}d}")
    result = sorted(out)
    rng.shuffle(result)
    return result


def as_written(number: str, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.1:
        return number[1:]
    if style < 0.2:
        digits = number[1:]
        return f"+{digits[:2]} {digits[2:5]} {digits[5:8]} {digits[8:]}"
    return number


def list_files(workdir: str, count: int) -> dict[str, str]:
    """The list of ``count`` numbers, one per line ("txt") and as NDJSON ("ndjson")."""
    paths = {kind: os.path.join(workdir, f"optout-{count}.{kind}") for kind in ("txt", "ndjson")}
    if all(os.path.exists(path) for path in paths.values()):
        return paths
    rng = random.Random(count)
    with open(paths["txt"] + ".tmp", "w") as txt, open(paths["ndjson"] + ".tmp", "w") as ndjson:
        for i, number in enumerate(numbers(count, seed=count)):
            written = as_written(number, rng)
            txt.write(written + "\n")
            ndjson.write(orjson.dumps({"to": written, "name": rng.choice(NAMES), "id": i}).decode())
            ndjson.write("\n")
    for path in paths.values():
        os.replace(path + ".tmp", path)
    return paths


# --- children ----------------------------------------------------------------------------


def memory() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak() -> None:
    """Start VmHWM afresh (Linux >= 4.0), so the peak is the measured step's."""
    with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
        f.write("5")


def child_load(path: str) -> dict[str, Any]:
    from dispatcher.suppress import SuppressionList

    gc.collect()
    reset_peak()
    before, _ = memory()
    wall, cpu = time.perf_counter(), time.process_time()
    lists = SuppressionList.load([path])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    gc.collect()
    after, peak = memory()
    (stats,) = lists.stats
    return {
        "entries": stats.entries,
        "distinct": len(lists),
        "unparseable": stats.unparseable,
        "not_valid": stats.not_valid,
        "load_s": round(wall, 2),
        "load_cpu_s": round(cpu, 2),
        "added_rss_mib": round(after - before, 1),
        "peak_added_rss_mib": round(peak - before, 1),
        "array_mib": round(lists.nbytes / 2**20, 1),
    }


def child_check(path: str) -> dict[str, Any]:
    from dispatcher import native
    from dispatcher.numbers import normalize_many
    from dispatcher.suppress import SuppressionList

    if native.core is not None:
        from dispatcher.keys import number_keys
    else:
        from dispatcher.sorted_keys import number_keys  # type: ignore[assignment]

    lists = SuppressionList.load([path])
    with open(path) as f:
        listed = [n for n in normalize_many([next(f).strip() for _ in range(10_000)]) if n]
    others = numbers(100_000, seed=99)
    rng = random.Random(5)
    chunks = []
    for _ in range(30):
        chunk = rng.sample(others, CHUNK)
        for i in rng.sample(range(CHUNK), int(CHUNK * DUPLICATES)):
            chunk[i] = rng.choice(listed)
        chunks.append(chunk)
    best_cpu = best_wall = float("inf")
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        for chunk in chunks:
            lists.contains_many(chunk)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    keys = [number_keys(chunk) for chunk in chunks]
    best_keys = float("inf")
    for _ in range(5):
        cpu = time.process_time()
        for k in keys:
            lists.listed_keys(k)
        best_keys = min(best_keys, time.process_time() - cpu)
    lines = len(chunks) * CHUNK
    return {
        "contains_many_ns_per_line": round(best_cpu / lines * 1e9),
        "contains_many_wall_ns_per_line": round(best_wall / lines * 1e9),
        "listed_keys_ns_per_line": round(best_keys / lines * 1e9),
        "listed_share": DUPLICATES,
    }


def child_dedupe(count: int, mode: str) -> dict[str, Any]:
    from dispatcher import native
    from dispatcher.dedupe import Dedupe

    if native.core is None:  # the numpy record: numpy imported before the baseline
        import dispatcher.dedupe_runs  # noqa: F401

    engine = Dedupe(mode)
    Dedupe(mode).check_many("12345", ["+525512345678"] * 10, ["t"] * 10, list(range(1, 11)))
    rng = random.Random(7)
    made: list[tuple[str, str]] = []
    gc.collect()
    gc.freeze()
    reset_peak()
    before, _ = memory()
    cpu_total = wall_total = cpu_last = 0.0
    lines_last = line = fresh = 0
    total = round(count / (1 - DUPLICATES) / CHUNK) * CHUNK  # the same in every mode
    while line < total:
        chunk_numbers, chunk_texts = [], []
        for _ in range(CHUNK):
            if made and rng.random() < DUPLICATES:
                number, text = made[rng.randrange(len(made))]
            else:
                # Distinct for every `fresh` below 10^8: 7919 is prime to 10^8.
                number = f"+52{55 + fresh % 3}{fresh * 7919 % 10**8:08d}"
                text = f"Hola {rng.choice(NAMES)}, tu saldo es ${rng.randrange(10**5) / 100}"
                fresh += 1
                if len(made) < 200_000:  # what repeats are drawn from
                    made.append((number, text))
                else:
                    made[rng.randrange(len(made))] = (number, text)
            chunk_numbers.append(number)
            chunk_texts.append(text)
        lines = list(range(line + 1, line + CHUNK + 1))
        wall, cpu = time.perf_counter(), time.process_time()
        engine.check_many("12345", chunk_numbers, chunk_texts, lines)
        cpu = time.process_time() - cpu
        wall_total += time.perf_counter() - wall
        cpu_total += cpu
        line += CHUNK
        if line > 0.9 * total:
            cpu_last += cpu
            lines_last += CHUNK
    after, peak = memory()
    return {
        "mode": mode,
        "lines": line,
        "distinct": len(engine),
        "ns_per_line": round(cpu_total / line * 1e9),
        "wall_ns_per_line": round(wall_total / line * 1e9),
        "last_tenth_ns_per_line": round(cpu_last / max(lines_last, 1) * 1e9),
        "runs": engine.runs,
        "run_bytes_per_entry": round(engine.nbytes / max(len(engine), 1), 1),
        "rss_mib": round(after - before, 1),
        "peak_rss_mib": round(peak - before, 1),
    }


# --- parent --------------------------------------------------------------------------------


def run(*args: str) -> dict[str, Any]:
    done = h.run_child([h.PYTHON, __file__, "--child", *args])
    if done.returncode != 0:
        raise SystemExit(f"child {args} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    result["child_max_rss_mib"] = round(done.max_rss_mib, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--keep", help="keep the generated lists in this directory")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "load":
            out = child_load(rest[0])
        elif kind == "check":
            out = child_check(rest[0])
        else:
            out = child_dedupe(int(rest[0]), rest[1])
        sys.stdout.write(orjson.dumps(out).decode())
        return
    document: dict[str, Any] = {"bench": "campaign", "machine": h.machine(), "chunk": CHUNK}
    workdir = args.keep or tempfile.mkdtemp(prefix="bench-campaign-")
    os.makedirs(workdir, exist_ok=True)
    try:
        lists: dict[str, Any] = {}
        for size in args.sizes:
            for kind, path in list_files(workdir, size).items():
                lists[f"{size}.{kind}"] = {"file_mib": round(os.path.getsize(path) / 2**20, 1)}
                lists[f"{size}.{kind}"].update(run("load", path))
            lists[f"{size}.txt"].update(run("check", list_files(workdir, size)["txt"]))
        document["lists"] = lists
        dedupe: dict[str, Any] = {}
        for size in args.sizes:
            off = run("dedupe", str(size), "off")
            for mode in ("number+text", "number"):
                on = run("dedupe", str(size), mode)
                on["added_rss_mib"] = round(on["rss_mib"] - off["rss_mib"], 1)
                on["added_bytes_per_distinct"] = round(
                    on["added_rss_mib"] * 2**20 / on["distinct"], 1
                )
                on["peak_added_bytes_per_distinct"] = round(
                    (on["peak_rss_mib"] - off["peak_rss_mib"]) * 2**20 / on["distinct"], 1
                )
                dedupe[f"{size}.{mode}"] = on
            dedupe[f"{size}.off"] = off
        document["dedupe"] = dedupe
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    h.emit(document)


if __name__ == "__main__":
    main()
