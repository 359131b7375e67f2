"""Background tasks: the one way a part keeps work that outlives the request that started it.

asyncio holds only a weak reference to a task, so a task nobody keeps can be garbage-collected
mid-run; and an exception in a task nobody awaits is reported only when the task is destroyed,
if ever. :class:`BackgroundTasks` keeps each task until it ends and logs its failure at once,
with what it was for (a late SMS reply, a chat turn worker, a supersede watcher).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine, Set, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class BackgroundTasks:
    """The running background tasks of one owner (a connector instance)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: Set[asyncio.Task] = set()

    def start(self, work: Coroutine[Any, Any, _T], purpose: str) -> asyncio.Task[_T]:
        """Run ``work`` in the background, kept until it ends; ``purpose`` names it in logs."""
        task = asyncio.create_task(work, name=f"{self.owner}: {purpose}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
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


def retrieve_outcome(task: asyncio.Future) -> None:
    """Marks an abandoned task's result as seen, so asyncio does not log its exception as
    "never retrieved" (use as a done callback on a task the caller stopped waiting for)."""
    if not task.cancelled():
        task.exception()
