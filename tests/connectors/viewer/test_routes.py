"""The viewer's routes on the shared stack: a conversation made through the real VAPI, Twilio
and web chat connectors, found by phone, user and id, behind the Rasa auth token."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, Dict, Optional

import httpx
import pytest

from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, whatsapp_form
from tests.connectors.notifications.helpers import (
    conversation_of,
    notify,
    place_customer,
    shipped,
)
from tests.connectors.viewer.helpers import CALL_SUMMARY, call_and_hang_up
from tests.connectors.webchat.helpers import fresh_phone, open_chat, text_from_phone, user_token
from tests.support import JPEG

pytestmark = pytest.mark.rasa_server

API = "/webhooks/viewer/api/timeline"
MEDIA_API = "/webhooks/viewer/api/media"


def ask(stack: RasaStack, body: Any, token: Optional[str] = None) -> httpx.Response:
    token = stack.env["RASA_AUTH_TOKEN"] if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(stack.base_url + API, json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def conversation(rasa_stack: RasaStack) -> Dict[str, str]:
    """One customer: a call (with its end-of-call report), an SMS, then a signed-in chat."""
    phone = fresh_phone()
    user_id = "viewer-" + secrets.token_hex(4)

    async def customer() -> None:
        await call_and_hang_up(rasa_stack, phone)
        text_from_phone(rasa_stack, phone, "what's your refund policy")
        token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], user_id, phone=phone)
        chat = await open_chat(rasa_stack, token)
        try:
            await chat.say("hello")
            await chat.turn_done()
        finally:
            await chat.ws.close()

    asyncio.run(customer())
    return {"phone": phone, "user_id": user_id}


def test_nothing_is_answered_without_the_auth_token(rasa_stack: RasaStack) -> None:
    body = {"phone": fresh_phone()}
    for token in ("", "not-the-token", rasa_stack.env["RASA_AUTH_TOKEN"] + "x"):
        refused = ask(rasa_stack, body, token=token)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
    in_url = httpx.post(
        rasa_stack.base_url + API,
        params={"token": rasa_stack.env["RASA_AUTH_TOKEN"]},
        json=body,
        timeout=30,
    )
    assert in_url.status_code == 401  # the token is never taken from a URL
    page = httpx.get(rasa_stack.base_url + "/webhooks/viewer/", timeout=30)
    assert page.status_code == 200 and "Rasa auth token" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(rasa_stack.base_url + "/webhooks/viewer/static/x.js").status_code == 404


def test_a_phone_search_shows_the_whole_cross_channel_timeline(
    rasa_stack: RasaStack, conversation: Dict[str, str]
) -> None:
    answer = ask(rasa_stack, {"phone": conversation["phone"]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    found = answer.json()
    entries = found["entries"]
    users = [entry for entry in entries if entry["type"] == "user"]
    assert [(entry["text"], entry["channel"]) for entry in users] == [
        ("hello", "voice"),
        ("what's your refund policy", "sms"),
        ("hello", "chat"),
    ]
    assert all(entry["intent"] and 0 < entry["confidence"] <= 1 for entry in users)
    assert users[0]["intent"] == users[2]["intent"] == "greet"
    bots = [entry for entry in entries if entry["type"] == "bot"]
    by_channel = {entry["channel"]: entry["rendered"] for entry in bots}
    assert by_channel["voice"]["speech"] and "**" not in by_channel["voice"]["speech"]
    assert "30 days" in by_channel["sms"]["body"] and by_channel["sms"]["segments"] >= 1
    assert "<strong>Acme Shop</strong>" in by_channel["chat"]["html"]
    summaries = [entry for entry in entries if entry["type"] == "call_summary"]
    assert [entry["summary"] for entry in summaries] == [CALL_SUMMARY]
    slots = {(entry["name"], entry["value"]) for entry in entries if entry["type"] == "slot"}
    assert {("channel", "voice"), ("channel", "sms"), ("channel", "chat")} <= slots
    assert any(
        entry["type"] == "action" and entry["name"].startswith("utter_") for entry in entries
    )
    # The operator searched by this number: shown as is; the profile knows every channel.
    assert found["profile"]["phone"] == conversation["phone"]
    assert found["profile"]["user_id"] == conversation["user_id"]
    assert set(found["profile"]["channels_seen"]) == {"voice", "sms", "chat"}
    assert found["older_before"] is None
    assert found["page"] == {"start": 0, "stop": found["total_events"]}


def test_user_and_id_searches_find_it_with_the_phone_masked(
    rasa_stack: RasaStack, conversation: Dict[str, str]
) -> None:
    by_phone = ask(rasa_stack, {"phone": conversation["phone"]}).json()
    by_user = ask(rasa_stack, {"user_id": conversation["user_id"]}).json()
    by_id = ask(rasa_stack, {"conversation_id": by_phone["conversation_id"]}).json()
    assert by_user["conversation_id"] == by_id["conversation_id"] == by_phone["conversation_id"]
    for answer in (by_user, by_id):
        assert conversation["phone"] not in str(answer)
        assert answer["profile"]["phone"].endswith(conversation["phone"][-4:])
        assert "***" in answer["profile"]["phone"]
    assert len(by_user["entries"]) == len(by_phone["entries"])


def test_pages_are_bounded_and_walk_back_to_the_start(
    rasa_stack: RasaStack, conversation: Dict[str, str]
) -> None:
    body = {"user_id": conversation["user_id"], "limit": 5}
    newest = ask(rasa_stack, body).json()
    assert newest["page"] == {"start": newest["total_events"] - 5, "stop": newest["total_events"]}
    assert all(
        newest["page"]["start"] <= e["index"] < newest["total_events"] for e in newest["entries"]
    )
    seen = [entry["index"] for entry in newest["entries"]]
    before = newest["older_before"]
    while before is not None:
        page = ask(rasa_stack, {**body, "before": before}).json()
        seen = [entry["index"] for entry in page["entries"]] + seen
        before = page["older_before"]
    whole = ask(rasa_stack, {"user_id": conversation["user_id"], "limit": 1000}).json()
    assert seen == [entry["index"] for entry in whole["entries"]]
    past_the_end = ask(rasa_stack, {**body, "before": 10**9}).json()
    assert past_the_end["page"] == newest["page"]


def test_bad_input_gets_a_4xx(rasa_stack: RasaStack) -> None:
    assert ask(rasa_stack, {"phone": "12"}).status_code == 400
    assert ask(rasa_stack, {"user_id": "someone", "limit": 1001}).status_code == 400
    assert ask(rasa_stack, {"phone": fresh_phone(), "user_id": "x"}).status_code == 400
    unknown = ask(rasa_stack, {"phone": fresh_phone()})
    assert unknown.status_code == 404 and unknown.json()["error"] == (
        "no conversation for that phone number"
    )
    assert ask(rasa_stack, {"conversation_id": "c_" + secrets.token_hex(8)}).status_code == 404
    huge = httpx.post(
        rasa_stack.base_url + API,
        content=b"{" + b" " * 10_000 + b"}",
        headers={"Authorization": f"Bearer {rasa_stack.env['RASA_AUTH_TOKEN']}"},
        timeout=30,
    )
    assert huge.status_code == 413


def test_a_customers_photo_and_whatsapp_receipts_show_in_the_viewer(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = fresh_phone()
    url = rasa_stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH
    fake_twilio.send_status_callbacks = True
    try:
        fake_twilio.deliver_inbound(url, whatsapp_form(rasa_stack.env, number, "hi"))
        [greeting] = fake_twilio.wait_for_messages(f"whatsapp:{number}", 1)
        # Twilio reports sent, delivered, read: wait until the last callback was answered.
        deadline = time.monotonic() + 20
        while (greeting.sid, "read", 204) not in fake_twilio.callback_answers:
            assert time.monotonic() < deadline, fake_twilio.callback_answers
            time.sleep(0.05)
    finally:
        fake_twilio.send_status_callbacks = False
    photo = fake_twilio.add_media(JPEG, "image/jpeg")
    form = whatsapp_form(rasa_stack.env, number, "", media=[photo], media_types=["image/jpeg"])
    fake_twilio.deliver_inbound(url, form)

    answer = ask(rasa_stack, {"phone": number})
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entries"]
    answered = [e for e in entries if e["type"] == "bot" and e["channel"] == "whatsapp"]
    assert answered[0]["delivery"] == {"status": "read"}
    assert answered[0]["rendered"]["bubbles"][0]["options"] == [
        "Where's my order?",
        "Start a refund",
        "Refund policy",
    ]
    [sent] = [e for e in entries if e["type"] == "user" and e.get("media")]
    assert sent["media"] == [{"kind": "image", "content_type": "image/jpeg", "source": "twilio"}]

    media = {"conversation_id": answer.json()["conversation_id"], "index": sent["index"], "item": 0}
    headers = {"Authorization": f"Bearer {rasa_stack.env['RASA_AUTH_TOKEN']}"}
    shown = httpx.post(rasa_stack.base_url + MEDIA_API, json=media, headers=headers, timeout=30)
    assert shown.status_code == 200 and shown.content == JPEG
    assert shown.headers["content-type"] == "image/jpeg"
    assert shown.headers["x-content-type-options"] == "nosniff"
    assert httpx.post(rasa_stack.base_url + MEDIA_API, json=media).status_code == 401
    missing = {**media, "item": 3}
    assert (
        httpx.post(rasa_stack.base_url + MEDIA_API, json=missing, headers=headers).status_code
        == 404
    )
    bad = {**media, "index": -1}
    assert httpx.post(rasa_stack.base_url + MEDIA_API, json=bad, headers=headers).status_code == 400


OUTBOUND_API = "/webhooks/viewer/api/outbound"


def test_recent_outbound_items_behind_the_token(rasa_stack: RasaStack) -> None:
    phone = fresh_phone()
    text_from_phone(rasa_stack, phone, "hi")
    asyncio.run(place_customer(rasa_stack, conversation_of(rasa_stack, phone), 3))
    held = notify(rasa_stack, shipped({"phone": phone}, "40230")).json()
    notify(rasa_stack, shipped({"phone": fresh_phone()}, "40231"))  # nobody we know

    def outbound(body: Any, token: Optional[str] = None) -> httpx.Response:
        token = rasa_stack.env["RASA_AUTH_TOKEN"] if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(rasa_stack.base_url + OUTBOUND_API, json=body, headers=headers)

    assert outbound({}, token="").status_code == 401
    assert outbound({}, token=rasa_stack.env["NOTIFICATIONS_API_KEY"]).status_code == 401
    for bad in ({"status": "lost"}, {"limit": 0}, {"limit": 1000}, {"other": 1}, [1]):
        answer = outbound(bad)
        assert answer.status_code == 400 and answer.json()["error"], (bad, answer.text)
    found = outbound({"status": "scheduled", "limit": 200}).json()
    [item] = [i for i in found["items"] if i["id"] == held["id"]]
    assert (item["status"], item["reason"], item["response"]) == (
        "scheduled",
        "quiet_hours",
        "utter_order_shipped",
    )
    assert item["slots"] == {"order_number": "40230"}
    assert all(i["status"] == "scheduled" for i in found["items"])
    assert {"kind": "notification", "reason": "unknown_customer"}.items() <= found["refusals"][
        0
    ].items()
    assert phone not in json.dumps(found)
