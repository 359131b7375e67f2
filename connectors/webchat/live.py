"""Live fan-out: every new event of a conversation, whichever channel or replica stored it, to
every open tab of that conversation served by this process.

The tracker store publishes each stored event on ``omni:{<cid>}:live``; one Redis subscription
per conversation per process (not per socket) hands them to the sockets' queues.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Set, Union

from omnichannel.redis_client import (
    REDIS_FAILURES,
    StateUnavailable,
    conversation_key,
    subscriber,
)
from omnichannel.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

#: Live events a socket may have waiting (a client that stopped reading): beyond this it is cut
#: off with LiveFeedLost, reconnects and replays the history instead of growing memory.
LIVE_BACKLOG_LIMIT = 1000


class LiveFeedLost(Exception):
    """The Redis subscription broke; the socket closes so the client reconnects and replays."""


@dataclass(eq=False)
class LiveSubscription:
    conversation_id: str
    queue: asyncio.Queue[Union[Dict[str, Any], LiveFeedLost]] = field(
        default_factory=lambda: asyncio.Queue(LIVE_BACKLOG_LIMIT)
    )
    #: Set once the subscriber fell behind and was told LiveFeedLost: nothing more is queued.
    cut_off: bool = False

    def deliver(self, item: Union[Dict[str, Any], LiveFeedLost]) -> None:
        """Queues ``item``; a full backlog (the client stopped reading) or a failure replaces
        what is waiting with LiveFeedLost, so the socket closes and the client replays."""
        if self.cut_off:
            return
        if not isinstance(item, LiveFeedLost):
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                item = LiveFeedLost("live updates fell behind")
        self.cut_off = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(item)


class LiveHub:
    """Fans the tracker store's ``omni:{<cid>}:live`` publishes out to this process's sockets.

    One pub/sub connection per process (not per socket), reference-counted subscriptions, and
    ``subscribe`` returns only once Redis confirmed it, so a history read made afterwards cannot
    miss an event published in between. If the subscription breaks, every socket is told
    (LiveFeedLost) and the next subscriber starts a fresh connection.
    """

    def __init__(self, redis_url: Optional[str] = None) -> None:
        self._redis_url = redis_url
        self._pubsub: Any = None
        self._reader: Optional[asyncio.Task] = None
        self._tasks = BackgroundTasks("web chat live hub", in_flight=False)
        self._subscribers: Dict[str, Set[LiveSubscription]] = {}
        self._confirmations: Dict[str, asyncio.Future] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def channel(conversation_id: str) -> str:
        return conversation_key(conversation_id, "live")

    async def subscribe(self, conversation_id: str, timeout: float = 5.0) -> LiveSubscription:
        """Raises StateUnavailable when Redis does not confirm the subscription."""
        subscription = LiveSubscription(conversation_id)
        async with self._lock:
            self._subscribers.setdefault(conversation_id, set()).add(subscription)
            try:
                await self._confirm(conversation_id, timeout)
            except (*REDIS_FAILURES, asyncio.TimeoutError, LiveFeedLost) as error:
                await self._release(subscription)
                raise StateUnavailable(
                    f"live updates unavailable ({type(error).__name__})"
                ) from error
            except asyncio.CancelledError:
                # The socket closed while Redis had not confirmed yet (Sanic cancels the
                # handler): left behind, the channel would stay subscribed and fill its queue.
                await self._release(subscription)
                raise
        return subscription

    async def _confirm(self, conversation_id: str, timeout: float) -> None:
        if self._pubsub is None:
            self._pubsub = await subscriber(self._redis_url)
        confirmed = self._confirmations.get(conversation_id)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[conversation_id] = confirmed
            await self._pubsub.subscribe(self.channel(conversation_id))
        if self._reader is None or self._reader.done():
            self._reader = self._tasks.start(self._read(), "live feed reader")
        await asyncio.wait_for(asyncio.shield(confirmed), timeout)

    async def unsubscribe(self, subscription: LiveSubscription) -> None:
        async with self._lock:
            await self._release(subscription)

    async def _release(self, subscription: LiveSubscription) -> None:
        """Forgets a subscriber, unsubscribing the channel after its last one (lock held)."""
        if self._drop(subscription) and self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(self.channel(subscription.conversation_id))
            except REDIS_FAILURES as error:
                logger.warning("web chat: unsubscribe failed: %s", type(error).__name__)

    def _drop(self, subscription: LiveSubscription) -> bool:
        """Forget a subscriber; True when it was the conversation's last one."""
        subscribers = self._subscribers.get(subscription.conversation_id)
        if subscribers is None:
            return False
        subscribers.discard(subscription)
        if subscribers:
            return False
        del self._subscribers[subscription.conversation_id]
        confirmed = self._confirmations.pop(subscription.conversation_id, None)
        if confirmed is not None and not confirmed.done():
            confirmed.cancel()
        return True

    async def _read(self) -> None:
        pubsub = self._pubsub
        try:
            while self._subscribers or self._confirmations:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure must reach every socket
            logger.error("web chat: live feed lost: %s: %s", type(error).__name__, error)
            self._fail_all(LiveFeedLost(f"live updates interrupted ({type(error).__name__})"))
            try:
                await pubsub.reset()
            except REDIS_FAILURES:
                pass

    def _dispatch(self, message: Dict[str, Any]) -> None:
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        conversation_id = channel[channel.find("{") + 1 : channel.rfind("}")]
        if message.get("type") == "subscribe":
            confirmed = self._confirmations.get(conversation_id)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(True)
            return
        if message.get("type") != "message":
            return
        try:
            event = json.loads(message["data"])
        except ValueError:
            logger.warning("web chat: unreadable live event on %s", conversation_id)
            return
        for subscription in list(self._subscribers.get(conversation_id, ())):
            subscription.deliver(event)

    def _fail_all(self, failure: LiveFeedLost) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.deliver(failure)
        for confirmed in self._confirmations.values():
            if not confirmed.done():
                confirmed.set_exception(failure)
        self._subscribers = {}
        self._confirmations = {}
        self._pubsub = None


#: Hubs per event loop (Redis connections belong to one loop) and per Redis URL.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, LiveHub]] = (
    weakref.WeakKeyDictionary()
)


def live_hub(redis_url: str) -> LiveHub:
    """The running event loop's hub for ``redis_url``."""
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(redis_url)
    if hub is None:
        hub = hubs[redis_url] = LiveHub(redis_url)
    return hub
