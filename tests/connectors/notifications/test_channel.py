"""The notifications API on the real stack: the shop's backend names a customer and a sendable
response; it reaches an open chat tab live, else goes by SMS, or as the approved template on
WhatsApp outside its window; a STOPped number is refused; quiet hours hold it; the customer's
reply continues with the notification's slots. Hostile requests get a short 4xx."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis.asyncio as aioredis

from devtools.responses import ROOT, load_responses
from devtools.whatsapp_templates import sync
from omnichannel.outbound.items import OutboundStore
from omnichannel.settings import Settings
from omnichannel.twilio_content import ContentApi, template_catalog
from omnichannel.whatsapp_templates import declarations
from omnichannel.whatsapp_window import WhatsAppState
from testkit.fake_llm import FakeLlm
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, whatsapp_form
from tests.connectors.notifications.helpers import (
    SEND_PATH,
    anotify,
    conversation_of,
    notify,
    place_customer,
    shipped,
)
from tests.connectors.twilio_sms.helpers import text_sms
from tests.connectors.webchat.helpers import open_chat, recv_until, user_token
from tests.support import seed_order

pytestmark = pytest.mark.rasa_server

SHIPPED_SMS = (
    "Acme Shop: your order {} has shipped. Reply here with any questions, or STOP to opt out."
)
SHIPPED = "Good news: your order {} has shipped. Reply here if you have any questions about it."


async def items_of(stack: RasaStack, conversation_id: str) -> list:
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        store = OutboundStore(stack.env["REDIS_URL"])
        return await store.of_conversation(conversation_id)
    finally:
        await client.close()


async def test_a_customer_with_the_chat_open_sees_it_live(rasa_stack: RasaStack) -> None:
    user = f"shopper-{secrets.token_hex(4)}"
    chat = await open_chat(rasa_stack, user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], user))
    try:
        answer = await anotify(rasa_stack, shipped({"user_id": user}, "40213"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["status"], body["channel"], body["reason"]) == ("sent", "chat", None)
        frame = await recv_until(
            chat.ws, lambda f: f["type"] == "message" and f["message"]["role"] == "bot"
        )
        assert frame["message"]["text"] == SHIPPED.format("40213")
        assert frame["message"]["kind"] == "notification"
        [item] = await items_of(rasa_stack, chat.conversation_id)
        assert (item.status, item.channel, item.item_id) == ("sent", "chat", body["id"])
    finally:
        await chat.ws.close()


async def test_queued_for_the_chat_and_shown_when_it_next_opens(rasa_stack: RasaStack) -> None:
    user = f"shopper-{secrets.token_hex(4)}"
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], user)
    first = await open_chat(rasa_stack, token)
    cid = first.conversation_id
    await first.ws.close()
    # The tab's place is released when its socket closes.
    for _ in range(50):
        answer = await anotify(rasa_stack, shipped({"conversation_id": cid}, "40214"))
        if answer.json()["channel"] == "chat" and answer.json()["status"] == "queued":
            break
        await asyncio.sleep(0.1)
    assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
    later = await open_chat(rasa_stack, token)
    try:
        shown = [m["text"] for m in later.history["messages"] if m["role"] == "bot"]
        assert SHIPPED.format("40214") in shown
        statuses = {i.item_id: i.status for i in await items_of(rasa_stack, cid)}
        assert statuses[answer.json()["id"]] == "sent"
    finally:
        await later.ws.close()


async def test_by_sms_and_the_reply_is_about_that_order(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, fake_llm: FakeLlm
) -> None:
    number = new_phone_number()
    order = seed_order(rasa_stack, phone=number)
    assert await asyncio.to_thread(text_sms, rasa_stack, number, "hi")
    cid = conversation_of(rasa_stack, number)
    await place_customer(rasa_stack, cid, 14)
    before = len(fake_twilio.messages_to(number))
    answer = await anotify(rasa_stack, shipped({"phone": number}, order))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["channel"]) == ("sent", "sms")
    sent = fake_twilio.wait_for_messages(number, before + 1)[-1]
    assert sent.body == SHIPPED_SMS.format(order)
    # The customer's reply continues with the notification's order number set: "when will it
    # arrive?" is answered about that order (by the order's status, or by the LLM told of it),
    # and the order's status needs no number.
    asked = len(fake_llm.requests)
    replies = await asyncio.to_thread(text_sms, rasa_stack, number, "when will it arrive?")
    told = json.dumps(fake_llm.requests[asked:])
    assert any(order in reply for reply in replies) or order in told, (replies, told[:500])
    replies = await asyncio.to_thread(text_sms, rasa_stack, number, "when will my order arrive")
    assert any(order in reply for reply in replies), replies


async def test_whatsapp_outside_the_window_goes_as_the_approved_template(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    settings = Settings.from_env(rasa_stack.env)
    out = io.StringIO()
    assert (
        await sync(ContentApi(settings), declarations(load_responses(ROOT / "domain.yml")), out=out)
        == 0
    )
    template_catalog(settings).forget()
    form = whatsapp_form(rasa_stack.env, number, "hello")
    status, _ = fake_twilio.deliver_inbound(rasa_stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH, form)
    assert status == 200
    cid = conversation_of(rasa_stack, number)
    await place_customer(rasa_stack, cid, 11)
    fake_twilio.age_window(f"whatsapp:{number}", 25)
    client = aioredis.Redis.from_url(rasa_stack.env["REDIS_URL"])
    try:
        await client.delete(WhatsAppState.window_key(cid))
    finally:
        await client.close()
    before = len(fake_twilio.messages_to(f"whatsapp:{number}"))
    answer = await anotify(rasa_stack, shipped({"phone": number}, "40215"))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["channel"]) == ("sent", "whatsapp")
    sent = fake_twilio.wait_for_messages(f"whatsapp:{number}", before + 1)[-1]
    [template] = fake_twilio.content.by_name("acme_order_shipped")
    assert sent.content_sid == template.sid and sent.status == "sent"
    assert sent.body == SHIPPED.format("40215")


async def test_a_stopped_number_is_refused(rasa_stack: RasaStack, fake_twilio: FakeTwilio) -> None:
    number = new_phone_number()
    assert await asyncio.to_thread(text_sms, rasa_stack, number, "hi")
    await asyncio.to_thread(text_sms, rasa_stack, number, "STOP")
    cid = conversation_of(rasa_stack, number)
    await place_customer(rasa_stack, cid, 14)
    before = len(fake_twilio.messages_to(number))
    answer = await anotify(rasa_stack, shipped({"phone": number}, "40216"))
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["reason"]) == ("refused", "opted_out")
    await asyncio.sleep(0)
    assert len(fake_twilio.messages_to(number)) == before
    [item] = await items_of(rasa_stack, cid)
    assert (item.status, item.reason) == ("refused", "opted_out")


async def test_quiet_hours_hold_it_until_the_customers_morning(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    assert await asyncio.to_thread(text_sms, rasa_stack, number, "hi")
    cid = conversation_of(rasa_stack, number)
    zone = await place_customer(rasa_stack, cid, 2)
    before = len(fake_twilio.messages_to(number))
    answer = await anotify(rasa_stack, shipped({"phone": number}, "40217"))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["status"], body["reason"]) == ("scheduled", "quiet_hours")
    due = datetime.fromisoformat(body["due"]).astimezone(ZoneInfo(zone))
    assert (due.hour, due.minute) == (8, 0)
    assert 5 * 3600 < due.timestamp() - datetime.now(timezone.utc).timestamp() < 7 * 3600
    assert len(fake_twilio.messages_to(number)) == before


def test_the_same_key_and_body_get_the_first_answer_and_one_text(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    assert text_sms(rasa_stack, number, "hi")
    cid = conversation_of(rasa_stack, number)
    asyncio.run(place_customer(rasa_stack, cid, 15))
    before = len(fake_twilio.messages_to(number))
    key = f"order-40218-shipped-{secrets.token_hex(4)}"
    first = notify(rasa_stack, shipped({"phone": number}, "40218"), key=key)
    again = notify(rasa_stack, shipped({"phone": number}, "40218"), key=key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and first.json()["status"] == "sent"
    other = notify(rasa_stack, shipped({"phone": number}, "99999"), key=key)
    assert other.status_code == 422 and "another body" in other.json()["error"]
    assert len(fake_twilio.messages_to(number)) == before + 1


def test_hostile_requests_get_a_short_4xx(rasa_stack: RasaStack) -> None:
    body = shipped({"phone": new_phone_number()}, "40219")
    cases = [
        (notify(rasa_stack, body, api_key=""), 401),
        (notify(rasa_stack, body, api_key="not-the-key"), 401),
        (notify(rasa_stack, body, api_key=rasa_stack.env["RASA_AUTH_TOKEN"]), 401),
        (notify(rasa_stack, body, key=""), 400),
        (notify(rasa_stack, body, key="short"), 400),
        (notify(rasa_stack, body, raw=b"{not json"), 400),
        (notify(rasa_stack, body, raw=b"[1, 2]"), 400),
        (notify(rasa_stack, {**body, "extra": 1}), 400),
        (notify(rasa_stack, {**body, "customer": {}}), 400),
        (notify(rasa_stack, body, raw=b'{"a": "' + b"x" * 20000 + b'"}'), 413),
        (notify(rasa_stack, {**body, "response": "utter_greet"}), 422),
        (notify(rasa_stack, {**body, "response": "utter_nope"}), 422),
        (notify(rasa_stack, {**body, "slots": {"order_number": "1", "password": "x"}}), 422),
        (notify(rasa_stack, {**body, "slots": {}}), 422),
        (notify(rasa_stack, {**body, "send_at": "2026-12-08T09:00:00"}), 400),
    ]
    for answer, expected in cases:
        assert answer.status_code == expected, (expected, answer.text)
        assert len(answer.json()["error"]) < 200
    # Not a POST route for anything else.
    assert httpx.get(rasa_stack.base_url + SEND_PATH, timeout=10).status_code in (404, 405)


def test_unknown_customers_are_refused_like_any_unreachable_one(rasa_stack: RasaStack) -> None:
    unknown = notify(rasa_stack, shipped({"phone": new_phone_number()}, "40220"))
    never = notify(rasa_stack, shipped({"user_id": f"nobody-{secrets.token_hex(4)}"}, "40220"))
    made_up = notify(rasa_stack, shipped({"conversation_id": "c_" + secrets.token_hex(8)}, "1"))
    for answer in (unknown, never, made_up):
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"id", "status", "channel", "reason", "due"}
        assert (body["status"], body["channel"], body["reason"]) == (
            "refused",
            None,
            "not_reachable",
        )


async def test_a_consent_record_reaches_a_number_that_never_wrote(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    consent = {"source": "checkout", "reference": "cons_981"}
    answer = await anotify(rasa_stack, shipped({"phone": number}, "40221", consent=consent))
    assert answer.status_code in (200, 202), answer.text
    assert answer.json()["reason"] != "not_reachable"
    assert conversation_of(rasa_stack, number).startswith("c_")
