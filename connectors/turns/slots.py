"""At most a few turns run through Rasa at once in a process; the others wait in arrival order.

A turn is CPU work between awaits (Redis, the socket, the action server). Left alone, every turn
of a burst starts at once and asyncio runs them in turn, one step each: a burst of 40 is
processor-shared and all 40 finish at about the time the last one could have, however early
they came. With a few slots (``MAX_CONCURRENT_TURNS``, 8 by default), turns start in arrival
order, enough of them at once that one waiting on Redis leaves the CPU to another, and the
first customers of a burst are answered first: through the web chat, bursts of 40 customers
went from p50 310 ms / p99 802 ms to 172 / 409 (docs/DESIGN.md, "Throughput").

A turn waiting on the action server (a business call, the LLM: seconds) does not hold its slot
meanwhile: :func:`while_waiting` hands it back for the wait (Rasa's outbound HTTP requests go
through it, :mod:`connectors.rasa_patches`) and queues again behind the turns that came since.

Slots are taken inside the conversation's lock (:func:`connectors.turns.once.handle_once`), never
before it: a turn holding a slot while it waited for a lock held by a turn waiting for a slot
would stop both. The acknowledgement of a message (recorded, ``ack``) never waits for a slot.
"""

from __future__ import annotations

import asyncio
import weakref
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import AsyncIterator, Awaitable, Dict, Optional, TypeVar

from omnichannel.settings import load_settings

_T = TypeVar("_T")


class TurnSlots:
    """``size`` turns at a time, the rest first come, first served (asyncio's semaphore wakes
    its waiters in order)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = asyncio.Semaphore(size)
        #: Turns holding a slot now.
        self.running = 0

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Runs the block in a slot; inside it, :func:`while_waiting` lends the slot out."""
        await self._take()
        hold = _Hold(self)
        token = _holding.set(hold)
        try:
            yield
        finally:
            _holding.reset(token)
            if hold.owned:
                self._give_back()

    async def _take(self) -> None:
        await self._semaphore.acquire()
        self.running += 1

    def _give_back(self) -> None:
        self.running -= 1
        self._semaphore.release()


class _Hold:
    """One turn's slot; ``owned`` is false while it is lent out (or was not taken back because
    the turn was cancelled waiting for it)."""

    def __init__(self, slots: TurnSlots) -> None:
        self.slots = slots
        self.owned = True

    async def lend_while(self, pending: Awaitable[_T]) -> _T:
        if not self.owned:  # already lent by an outer wait
            return await pending
        self.owned = False
        self.slots._give_back()
        try:
            return await pending
        finally:
            await self.slots._take()
            self.owned = True


#: The slot the running turn holds (None outside a turn).
_holding: ContextVar[Optional[_Hold]] = ContextVar("turn_slot", default=None)
#: One set of slots per event loop (a semaphore belongs to the loop it first waits on).
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[int, TurnSlots]] = (
    weakref.WeakKeyDictionary()
)


def turn_slots() -> TurnSlots:
    """The running loop's slots, ``MAX_CONCURRENT_TURNS`` of them."""
    size = load_settings().max_concurrent_turns
    per_size = _slots.setdefault(asyncio.get_running_loop(), {})
    slots = per_size.get(size)
    if slots is None:
        slots = per_size[size] = TurnSlots(size)
    return slots


async def while_waiting(pending: Awaitable[_T]) -> _T:
    """Awaits ``pending`` (an outbound request) without holding the turn's slot, if any."""
    hold = _holding.get()
    if hold is None:
        return await pending
    return await hold.lend_while(pending)
