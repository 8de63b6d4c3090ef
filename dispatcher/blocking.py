"""A thread that runs blocking calls one at a time for the event loop (the input's reads)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class BlockingWorker:
    """Runs blocking calls one at a time on a daemon thread, awaited from the event loop.

    Not `asyncio.to_thread`: a read blocked on an idle stdin pipe would keep
    ``asyncio.run`` (which joins the default executor) and the interpreter from exiting
    after Ctrl-C. A daemon thread is simply abandoned.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Any, Any] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    async def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the thread (after any pending call) and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._thread.is_alive():
            self._thread.start()
        self._jobs.put((call, loop, future))
        return await future

    def close(self, last: Callable[[], object] | None = None) -> None:
        """Run ``last`` after the pending call (if any), then let the thread end."""
        if self._thread.ident is None:
            if last is not None:
                last()
            return
        if last is not None:
            self._jobs.put((last, None, None))
        self._jobs.put(None)

    def _main(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, loop, future = job
            try:
                outcome: tuple[bool, Any] = (True, call())
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (False, exc)
            if loop is None:
                continue
            # RuntimeError: the loop is closed, nobody is waiting for this any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, *outcome)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # cancelled while the call ran
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
