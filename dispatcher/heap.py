"""The C heap under the campaign checks' numpy arrays (glibc's malloc; elsewhere nothing).

The opt-out lists and the packed duplicate record (`dispatcher.suppress`,
`dispatcher.dedupe_runs`) allocate and free numpy arrays of 128 KiB to a few tens of
MiB over and over: a list file's blocks while it loads, the runs' merges while a job
grows. glibc's defaults serve each of those from fresh memory: an allocation of 128 KiB
or more gets a map of its own (the threshold rises only as such maps are freed), and
free memory at the top of the heap beyond 128 KiB is handed back at once. Either way
the next array of that size page-faults its memory in again, zeroed by the kernel.

`settle` raises both thresholds to `THRESHOLD` once, before the first such array: the
arrays then come from the heap and reuse what the last ones freed. Measured on
``dispatcher send`` of 1 M recipients with a 1 M-number opt-out list and ``number+text``
dedupe (the issue-13 run): 37 k minor page faults against 65 k, the same peak resident
memory (96–99 MiB). A job without the checks never calls it (and never imports numpy).

`release` hands the heap's free pages back (``malloc_trim``): the duplicate record calls
it after its big merges, so that memory the job no longer holds does not count against
it (see `dispatcher.dedupe_runs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

#: Arrays below this come from the heap, and free memory at its top is kept up to this.
#: 32 MiB is the most glibc accepts for the first on 64-bit systems.
THRESHOLD: Final = 32 << 20
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

_settled = False
_malloc_trim: Callable[[int], object] | None = None


def settle() -> None:
    """Raise glibc's map and trim thresholds to `THRESHOLD` (once; later calls do
    nothing). Without glibc: nothing."""
    global _settled
    if _settled:
        return
    _settled = True
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, THRESHOLD)


def release() -> None:
    """Hand the heap's free pages back to the system (``malloc_trim``). Without glibc:
    nothing."""
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = getattr(_libc(), "malloc_trim", None) or (lambda pad: None)
    _malloc_trim(0)


def _libc() -> object:
    try:
        import ctypes

        return ctypes.CDLL(None)
    except (OSError, ImportError):
        return None
