"""``SmsSender.send_to_customer`` on WhatsApp (omnichannel/sms_sender.py), against the local fake
of Twilio's Messages and Content APIs and a real Redis: the window, templates, the SMS fallback,
held messages, tappable options by Content SID, and what the fake (as Twilio) does with a
free-form message outside the window: it fails with 63016."""

from __future__ import annotations

import json
import time

import pytest

from omnichannel import metrics
from omnichannel.addresses import phone_address
from omnichannel.channels import SMS, WHATSAPP
from omnichannel.identity import IdentityStore
from omnichannel.receipts import Receipts
from omnichannel.rendering.messages import BotMessage
from omnichannel.settings import Settings
from omnichannel.sms_sender import SmsOptedOut, SmsSender, preferred_channel
from omnichannel.twilio_content import ContentApi, template_catalog
from omnichannel.whatsapp_templates import TemplateRef
from omnichannel.whatsapp_window import WINDOW_SECONDS, WhatsAppState
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number

GREETING = BotMessage.from_rasa(
    {
        "text": "Hi! What can I do?",
        "buttons": [
            {"title": "Order status", "payload": "/check_order_status"},
            {"title": "Refund", "payload": "/request_refund"},
        ],
    }
)


@pytest.fixture
def settings(redis_url: str, fake_twilio: FakeTwilio) -> Settings:
    fake_twilio.opted_out.clear()
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "PUBLIC_BASE_URL": "https://bot.example.com",
            "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
            "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
            "TWILIO_PHONE_NUMBER": "+15005550006",
            "TWILIO_API_BASE_URL": fake_twilio.url,
        }
    )


async def _customer(fake: FakeTwilio, *, whatsapp: bool, sms: bool = False) -> tuple:
    """A customer who wrote on WhatsApp just now (and by SMS before, when ``sms``)."""
    number = new_phone_number()
    identity = IdentityStore()
    if sms:
        await identity.resolve_conversation(phone_address(number), channel=SMS)
    cid = await identity.resolve_conversation(phone_address(number), channel=WHATSAPP)
    if whatsapp:
        fake.customer_wrote(f"whatsapp:{number}")
        await WhatsAppState().customer_wrote(cid, "whatsapp:+15005550006")
    return cid, number


