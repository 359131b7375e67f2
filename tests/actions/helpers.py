"""Talking to the shared stack over Rasa's REST channel, for tests of the actions alone.

REST turns drive the trained assistant and the action server directly, stating the channel in
the metadata the way the connectors do; calls and SMS go through the real VAPI and Twilio
connectors, signed as VAPI and Twilio sign them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple
from xml.etree import ElementTree

import httpx
import jwt
import redis.asyncio as aioredis

from omnichannel.addresses import Address, phone_address
from omnichannel.identity import IdentityStore
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall
from tests.support import post_sms, seed_order


def new_conversation() -> str:
    """A conversation nobody is known in (no phone, no site user), like an anonymous chat's."""
    return "c_" + secrets.token_urlsafe(12)


def conversation_for(stack: RasaStack, address: Address) -> str:
    """The conversation of a verified address (``tel:`` or ``user:``), as its first SMS, call or
    signed-in chat creates it; REST turns to it act for that customer."""

    async def resolve() -> str:
        client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
        try:
            return await IdentityStore(client).resolve_conversation(address)
        finally:
            await client.close()

    # Its own thread and loop, so sync and async tests alike can call it.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, resolve()).result()


def customer_conversation(stack: RasaStack, phone: Optional[str] = None) -> Tuple[str, str]:
    """The conversation of a customer with a verified phone number (a fresh one by default).
    Returns (conversation id, phone)."""
    phone = phone or new_phone_number()
    return conversation_for(stack, phone_address(phone)), phone


def customer_with_order(stack: RasaStack, like: str = "12345", **fields: Any) -> Tuple[str, str]:
    """A customer's conversation and the number of their own order, demo order ``like`` with
    ``fields`` changed (see tests.support.seed_order). Returns (conversation id, order number)."""
    sender, phone = customer_conversation(stack)
    return sender, seed_order(stack, phone=phone, like=like, **fields)


def say(
    stack: RasaStack, sender: str, text: str, channel: str = "chat", **metadata: Any
) -> List[Dict[str, Any]]:
    """One REST turn; returns Rasa's bot messages (dicts with text, buttons, custom, …)."""
    response = httpx.post(
        f"{stack.base_url}/webhooks/rest/webhook",
        json={"sender": sender, "message": text, "metadata": {"channel": channel, **metadata}},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def texts(messages: List[Dict[str, Any]]) -> List[str]:
    return [message.get("text") or "" for message in messages]


def tracker(stack: RasaStack, sender: str) -> Dict[str, Any]:
    response = httpx.get(
        f"{stack.base_url}/conversations/{sender}/tracker",
        params={"token": stack.env["RASA_AUTH_TOKEN"]},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def bot_events(stack: RasaStack, sender: str) -> List[Dict[str, Any]]:
    return [e for e in tracker(stack, sender)["events"] if e["event"] == "bot"]


def phone_call(stack: RasaStack, number: Optional[str] = None) -> VapiCall:
    """A call placed as VAPI places it, through the real VAPI connector."""
    return VapiCall(
        base_url=stack.base_url,
        server_secret=stack.env["VAPI_SERVER_SECRET"],
        number=number or new_phone_number(),
    )


async def conversation_of(stack: RasaStack, number: str) -> Optional[str]:
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return await IdentityStore(client).lookup(phone_address(number))
    finally:
        await client.close()


async def send_sms(stack: RasaStack, number: str, text: str) -> List[str]:
    """An inbound SMS through the real Twilio connector; the replies it answered inline (TwiML)."""
    response = await post_sms(stack, number, text)
    response.raise_for_status()
    root = ElementTree.fromstring(response.text)
    return [message.text or "" for message in root.iter("Message")]


def chat_url(stack: RasaStack) -> str:
    return stack.base_url.replace("http://", "ws://") + "/webhooks/webchat/ws"


def chat_token(stack: RasaStack, phone: str) -> str:
    """The host site's token for a signed-in customer whose phone number it has verified."""
    now = int(time.time())
    claims = {
        "sub": "shopper-" + secrets.token_hex(6),
        "iat": now,
        "exp": now + 600,
        "phone_number": phone,
        "phone_number_verified": True,
    }
    return jwt.encode(claims, stack.env["WEBCHAT_JWT_SECRET"], algorithm="HS256")


async def frame(ws: Any, timeout: float = 30) -> Dict[str, Any]:
    """The next frame of a web chat socket."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def chat_turn(ws: Any, text: str) -> List[Dict[str, Any]]:
    """Send a chat message; the bot messages of its turn (until the typing indicator stops)."""
    await ws.send(json.dumps({"type": "message", "id": secrets.token_hex(8), "text": text}))
    bots: List[Dict[str, Any]] = []
    seen_typing = False
    while True:
        received = await frame(ws)
        if received["type"] == "message" and received["message"]["role"] == "bot":
            bots.append(received["message"])
        elif received["type"] == "typing":
            if received["on"]:
                seen_typing = True
            elif seen_typing:
                return bots
