"""One agent page's socket: the queue as it changes, and the conversation the agent has open,
live, whichever replica the change happened on.

The first frame is ``{"type": "auth", "token": <agent JWT>}`` (within ``auth_timeout``); then the
server sends ``{"type": "ready", "agent": …}`` and, from then on:

- ``{"type": "handoff", "item": …}``: a hand-off changed (requested, claimed, handed back,
  resolved, abandoned), or its customer wrote: the queue item (record + last words);
- for the conversation the page watches (``{"type": "watch", "conversation_id": …}``, answered
  with ``{"type": "watching", …}`` once the subscription holds, so a page reading the timeline
  afterwards misses nothing): ``{"type": "entry", "entry": …}`` for each new event (the
  viewer's timeline entries: customer messages, bot and agent replies, the bot standing aside),
  ``{"type": "note", "note": …}`` and ``{"type": "message_status", "message_id", "status"}``.

Both feeds are the Redis channels the hand-off store and the tracker store publish on
(:mod:`omnichannel.handoff.store`), through the process's one pub/sub connection
(:class:`connectors.webchat.live.LiveHub`). The socket closes with 4401 when the agent's token
expires, and with 1012 when the server drains (the page reconnects, to another replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Dict, Optional, Protocol, Set

from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed

from connectors.event_log.reading import next_turn_channel
from connectors.handoff.engine import HandoffEngine
from connectors.inbox.auth import AgentRefused, AgentVerifier, SignedInAgent
from connectors.inbox.requests import AuthFrame, BadRequest, PingFrame, WatchFrame, parse_frame
from connectors.inbox.views import queue_item
from connectors.viewer.timeline import Masker, entry_of
from connectors.webchat.live import LiveFeedLost, LiveSubscription, live_hub
from omnichannel.handoff.state import Handoff
from omnichannel.handoff.store import FLEET_FEED
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_SERVER_ERROR = 1011
SOCKET_CLOSED = (ConnectionClosed, WebsocketClosed)


class SocketHost(Protocol):
    """What a socket needs of the inbox channel that serves it."""

    verifier: AgentVerifier
    redis_url: str
    #: The channel's open sockets (closed with 1012 when the server drains).
    sockets: Set[Any]

    @property
    def auth_timeout(self) -> float: ...

    def engine(self) -> HandoffEngine: ...

    def event_log(self, agent: Any) -> Any: ...


class InboxSocket:
    """The life of one agent page's socket (see the module docstring)."""

    def __init__(self, ws: Any, channel: SocketHost, rasa_agent: Any) -> None:
        self.ws = ws
        self.channel = channel
        self.rasa_agent = rasa_agent
        self.agent: Optional[SignedInAgent] = None
        self.watched: Optional[str] = None
        self._watch: Optional[LiveSubscription] = None
        self._watch_pump: Optional[asyncio.Task] = None
        self._turn_channel: Optional[str] = None

    async def send(self, frame: Dict[str, Any]) -> None:
        try:
            await self.ws.send(json.dumps(frame))
        except SOCKET_CLOSED:
            pass

    async def _authenticate(self) -> Optional[SignedInAgent]:
        try:
            raw = await self.ws.recv(timeout=self.channel.auth_timeout)
            frame = parse_frame(raw or "")
            if not isinstance(frame, AuthFrame):
                raise BadRequest("the first frame must be an auth frame")
            return self.channel.verifier.verify(frame.token)
        except (BadRequest, AgentRefused) as error:
            await self.ws.close(CLOSE_UNAUTHENTICATED, str(error)[:120])
            return None

    async def run(self) -> None:
        self.agent = await self._authenticate()
        if self.agent is None:
            return
        hub = live_hub(self.channel.redis_url)
        try:
            fleet = await hub.subscribe(FLEET_FEED)
        except StateUnavailable as error:
            logger.error("inbox: live updates unavailable: %s", error)
            await self.ws.close(CLOSE_SERVER_ERROR, "live updates unavailable")
            return
        self.channel.sockets.add(self)
        tasks = []
        try:
            await self.send({"type": "ready", "agent": self.agent.actor.as_dict()})
            tasks = [
                asyncio.create_task(self._pump_fleet(fleet)),
                asyncio.create_task(self._read_frames()),
                asyncio.create_task(self._expire()),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled():
                    task.result()
        except (LiveFeedLost, StateUnavailable, *REDIS_FAILURES) as error:
            logger.warning("inbox: socket closed: %s", error)
            await self._close(CLOSE_SERVER_ERROR, "live updates interrupted; reconnect")
        except SOCKET_CLOSED:
            pass
        finally:
            self.channel.sockets.discard(self)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._unwatch()
            await hub.unsubscribe(fleet)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code, reason)
        except SOCKET_CLOSED:
            pass

    async def _expire(self) -> None:
        assert self.agent is not None
        await asyncio.sleep(max(0.0, self.agent.expires_at - time.time()))
        await self._close(CLOSE_UNAUTHENTICATED, "agent token expired; sign in again")

    async def _read_frames(self) -> None:
        while True:
            raw = await self.ws.recv()
            if raw is None:
                continue
            try:
                frame = parse_frame(raw)
            except BadRequest as error:
                await self.send({"type": "error", "message": str(error)})
                continue
            if isinstance(frame, PingFrame):
                await self.send({"type": "pong"})
            elif isinstance(frame, WatchFrame):
                await self._watch_conversation(frame.conversation_id)
            else:
                await self.send({"type": "error", "message": "already authenticated"})

    async def _unwatch(self) -> None:
        if self._watch_pump is not None:
            self._watch_pump.cancel()
            await asyncio.gather(self._watch_pump, return_exceptions=True)
            self._watch_pump = None
        if self._watch is not None:
            await live_hub(self.channel.redis_url).unsubscribe(self._watch)
            self._watch = None
        self.watched = None

    async def _watch_conversation(self, conversation_id: Optional[str]) -> None:
        await self._unwatch()
        if conversation_id is None:
            await self.send({"type": "watching", "conversation_id": None})
            return
        self._watch = await live_hub(self.channel.redis_url).subscribe(conversation_id)
        self.watched = conversation_id
        self._turn_channel = await self.channel.engine().last_customer_channel(conversation_id)
        self._watch_pump = asyncio.create_task(self._pump_watched(self._watch))
        await self.send({"type": "watching", "conversation_id": conversation_id})

    async def _pump_watched(self, subscription: LiveSubscription) -> None:
        masker = Masker()
        while True:
            item = await subscription.queue.get()
            if isinstance(item, LiveFeedLost):
                await self._close(CLOSE_SERVER_ERROR, "live updates interrupted; reconnect")
                return
            if str(item.get("event", "")).startswith("handoff"):
                continue  # the fleet's feed carries those
            self._turn_channel = next_turn_channel(item, self._turn_channel)
            entry = entry_of(None, item, self._turn_channel, masker)  # type: ignore[arg-type]
            if entry is not None:
                await self.send(
                    {
                        "type": "entry",
                        "conversation_id": subscription.conversation_id,
                        "entry": entry,
                    }
                )

    async def _pump_fleet(self, subscription: LiveSubscription) -> None:
        engine = self.channel.engine()
        while True:
            item = await subscription.queue.get()
            if isinstance(item, LiveFeedLost):
                raise item
            event = item.get("event")
            if event == "handoff":
                handoff = Handoff.from_dict(item["handoff"])
            elif event == "handoff_activity":
                found = await engine.store.get(str(item.get("conversation_id")))
                if found is None:
                    continue
                handoff = found
            else:
                if item.get("conversation_id") != self.watched:
                    continue
                if event == "handoff_note":
                    await self.send(
                        {"type": "note", "conversation_id": self.watched, "note": item["note"]}
                    )
                elif event == "handoff_message":
                    await self.send(
                        {
                            "type": "message_status",
                            "conversation_id": self.watched,
                            "message_id": item.get("message_id"),
                            "status": item.get("status"),
                        }
                    )
                continue
            log = self.channel.event_log(self.rasa_agent)
            await self.send({"type": "handoff", "item": await queue_item(log, handoff)})
