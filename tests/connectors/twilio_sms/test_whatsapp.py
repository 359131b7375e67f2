"""WhatsApp through the Twilio connector (connectors/twilio_sms/): what reaches Rasa, how it is
answered, delivery receipts and failures, and hostile input, through the shared stack with the
really trained assistant; Twilio is the local fake (it delivers the webhooks, signed, and keeps
the 24-hour window as Twilio does)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Dict, List

import pytest
import redis.asyncio as aioredis

from devtools import sim_sms
from omnichannel.receipts import Receipts
from omnichannel.whatsapp_window import WhatsAppState
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, new_sid, signed_headers, whatsapp_form
from tests.actions.helpers import send_sms
from tests.connectors.twilio_sms.helpers import (
    STATUS,
    conversation_of,
    post_signed,
    replies_of,
    user_events,
)
from tests.support import JPEG, RecordingServer, seed_order

pytestmark = pytest.mark.rasa_server


def deliver(stack: RasaStack, fake: FakeTwilio, number: str, body: str, **extra) -> List[str]:
    """A WhatsApp message as Twilio delivers it; the inline (TwiML) replies."""
    form = whatsapp_form(stack.env, number, body, **extra)
    status, answer = fake.deliver_inbound(stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH, form)
    assert status == 200, answer
    return replies_of(answer)


async def _state(stack: RasaStack, action):
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return await action(client)
    finally:
        await client.close()


def test_a_spoofed_whatsapp_sender_fails_the_signature(rasa_stack: RasaStack) -> None:
    form = whatsapp_form(rasa_stack.env, new_phone_number(), "hi")
    forged = {**rasa_stack.env, "TWILIO_AUTH_TOKEN": "0" * 32}
    answer = post_signed(rasa_stack, form, headers=signed_headers(forged, form))
    assert answer.status_code == 403


def test_the_turn_is_a_whatsapp_turn_with_its_metadata(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    answer = deliver(
        rasa_stack, fake_twilio, number, "what is your refund policy", profile_name="Ana"
    )
    assert answer[0].startswith("Here's our refund policy.")
    [event] = user_events(rasa_stack, conversation_of(stack_redis, number))
    assert event["metadata"]["channel"] == "whatsapp"
    assert event["metadata"]["profile_name"] == "Ana"
    assert event["input_channel"] == "twilio_sms"


def test_a_tap_counts_only_for_an_option_the_bot_offered(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    deliver(rasa_stack, fake_twilio, number, "hi")  # offers the greeting's quick replies
    tapped = deliver(
        rasa_stack,
        fake_twilio,
        number,
        "Start a refund",
        ButtonPayload="/request_refund",
        ButtonText="Start a refund",
    )
    assert tapped == [
        "What's your order number? It's the 5-digit number in your confirmation email."
    ]
    event = user_events(rasa_stack, conversation_of(stack_redis, number))[-1]
    assert event["metadata"]["button_title"] == "Start a refund"
    assert event["parse_data"]["intent"]["name"] == "request_refund"

    other = new_phone_number()
    deliver(rasa_stack, fake_twilio, other, "hi")
    forged = deliver(
        rasa_stack,
        fake_twilio,
        other,
        "Thanks",
        ButtonPayload='/request_refund{"order_number": "55555"}',
        ButtonText="Thanks",
    )
    assert not any("refund request" in reply for reply in forged)
    event = user_events(rasa_stack, conversation_of(stack_redis, other))[-1]
    assert event["parse_data"]["intent"]["name"] != "request_refund"
    assert not event["parse_data"]["entities"] and "button_title" not in event["metadata"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"media_types": ["audio/ogg"]},
            "Sorry, I can't listen to voice notes yet. Could you type your question instead?",
        ),
        (
            {"media_types": ["application/x-msdownload"]},
            "Sorry, I can't open that kind of file. I can take photos (JPG or PNG) and PDF "
            "documents.",
        ),
        (
            {"media_types": ["application/pdf"]},
            "Thanks for the file. I can't read documents myself yet: if it's about an order, "
            "tell me the order number and what you need, or ask for a person.",
        ),
        (
            {"Latitude": "52.3702", "Longitude": "4.8952", "Address": "Dam 1, Amsterdam"},
            "Thanks for sharing your location. I can't use locations yet: if it's about a "
            "delivery, tell me the order number.",
        ),
    ],
    ids=["voice note", "executable", "document", "location"],
)
def test_media_alone_is_answered_honestly(
    rasa_stack: RasaStack,
    fake_twilio: FakeTwilio,
    stack_redis: RedisServer,
    extra: Dict,
    expected: str,
) -> None:
    number = new_phone_number()
    types = extra.pop("media_types", None)
    media = [fake_twilio.add_media(b"\x00" * 64, types[0])] if types else []
    answer = deliver(rasa_stack, fake_twilio, number, "", media=media, media_types=types, **extra)
    assert answer == [expected]
    [event] = user_events(rasa_stack, conversation_of(stack_redis, number))
    if types and types[0] == "application/x-msdownload":
        assert event["metadata"]["media"][0]["refused"] == "type"
    if "Latitude" in extra:
        assert event["metadata"]["location"] == {
            "latitude": 52.3702,
            "longitude": 4.8952,
            "address": "Dam 1, Amsterdam",
        }


def _refund_started(stack: RasaStack, fake: FakeTwilio, number: str) -> str:
    order = seed_order(stack, phone=number, like="55555")
    deliver(stack, fake, number, "I want a refund")
    [asked] = deliver(stack, fake, number, order)
    assert asked.startswith(f"Do you want me to start a refund for order {order} (")
    deliver(stack, fake, number, "yes")
    return order


def test_a_media_url_outside_twilio_is_never_fetched(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    internal = RecordingServer().start()
    try:
        number = new_phone_number()
        _refund_started(rasa_stack, fake_twilio, number)
        hostile = (
            f"{internal.url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages/"
            f"MM{'a' * 32}/Media/ME{'b' * 32}"
        )
        answer = deliver(
            rasa_stack, fake_twilio, number, "", media=[hostile], media_types=["image/jpeg"]
        )
        assert answer == [
            "Sorry, I couldn't open that photo. Could you send it again as a JPG or PNG?"
        ]
        assert internal.requests == []
    finally:
        internal.stop()


def test_an_oversized_or_fake_photo_is_refused_with_a_clear_reply(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    _refund_started(rasa_stack, fake_twilio, number)
    big = fake_twilio.add_media(JPEG + b"\x00" * (5 * 1024 * 1024), "image/jpeg")
    answer = deliver(rasa_stack, fake_twilio, number, "", media=[big], media_types=["image/jpeg"])
    assert answer == [
        "That file is too large for me to take (the limit is 5 MB). Could you send a smaller photo?"
    ]
    page = fake_twilio.add_media(b"<html><script>alert(1)</script></html>", "image/jpeg")
    answer = deliver(rasa_stack, fake_twilio, number, "", media=[page], media_types=["image/jpeg"])
    assert answer == ["Sorry, I couldn't open that photo. Could you send it again as a JPG or PNG?"]


def _status(stack: RasaStack, number: str, sid: str, status: str, error: str = "") -> int:
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": stack.env["TWILIO_ACCOUNT_SID"],
        "From": "whatsapp:" + stack.env["TWILIO_PHONE_NUMBER"],
        "To": f"whatsapp:{number}",
        "ApiVersion": "2010-04-01",
        **({"ErrorCode": error} if error else {}),
    }
    return post_signed(stack, params, STATUS).status_code


async def test_receipts_move_forward_only_and_63016_sends_the_message_by_sms(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    deliver(rasa_stack, fake_twilio, number, "hi")
    [greeting] = fake_twilio.wait_for_messages(f"whatsapp:{number}", 1)
    conversation = conversation_of(stack_redis, number)
    for status in ("sent", "read", "delivered"):  # out of order: read stays
        assert _status(rasa_stack, number, greeting.sid, status) == 204
    receipts = await _state(rasa_stack, lambda c: Receipts(c).all(conversation))
    assert receipts[greeting.sid].status == "read"

    # The customer texts by SMS too; later a WhatsApp message fails with 63016 (WhatsApp's
    # clock decided the window had shut): it goes by SMS, through the outbox, once.
    await send_sms(rasa_stack, number, "thanks")
    late = new_sid()
    await _state(
        rasa_stack,
        lambda c: Receipts(c).record(
            conversation, late, channel="whatsapp", body="Your refund is on its way."
        ),
    )
    texted = len(fake_twilio.messages_to(number))
    for _ in range(2):  # Twilio may repeat a callback: still one SMS
        assert _status(rasa_stack, number, late, "failed", "63016") == 204
    await asyncio.to_thread(fake_twilio.wait_for_messages, number, texted + 1, 10)
    sms = [m for m in fake_twilio.messages_to(number) if m.body == "Your refund is on its way."]
    assert len(sms) == 1
    assert await _state(rasa_stack, lambda c: WhatsAppState(c).window(conversation)) is None


async def test_a_message_held_for_the_window_goes_when_the_customer_writes_again(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    deliver(rasa_stack, fake_twilio, number, "what is your refund policy")
    conversation = conversation_of(stack_redis, number)
    late = new_sid()
    await _state(
        rasa_stack,
        lambda c: Receipts(c).record(
            conversation, late, channel="whatsapp", body="A person replied: we found it."
        ),
    )
    # No SMS with us: the failed message is held, not sent elsewhere.
    assert _status(rasa_stack, number, late, "failed", "63016") == 204
    [held] = await _state(rasa_stack, lambda c: WhatsAppState(c).held(conversation))
    assert held["messages"] == [{"text": "A person replied: we found it."}]
    assert fake_twilio.messages_to(number) == []
    # The customer writes: the held message goes first (by REST), then the answer.
    before = len(fake_twilio.messages_to(f"whatsapp:{number}"))
    deliver(rasa_stack, fake_twilio, number, "thanks")
    sent = await asyncio.to_thread(
        fake_twilio.wait_for_messages, f"whatsapp:{number}", before + 2, 20
    )
    assert [m.body for m in sent[before:]] == [
        "A person replied: we found it.",
        "You're welcome! Anything else I can help with?",
    ]
    assert await _state(rasa_stack, lambda c: WhatsAppState(c).held(conversation)) == []


def test_the_simulator_writes_as_a_whatsapp_user(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    env = {
        **os.environ,
        **{name: rasa_stack.env[name] for name in sim_sms.SETTINGS if name in rasa_stack.env},
        "TWILIO_API_BASE_URL": fake_twilio.url,
    }
    run = subprocess.run(
        [sys.executable, "-m", "devtools.sim_sms", "--whatsapp", "--from", new_phone_number()]
        + ["--server", rasa_stack.base_url, "hi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:2] == [
        "bot (REST)  > Hi! I'm the *Acme Shop* assistant 👋 What can I do for you?",
        "              [tap: Where's my order? | Start a refund | Refund policy]",
    ]
