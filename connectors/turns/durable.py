"""The durable turn every channel runs: accept, record, run once, reply or replay, release.

A message a channel has acknowledged (a TwiML or 200 to Twilio, an ``ack`` to the chat, a stream
opened to VAPI) is answered once, whichever replica lives to do it:

1. **accept and record** (:meth:`DurableTurns.accept`): before acknowledging, the channel records
   the message as an in-flight item of its kind (:mod:`omnichannel.leases`), under the channel's
   own id of the message, with all it takes to run the turn again. The item is the dedupe: a
   duplicate delivery finds it (running, or done with the outcome it was answered with) instead
   of starting a second turn.
2. **hold** (:meth:`DurableTurns.held`): the replica that recorded the item renews its lease
   while it works on it; a drain hands off what it will not finish (:meth:`hand_off`,
   :meth:`release`), so another replica takes it at once.
3. **run once** (:func:`connectors.turns.once.run_once`): Rasa's turn, unless the event log
   already holds the message (a replica that stopped had processed it).
4. **reply or replay**: the channel delivers the turn's replies, or, when another run processed
   the message, what that run said (:func:`connectors.turns.once.replay`).
5. **release** (:meth:`complete`, :meth:`forget`): the item is done with the outcome a late
   duplicate gets, or dropped when nothing was processed and the client is asked to resend.

A replica that dies leaves its items to the others' sweepers, which resume each through the
handler its channel registered (:meth:`resume_with`). Each channel supplies only its wire (what
an item's payload holds, and the ``UserMessage`` made of it) and its delivery (where replies
go: the SSE stream, TwiML or the SMS outbox, the socket or the live feed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple, Union

from rasa.core.channels.channel import OutputChannel, UserMessage

from omnichannel import metrics
from omnichannel.leases import Existing, InFlightWork, Lease, Resume, takeover
from omnichannel.redis_client import REDIS_FAILURES, redis_client

logger = logging.getLogger(__name__)

#: A draining replica hands its unfinished work off this long before the drain's bound.
HAND_OFF_MARGIN_SECONDS = 1.0


def leased_message(
    lease: Lease, output: OutputChannel, input_channel: str, message_id: Optional[str] = None
) -> UserMessage:
    """The ``UserMessage`` an item's payload stands for (its ``text`` and ``metadata``, as the
    channel recorded them), answered through ``output``; its id is the item's unless the channel
    makes one of its own, the same on every run."""
    return UserMessage(
        lease.payload["text"],
        output,
        lease.conversation_id,
        input_channel=input_channel,
        message_id=message_id or lease.item_id,
        metadata=dict(lease.payload["metadata"]),
    )


class DurableTurns:
    """The durable turns of one channel (``channel``: its kind, ``voice``, ``sms``, ``chat``),
    recorded as items of ``work``; also the leases of the channel's other durable work held
    on their behalf (an SMS reply due by REST), so a drain hands all of them off together."""

    def __init__(self, work: InFlightWork, channel: str) -> None:
        self.work = work
        self.channel = channel
        #: The leases each running task holds (innermost last), handed off by a drain.
        self._holding: Dict[asyncio.Task, List[Tuple[InFlightWork, Lease]]] = {}

    # -- accept and record --------------------------------------------------------------------

    async def accept(
        self, conversation_id: str, message_id: str, payload: Dict[str, Any]
    ) -> Union[Lease, Existing]:
        """Records the message as this replica's work; or, for a duplicate delivery, returns
        the item already recorded. Raises a Redis failure: the message must then not be
        acknowledged."""
        found = await self.work.record(conversation_id, message_id, payload)
        if isinstance(found, Existing):
            metrics.DEDUPE_HITS.labels(channel=self.channel).inc()
        return found

    def resume_with(self, resume: Resume, work: Optional[InFlightWork] = None) -> None:
        """From now on, this replica's sweeper resumes items of ``work`` (the turns by default)
        that another replica left, through ``resume`` (called while the lease is held)."""
        takeover().register(work or self.work, resume)

    async def take_over(self, conversation_id: str, message_id: str) -> Optional[Lease]:
        """The item, leased to this replica, when its owner stopped renewing the lease (a
        duplicate finding it abandoned); None while the lease holds or once it is done."""
        return await self.work.take_over(conversation_id, message_id)

    async def update(self, lease: Lease, payload: Dict[str, Any]) -> bool:
        """Replaces what a takeover would run (details known only once recorded)."""
        return await self.work.update(lease, payload)

    async def state(self, conversation_id: str, message_id: str) -> Dict[str, str]:
        """The item's fields as stored (empty when there is none)."""
        return await self.work.state(conversation_id, message_id)

    # -- hold ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def tracked(
        self, lease: Lease, work: Optional[InFlightWork] = None
    ) -> AsyncIterator[None]:
        """Notes that the current task holds ``lease`` (of ``work``, the turns by default), so a
        drain can hand it off; the sweeper renews the leases of work it resumed itself."""
        task = asyncio.current_task()
        assert task is not None
        stack = self._holding.setdefault(task, [])
        stack.append((work or self.work, lease))
        try:
            yield
        finally:
            stack.pop()
            if not stack:
                self._holding.pop(task, None)

    @contextlib.asynccontextmanager
    async def held(self, lease: Lease, work: Optional[InFlightWork] = None) -> AsyncIterator[Any]:
        """Renews ``lease`` while the block runs, and tracks it for a drain."""
        work = work or self.work
        async with work.held(lease) as hold, self.tracked(lease, work):
            yield hold

    # -- release ------------------------------------------------------------------------------

    async def complete(self, lease: Lease, outcome: Dict[str, Any]) -> bool:
        """Marks the item done with ``outcome`` (what a late duplicate gets); True when done by
        this replica. A Redis failure is logged, not raised: the lease then lapses and a
        takeover finds the message in the event log and completes it."""
        try:
            done = await self.work.complete(lease, outcome)
        except REDIS_FAILURES as error:
            logger.error(
                "%s %s: outcome not stored (%s)", lease.kind, lease.item_id, type(error).__name__
            )
            return False
        if not done:
            logger.warning(
                "%s %s: lease lost; another replica answers it", lease.kind, lease.item_id
            )
        return done

    async def forget(self, lease: Lease) -> None:
        """Drops an item nothing of which was processed, so the client's resend is a new
        message (its index entry goes with the next sweep)."""
        try:
            await redis_client(self.work.redis_url).delete(
                self.work.item_key(lease.conversation_id, lease.item_id)
            )
        except REDIS_FAILURES as error:
            logger.warning("%s %s not dropped: %s", lease.kind, lease.item_id, type(error).__name__)

    async def release(self, leases: List[Tuple[InFlightWork, Lease]]) -> int:
        """Ends these leases now, so another replica's next sweep takes the work over; returns
        how many were released. One Redis can fail: that lease lapses within its time instead."""
        released = 0
        for work, lease in leases:
            try:
                done = await work.release(lease)
            except REDIS_FAILURES as error:
                logger.error("%s %s not handed off: %s", lease.kind, lease.item_id, error)
                continue
            if done:
                released += 1
                logger.warning(
                    "drain: %s %s of %s handed off to another replica",
                    lease.kind,
                    lease.item_id,
                    lease.conversation_id,
                )
        return released

    async def hand_off(self, deadline: float) -> None:
        """A drain's step: waits for the items held here until shortly before ``deadline``,
        then stops those still running and releases their leases, so another replica's sweeper
        takes them over at once (rather than after the lease, or never)."""
        bound = deadline - HAND_OFF_MARGIN_SECONDS
        while self._holding and (wait := bound - time.monotonic()) > 0:
            await asyncio.wait(list(self._holding), timeout=wait)
        left = {task: list(stack) for task, stack in self._holding.items()}
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await self.release([held for stack in left.values() for held in stack])
