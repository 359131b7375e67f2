"""A hand-off asked for on WhatsApp, on the real stack: the customer hears the WhatsApp wording,
the agent's reply goes back on WhatsApp (the channel the customer last wrote on) in its 24-hour
window, and outside it the reply is held (the preview says so before it is sent, the status
after), and goes the moment the customer writes there again, while the bot still stands
aside."""

from __future__ import annotations

import asyncio
import secrets
from typing import List

import pytest
import redis.asyncio as aioredis

from omnichannel.whatsapp_window import WhatsAppState
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, whatsapp_form
from tests.connectors.inbox.helpers import inbox, last_handoff, reply, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, replies_of
from tests.connectors.webchat.helpers import tracker_events

pytestmark = pytest.mark.rasa_server

QUEUED = (
    "I've passed this to our support team. A person will reply here, with our whole "
    "conversation in front of them. WhatsApp only lets us write within a day of your last "
    "message, so if it's been longer, send us any message to get their reply. Say never mind "
    "to carry on with me instead."
)


def write(stack: RasaStack, fake: FakeTwilio, number: str, body: str) -> List[str]:
    """A WhatsApp message as Twilio delivers it; the inline (TwiML) replies."""
    form = whatsapp_form(stack.env, number, body)
    status, answer = fake.deliver_inbound(stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH, form)
    assert status == 200, answer
    return replies_of(answer)


def status_of(stack: RasaStack, token: str, cid: str, message_id: str) -> dict:
    return last_handoff(stack, token, cid)["statuses"].get(message_id) or {}


def preview(stack: RasaStack, token: str, cid: str, text: str) -> dict:
    body = {"channel": "whatsapp", "text": text, "conversation_id": cid}
    answer = inbox(stack, "preview", token, body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def handed_off_on_whatsapp(
    stack: RasaStack, fake: FakeTwilio, redis_server: RedisServer, token: str
) -> tuple:
    number = new_phone_number()
    write(stack, fake, number, "what is your refund policy")
    assert write(stack, fake, number, "i want to talk to a person") == [QUEUED]
    cid = conversation_of(redis_server, number)
    claimed = inbox(stack, "claim", token, {"conversation_id": cid})
    assert claimed.status_code == 200, claimed.text
    return number, cid


def test_the_agent_answers_on_whatsapp_in_its_window(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    dana = token_for(rasa_stack, "Dana")
    number, cid = handed_off_on_whatsapp(rasa_stack, fake_twilio, stack_redis, dana)
    reach = last_handoff(rasa_stack, dana, cid)["reach"]
    assert reach["default"] == "whatsapp" and "whatsapp" in reach["available"]

    address = f"whatsapp:{number}"
    before = len(fake_twilio.messages_to(address))
    message_id = secrets.token_hex(8)
    text = "Hi, Dana here. Refunds take 5 days."
    assert preview(rasa_stack, dana, cid, text) == {
        "channel": "whatsapp",
        "bubbles": [{"body": f"Dana: {text}"}],
        "route": "session",  # in the window: it goes now
        "reason": None,
    }
    answer = reply(rasa_stack, dana, cid, text, "whatsapp", message_id)
    assert answer.status_code == 202, answer.text
    [sent] = wait_for(lambda: fake_twilio.messages_to(address)[before:], what="the WhatsApp reply")
    assert sent.body == f"Dana: {text}"
    assert wait_for(lambda: status_of(rasa_stack, dana, cid, message_id).get("state") == "sent")
    assert fake_twilio.messages_to(number) == [], "nothing went by SMS"


async def _close_window(stack: RasaStack, cid: str) -> None:
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        await WhatsAppState(client).close(cid)
    finally:
        await client.close()


async def _held(stack: RasaStack, cid: str) -> list:
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return await WhatsAppState(client).held(cid)
    finally:
        await client.close()


def test_a_reply_outside_the_window_goes_when_the_customer_writes_again(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    dana = token_for(rasa_stack, "Dana")
    number, cid = handed_off_on_whatsapp(rasa_stack, fake_twilio, stack_redis, dana)
    address = f"whatsapp:{number}"
    # A day passes: WhatsApp's window shuts (Twilio's, and ours).
    fake_twilio.age_window(address, 25)
    asyncio.run(_close_window(rasa_stack, cid))

    before = len(fake_twilio.messages_to(address))
    message_id = secrets.token_hex(8)
    text = "Sorry for the wait! Your refund went out this morning."
    shown = preview(rasa_stack, dana, cid, text)
    assert shown["route"] == "held" and "24-hour window" in shown["reason"]
    assert reply(rasa_stack, dana, cid, text, "whatsapp", message_id).status_code == 202
    status = wait_for(
        lambda: status_of(rasa_stack, dana, cid, message_id).get("state") == "held"
        and status_of(rasa_stack, dana, cid, message_id),
        what="the held status",
    )
    assert "next writes on WhatsApp" in status["reason"]
    [held] = asyncio.run(_held(rasa_stack, cid))
    assert held["messages"] == [{"text": text, "channel": "whatsapp", "agent": {"name": "Dana"}}]
    assert fake_twilio.messages_to(address)[before:] == [] and fake_twilio.messages_to(number) == []

    # The customer writes: the bot stays silent, and Dana's reply goes at once.
    events_before = len(tracker_events(rasa_stack, cid))
    assert write(rasa_stack, fake_twilio, number, "hello? any news?") == []
    [sent] = wait_for(lambda: fake_twilio.messages_to(address)[before:], what="the held reply")
    assert sent.body == f"Dana: {text}"
    assert asyncio.run(_held(rasa_stack, cid)) == []
    after = tracker_events(rasa_stack, cid)[events_before:]
    assert [e for e in after if e["event"] == "bot"] == [], "the bot stood aside"
    assert len(fake_twilio.messages_to(address)) == before + 1
