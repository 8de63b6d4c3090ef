"""The parent's arithmetic for ``send --workers N``: shares, rates, caps, summaries."""

from __future__ import annotations

import math

from dispatcher import config as cfg
from dispatcher.shares import Share, share_of
from dispatcher.workers import Worker, for_worker, join_summaries, worker_argv


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
