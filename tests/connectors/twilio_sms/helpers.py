"""Talking to the shared stack as Twilio does, and reading its state back, for the Twilio SMS
connector's stack tests. Forms and signatures come from :mod:`testkit.twilio_webhook`."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import xml.etree.ElementTree as ElementTree
from typing import AsyncIterator, Dict, List, Optional

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from rasa.core.lock_store import LockError
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from sanic import Sanic

from connectors.twilio_sms.turns import SMS_TURN
from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from omnichannel.settings import Settings
from omnichannel.sms_sender import STATUS_PATH
from testkit.processes import RedisServer
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, signed_headers, sms_form
from tests.actions.helpers import tracker

WEBHOOK = WEBHOOK_PATH
STATUS = STATUS_PATH


def inbound(stack: RasaStack, number: str, body: str, **extra: str) -> Dict[str, str]:
    """The form Twilio posts for an incoming SMS, with ``extra`` fields set."""
    return {**sms_form(stack.env, number, body), **extra}


def post_signed(
    stack: RasaStack,
    params: Dict[str, str],
    path: str = WEBHOOK,
    base_url: Optional[str] = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 30,
) -> httpx.Response:
    """POST as Twilio does: signed over PUBLIC_BASE_URL + path, sent to ``base_url``."""
    return httpx.post(
        (base_url or stack.base_url) + path,
        data=params,
        headers={**signed_headers(stack.env, params, path), **(headers or {})},
        timeout=timeout,
    )


def replies(answer: httpx.Response) -> List[str]:
    """The <Message> bodies of a TwiML answer."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/xml")
    return replies_of(answer.text)


def replies_of(twiml: str) -> List[str]:
    """The <Message> bodies of a TwiML document."""
    root = ElementTree.fromstring(twiml)
    assert root.tag == "Response"
    return [(m.text or "") for m in root.findall("Message")]


def text_sms(stack: RasaStack, number: str, body: str, **extra: str) -> List[str]:
    return replies(post_signed(stack, inbound(stack, number, body, **extra)))


def conversation_of(stack_redis: RedisServer, number: str) -> Optional[str]:
    with redis.Redis.from_url(stack_redis.url) as client:
        value = client.get(phone_address(number).record_key)
    return value.decode() if value else None


def user_events(stack: RasaStack, conversation_id: str) -> List[dict]:
    return [e for e in tracker(stack, conversation_id)["events"] if e["event"] == "user"]


def profile(stack_redis: RedisServer, conversation_id: str):
    async def read():
        client = aioredis.Redis.from_url(stack_redis.url)
        try:
            return await IdentityStore(client).profile(conversation_id)
        finally:
            await client.close()

    return asyncio.run(read())


def delivery_recorded(stack_redis: RedisServer, message_sid: str) -> bool:
    """Whether the delivery was accepted: its ``sms_turn`` item exists (in any conversation)."""
    with redis.Redis.from_url(stack_redis.url) as client:
        return any(client.scan_iter(match=f"omni:*:work:{SMS_TURN}:{message_sid}"))


def stack_settings(stack: RasaStack, **overrides: str) -> Settings:
    return Settings.from_env({**stack.env, **overrides})


async def serve_app(app: Sanic, port: int):
    """Serves a unit-level Sanic app in this process (Sanic must be in test mode)."""
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.start_serving()
    return server


def channel_env(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> Dict[str, str]:
    """A Twilio account in the environment, as ``from_credentials`` reads it."""
    env = {
        "PUBLIC_BASE_URL": "http://127.0.0.1:1",
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "TWILIO_PHONE_NUMBER": "+15005550006",
        **overrides,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


class AgentWithoutLocks:
    """The parts of Rasa's Agent a turn touches, with a lock store whose locks never come (as
    Rasa's does when a conversation stays busy): after ``seconds`` (when ``slow``) the turn
    fails with Rasa's LockError."""

    def __init__(self, slow: bool, seconds: float = 1.5) -> None:
        self.tracker_store = InMemoryTrackerStore(Domain.empty())
        self.slow = slow
        self.seconds = seconds
        self.lock_store = self

    @contextlib.asynccontextmanager
    async def lock(self, conversation_id: str) -> AsyncIterator[None]:
        if self.slow:
            await asyncio.sleep(self.seconds)
        raise LockError("could not acquire lock for the conversation")
        yield
