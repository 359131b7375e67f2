"""WhatsApp as a channel of its own, end to end: a customer writes on WhatsApp, taps a quick
reply, sends a photo of the damage, later calls (and the call knows the refund and the photo),
and a day later a "text me that" goes as an approved template, not as a message that would fail
with 63016. The same greeting by SMS and on WhatsApp differs as designed.

Real connectors, the trained assistant, the action server and real Redis; Twilio (Messages,
Content and media APIs, webhooks it posts, status callbacks) is the local fake.
"""

from __future__ import annotations

import io
from typing import List

import pytest
import redis.asyncio as aioredis

from devtools.responses import ROOT, load_responses
from devtools.whatsapp_templates import sync
from omnichannel.refunds import RefundRequests
from omnichannel.settings import Settings
from omnichannel.twilio_content import ContentApi, template_catalog
from omnichannel.whatsapp_templates import declarations
from omnichannel.whatsapp_window import WhatsAppState
from testkit.fake_twilio import FakeTwilio, SentMessage
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, whatsapp_form
from tests.actions.helpers import conversation_of, phone_call, send_sms
from tests.connectors.twilio_sms.helpers import replies_of
from tests.support import JPEG, seed_order

pytestmark = pytest.mark.rasa_server


def whatsapp(stack: RasaStack, fake: FakeTwilio, number: str, body: str, **extra) -> List[str]:
    """A WhatsApp message as Twilio posts it (the fake delivers it, opening the window);
    returns the inline (TwiML) replies."""
    form = whatsapp_form(stack.env, number, body, **extra)
    status, answer = fake.deliver_inbound(stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH, form)
    assert status == 200, answer
    return replies_of(answer)


def sent_to(fake: FakeTwilio, number: str, count: int) -> List[SentMessage]:
    return fake.wait_for_messages(f"whatsapp:{number}", count, timeout=30)


async def age_window(stack: RasaStack, fake: FakeTwilio, conversation: str, number: str) -> None:
    """25 hours pass since the customer's last WhatsApp message: at Twilio and in our state."""
    fake.age_window(f"whatsapp:{number}", 25)
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        await client.delete(WhatsAppState.window_key(conversation))
    finally:
        await client.close()


async def test_whatsapp_quick_reply_photo_call_and_a_template_a_day_later(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    order = seed_order(rasa_stack, phone=number, like="55555")
    address = f"whatsapp:{number}"
    fake_twilio.send_status_callbacks = True
    try:
        # 1. Hello on WhatsApp: the greeting's WhatsApp form, its options tappable (a
        #    twilio/quick-reply Content resource, created for it and sent by its SID).
        assert whatsapp(rasa_stack, fake_twilio, number, "hi") == []
        [greeting] = sent_to(fake_twilio, number, 1)
        assert greeting.body == "Hi! I'm the *Acme Shop* assistant 👋 What can I do for you?"
        assert greeting.from_ == "whatsapp:+15005550006" and greeting.content_sid
        content = fake_twilio.content.get(greeting.content_sid)
        assert content.content_type == "twilio/quick-reply"
        actions = content.types["twilio/quick-reply"]["actions"]
        assert [a["title"] for a in actions] == [
            "Where's my order?",
            "Start a refund",
            "Refund policy",
        ]

        # 2. A tap on "Start a refund": the form asks for the order number.
        asked = whatsapp(
            rasa_stack,
            fake_twilio,
            number,
            "Start a refund",
            ButtonPayload="/request_refund",
            ButtonText="Start a refund",
        )
        assert asked == [
            "What's your order number? It's the 5-digit number in your confirmation email."
        ]
        conversation = await conversation_of(rasa_stack, number)
        assert conversation is not None

        # 3. The order number: asked to confirm it (refunds are never started on a guess);
        #    on the yes the refund starts, with the packing picture as WhatsApp media (its
        #    caption the text) and the invitation to send a photo.
        [confirm] = whatsapp(rasa_stack, fake_twilio, number, order)
        assert confirm.startswith(f"Do you want me to start a refund for order {order} (")
        started = whatsapp(rasa_stack, fake_twilio, number, "yes")
        assert started == [
            f"I've started a refund request for order {order}. You'll get a return label by "
            "email within the hour. Here's how to pack the item:",
            "If it arrived damaged, send a photo of it here and I'll add it to your refund "
            "request.",
        ]

        # 4. A photo of the damage: fetched from Twilio with the account's credentials (the
        #    fake answers only so, by a redirect), checked, and added to the refund request.
        photo = fake_twilio.add_media(JPEG, "image/jpeg")
        thanks = whatsapp(
            rasa_stack, fake_twilio, number, "", media=[photo], media_types=["image/jpeg"]
        )
        assert thanks == [
            f"Thanks for the photo of the damage: I've added it to your refund request for "
            f"order {order}."
        ]
        assert any(photo.endswith(request.split("?")[0]) for request in fake_twilio.media_requests)
        client = aioredis.Redis.from_url(rasa_stack.env["REDIS_URL"])
        try:
            [request] = await RefundRequests(client).all(conversation)
        finally:
            await client.close()
        assert request["order"] == order and len(request["photos"]) == 1
        assert request["photos"][0]["content_type"] == "image/jpeg"

        # 5. The customer calls: the greeting knows the refund and the photo.
        call = phone_call(rasa_stack, number)
        answer = await call.assistant_request()
        first = answer["assistant"]["firstMessage"]
        assert first == (
            f"Welcome back! I have your refund request for order "
            f"{' '.join(order)} and the photo you sent us on WhatsApp. How can I help?"
        )

        # 6. 25 hours later, on another call, "text me the refund policy": WhatsApp's window
        #    is shut, so the approved template goes (created by make whatsapp-templates).
        settings = Settings.from_env(rasa_stack.env)
        api = ContentApi(settings)
        out = io.StringIO()
        wanted = declarations(load_responses(ROOT / "domain.yml"))
        assert await sync(api, wanted, out=out) == 0, out.getvalue()
        assert "acme_refund_policy: approved" in out.getvalue()
        template_catalog(settings).forget()
        await age_window(rasa_stack, fake_twilio, conversation, number)
        before = len(fake_twilio.messages_to(address))
        later = phone_call(rasa_stack, number)
        await later.assistant_request()
        done = await later.say("text me the refund policy")
        assert done.text == "Done, I've sent you the refund policy on WhatsApp."
        sent = sent_to(fake_twilio, number, before + 1)[-1]
        [template] = fake_twilio.content.by_name("acme_refund_policy")
        assert sent.content_sid == template.sid and sent.status == "sent"
        assert sent.body.startswith("Here's our refund policy.")
        assert not any(m.error_code for m in fake_twilio.messages_to(address))
    finally:
        fake_twilio.send_status_callbacks = False


async def test_the_same_greeting_by_sms_and_on_whatsapp_differs_as_designed(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    by_sms = await send_sms(rasa_stack, number, "hi")
    assert by_sms[0] == (
        "Hi! Acme Shop here. Ask me about an order, tracking or refunds.\n"
        "Reply 1 for Order status, 2 for Refund policy."
    )
    other = new_phone_number()
    assert whatsapp(rasa_stack, fake_twilio, other, "hi") == []
    [greeting] = sent_to(fake_twilio, other, 1)
    assert greeting.body == "Hi! I'm the *Acme Shop* assistant 👋 What can I do for you?"
    assert greeting.content_sid and "Reply" not in greeting.body
