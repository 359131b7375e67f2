"""Every Redis key the running assistant writes has an expiry: a key without one is a leak that
grows with every visitor.

The test writes the keys it checks: one customer calls (turns, "text me that", the end-of-call
report), texts (a reply with buttons) and chats (a socket, a message), through the real
connectors of the shared stack. It then scans the whole of the stack's Redis, so the keys of
every test that ran before it on this worker are checked too, and it checks that each kind of key
it wrote was found, so it cannot pass on an empty or unrelated Redis. The shared stack's own
teardown scans once more after the last test (tests/conftest.py), which covers the keys of tests
that run after this one, whatever the order or the worker.
"""

from __future__ import annotations

import json

import pytest
import websockets

from testkit.fake_twilio import FakeTwilio
from testkit.processes import RedisServer
from testkit.stack import RasaStack
from tests.actions.helpers import chat_token, chat_turn, chat_url, frame, phone_call, send_sms
from tests.support import key_kinds, seed_order

pytestmark = pytest.mark.rasa_server

#: The kinds of key the session below writes (ids elided: tests.support.key_kind).
WRITTEN = {
    "omni:{…}:events",  # every turn's events, and the session's start
    "omni:{…}:session_start",
    "omni:{…}:conversation",  # a phone number's conversation, its addresses and profile
    "omni:{…}:addresses",
    "omni:{…}:profile",
    "omni:{…}:vapi:call",  # the call's state
    "omni:{…}:vapi:report",  # its end-of-call report, once
    "omni:{…}:work:voice_turn",  # each channel's durable in-flight work
    "omni:{…}:work:sms_turn",
    "omni:{…}:work:chat_turn",
    "omni:{…}:sms_buttons",  # the buttons an SMS reply offered
    "omni:{…}:sockets",  # the chat's open sockets and rate limit
    "omni:{…}:webchat_rate",
}


async def test_every_key_the_assistant_writes_expires(
    rasa_stack: RasaStack, stack_redis: RedisServer, fake_twilio: FakeTwilio
) -> None:
    call = phone_call(rasa_stack)
    phone = call.number
    order = seed_order(rasa_stack, phone=phone)
    assert "order number" in (await call.say("where is my order")).text
    assert "has shipped" in (await call.say(f"it's {order}")).text
    assert "texted you" in (await call.say("text me the tracking link")).text
    fake_twilio.wait_for_messages(phone, 1)
    await call.hang_up(summary="The customer asked where their order is.")
    await call.aclose()
    assert await send_sms(rasa_stack, phone, "hi")
    async with websockets.connect(chat_url(rasa_stack)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": chat_token(rasa_stack, phone)}))
        assert (await frame(ws))["type"] == "ready"
        assert await chat_turn(ws, "what's your refund policy")
        open_kinds, _ = key_kinds(stack_redis.url)  # the socket's own keys live while it is open

    kinds, without_expiry = key_kinds(stack_redis.url)
    missing = WRITTEN - kinds - open_kinds
    assert not missing, f"the session above should have written keys of these kinds: {missing}"
    assert not without_expiry, f"keys without an expiry, by kind: {without_expiry}"
