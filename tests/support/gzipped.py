"""gzip data as people's tools make it."""

from __future__ import annotations

import gzip


def members(data: bytes, padding: int = 10) -> bytes:
    """``data`` as three gzip members one after another (as ``cat a.gz b.gz c.gz``
    makes), with ``padding`` zero bytes after the second (as tape tools leave), each
    cut wherever a third falls — inside a line, as a rule."""
    third = len(data) // 3
    return (
        gzip.compress(data[:third])
        + gzip.compress(data[third : 2 * third])
        + b"\x00" * padding
        + gzip.compress(data[2 * third :])
    )
