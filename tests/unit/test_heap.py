"""`dispatcher.heap`: after `settle`, big arrays come from the heap, not maps of their own."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the thresholds are glibc's (elsewhere settle and release do nothing)",
)

# mallinfo2's hblks: the blocks glibc serves from maps of their own.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np
    from dispatcher import heap

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = Info

    def mapped_by(size):
        before = mallinfo2().hblks
        block = np.ones(size, dtype=np.uint8)
        after = mallinfo2().hblks
        del block
        return after - before

    print(mapped_by(4 << 20))
    heap.settle()
    heap.settle()  # once is enough; again is harmless
    print(mapped_by(4 << 20), mapped_by(24 << 20))
    heap.release()
    print("released")
    """
)


def test_settle_serves_big_arrays_from_the_heap() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after, released = done.stdout.splitlines()
    assert before == "1"  # glibc's default: a map of its own for 4 MiB
    assert after == "0 0"  # settled: from the heap, up to the threshold
    assert released == "released"
