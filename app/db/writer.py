"""The daemon's database writer: one thread that runs every write, in the order given.

SQLite blocks a writer for up to the busy timeout when another connection holds the write lock.
On the event loop that would freeze the models' calls and their deadlines with it; on this
thread it delays only the records. One thread keeps the writes in order and never has two
transactions of this process compete for the lock.

The thread is a daemon thread: a write stuck behind another process's lock never holds the
process past its stop (SQLite's transactions are atomic, so a write cut by the exit is a write
that did not happen).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class DatabaseWriter:
    """Run database work on one background thread and await it from the event loop."""

    def __init__(self, name: str = "arena-db-writer") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` on the writer thread; return its result or raise its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((work, loop, future))
        return await future

    def close(self, timeout_s: float = 0.0) -> None:
        """Let the thread end once the writes already given are done (waiting `timeout_s`)."""
        self._jobs.put(None)
        if timeout_s > 0:
            self._thread.join(timeout_s)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            work, loop, future = job
            try:
                result = work()
            except BaseException as error:  # handed to the awaiting task, which decides
                _settle(loop, future, error=error)
            else:
                _settle(loop, future, result=result)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    *,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    def done() -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:  # the loop has closed: nobody waits for this answer any more
        log.debug("database write finished after its event loop closed")
