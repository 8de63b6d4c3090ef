"""Why the rest of a job will not be sent: a cancel, or its expiry.

Once a `Halt` is set, nothing more goes to the gateway and every line still ahead gets
the halt's status instead of being sent: ``CANCELLED`` (``ctl JOB cancel``; resumable,
a later ``--resume`` sends it) or ``EXPIRED_UNSENT`` (``--expire-at``/``--ttl``; final,
never sent late). Each stage asks the one `Halt` of the run: the policies (`Halted`,
for lines still being prepared), the held lines waiting for a window, and the sender
(batches not yet sent, and retries). Requests already in flight finish: what the
gateway answers is recorded as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dispatcher.models import Entry, Group, Status
from dispatcher.policy import Sink, refuse

#: The statuses a halt gives.
HALT_STATUSES = frozenset({Status.CANCELLED, Status.EXPIRED_UNSENT})


class Halt:
    """Set once (the first reason wins: a job cancelled before it expired stays
    cancelled), then read by every stage."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.reason = ""
        self._event = asyncio.Event()

    @property
    def halted(self) -> bool:
        return self.status is not None

    def set(self, status: Status, reason: str) -> bool:
        """Halt the job with ``status`` and ``reason`` (the results' ``error``); False
        when it was already halted."""
        if status not in HALT_STATUSES:
            raise ValueError(f"a halt gives {sorted(HALT_STATUSES)}, not {status}")
        if self.status is not None:
            return False
        self.status, self.reason = status, reason
        self._event.set()
        return True

    async def wait(self) -> None:
        """Return once the job is halted."""
        await self._event.wait()

    def account(self, entries: list[Entry], sink: Sink) -> None:
        """Give each of ``entries`` the halt's status (the caller checked `halted`)."""
        assert self.status is not None
        status, reason = self.status, self.reason
        for entry in entries:
            refuse(sink, entry, status, reason)


class Halted:
    """The policy (`dispatcher.policy.Policy`) that stops lines once the job is halted;
    it comes after duplicates and windows, before the caps (a halted line spends no
    cap)."""

    def __init__(self, halt: Halt) -> None:
        self.halt = halt

    def check(
        self, group: Group, entries: list[Entry], texts: list[str] | None, sink: Sink
    ) -> list[int] | None:
        if not self.halt.halted:
            return None
        self.halt.account(entries, sink)
        return []

    def check_runs(
        self, runs: Sequence[tuple[Group, list[Entry], list[str] | None]], sink: Sink
    ) -> list[list[int] | None]:
        """`check` over a chunk's runs in one call: a file where one line in twenty has
        its own text has hundreds of runs a chunk, and a call each cost ~0.1 µs a line."""
        if not self.halt.halted:
            return [None] * len(runs)
        return [self.check(group, entries, texts, sink) for group, entries, texts in runs]
