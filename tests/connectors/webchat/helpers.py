"""Driving the web chat on the real stack: tokens as a host site mints them, sockets, frames,
and other channels' turns in the same conversation (also used by the browser tests)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import httpx
import jwt
import pytest
import redis
import redis.asyncio as aioredis
import websockets

from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from testkit.stack import RasaStack
from testkit.twilio_webhook import signed_sms

Frame = Dict[str, Any]


def fresh_phone() -> str:
    """A valid US number nobody else in the test run uses (555-01xx are fictional)."""
    return f"+1415555{secrets.randbelow(10000):04d}"


def user_token(
    secret: str,
    sub: str,
    *,
    phone: Optional[str] = None,
    verified: bool = True,
    expires_in: int = 600,
    **claims: Any,
) -> str:
    """A host site's chat token, as its backend would mint it."""
    payload: Dict[str, Any] = {"sub": sub, "iat": int(time.time()), **claims}
    if expires_in is not None:
        payload["exp"] = int(time.time()) + expires_in
    if phone:
        payload.update(phone_number=phone, phone_number_verified=verified)
    return jwt.encode(payload, secret, algorithm="HS256")


def ws_url(stack: RasaStack) -> str:
    return stack.base_url.replace("http://", "ws://") + "/webhooks/webchat/ws"


async def recv_frame(ws: Any, timeout: float = 20) -> Frame:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, predicate: Callable[[Frame], bool], timeout: float = 30) -> Frame:
    """The first frame matching ``predicate`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no matching frame in time")
        frame = await recv_frame(ws, remaining)
        if predicate(frame):
            return frame


async def drain(ws: Any, seconds: float) -> List[Frame]:
    """Every frame that arrives within ``seconds``."""
    frames: List[Frame] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frames.append(await recv_frame(ws, remaining))
        except asyncio.TimeoutError:
            break
    return frames


class Chat:
    """An authenticated socket with its ``ready`` and initial ``history`` frames read."""

    def __init__(self, ws: Any, ready: Frame, history: Frame) -> None:
        self.ws, self.ready, self.history = ws, ready, history

    @property
    def conversation_id(self) -> str:
        return self.ready["conversation_id"]

    async def say(self, text: str, client_id: Optional[str] = None) -> str:
        client_id = client_id or secrets.token_hex(8)
        await self.ws.send(json.dumps({"type": "message", "id": client_id, "text": text}))
        return client_id

    async def turn_done(self, timeout: float = 30) -> None:
        """Waits for ``typing: off``: the turn is over and stored (its replies may come first)."""
        await recv_until(self.ws, lambda f: f["type"] == "typing" and not f["on"], timeout)

    async def next_bot(self, timeout: float = 30) -> Frame:
        frame = await recv_until(
            self.ws,
            lambda f: f["type"] == "message" and f["message"]["role"] == "bot",
            timeout,
        )
        return frame["message"]


async def open_chat(stack: RasaStack, token: str) -> Chat:
    ws = await websockets.connect(ws_url(stack))
    await ws.send(json.dumps({"type": "auth", "token": token}))
    ready = await recv_frame(ws)
    assert ready["type"] == "ready", ready
    history = await recv_frame(ws)
    assert history["type"] == "history" and history["initial"] is True
    return Chat(ws, ready, history)


async def refused(stack: RasaStack, first_frame: Any) -> tuple[int, str]:
    """Close code and reason of a socket whose first frame is ``first_frame``."""
    async with websockets.connect(ws_url(stack)) as ws:
        await ws.send(first_frame if isinstance(first_frame, str) else json.dumps(first_frame))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code, ws.close_reason


def rest_turn(stack: RasaStack, conversation_id: str, text: str, channel: str) -> List[str]:
    """A turn in the conversation through Rasa's REST channel, tagged as another channel."""
    response = httpx.post(
        f"{stack.base_url}/webhooks/rest/webhook",
        json={"sender": conversation_id, "message": text, "metadata": {"channel": channel}},
        timeout=30,
    )
    response.raise_for_status()
    return [message.get("text", "") for message in response.json()]


def text_from_phone(stack: RasaStack, phone: str, body: str) -> httpx.Response:
    """An SMS through the real Twilio connector, signed as Twilio signs its webhooks."""
    sms = signed_sms(stack.env, phone, body)
    answer = httpx.post(stack.base_url + sms.path, data=sms.form, headers=sms.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


def append_events(stack: RasaStack, conversation_id: str, events: List[Frame]) -> None:
    response = httpx.post(
        f"{stack.base_url}/conversations/{conversation_id}/tracker/events",
        params={"token": stack.env["RASA_AUTH_TOKEN"]},
        json=events,
        timeout=30,
    )
    response.raise_for_status()


def sms_exchanges(start: float, count: int) -> List[Frame]:
    """``count`` texted questions ("question <n>"), each answered ("answer <n>"), a second apart
    from ``start``: a history long enough to page through."""
    events: List[Frame] = []
    for number in range(count):
        events.append(
            {
                "event": "user",
                "timestamp": start + 2 * number,
                "text": f"question {number}",
                "message_id": f"m{number}",
                "metadata": {"channel": "sms"},
                "parse_data": {},
            }
        )
        events.append(
            {"event": "bot", "timestamp": start + 2 * number + 1, "text": f"answer {number}"}
        )
    return events


def tracker_events(stack: RasaStack, conversation_id: str) -> List[Frame]:
    """The conversation's stored events, read from Redis (Rasa's tracker API would add a
    session start to an empty conversation)."""
    with redis.Redis.from_url(stack.env["REDIS_URL"]) as client:
        return [
            json.loads(raw) for raw in client.lrange(f"omni:{{{conversation_id}}}:events", 0, -1)
        ]


async def phone_conversation(stack: RasaStack, phone: str, channel: str = "sms") -> str:
    """The conversation identity gives ``phone`` (as the SMS or voice connector would)."""
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return await IdentityStore(client).resolve_conversation(
            phone_address(phone), channel=channel
        )
    finally:
        await client.close()


class RecordedSocket:
    """The server side of a socket as ChatConnection uses it, for units without a server: the
    frames sent and the close are kept."""

    def __init__(self) -> None:
        self.sent: List[Frame] = []
        self.closed: Optional[Tuple[int, str]] = None

    async def send(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
