"""The per-chunk and per-batch loops in C (`dispatcher._native`), when they are built:
the campaign checks', and the send path's (the usual input line read into its record,
the plain lines rendered and counted, the batch body, the gateway's usual answer, the
accepted result lines).

``pip install`` compiles ``csrc/native.c`` into ``dispatcher._native`` where a C
compiler is (``setup.py``; the extension is optional, so an install without one goes
on). Each of its functions has a twin beside its caller that gives the same answer,
bit for bit — numpy or Python code, or the library it stands in for (msgspec's decode
for the usual line, orjson and `dispatcher.api.parse_batch` for the answer) — and the
tests check each pair against each other. `core` is the module, or None: then the
twins run.

``DISPATCHER_NATIVE=0`` in the environment turns the C part off (the twins run), for the
tests of the twins and to measure one against the other in the same tree. What it saves
is in the README's campaign-safety figures.
"""

from __future__ import annotations

import os
from types import ModuleType

#: The `dispatcher._native` these modules are written for (its ``VERSION``).
VERSION = 13


def _load() -> ModuleType | None:
    if os.environ.get("DISPATCHER_NATIVE", "1") == "0":
        return None
    try:
        from dispatcher import _native
    except ImportError:  # not built here (no C compiler at install): the numpy twins run
        return None
    if getattr(_native, "VERSION", None) != VERSION:
        # Built from older sources (``csrc/native.c`` changed since the last ``pip
        # install``): its functions may not be the ones called here. The twins run, and
        # ``tests/unit/test_native.py`` fails until it is rebuilt.
        return None
    return _native


#: `dispatcher._native`, or None where it is not built or turned off.
core: ModuleType | None = _load()
