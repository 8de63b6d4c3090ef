"""``send --workers N -`` with gzip on stdin: the parent inflates the stream once and
hands out its lines as it does plain stdin's (`dispatcher.workers._deal`); a stream that
breaks off raises the error a single ``send -`` reports, and no worker sees an EOF."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading

import pytest

from dispatcher import workers
from dispatcher.errors import InputError
from dispatcher.shares import Share
from tests.support.gzipped import members
from tests.unit.test_workers import _pipe_writer

SHARES = [Share(0, 3), Share(1, 3), Share(2, 3)]
LINES = b"".join(
    b'{"to": "+1415555%04d", "params": ["%s"]}\n' % (n, b"x" * (n % 50)) for n in range(3000)
)


async def _deal(data: bytes) -> tuple[list[bytes], BaseException | None, list[bool]]:
    """What each worker gets of ``data`` on stdin (until EOF, or until the deal ends
    without one), how the deal ended, and whether it closed each worker's stdin."""
    source_read, source_write = os.pipe()
    sinks, reads = zip(*[await _pipe_writer() for _ in SHARES], strict=True)

    def write() -> None:
        with os.fdopen(source_write, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    received: list[bytearray] = [bytearray() for _ in SHARES]

    def drain(k: int) -> None:
        while piece := os.read(reads[k], 1 << 16):
            received[k] += piece

    drains = [threading.Thread(target=drain, args=(k,)) for k in range(len(SHARES))]
    for thread in drains:
        thread.start()
    source = os.fdopen(source_read, "rb")
    error = None
    try:
        await asyncio.wait_for(workers._deal(source, list(sinks), SHARES, 65536), 60)
    except InputError as exc:
        error = exc
    finally:
        source.close()
        writer.join()
    closed = [sink.is_closing() for sink in sinks]
    if error is not None:  # no EOF went to the workers: end their pipes here
        for sink in sinks:
            sink.close()
    loop = asyncio.get_running_loop()
    for thread in drains:
        await loop.run_in_executor(None, thread.join)
    for read in reads:
        os.close(read)
    return [bytes(r) for r in received], error, closed


async def test_gzip_on_stdin_is_handed_out_inflated_as_plain_stdin_is() -> None:
    plain, error, closed = await _deal(LINES)
    assert error is None
    assert all(closed)
    inflated, error, closed = await _deal(members(LINES))
    assert error is None
    assert all(closed)
    assert inflated == plain
    assert all(not got.startswith(b"\x1f\x8b") for got in inflated)
    assert sum(got.count(b"{") for got in inflated) == 3000  # each line to one worker


@pytest.mark.parametrize("cut", ["truncated", "corrupt"])
async def test_a_broken_gzip_stream_raises_the_readers_error_and_sends_no_eof(cut: str) -> None:
    whole = gzip.compress(LINES)
    if cut == "truncated":
        data = whole[: len(whole) - 12]
        expected = "is truncated: the gzip data ends before its end marker (after line "
    else:
        data = whole[:100] + bytes(b ^ 0x5A for b in whole[100:400]) + whole[400:]
        expected = "has corrupt gzip data ("
    got, error, closed = await _deal(data)
    assert isinstance(error, InputError)
    assert not any(closed)  # no EOF: a worker must not take a cut input for a whole one
    assert expected in str(error)
    assert str(error).endswith("; every line up to it was read)")
    # the lines before the break were handed out, each whole to its worker
    assert all(block.endswith(b"\n") or not block for block in got)
