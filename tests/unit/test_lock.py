"""The job lock: exclusive across open files (so across processes), named by the
results file's real path, telling who holds it, and dying with its holder."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dispatcher.errors import OutputError
from dispatcher.lock import JobBusy, JobLock, lock_path


def test_a_locked_job_is_busy_until_released(tmp_path: Path) -> None:
    results = str(tmp_path / "results.ndjson")
    lock = JobLock.acquire(results)
    holder = orjson.loads(Path(lock_path(results)).read_bytes())
    assert holder["pid"] == os.getpid()
    assert holder["host"] == socket.gethostname()
    pattern = rf"job {results} is being run by process {os.getpid()} on host .* since "
    with pytest.raises(JobBusy, match=pattern):
        JobLock.acquire(results)
    lock.release()
    assert not Path(lock_path(results)).exists()
    JobLock.acquire(results).release()


def test_spellings_and_symlinks_name_one_job(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.ndjson").symlink_to(tmp_path / "results.ndjson")
    with JobLock.acquire(str(tmp_path / "results.ndjson")):
        for other in (tmp_path / "sub" / ".." / "results.ndjson", tmp_path / "link.ndjson"):
            with pytest.raises(JobBusy):
                JobLock.acquire(str(other))


def test_a_lock_file_left_by_a_dead_process_is_no_obstacle(tmp_path: Path) -> None:
    results = str(tmp_path / "results.ndjson")
    stale = {"pid": 999_999_999, "host": socket.gethostname(), "since": "2020-01-01T00:00:00Z"}
    Path(lock_path(results)).write_bytes(orjson.dumps(stale))
    with JobLock.acquire(results):
        assert orjson.loads(Path(lock_path(results)).read_bytes())["pid"] == os.getpid()


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    results = str(tmp_path / "results.ndjson")
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from dispatcher.lock import JobLock; "
            f"JobLock.acquire({results!r}); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(JobBusy, match=f"process {holder.pid} on host"):
            JobLock.acquire(results)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    JobLock.acquire(results).release()


def test_a_lock_file_that_cannot_be_created_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot write the lock file"):
        JobLock.acquire(str(tmp_path / "file" / "results.ndjson"))


def test_a_lock_file_removed_as_it_is_locked_is_locked_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder ends (removes the file, unlocks) between a run's open and its flock:
    the run must not keep a lock on a file no one else can find any more."""
    results = str(tmp_path / "results.ndjson")
    holder = JobLock.acquire(results)
    real_flock = fcntl.flock

    def holder_ends_first(fd: int, operation: int) -> None:
        holder.release()
        monkeypatch.setattr(fcntl, "flock", real_flock)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", holder_ends_first)
    with JobLock.acquire(results):
        assert orjson.loads(Path(lock_path(results)).read_bytes())["pid"] == os.getpid()
        with pytest.raises(JobBusy):
            JobLock.acquire(results)
