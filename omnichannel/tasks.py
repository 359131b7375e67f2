"""Background tasks: the one way a part keeps work that outlives the request that started it.

asyncio holds only a weak reference to a task, so a task nobody keeps can be garbage-collected
mid-run; and an exception in a task nobody awaits is reported only when the task is destroyed,
if ever. :class:`BackgroundTasks` keeps each task until it ends and logs its failure at once,
with what it was for (a late SMS reply, a chat turn worker, a supersede watcher).

Work a customer was promised (an accepted turn, a reply due by REST) runs in groups made with
``in_flight=True`` (the default): a draining server waits for those (:func:`wait_for_in_flight`)
before it exits. Work that never ends by itself (a feed reader) opts out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any, Coroutine, List, Set, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Every live group whose tasks a drain waits for.
_IN_FLIGHT: weakref.WeakSet[BackgroundTasks] = weakref.WeakSet()


class BackgroundTasks:
    """The running background tasks of one owner (a connector instance)."""

    def __init__(self, owner: str, *, in_flight: bool = True) -> None:
        self.owner = owner
        self._tasks: Set[asyncio.Task[Any]] = set()
        if in_flight:
            _IN_FLIGHT.add(self)

    def start(self, work: Coroutine[Any, Any, _T], purpose: str) -> asyncio.Task[_T]:
        """Run ``work`` in the background, kept until it ends; ``purpose`` names it in logs."""
        task = asyncio.create_task(work, name=f"{self.owner}: {purpose}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error(
                "background task %r failed: %s: %s",
                task.get_name(),
                type(error).__name__,
                error,
                exc_info=error,
            )

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every running task and wait until they have all ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def in_flight_tasks() -> List[asyncio.Task[Any]]:
    """The running in-flight tasks of this event loop (a test process may hold other loops')."""
    loop = asyncio.get_running_loop()
    return [
        task
        for group in list(_IN_FLIGHT)
        for task in list(group._tasks)
        if not task.done() and task.get_loop() is loop
    ]


async def wait_for_in_flight(deadline: float) -> List[asyncio.Task[Any]]:
    """Waits until no in-flight task runs, or until ``deadline`` (``time.monotonic()``); returns
    the tasks still running then. Tasks started meanwhile (a webhook still served) are waited
    for too."""
    while (running := in_flight_tasks()) and (left := deadline - time.monotonic()) > 0:
        await asyncio.wait(running, timeout=left)
    return in_flight_tasks()


async def cancellable(work: Coroutine[Any, Any, _T]) -> _T:
    """Awaits ``work`` so that cancelling the caller always raises here.

    redis-py 4.6 on Python 3.10 sometimes swallows a cancellation that lands inside a command
    (the command then returns normally; 4 cancels in 10 did in a test loop). A loop that calls
    Redis until it is cancelled would then never end, and whoever waits for it (a server's
    shutdown, a test's teardown) waits for ever. Run as its own task behind ``asyncio.shield``,
    the command may still finish, but the caller's cancellation is raised at once."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(retrieve_outcome)
    return await asyncio.shield(task)


def retrieve_outcome(task: asyncio.Future[Any]) -> None:
    """Marks an abandoned task's result as seen, so asyncio does not log its exception as
    "never retrieved" (use as a done callback on a task the caller stopped waiting for)."""
    if not task.cancelled():
        task.exception()
