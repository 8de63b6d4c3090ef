"""Constant arrival rate: request k is due at ``start + k / rate``, whatever happened before.

This is what makes the latencies honest (no *coordinated omission*): the schedule never
waits for the gateway. When every in-flight slot is busy, the due requests queue in
order and each starts as soon as a slot frees — its latency still counts from its due
time, so a stalled gateway shows up as latency rather than as a quietly lower rate. A
request that is still waiting for a slot when the schedule ends is *dropped*: never
sent, reported, and its wait so far counted.

The due time is computed from k each time, never by adding intervals, so a long run
does not drift; when the loop wakes late, every request that became due meanwhile
starts at once. Time comes from an injected clock (the tests run it on a fake loop
clock); sleeping uses the running loop's timers, and a request never starts before its
due time on that clock.

A request is either a coroutine run as a task (`Schedule.run`), or — what the load
tester does, since a task and its coroutines are most of what a request costs in
Python — a call that starts it and returns (`Schedule.run_calls`), whose end the
caller reports with `Schedule.finished`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

#: Due means within a microsecond (the histograms' unit): a clock with a coarser
#: resolution than the due times (a fake one) must not keep the schedule napping.
TOLERANCE = 1e-6

Send = Callable[[int, float], Coroutine[Any, Any, None]]
#: Starts request k (due at the float) and returns at once; its end is reported with
#: `Schedule.finished`.
Start = Callable[[int, float], None]


class Schedule:
    """Starts requests on time within a cap of ``slots`` in flight.

    ``run`` starts ``send(k, due)`` as a task for every k due in ``[start, end)``, or
    ``run_calls`` calls ``begin(k, due)``; ``drain`` then waits for the requests still
    running. Counters: ``started``, ``late_starts`` (started requests that had to wait
    for a slot) and ``dropped`` (the requests that never got one, as a range of k).
    """

    def __init__(
        self,
        rate: float,
        *,
        slots: int,
        clock: Callable[[], float],
        count_from: float = -math.inf,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        if not rate > 0 or slots < 1:
            raise ValueError("rate must be positive and slots at least 1")
        if not 0 <= share[0] < share[1]:
            raise ValueError("share must be (index, count) with 0 <= index < count")
        #: this process's rate: its share (``index, index + count, …``) of the test's
        self.rate = rate / share[1]
        self._whole_rate = rate
        self._offset, self._stride = share
        #: Late starts are counted for requests due from this time on (after warm-up).
        self.count_from = count_from
        self.slots = slots
        self.clock = clock
        self.started = 0
        self.late_starts = 0
        #: Whether the request started last had to wait for a slot.
        self.last_late = False
        #: The numbers (k) of the requests that never started.
        self.dropped = range(0)
        self._free = slots
        self._tasks: set[asyncio.Task[None]] = set()
        self._halted_at: float | None = None
        self._waker: asyncio.Future[None] | None = None
        self._waiting_for_slot = False
        #: The run: what starts a request, the window, how many are due in it, the next.
        self._launch: Start = _no_launch
        self._start = self._end = 0.0
        self._total = self._next = 0
        self._running = False

    @property
    def in_flight(self) -> int:
        """Requests started and not finished."""
        return self.slots - self._free

    @property
    def halted_at(self) -> float | None:
        """When `halt` was called, if it was."""
        return self._halted_at

    def due(self, k: int, start: float) -> float:
        """When request ``k`` of this share is due: request ``index + k × count`` of the
        whole schedule, by the same expression as the whole's own, so that the shares'
        due times are exactly the whole's (a share's own rate would round otherwise)."""
        return start + (self._offset + k * self._stride) / self._whole_rate

    def count(self, start: float, end: float) -> int:
        """How many requests of this share are due in ``[start, end)``."""
        n = max(0, int((end - start) * self.rate) - 1)
        while self.due(n, start) < end:
            n += 1
        return n

    async def run(self, send: Send, *, start: float, end: float) -> None:
        """Start every request due in ``[start, end)`` as a task running ``send(k,
        due)``; return early after `halt`."""

        def launch(k: int, due: float) -> None:
            task = asyncio.create_task(send(k, due))
            self._tasks.add(task)
            task.add_done_callback(self._release)

        await self._run(launch, start, end)

    async def run_calls(self, begin: Start, *, start: float, end: float) -> None:
        """Call ``begin(k, due)`` for every request due in ``[start, end)``; each one
        holds its slot until `finished` is called for it. Return early after `halt`."""
        await self._run(begin, start, end)

    def finished(self) -> None:
        """A request has ended: its slot is free. When requests are waiting for one,
        the next starts now, from here, rather than a turn of the loop later."""
        self._free += 1
        if self._running and self._waiting_for_slot and self._halted_at is None:
            now = self.clock()
            due = self.due(self._next, self._start)
            if self._next < self._total and due <= now + TOLERANCE and now < self._end:
                self._take(self._next, due, late=True)
                return
        self._wake(for_slot=True)

    async def _run(self, launch: Start, start: float, end: float) -> None:
        clock = self.clock
        self._launch, self._start, self._end = launch, start, end
        total = self._total = self.count(start, end)
        self._running = True
        try:
            await self._loop(clock, start, end, total)
        finally:
            self._running = False
        if self._halted_at is not None:
            total = min(total, self.count(start, self._halted_at))
        self.dropped = range(self._next, total)

    async def _loop(self, clock: Callable[[], float], start: float, end: float, total: int) -> None:
        waited = False
        while self._next < total and self._halted_at is None:
            now = clock()
            due = self.due(self._next, start)
            if due > now + TOLERANCE:
                # Never early, or a fast answer would look faster than it was. uvloop's
                # timers have whole milliseconds and may wake a little before ``due``:
                # then this naps again for the rest.
                waited = False
                await self._nap(due - now, for_slot=False)
                continue
            if self._free == 0:
                if now >= end:
                    break
                waited = True
                await self._nap(end - now, for_slot=True)  # or `finished` starts it
                continue
            self._take(self._next, due, late=waited)
            waited = False

    def _take(self, k: int, due: float, *, late: bool) -> None:
        """Start request ``k``. The slot is taken first, so requests never exceed the cap."""
        self._free -= 1
        self.started += 1
        self._next = k + 1
        self.late_starts += late and due >= self.count_from
        self.last_late = late
        self._launch(k, due)

    def late(self, due: float) -> bool:
        """Count a request due at ``due`` as started late for a reason of the caller's
        (the shared quota held it): whether it counts (it is not warm-up)."""
        counted = due >= self.count_from
        self.late_starts += counted
        return counted

    def halt(self) -> None:
        """Stop the schedule now: nothing more starts, and requests that were due but
        still waiting for a slot count as dropped."""
        if self._halted_at is None:
            self._halted_at = self.clock()
        self._wake(for_slot=False)

    async def drain(self, grace: float) -> list[asyncio.Task[None]]:
        """Wait up to ``grace`` seconds for the requests in flight. Tasks still running
        then are cancelled and returned (each request records its own cancellation);
        requests of `run_calls` still running are the caller's to end (`in_flight`)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while self.in_flight and loop.time() < deadline:
                await self._nap(deadline - loop.time(), for_slot=True)
            return []
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return list(pending)

    def _release(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.finished()

    async def _nap(self, seconds: float, *, for_slot: bool) -> None:
        """Sleep up to ``seconds``; a halt ends it early, and so does a freed slot when
        ``for_slot``. One future and one timer, as asyncio.sleep itself uses."""
        loop = asyncio.get_running_loop()
        waker = self._waker = loop.create_future()
        self._waiting_for_slot = for_slot
        timer = loop.call_later(seconds, _resolve, waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._waker = None
            self._waiting_for_slot = False

    def _wake(self, *, for_slot: bool) -> None:
        if self._waker is not None and (self._waiting_for_slot or not for_slot):
            _resolve(self._waker)


def _no_launch(k: int, due: float) -> None:
    raise RuntimeError("the schedule is not running")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
