"""The parent's arithmetic for ``send --workers N``: shares, rates, caps, summaries, and
the hand-out of stdin."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import config as cfg
from dispatcher import workers
from dispatcher.reader import LineParser
from dispatcher.shares import Share, share_of
from dispatcher.workers import HandOut, Worker, for_worker, join_summaries, worker_argv


def test_each_worker_gets_its_share_of_rates_and_caps() -> None:
    config = cfg.load(
        flags={"rates": {"A": 100.0}, "max_messages": 10, "max_cost": 9.0,
               "price_per_segment": 0.1, "workers": 3},
        env={},
    )  # fmt: skip
    parts = [for_worker(config, k, 3) for k in (1, 2, 3)]
    assert [p.max_messages for p in parts] == [4, 3, 3]  # the remainder to the first
    assert sum(p.max_messages or 0 for p in parts) == 10
    assert [p.rates["A"] for p in parts] == [100 / 3] * 3
    assert math.isclose(sum(p.max_cost or 0 for p in parts), 9.0)
    assert [p.shard for p in parts] == ["1/3", "2/3", "3/3"]
    assert all(p.workers == 1 for p in parts)


def test_with_a_shared_quota_the_rates_stay_whole() -> None:
    config = cfg.load(
        flags={"rates": {"A": 100.0}, "quota_url": "redis://127.0.0.1:6379/0", "workers": 2},
        env={},
    )
    assert for_worker(config, 1, 2).rates["A"] == 100.0


def test_with_a_shared_quota_the_caps_stay_whole_for_the_job_wide_count() -> None:
    config = cfg.load(
        flags={"max_messages": 7, "max_job_segments": 9, "max_cost": 1.5,
               "price_per_segment": 0.1, "quota_url": "redis://127.0.0.1:6379/0",
               "workers": 2},
        env={},
    )  # fmt: skip
    for k in (1, 2):
        part = for_worker(config, k, 2)
        assert (part.max_messages, part.max_job_segments, part.max_cost) == (7, 9, 1.5)
        assert part.shard == f"{k}/2"  # each counts its own part of the job's count


def test_workers_within_a_shard_keep_only_the_shards_lines() -> None:
    config = cfg.load(flags={"shard": "2/3", "workers": 2}, env={})
    shares = [Share.parse(for_worker(config, k, 2).shard or "") for k in (1, 2)]
    for digits in range(10**9, 10**9 + 3000):
        number = f"+{digits}"
        owners = [s for s in shares if share_of(number, 1, s.count) == s.index]
        in_shard = share_of(number, 1, 3) == 1
        assert len(owners) == (1 if in_shard else 0)


def test_worker_command_lines() -> None:
    config = cfg.load(flags={"results": "out.ndjson", "invalid": "bad.ndjson"}, env={})
    worker = Worker.of(config, 2, 3, "/tmp")
    argv = ["send", "in.ndjson", "--results", "out.ndjson", "--workers", "3", "--resume"]
    words = worker_argv(argv, worker, resume=False)
    assert "--resume" not in words
    assert words[-7:] == [
        "--results", "out.ndjson.w2of3", "--summary", "out.ndjson.w2of3.summary.json",
        "--invalid", "bad.ndjson.w2of3", "--no-progress",
    ]  # fmt: skip
    assert worker_argv(argv, worker, resume=True).count("--resume") == 1


def test_summaries_add_up() -> None:
    one = {
        "lines": 3, "statuses": {"QUEUE": 2, "REJECTED": 1}, "requests": 2,
        "segments": {"billable": 2, "by_encoding": {"GSM7": 2}, "ambiguous": 0},
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "codes": {"A": {"messages": 2, "segments": 2, "configured_rate": 50.0}},
        "resumed_lines": 0, "exit_reason": "completed", "policy": {"cap_reached": None},
    }  # fmt: skip
    two = {
        **one,
        "statuses": {"QUEUE": 3},
        "latency_ms": {"p50": 5.0, "p90": 6.0, "p99": 7.0, "max": 8.0},
        "policy": {"cap_reached": {"cap": "max_messages", "line": 9}},
    }
    joined = join_summaries([one, two], elapsed=2.0)
    assert joined["lines"] == 6
    assert joined["statuses"] == {"QUEUE": 5, "REJECTED": 1}
    assert joined["segments"]["by_encoding"] == {"GSM7": 4}
    assert joined["latency_ms"]["p99"] == 7.0
    assert joined["codes"]["A"]["configured_rate"] == 100.0
    assert joined["codes"]["A"]["achieved_rate"] == 2.0
    assert joined["policy"]["cap_reached"] == {"cap": "max_messages", "line": 9}
    assert joined["workers"] == 2


def test_the_job_s_progress_line_sums_the_workers_numbers() -> None:
    import io

    from dispatcher.metrics import Snapshot, merge
    from dispatcher.progress import Progress, show_job

    def worker(queued: int, failed: int, invalid: int, read: int) -> Snapshot:
        snapshot = Snapshot()
        snapshot.set("dispatcher_recipients_total", queued, ("QUEUE", "12345"))
        snapshot.set("dispatcher_recipients_total", failed, ("FAILED", "12345"))
        snapshot.set("dispatcher_recipients_total", invalid, ("INVALID_NUMBER", ""))
        snapshot.set("dispatcher_input_read_bytes_total", read)
        snapshot.set("dispatcher_input_size_bytes", 1000)
        return snapshot

    out = io.StringIO()
    progress = Progress(None, stream=out)
    show_job(progress, merge([worker(40, 1, 2, 600), worker(50, 0, 3, 900)]), elapsed=2.0)
    progress.close()
    shown = out.getvalue().replace("\r", "\n").splitlines()[-1]
    assert "lines=96 sent=90 failed=1 48/s" in shown
    assert shown.startswith(" 60%")  # the input as far as the slowest worker has read it


# --- the hand-out of stdin --------------------------------------------------------------

#: Lines as people's files have them (as bench/_mixed.py makes them), and the ones the
#: reader numbers or rejects by their bytes: CRLF, blank, invalid UTF-8, NUL, too long.
MESSY = [
    b'{"to": "+1 (415) 555-0123", "params": ["Jos\xc3\xa9", 10.65]}',
    b'{"to": "14155550123", "params": ["Ann", 1]}',  # the same number, another format
    b'{"to": "+44 20 7946 0958", "params": ["Zo\xc3\xab", 120], "ref": "crm-1"}\r',
    b'{"to": "+52.55.1234.5678", "params": ["Wei", 3]}',
    b'{"to": "+4930123456789", "params": ["Bj\xc3\xb6rn", 7], "text": "Hi {0}"}',
    b"",
    b"   ",
    b"\t\r",
    b"\xef\xbb\xbf",  # a BOM that is not at the start: not stripped
    b'{"to": "+12345", "params": ["Ann", 1]}',  # invalid numbers
    b'{"to": "0412 345 678", "params": ["Ann", 1]}',
    b'{"to": "", "params": []}',
    b'{"to": "+15550001111", "params": ["Ann", 1',  # malformed
    b'["+15550001111", "Ann"]',
    b'{"to": 15550001111, "params": ["Ann", 1]}',
    b'{"params": ["Ann", 1]}',
    b"to=+15550001111",
    b'{"to": "+14155550124", "params": ["\xff\xfe"]}',  # invalid UTF-8
    b'{"to": "+14155550125", "params": ["a\x00b"]}',
    b'{"to": "+14155550126", "params": ["' + b"x" * 40 + b'"]}',  # longer than 64
    b'{"to": "+14155550127", "params": ["' + b"y" * 23 + b'"]}\r',  # 64 and a CR
    b'{"to": "+1415555012", "params": ["' + b"z" * 25 + b'"]}',  # 65
    b"w" * 300,
]
MAX = 64


def _records(data: bytes) -> tuple[list[Any], int]:
    parser = LineParser(max_line_bytes=MAX)
    records = parser.feed(data) + parser.finish()
    return records, parser.lines


def _shares(n: int, shard: str | None) -> list[Share]:
    config = cfg.load(flags={"workers": n, **({"shard": shard} if shard else {})}, env={})
    return [Share.parse(for_worker(config, k, n).shard or "") for k in range(1, n + 1)]


@settings(deadline=None, max_examples=300)
@given(
    st.lists(st.sampled_from(MESSY), min_size=1, max_size=30),
    st.booleans(),
    st.booleans(),
    st.integers(1, 4),
    st.sampled_from([None, "1/2", "2/3"]),
    st.lists(st.integers(1, 90), min_size=1, max_size=8),
)
def test_each_worker_keeps_from_its_hand_out_what_it_keeps_from_the_whole_input(
    lines: list[bytes], bom: bool, last_newline: bool, n: int, shard: str | None,
    sizes: list[int],
) -> None:  # fmt: skip
    data = b"\n".join(lines) + (b"\n" if last_newline else b"")
    if bom:
        data = b"\xef\xbb\xbf" + data
    whole, count = _records(data)
    shares = _shares(n, shard)
    hand_out = HandOut(shares, max_line_bytes=MAX)
    given_to: list[list[bytes]] = [[] for _ in shares]
    at = 0
    for size in itertools.cycle(sizes):  # chunks of every size, as a pipe delivers them
        if at >= len(data):
            break
        for into, block in zip(given_to, hand_out.feed(data[at : at + size]), strict=True):
            into.append(block)
        at += size
    for into, block in zip(given_to, hand_out.finish(), strict=True):
        into.append(block)
    # longer than MAX as they come (a BOM and a CR included): judged by every worker
    raw = [len(line) for line in lines]
    raw[0] += 3 if bom else 0
    too_long = {number for number, size in enumerate(raw, 1) if size > MAX}
    for share, blocks in zip(shares, given_to, strict=True):
        records, numbered = _records(b"".join(blocks))
        assert numbered == count  # every line keeps its number
        assert share.keep(records) == share.keep(whole)
        # the worker parses its own lines, and only the long ones of the others
        others = {r.line for r in records} - {r.line for r in share.keep(records)}
        assert others <= too_long


def test_a_long_line_is_passed_on_as_it_comes_not_held() -> None:
    hand_out = HandOut([Share(0, 2), Share(1, 2)], max_line_bytes=MAX)
    assert hand_out.feed(b"x" * 50) == [b"", b""]  # perhaps a line of its own
    assert hand_out.feed(b"y" * 50) == [b"x" * 50 + b"y" * 50] * 2  # too long: everyone's
    assert hand_out.feed(b"z" * 1000) == [b"z" * 1000] * 2
    assert hand_out.feed(b"z\n") == [b"z\n"] * 2
    assert hand_out.lines == 1


def test_a_worker_gets_a_newline_for_each_line_of_the_others() -> None:
    first = b'{"to": "+14155550100", "params": []}'
    shares = [Share(0, 2), Share(1, 2)]
    owner = Share(0, 2).keep(LineParser().feed(first + b"\n")) != []
    hand_out = HandOut(shares, max_line_bytes=MAX)
    mine, theirs = (0, 1) if owner else (1, 0)
    out = hand_out.feed(first + b"\n\n" + first)  # the last line without its newline
    assert out[mine] == first + b"\n\n"
    assert out[theirs] == b"\n\n"
    out = hand_out.finish()
    assert out[mine] == first
    assert out[theirs] == b"\n"  # a newline numbers the last line for the others


async def _pipe_writer() -> tuple[asyncio.StreamWriter, int]:
    """A StreamWriter on a real pipe (as a worker's stdin) and the pipe's read end."""
    read, write = os.pipe()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop), os.fdopen(write, "wb")
    )
    return asyncio.StreamWriter(transport, protocol, None, loop), read


async def test_lines_that_have_come_reach_the_workers_before_eof_and_a_gone_worker() -> None:
    line = b'{"to": "+14155550100", "params": []}'
    shares = [Share(0, 3), Share(1, 3), Share(2, 3)]
    owner = next(k for k, s in enumerate(shares) if s.keep(LineParser().feed(line + b"\n")))
    gone = (owner + 1) % 3
    source_read, source_write = os.pipe()
    sinks, reads = zip(*[await _pipe_writer() for _ in shares], strict=True)
    os.close(reads[gone])  # that worker has gone: the others go on
    source = os.fdopen(source_read, "rb")
    deal = asyncio.create_task(workers._deal(source, list(sinks), shares, 65536))
    loop = asyncio.get_running_loop()
    try:
        os.write(source_write, line + b"\n" + line[:10])  # a line, and the start of one
        got = await asyncio.wait_for(loop.run_in_executor(None, os.read, reads[owner], 100), 30)
        assert got == line + b"\n"  # before any EOF
        os.write(source_write, line[10:] + b"\n")
        os.close(source_write)
        await asyncio.wait_for(deal, 30)
        for k in {0, 1, 2} - {gone}:
            with os.fdopen(reads[k], "rb") as f:
                assert f.read() == (line + b"\n" if k == owner else b"\n\n")  # then EOF
    finally:
        source.close()
        deal.cancel()
