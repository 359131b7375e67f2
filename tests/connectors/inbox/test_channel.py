"""The inbox's routes on the real stack: who may use them (agents only), hostile bodies, the
claim rules (one agent at a time, takeovers explicit and recorded), replies once and only where
the customer can be reached, internal notes the customer never sees, previews, and the socket."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import httpx
import jwt
import pytest
import websockets

from connectors.inbox.auth import agent_token
from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, queued_ids, reply, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import (
    fresh_phone,
    open_chat,
    recv_until,
    tracker_events,
    user_token,
    ws_url,
)

pytestmark = pytest.mark.rasa_server


def handed_off(stack: RasaStack, stack_redis) -> tuple:
    phone = fresh_phone()
    text_sms(stack, phone, "i want to talk to a person")
    return phone, conversation_of(stack_redis, phone)


def test_only_agents_tokens_open_the_api(rasa_stack: RasaStack, stack_redis) -> None:
    env = rasa_stack.env
    _, cid = handed_off(rasa_stack, stack_redis)
    body = {"conversation_id": cid}
    refused = {
        "no token": None,
        "customer's chat token": user_token(env["WEBCHAT_JWT_SECRET"], "u-1", phone=fresh_phone()),
        "operator's token": env["RASA_AUTH_TOKEN"],
        "forged agent token": agent_token("f" * 40, "a", "Eve", audience="omni-inbox"),
        "expired agent token": agent_token(
            env["INBOX_JWT_SECRET"], "a", "Old", audience="omni-inbox", lifetime=-5
        ),
        "agent secret, customer audience": agent_token(
            env["INBOX_JWT_SECRET"], "a", "A", audience="omni-webchat"
        ),
    }
    for what, token in refused.items():
        for path in ("me", "queue", "claim", "conversation"):
            answer = inbox(rasa_stack, path, token, body)
            assert answer.status_code == 401, (what, path, answer.text)
    # ...and an agent's token opens nothing else: not the viewer, not the chat.
    agent = token_for(rasa_stack)
    viewer = httpx.post(
        f"{rasa_stack.base_url}/webhooks/viewer/api/timeline",
        json=body,
        headers={"Authorization": f"Bearer {agent}"},
    )
    assert viewer.status_code == 401
    agent_as_customer = jwt.encode(
        {"sub": "a", "aud": "omni-inbox", "exp": int(time.time()) + 60},
        env["WEBCHAT_JWT_SECRET"],
        algorithm="HS256",
    )

    async def chat_refuses() -> tuple:
        async with websockets.connect(ws_url(rasa_stack)) as ws:
            await ws.send(json.dumps({"type": "auth", "token": agent_as_customer}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code, ws.close_reason

    assert asyncio.run(chat_refuses()) == (4401, "not a chat token")
    assert inbox(rasa_stack, "me", agent).json()["agent"]["kind"] == "agent"


def test_hostile_bodies_are_refused_without_side_effects(
    rasa_stack: RasaStack, stack_redis
) -> None:
    _, cid = handed_off(rasa_stack, stack_redis)
    token = token_for(rasa_stack)
    url = f"{rasa_stack.base_url}/webhooks/inbox/api/claim"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    cases = {
        b"{not json": 400,
        b"[1, 2]": 400,
        json.dumps({"conversation_id": cid, "admin": True}).encode(): 400,
        json.dumps({"conversation_id": "omni:{x}:*"}).encode(): 400,
        json.dumps({"conversation_id": cid, "pad": "x" * 70_000}).encode(): 413,
    }
    for body, status in cases.items():
        assert httpx.post(url, content=body, headers=headers).status_code == status, body[:40]
    assert (
        inbox(rasa_stack, "conversation", token, {"conversation_id": "c_nope"}).status_code == 404
    )
    long_reply = reply(rasa_stack, token, cid, "x" * 10_001, "sms")
    assert long_reply.status_code == 400
    # Nothing above claimed it.
    detail = inbox(rasa_stack, "conversation", token, {"conversation_id": cid}).json()
    assert detail["handoff"]["state"] == "queued"


def test_one_agent_at_a_time_and_takeovers_are_recorded(
    rasa_stack: RasaStack, stack_redis, fake_twilio: FakeTwilio
) -> None:
    phone, cid = handed_off(rasa_stack, stack_redis)
    dana, sam = token_for(rasa_stack, "Dana"), token_for(rasa_stack, "Sam")
    assert reply(rasa_stack, dana, cid, "hi", "sms").status_code == 409, "claim first"
    first = inbox(rasa_stack, "claim", dana, {"conversation_id": cid})
    second = inbox(rasa_stack, "claim", sam, {"conversation_id": cid})
    assert first.status_code == 200 and second.status_code == 409
    assert "Dana holds this conversation" in second.json()["error"]
    assert reply(rasa_stack, sam, cid, "let me", "sms").status_code == 409
    assert inbox(rasa_stack, "resolve", sam, {"conversation_id": cid}).status_code == 409

    taken = inbox(rasa_stack, "claim", sam, {"conversation_id": cid, "take_over": True})
    assert taken.status_code == 200, taken.text
    last = taken.json()["handoff"]["history"][-1]
    assert last["by"]["name"] == "Sam" and last["detail"] == "taken over from Dana"
    assert reply(rasa_stack, dana, cid, "still me", "sms").status_code == 409

    # Sam's reply, sent twice with one id (a retry), is one SMS.
    sent = len(fake_twilio.messages_to(phone))
    message_id = secrets.token_hex(8)
    for _ in range(2):
        answer = reply(rasa_stack, sam, cid, "Sam here, taking it from here.", "sms", message_id)
        assert answer.status_code == 202
    assert answer.json()["duplicate"] is True
    # Once its one work item is done (sent), the SMS is all there is: the retry added none.
    assert wait_for(
        lambda: (
            inbox(rasa_stack, "conversation", sam, {"conversation_id": cid})
            .json()["statuses"]
            .get(message_id, {})
            .get("state")
            == "sent"
        ),
        what="Sam's reply sent",
    )
    assert [m.body for m in fake_twilio.messages_to(phone)[sent:]] == [
        "Sam: Sam here, taking it from here."
    ]
    # No chat identity: a chat reply has nowhere to go.
    refused = reply(rasa_stack, sam, cid, "hello in chat", "chat")
    assert refused.status_code == 409 and "never used the web chat" in refused.json()["error"]
    detail = inbox(rasa_stack, "conversation", sam, {"conversation_id": cid}).json()
    assert detail["reach"] == {
        "available": ["sms"],
        "unavailable": {
            "whatsapp": "the customer has never written to us on WhatsApp",
            "chat": "the customer has never used the web chat",
        },
        "default": "sms",
    }


def test_notes_stay_with_the_team(rasa_stack: RasaStack, stack_redis) -> None:
    phone = fresh_phone()
    token = user_token(
        rasa_stack.env["WEBCHAT_JWT_SECRET"], f"u-{secrets.token_hex(4)}", phone=phone
    )

    async def scenario() -> None:
        chat = await open_chat(rasa_stack, token)
        await chat.say("i want to talk to a person")
        await chat.turn_done()
        dana = token_for(rasa_stack, "Dana")
        note = inbox(
            rasa_stack,
            "note",
            dana,
            {
                "conversation_id": chat.conversation_id,
                "note_id": "n" * 8,
                "text": "VIP customer, refund approved by Sam",
            },
        )
        assert note.status_code == 200, note.text
        again = inbox(
            rasa_stack,
            "note",
            dana,
            {"conversation_id": chat.conversation_id, "note_id": "n" * 8, "text": "other"},
        )
        assert again.json()["note"]["text"] == "VIP customer, refund approved by Sam"
        detail = inbox(rasa_stack, "conversation", dana, {"conversation_id": chat.conversation_id})
        assert [n["text"] for n in detail.json()["notes"]] == [
            "VIP customer, refund approved by Sam"
        ]
        await asyncio.sleep(0.3)
        logged = json.dumps(tracker_events(rasa_stack, chat.conversation_id))
        assert "VIP" not in logged
        # A second tab of the customer's: its history has no note.
        other = await open_chat(rasa_stack, token)
        assert "VIP" not in json.dumps(other.history)
        await other.ws.close()
        await chat.ws.close()

    asyncio.run(scenario())


def test_preview_shows_the_reply_as_each_channel_sends_it(rasa_stack: RasaStack) -> None:
    token = token_for(rasa_stack, "Dana")
    short = inbox(rasa_stack, "preview", token, {"channel": "sms", "text": "On its way!"}).json()
    assert short["parts"] == [{"body": "Dana: On its way!", "segments": 1, "encoding": "GSM-7"}]
    long = inbox(rasa_stack, "preview", token, {"channel": "sms", "text": "a" * 200}).json()
    assert long["segments"] == 2 and long["encoding"] == "GSM-7"
    emoji = inbox(rasa_stack, "preview", token, {"channel": "sms", "text": "Done ✅"}).json()
    assert emoji["encoding"] == "UCS-2"
    chat = inbox(rasa_stack, "preview", token, {"channel": "chat", "text": "<b>hi</b>"}).json()
    assert "<b>" not in chat["html"]
    whatsapp = inbox(
        rasa_stack, "preview", token, {"channel": "whatsapp", "text": "Order **A-1** shipped."}
    ).json()
    assert whatsapp["bubbles"] == [{"body": "Dana: Order *A-1* shipped."}]  # WhatsApp's bold


def test_the_socket_sends_the_queue_and_the_watched_conversation_live(
    rasa_stack: RasaStack, stack_redis
) -> None:
    token = token_for(rasa_stack, "Dana")
    url = rasa_stack.base_url.replace("http", "ws") + "/webhooks/inbox/ws"

    async def scenario() -> None:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            ready = await recv_until(ws, lambda f: f["type"] == "ready")
            assert ready["agent"]["name"] == "Dana"
            phone = fresh_phone()
            started = time.monotonic()
            await asyncio.to_thread(text_sms, rasa_stack, phone, "i want to talk to a person")
            cid = conversation_of(stack_redis, phone)
            item = await recv_until(
                ws,
                lambda f: f["type"] == "handoff"
                and f["item"]["conversation_id"] == cid
                and f["item"]["last_words"]["text"] is not None,
            )
            assert item["item"]["state"] == "queued"
            assert item["item"]["last_words"]["text"] == "i want to talk to a person"
            assert time.monotonic() - started < 10
            await ws.send(json.dumps({"type": "watch", "conversation_id": cid}))
            await recv_until(ws, lambda f: f["type"] == "watching")
            await asyncio.to_thread(text_sms, rasa_stack, phone, "my parcel is damaged <b>!</b>")
            entry = await recv_until(
                ws, lambda f: f["type"] == "entry" and f["entry"]["type"] == "user"
            )
            assert entry["entry"]["text"] == "my parcel is damaged <b>!</b>"
            assert entry["entry"]["channel"] == "sms"
        # A customer's token is not an agent's.
        async with websockets.connect(url) as ws:
            customer = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], "u-2", phone=fresh_phone())
            await ws.send(json.dumps({"type": "auth", "token": customer}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4401

    asyncio.run(scenario())
    assert cid_in_queue(rasa_stack, token)


def cid_in_queue(stack: RasaStack, token: str) -> bool:
    return bool(queued_ids(stack, token))