async def test_in_the_window_options_go_by_a_content_sid_created_once(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    cid, number = await _customer(fake_twilio, whatsapp=True)
    sender = SmsSender(settings)
    first = await sender.send_to_customer(cid, [GREETING])
    second = await sender.send_to_customer(cid, [GREETING])
    assert second.route == metrics.ROUTE_SESSION
    assert (first.channel, first.route) == (WHATSAPP, metrics.ROUTE_SESSION)
    [one, two] = fake_twilio.messages_to(f"whatsapp:{number}")
    assert one.content_sid and one.content_sid == two.content_sid  # created once, then reused
    assert one.body == "Hi! What can I do?" and one.from_ == "whatsapp:+15005550006"
    assert not one.error_code
    assert [b.payload for b in first.buttons] == ["/check_order_status", "/request_refund"]
    receipt = (await Receipts().all(cid))[first.sids[0]]
    assert (receipt.channel, receipt.status, receipt.body) == (
        WHATSAPP,
        "queued",
        "Hi! What can I do?",
    )


async def test_without_the_content_api_options_go_as_numbered_text(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    """The Content API failing (here: the fake answers 503) costs the tap, not the options."""
    cid, number = await _customer(fake_twilio, whatsapp=True)
    pick = BotMessage.from_rasa(
        {"text": "Pick one", "buttons": [{"title": "Yes please", "payload": "/affirm"}]}
    )
    fake_twilio.content.fail_next(503)
    delivery = await SmsSender(settings).send_to_customer(cid, [pick])
    [sent] = fake_twilio.messages_to(f"whatsapp:{number}")
    assert sent.content_sid is None
    assert sent.body == "Pick one\n\n*1* Yes please\nReply with the number of your choice."
    assert [b.payload for b in delivery.buttons] == ["/affirm"]


async def test_outside_the_window_an_approved_template_goes(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    cid, number = await _customer(fake_twilio, whatsapp=False)
    api = ContentApi(settings)
    body = "Your order {{1}} has shipped. Reply here with any question."
    created = await api.create(
        "acme_test_shipped", {"twilio/text": {"body": body}}, "en", {"1": "1"}
    )
    await api.request_approval(created["sid"], "acme_test_shipped", "UTILITY")
    template_catalog(settings).forget()  # approved a moment ago: read the list again
    # The variables are read off the message's own text.
    text = BotMessage(text="Your order 40213 has shipped. Reply here with any question.")
    delivery = await SmsSender(settings).send_to_customer(
        cid, [text], template=TemplateRef("acme_test_shipped")
    )
    assert (delivery.channel, delivery.route) == (WHATSAPP, metrics.ROUTE_TEMPLATE)
    [sent] = fake_twilio.messages_to(f"whatsapp:{number}")
    assert sent.content_sid == created["sid"] and sent.content_variables == {"1": "40213"}
    assert sent.body == "Your order 40213 has shipped. Reply here with any question."
    assert sent.status == "sent" and not sent.error_code


async def test_outside_the_window_without_a_template_sms_if_they_text_else_held(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    texter, texter_number = await _customer(fake_twilio, whatsapp=False, sms=True)
    delivery = await SmsSender(settings).send_to_customer(texter, [BotMessage(text="An update")])
    assert (delivery.channel, delivery.route) == (SMS, metrics.ROUTE_SMS_FALLBACK)
    assert "24-hour window" in str(delivery.reason)
    [sms] = fake_twilio.messages_to(texter_number)
    assert sms.body == "An update" and not fake_twilio.messages_to(f"whatsapp:{texter_number}")

    only_whatsapp, number = await _customer(fake_twilio, whatsapp=False)
    held = await SmsSender(settings).send_to_customer(only_whatsapp, [BotMessage(text="Later")])
    assert held.held and held.sids == ()
    assert fake_twilio.messages_to(number) == []
    assert fake_twilio.messages_to(f"whatsapp:{number}") == []
    [entry] = await WhatsAppState().held(only_whatsapp)
    assert entry["messages"] == [{"text": "Later"}]
    # Asking for it now ("text me that") is consent to an SMS.
    asked = await SmsSender(settings).send_to_customer(
        only_whatsapp, [BotMessage(text="Now")], requested=True
    )
    assert asked.route == metrics.ROUTE_SMS_FALLBACK
    assert [m.body for m in fake_twilio.messages_to(number)] == ["Now"]


async def test_free_form_outside_the_window_fails_at_twilio_with_63016(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    """What our window check prevents, the fake does as Twilio: it accepts the message, then
    reports it failed with 63016 (here read from its records)."""
    cid, number = await _customer(fake_twilio, whatsapp=True)
    fake_twilio.age_window(f"whatsapp:{number}", 25)
    # Our state still says open: the message goes, and Twilio fails it.
    await SmsSender(settings).send_to_customer(cid, [BotMessage(text="Late")])
    [sent] = fake_twilio.messages_to(f"whatsapp:{number}")
    assert (sent.status, sent.error_code) == ("failed", "63016")


async def test_the_channel_the_customer_last_wrote_on_wins(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    identity = IdentityStore()
    cid = await identity.resolve_conversation(phone_address(number), channel=WHATSAPP)
    assert preferred_channel(await identity.profile(cid)) == WHATSAPP
    await identity.resolve_conversation(phone_address(number), channel=SMS)
    assert preferred_channel(await identity.profile(cid)) == SMS
    delivery = await SmsSender(settings).send_to_customer(cid, [BotMessage(text="By SMS")])
    assert delivery.route == metrics.ROUTE_SMS and fake_twilio.messages_to(number)


async def test_a_number_unreachable_on_whatsapp_gets_sms(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    cid, number = await _customer(fake_twilio, whatsapp=True, sms=True)
    await IdentityStore().resolve_conversation(phone_address(number), channel=WHATSAPP)
    await WhatsAppState().mark_unreachable(cid, "63024")
    delivery = await SmsSender(settings).send_to_customer(cid, [BotMessage(text="Hello")])
    assert delivery.channel == SMS and fake_twilio.messages_to(number)
    forced = await SmsSender(settings).send_to_customer(
        cid, [BotMessage(text="There")], channel=WHATSAPP
    )
    assert forced.route == metrics.ROUTE_SMS_FALLBACK and "63024" in str(forced.reason)


async def test_stop_on_either_channel_stops_both(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    cid, number = await _customer(fake_twilio, whatsapp=True)
    await IdentityStore().set_sms_opt_out(cid, True)
    for channel in (None, WHATSAPP, SMS):
        with pytest.raises(SmsOptedOut):
            await SmsSender(settings).send_to_customer(
                cid, [BotMessage(text="no")], channel=channel
            )
    assert fake_twilio.messages_to(f"whatsapp:{number}") == []


async def test_the_window_key_expires_with_the_window(redis_url: str) -> None:
    cid = "c_" + "w" * 22
    state = WhatsAppState()
    await state.customer_wrote(cid, "whatsapp:+15005550006", at=time.time() - 3600)
    ttl = await state.redis.pttl(WhatsAppState.window_key(cid))
    assert (WINDOW_SECONDS - 3600 - 5) * 1000 < ttl <= (WINDOW_SECONDS - 3600) * 1000
    window = await state.window(cid)
    assert window is not None and window.is_open() and window.sender == "whatsapp:+15005550006"
    assert not window.is_open(now=window.closes_at - 60)  # the closing margin counts as shut
    await state.customer_wrote(cid, None, at=time.time() - WINDOW_SECONDS - 1)
    assert json.loads(await state.redis.get(WhatsAppState.window_key(cid)))["sender"]
    await state.close(cid)
    assert await state.window(cid) is None
