"""The viewer's routes on the shared stack: a conversation made through the real VAPI, Twilio
and web chat connectors, found by phone, user and id, behind the Rasa auth token."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Dict, Optional

import httpx
import pytest

from testkit.stack import RasaStack
from tests.connectors.viewer.helpers import CALL_SUMMARY, call_and_hang_up
from tests.connectors.webchat.helpers import fresh_phone, open_chat, text_from_phone, user_token

pytestmark = pytest.mark.rasa_server

API = "/webhooks/viewer/api/timeline"


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
