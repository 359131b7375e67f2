"""Erasure through the viewer's API on the shared stack: a customer who called, texted, wrote on
WhatsApp and chatted (with a photo) is forgotten everywhere (a SCAN of the whole Redis finds no
key naming them and no value holding their conversation id, number, user id, WhatsApp name or
words), idempotently, with a receipt; they start afresh when they write again; only the admin
token may ask."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import List

import httpx
import pytest
import redis

from omnichannel.addresses import phone_address, user_address
from omnichannel.audit import conversation_digest
from testkit.fake_llm import FakeLlm
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, whatsapp_form
from testkit.vapi_call import VapiCall
from tests.actions.helpers import tracker
from tests.connectors.twilio_sms.helpers import conversation_of, inbound, post_signed, replies
from tests.connectors.webchat.helpers import open_chat, user_token
from tests.connectors.webchat.test_files import upload
from tests.support import JPEG

pytestmark = pytest.mark.rasa_server

WORDS = "zxqv vlorpt skibbet"
#: The name WhatsApp gives the customer's profile.
PROFILE_NAME = "Quillon Erasmo"


def _erase(stack: RasaStack, conversation_id: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/webhooks/viewer/api/erase",
        json={"conversation_id": conversation_id},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def _values(client: redis.Redis, key: bytes) -> List[bytes]:
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"hash":
        return [part for pair in client.hgetall(key).items() for part in pair]
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"zset":
        return client.zrange(key, 0, -1)
    return []


async def _customer(stack: RasaStack, fake_twilio: FakeTwilio, phone: str, user: str) -> str:
    """Calls (with an end-of-call report), texts (one message not understood), writes on
    WhatsApp and chats (logged in with the same verified phone, attaching a photo): one
    conversation."""
    call = VapiCall(
        stack.base_url,
        stack.env["VAPI_SERVER_SECRET"],
        number=phone,
        custom_llm_key=stack.env["VAPI_CUSTOM_LLM_KEY"],
    )
    await call.assistant_request()
    await call.say("where is my order")
    await call.hang_up(summary="The caller asked about an order.")
    await call.aclose()
    for text in ("hi", WORDS):
        assert await asyncio.to_thread(
            lambda t=text: replies(post_signed(stack, inbound(stack, phone, t)))
        )
    form = whatsapp_form(stack.env, phone, "thanks", profile_name=PROFILE_NAME)
    status, _ = await asyncio.to_thread(
        fake_twilio.deliver_inbound, stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH, form
    )
    assert status == 200
    token = user_token(stack.env["WEBCHAT_JWT_SECRET"], user, phone=phone)
    chat = await open_chat(stack, token)
    await chat.say("what's your refund policy")
    await chat.turn_done()
    photo = await asyncio.to_thread(upload, stack, token, JPEG)
    assert photo.status_code == 201, photo.text
    await chat.ws.close()
    return chat.conversation_id


async def test_erasure_forgets_the_customer_everywhere_once(
    rasa_stack: RasaStack, stack_redis, fake_llm: FakeLlm, fake_twilio: FakeTwilio
) -> None:
    phone, user = new_phone_number(), f"erase-me-{time.time_ns()}"
    cid = await _customer(rasa_stack, fake_twilio, phone, user)
    assert conversation_of(stack_redis, phone) == cid
    tags = [phone_address(phone).hash_tag, user_address(user).hash_tag]
    with redis.Redis.from_url(stack_redis.url) as client:
        before = [k for k in client.scan_iter(count=1000) if cid.encode() in k]
    assert len(before) >= 8, before  # events, profile, work items, call state, insight...
    for part in ("whatsapp_window", "uploads"):
        assert any(key.endswith(f":{part}".encode()) for key in before), (part, before)

    # Looking at the conversation is audit-logged: who, which conversation (by its digest).
    admin = {"Authorization": f"Bearer {rasa_stack.env['RASA_AUTH_TOKEN']}"}
    looked = await asyncio.to_thread(
        httpx.post,
        f"{rasa_stack.base_url}/webhooks/viewer/api/timeline",
        json={"conversation_id": cid},
        headers=admin,
    )
    assert looked.status_code == 200
    day = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    audit = await asyncio.to_thread(
        httpx.get,
        f"{rasa_stack.base_url}/webhooks/insight/api/audit",
        params={"day": day},
        headers=admin,
    )
    entries = audit.json()["entries"]
    assert any(
        e["action"] == "viewer.timeline"
        and e["actor"] == "admin"
        and e["conversation"] == conversation_digest(cid)
        for e in entries
    ), entries[:3]

    refused = await asyncio.to_thread(_erase, rasa_stack, cid, "wrong-token")
    assert refused.status_code == 401
    answer = await asyncio.to_thread(_erase, rasa_stack, cid, rasa_stack.env["RASA_AUTH_TOKEN"])
    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    assert receipt["erased"] is True and receipt["receipt_id"].startswith("er_")
    assert receipt["conversation"] == conversation_digest(cid)
    assert receipt["keys_deleted"] >= len(before)
    assert receipt["insight_texts_removed"] == 1

    secrets = [cid, phone, phone[1:], user, WORDS, PROFILE_NAME, *tags]
    with redis.Redis.from_url(stack_redis.url) as client:
        left = []
        for key in client.scan_iter(count=1000):
            name = key.decode("utf-8", "replace")
            if name == f"omni:{{{cid}}}:forgotten":
                assert client.get(key) == b"1" and 0 < client.ttl(key) <= 3600
                continue
            values = b"\n".join(_values(client, key))
            for secret in secrets:
                if secret in name or secret.encode() in values:
                    left.append((name, secret))
    assert left == []

    again = await asyncio.to_thread(_erase, rasa_stack, cid, rasa_stack.env["RASA_AUTH_TOKEN"])
    assert again.status_code == 200 and again.json()["erased"] is False

    # Writing again starts a new, empty conversation.
    assert await asyncio.to_thread(
        lambda: replies(post_signed(rasa_stack, inbound(rasa_stack, phone, "hi")))
    )
    fresh = conversation_of(stack_redis, phone)
    assert fresh and fresh != cid
    users = [e for e in tracker(rasa_stack, fresh)["events"] if e["event"] == "user"]
    assert [e["text"] for e in users] == ["hi"]
