"""dispatcher.durable: what a write returns from is in the file, a failed write leaves the
file as it was, and concurrent writers share one write (group commit)."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dispatcher.durable import AppendFile, GroupCommit
from dispatcher.errors import OutputError


class CountingFile(AppendFile):
    """A real AppendFile that counts its writes and syncs."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.appends: list[bytes] = []
        self.syncs = 0

    def append(self, data: bytes) -> None:
        self.appends.append(data)
        super().append(data)

    def sync(self) -> None:
        self.syncs += 1
        super().sync()


async def test_concurrent_writes_share_one_write_and_sync(tmp_path: Path) -> None:
    sink = CountingFile(tmp_path / "out")
    results: list[tuple[OSError | None, int]] = []
    commit = GroupCommit(sink, fsync=True, on_result=lambda e, n: results.append((e, n)))
    await asyncio.gather(*(commit.write(b"%d\n" % i) for i in range(50)))
    await asyncio.gather(*(commit.write(b"%d\n" % i, items=2) for i in range(50, 60)))
    sink.close()
    lines = (tmp_path / "out").read_bytes().splitlines()
    assert sorted(map(int, lines)) == list(range(60))
    assert len(sink.appends) == sink.syncs == 2  # one per burst, not one per caller
    assert results == [(None, 50), (None, 20)]


async def test_without_fsync_a_write_is_done_at_once_and_synced_on_request(
    tmp_path: Path,
) -> None:
    sink = CountingFile(tmp_path / "out")
    commit = GroupCommit(sink, fsync=False, on_result=lambda e, n: None)
    await commit.write(b"a\n")
    assert (tmp_path / "out").read_bytes() == b"a\n"
    commit.sync_soon()
    writes = [asyncio.ensure_future(commit.write(b"%d\n" % i)) for i in range(3)]
    await asyncio.gather(*writes)  # they waited for the sync, in order
    await commit.drain()
    sink.close()
    assert sink.syncs == 1
    assert (tmp_path / "out").read_bytes() == b"a\n0\n1\n2\n"


async def test_a_failed_write_reaches_every_caller_of_its_batch() -> None:
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full here")
    results: list[tuple[OSError | None, int]] = []
    sink = AppendFile("/dev/full")
    commit = GroupCommit(sink, fsync=True, on_result=lambda e, n: results.append((e, n)))
    writes = (commit.write(b"x\n") for _ in range(3))
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(o, OSError) and o.errno == errno.ENOSPC for o in outcomes)
    assert [n for _, n in results] == [3]
    sink.close()  # a device: nothing to sync, no error


async def test_a_cancelled_caller_does_not_stop_the_write(tmp_path: Path) -> None:
    sink = AppendFile(tmp_path / "out")
    commit = GroupCommit(sink, fsync=True, on_result=lambda e, n: None)
    first = asyncio.ensure_future(commit.write(b"a\n"))
    second = asyncio.ensure_future(commit.write(b"b\n"))
    await asyncio.sleep(0)  # both handed in
    second.cancel()
    await first
    await commit.drain()
    sink.close()
    assert (tmp_path / "out").read_bytes() == b"a\nb\n"


def test_a_removed_file_is_recreated_with_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "out"
    sink = AppendFile(path)
    sink.append(b"one\n")
    path.unlink()
    sink.append(b"two\n")
    assert path.read_bytes() == b"one\ntwo\n"
    path.unlink()
    sink.close()
    assert path.read_bytes() == b"one\ntwo\n"


def test_a_removed_file_that_cannot_be_recreated_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    sink = AppendFile(folder / "out")
    sink.append(b"one\n")
    (folder / "out").unlink()
    folder.rmdir()
    with pytest.raises(FileNotFoundError):
        sink.append(b"two\n")
    with pytest.raises(OutputError, match="removed and cannot be re-created"):
        sink.close()


def test_a_lazy_file_appears_on_the_first_write(tmp_path: Path) -> None:
    sink = AppendFile(tmp_path / "side", lazy=True)
    assert not (tmp_path / "side").exists()
    sink.close()
    assert not (tmp_path / "side").exists()
    sink = AppendFile(tmp_path / "side", lazy=True)
    sink.append(b"x\n")
    sink.close()
    assert (tmp_path / "side").read_bytes() == b"x\n"


def test_an_unopenable_file_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot open"):
        AppendFile(tmp_path)


def test_a_write_that_fails_half_way_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    # A file-size limit (RLIMIT_FSIZE) is a disk that fills up mid-write, for real and
    # without privileges; it is set in a child process so the test run is not limited.
    path = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import resource
        from dispatcher.durable import AppendFile
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        sink = AppendFile({str(path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))
        sink.append(b"a" * 59 + b"\\n")
        try:
            sink.append(b"b" * 59 + b"\\n")  # 40 bytes fit, then EFBIG
        except OSError as exc:
            print(exc.errno)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        sink.append(b"c" * 9 + b"\\n")
        sink.close()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == str(errno.EFBIG)
    assert path.read_bytes() == b"a" * 59 + b"\n" + b"c" * 9 + b"\n"
