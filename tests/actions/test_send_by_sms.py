"""action_send_by_sms: "text me that" during a call or a chat, through the real connectors,
the action server and the Twilio connector's SmsSender, against the fake Twilio API."""

from __future__ import annotations

import json
import secrets

import pytest
import websockets

from omnichannel.addresses import user_address
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from tests.actions.helpers import (
    bot_events,
    chat_token,
    chat_turn,
    chat_url,
    conversation_for,
    conversation_of,
    frame,
    new_conversation,
    phone_call,
    say,
    send_sms,
    texts,
)
from tests.support import seed_order

pytestmark = pytest.mark.rasa_server

LINK = "https://track.acme-shop.example/1Z999AA10123456784"


async def test_yes_to_the_offer_texts_the_tracking_link_and_records_it(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    call = phone_call(rasa_stack)
    number = seed_order(rasa_stack, phone=call.number)
    status = await call.say(f"where is order {number}")
    assert status.text.endswith("Would you like me to text you the tracking link?")

    confirmation = await call.say("yes please")

    [sms] = fake_twilio.wait_for_messages(call.number, 1)
    assert sms.body == f"Acme Shop order {number} (UPS): track it at {LINK}"
    assert sms.from_ == rasa_stack.env["TWILIO_PHONE_NUMBER"]
    # The call hears the confirmation only; the texted copy is not read out.
    assert confirmation.text == "Done, I've texted you the tracking link."
    conversation = await conversation_of(rasa_stack, call.number)
    record = bot_events(rasa_stack, conversation)[-1]
    assert record["text"] == sms.body
    assert record["metadata"]["channel"] == "sms"
    assert record["metadata"]["message_sids"] == [sms.sid]


async def test_okay_to_the_offer_also_texts_the_link(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    call = phone_call(rasa_stack)
    await call.say(f"where is order {seed_order(rasa_stack, phone=call.number)}")

    confirmation = await call.say("okay")

    [sms] = fake_twilio.wait_for_messages(call.number, 1)
    assert LINK in sms.body
    assert confirmation.text == "Done, I've texted you the tracking link."


async def test_text_me_that_after_the_refund_policy_sends_the_policy(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    call = phone_call(rasa_stack)
    policy = await call.say("what's your refund policy")

    await call.say("can you text me that")

    [sms] = fake_twilio.wait_for_messages(call.number, 1)
    assert sms.body.startswith("Here's our refund policy. You can return most items")
    assert policy.text.startswith("Here's our refund policy.")


async def test_refuses_after_stop_and_sends_nothing(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    call = phone_call(rasa_stack)
    await call.say(f"where is order {seed_order(rasa_stack, phone=call.number)}")
    await send_sms(rasa_stack, call.number, "STOP")

    reply = await call.say("text me the tracking link")

    assert "opted out" in reply.text
    assert not any("track it at" in m.body for m in fake_twilio.messages_to(call.number))


async def test_text_me_that_from_the_chat_of_a_customer_with_a_verified_phone(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    phone = new_phone_number()
    number = seed_order(rasa_stack, phone=phone)
    async with websockets.connect(chat_url(rasa_stack)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": chat_token(rasa_stack, phone)}))
        assert (await frame(ws))["type"] == "ready"
        assert (await frame(ws))["type"] == "history"
        await chat_turn(ws, f"where is order {number}")

        shown = await chat_turn(ws, "text me the tracking link")

    [sms] = fake_twilio.wait_for_messages(phone, 1)
    assert sms.body == f"Acme Shop order {number} (UPS): track it at {LINK}"
    assert shown[0]["text"] == "Done! I've texted the tracking link to your phone."
    # The chat shows the texted copy too, badged as the SMS it was, as the history does.
    [copy] = [message for message in shown if LINK in message.get("text", "")]
    assert copy["channel"] == "sms"


async def test_chat_without_a_phone_number_is_told_so(rasa_stack: RasaStack) -> None:
    """A signed-in site user without a phone number on file, asking about their own order."""
    user_id = "shopper-" + secrets.token_hex(6)
    sender = conversation_for(rasa_stack, user_address(user_id))
    number = seed_order(rasa_stack, user_id=user_id)
    [status] = say(rasa_stack, sender, f"where is order {number}", channel="chat")
    assert status["text"].startswith(f"**Order {number}** (Trail running shoes) has shipped")

    reply = texts(say(rasa_stack, sender, "text me the tracking link", channel="chat"))

    assert reply == [
        "I don't have a phone number for you, so I can't send a text. If you call or text us "
        "from your phone, I can send it there."
    ]


def test_nothing_to_text_yet(rasa_stack: RasaStack) -> None:
    sender = new_conversation()

    reply = texts(say(rasa_stack, sender, "text me that", channel="chat"))

    assert reply == [
        "There's nothing for me to text you yet. I can text you a tracking link or our refund "
        "policy."
    ]


async def test_a_picture_spoken_around_on_a_call_is_texted_on_yes(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    """A response's picture on a call: the caller hears the offer, a "yes" sends it as MMS
    (this caller has no WhatsApp with us), and the call confirms it."""
    call = phone_call(rasa_stack)
    number = seed_order(rasa_stack, phone=call.number, like="55555")
    await call.say("I want a refund")
    asked = await call.say(f"it's {number}")
    assert asked.text.startswith("Do you want me to start a refund for order ")
    started = await call.say("yes")
    assert started.text.endswith("I can text you the picture if you like.")
    confirmation = await call.say("yes")
    assert confirmation.text == "Done, I've texted you the picture."
    [mms] = fake_twilio.wait_for_messages(call.number, 1)
    assert mms.media_urls == ["https://acme-shop.example/img/how-to-pack-a-return.png"]
    assert mms.body.startswith(f"I've started a refund request for order {number}.")
