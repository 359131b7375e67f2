"""The web chat connector against the real stack: a trained Rasa server (and a second replica)
on a real Redis, driven over real WebSockets (`websockets` client) and HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import httpx
import jwt
import pytest
import redis
import redis.asyncio as aioredis
import websockets
from rasa.core.agent import Agent

from connectors.tracker_store import RedisEventLogTrackerStore
from connectors.webchat import (
    ANON_AUDIENCE,
    LIVE_BACKLOG_LIMIT,
    MAX_PENDING_TURNS,
    AuthRefused,
    ChatConnection,
    ChatIdentity,
    EventLog,
    LiveFeedLost,
    LiveHub,
    TextFrame,
    TokenBucket,
    TokenVerifier,
    WebChatInput,
    demo_chat_url,
)
from devtools.fake_llm import FakeLlm, LlmReply
from devtools.processes import RedisServer
from devtools.sim_vapi import VapiCall
from devtools.stack import RasaStack
from devtools.twilio_webhook import signed_sms
from omnichannel.identity import IdentityStore, phone_address, user_address
from omnichannel.redis_client import StateUnavailable
from omnichannel.settings import ConfigError

Frame = Dict[str, Any]


# -- helpers (also used by the browser test) ----------------------------------------------------


def fresh_phone() -> str:
    """A valid US number nobody else in the test run uses (555-01xx are fictional)."""
    return f"+1415555{secrets.randbelow(10000):04d}"


def user_token(
    secret: str,
    sub: str,
    *,
    phone: Optional[str] = None,
    verified: bool = True,
    expires_in: int = 600,
    **claims: Any,
) -> str:
    """A host site's chat token, as its backend would mint it."""
    payload: Dict[str, Any] = {"sub": sub, "iat": int(time.time()), **claims}
    if expires_in is not None:
        payload["exp"] = int(time.time()) + expires_in
    if phone:
        payload.update(phone_number=phone, phone_number_verified=verified)
    return jwt.encode(payload, secret, algorithm="HS256")


def ws_url(stack: RasaStack) -> str:
    return stack.base_url.replace("http://", "ws://") + "/webhooks/webchat/ws"


async def recv_frame(ws: Any, timeout: float = 20) -> Frame:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, predicate: Callable[[Frame], bool], timeout: float = 30) -> Frame:
    """The first frame matching ``predicate`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no matching frame in time")
        frame = await recv_frame(ws, remaining)
        if predicate(frame):
            return frame


async def drain(ws: Any, seconds: float) -> List[Frame]:
    """Every frame that arrives within ``seconds``."""
    frames: List[Frame] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frames.append(await recv_frame(ws, remaining))
        except asyncio.TimeoutError:
            break
    return frames


class Chat:
    """An authenticated socket with its ``ready`` and initial ``history`` frames read."""

    def __init__(self, ws: Any, ready: Frame, history: Frame) -> None:
        self.ws, self.ready, self.history = ws, ready, history

    @property
    def conversation_id(self) -> str:
        return self.ready["conversation_id"]

    async def say(self, text: str, client_id: Optional[str] = None) -> str:
        client_id = client_id or secrets.token_hex(8)
        await self.ws.send(json.dumps({"type": "message", "id": client_id, "text": text}))
        return client_id

    async def turn_done(self, timeout: float = 30) -> None:
        """Waits for ``typing: off``: the turn is over and stored (its replies may come first)."""
        await recv_until(self.ws, lambda f: f["type"] == "typing" and not f["on"], timeout)

    async def next_bot(self, timeout: float = 30) -> Frame:
        frame = await recv_until(
            self.ws,
            lambda f: f["type"] == "message" and f["message"]["role"] == "bot",
            timeout,
        )
        return frame["message"]


async def open_chat(stack: RasaStack, token: str) -> Chat:
    ws = await websockets.connect(ws_url(stack))
    await ws.send(json.dumps({"type": "auth", "token": token}))
    ready = await recv_frame(ws)
    assert ready["type"] == "ready", ready
    history = await recv_frame(ws)
    assert history["type"] == "history" and history["initial"] is True
    return Chat(ws, ready, history)


async def refused(stack: RasaStack, first_frame: Any) -> tuple[int, str]:
    """Close code and reason of a socket whose first frame is ``first_frame``."""
    async with websockets.connect(ws_url(stack)) as ws:
        await ws.send(first_frame if isinstance(first_frame, str) else json.dumps(first_frame))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code, ws.close_reason


def rest_turn(stack: RasaStack, conversation_id: str, text: str, channel: str) -> List[str]:
    """A turn in the conversation through Rasa's REST channel, tagged as another channel."""
    response = httpx.post(
        f"{stack.base_url}/webhooks/rest/webhook",
        json={"sender": conversation_id, "message": text, "metadata": {"channel": channel}},
        timeout=30,
    )
    response.raise_for_status()
    return [message.get("text", "") for message in response.json()]


def text_from_phone(stack: RasaStack, phone: str, body: str) -> httpx.Response:
    """An SMS through the real Twilio connector, signed as Twilio signs its webhooks."""
    sms = signed_sms(stack.env, phone, body)
    answer = httpx.post(stack.base_url + sms.path, data=sms.form, headers=sms.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


def append_events(stack: RasaStack, conversation_id: str, events: List[Frame]) -> None:
    response = httpx.post(
        f"{stack.base_url}/conversations/{conversation_id}/tracker/events",
        params={"token": stack.env["RASA_AUTH_TOKEN"]},
        json=events,
        timeout=30,
    )
    response.raise_for_status()


def tracker_events(stack: RasaStack, conversation_id: str) -> List[Frame]:
    """The conversation's stored events, read from Redis (Rasa's tracker API would add a
    session start to an empty conversation)."""
    with redis.Redis.from_url(stack.env["REDIS_URL"]) as client:
        return [
            json.loads(raw) for raw in client.lrange(f"omni:{{{conversation_id}}}:events", 0, -1)
        ]


async def phone_conversation(stack: RasaStack, phone: str, channel: str = "sms") -> str:
    """The conversation identity gives ``phone`` (as the SMS or voice connector would)."""
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return await IdentityStore(client).resolve_conversation(
            phone_address(phone), channel=channel
        )
    finally:
        await client.close()


@pytest.fixture
def secret(rasa_stack: RasaStack) -> str:
    return rasa_stack.env["WEBCHAT_JWT_SECRET"]


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.rasa_server
async def test_forged_expired_and_incomplete_tokens_are_refused(
    rasa_stack: RasaStack, secret: str
) -> None:
    forged = user_token("not-the-secret-" + secrets.token_hex(8), "alice")
    assert await refused(rasa_stack, {"type": "auth", "token": forged}) == (
        4401,
        "token signature is invalid",
    )
    expired = user_token(secret, "alice", expires_in=-60)
    assert await refused(rasa_stack, {"type": "auth", "token": expired}) == (4401, "token expired")
    no_expiry = jwt.encode({"sub": "alice"}, secret, algorithm="HS256")
    assert await refused(rasa_stack, {"type": "auth", "token": no_expiry}) == (
        4401,
        "token lacks the 'exp' claim",
    )
    none_alg = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    code, reason = await refused(rasa_stack, {"type": "auth", "token": none_alg})
    assert code == 4401 and "rejected" in reason
    assert await refused(rasa_stack, {"type": "auth", "token": "garbage"}) == (
        4401,
        "token is not a JWT",
    )


@pytest.mark.rasa_server
async def test_the_first_frame_must_authenticate(rasa_stack: RasaStack) -> None:
    code, reason = await refused(rasa_stack, {"type": "message", "id": "abcdefgh", "text": "hi"})
    assert (code, reason) == (4401, "the first frame must be an auth frame")
    code, reason = await refused(rasa_stack, "not json")
    assert code == 4401 and "not valid JSON" in reason


@pytest.mark.rasa_server
async def test_another_users_conversation_cannot_be_reached(
    rasa_stack: RasaStack, secret: str
) -> None:
    phone = fresh_phone()
    conversation = await phone_conversation(rasa_stack, phone)
    rest_turn(rasa_stack, conversation, "where is my order", "sms")
    alice = await open_chat(
        rasa_stack, user_token(secret, "alice-" + secrets.token_hex(4), phone=phone)
    )
    assert alice.conversation_id == conversation
    assert "where is my order" in [m["text"] for m in alice.history["messages"]]
    await alice.ws.close()

    # Claiming the phone without the host site having verified it links nothing.
    mallory_token = user_token(
        secret, "mallory-" + secrets.token_hex(4), phone=phone, verified=False
    )
    mallory = await open_chat(rasa_stack, mallory_token)
    assert mallory.conversation_id != conversation
    assert mallory.history["messages"] == []
    # Frames cannot name a conversation: the field is refused and nothing reaches Alice's.
    before = len(tracker_events(rasa_stack, conversation))
    await mallory.ws.send(
        json.dumps(
            {"type": "message", "id": "x" * 12, "text": "refund", "conversation_id": conversation}
        )
    )
    error = await recv_until(mallory.ws, lambda f: f["type"] == "error")
    assert error["code"] == "bad_frame" and "conversation_id" in error["message"]
    await mallory.ws.send(json.dumps({"type": "history", "before": 10**6, "limit": 50}))
    older = await recv_until(mallory.ws, lambda f: f["type"] == "history")
    assert older["messages"] == []
    await mallory.ws.close()
    assert len(tracker_events(rasa_stack, conversation)) == before
    # Once the host site verifies the phone, a new user joins its conversation; a user who
    # already has a conversation keeps it (one customer's history is never moved or split).
    carol = await open_chat(
        rasa_stack, user_token(secret, "carol-" + secrets.token_hex(4), phone=phone)
    )
    assert carol.conversation_id == conversation
    await carol.ws.close()
    mallory_sub = jwt.decode(mallory_token, options={"verify_signature": False})["sub"]
    keeps_own = await open_chat(rasa_stack, user_token(secret, mallory_sub, phone=phone))
    assert keeps_own.conversation_id == mallory.conversation_id
    await keeps_own.ws.close()


@pytest.mark.rasa_server
async def test_anonymous_sessions(rasa_stack: RasaStack) -> None:
    async with httpx.AsyncClient() as http:
        first = (await http.post(f"{rasa_stack.base_url}/webhooks/webchat/session")).json()
        second = (await http.post(f"{rasa_stack.base_url}/webhooks/webchat/session")).json()
    assert first["expires_at"] > time.time() + 3600
    chat = await open_chat(rasa_stack, first["token"])
    assert chat.ready["user"].startswith("anon:")
    await chat.say("hello")
    reply = await chat.next_bot()
    assert reply["channel"] == "chat" and reply["buttons"]
    await chat.turn_done()
    await chat.ws.close()

    back = await open_chat(rasa_stack, first["token"])
    assert back.conversation_id == chat.conversation_id
    assert [m["text"] for m in back.history["messages"]][0] == "hello"
    await back.ws.close()
    other = await open_chat(rasa_stack, second["token"])
    assert other.conversation_id != chat.conversation_id
    await other.ws.close()

    # An anonymous token is not a host-site token and vice versa.
    claims = jwt.decode(first["token"], options={"verify_signature": False})
    assert "sub" not in claims
    tampered = jwt.encode({**claims, "anon_id": "A" * 24}, "guess", algorithm="HS256")
    assert await refused(rasa_stack, {"type": "auth", "token": tampered}) == (
        4401,
        "token signature is invalid",
    )


# -- history ---------------------------------------------------------------------------------


@pytest.mark.rasa_server
async def test_history_spans_sms_voice_and_call_summaries(
    rasa_stack: RasaStack, secret: str
) -> None:
    phone = fresh_phone()
    call = VapiCall(
        base_url=rasa_stack.base_url,
        server_secret=rasa_stack.env["VAPI_SERVER_SECRET"],
        number=phone,
    )
    await call.say("where is my order")
    await call.say("it's 12345")
    await call.hang_up(summary="The caller asked where order 12345 is.")
    conversation = await phone_conversation(rasa_stack, phone)
    append_events(
        rasa_stack,
        conversation,
        [
            {
                "event": "bot",
                "timestamp": time.time(),
                "text": "A note of a kind no widget knows.",
                "metadata": {"kind": "survey_invite_v9"},
            }
        ],
    )
    text_from_phone(rasa_stack, phone, "what's your refund policy")

    chat = await open_chat(
        rasa_stack, user_token(secret, "hist-" + secrets.token_hex(4), phone=phone)
    )
    assert chat.conversation_id == conversation
    messages = chat.history["messages"]
    assert chat.history["before"] is None
    shown = [(m["role"], m["channel"], m["text"]) for m in messages]
    assert shown[0] == ("user", "voice", "where is my order")
    assert ("user", "voice", "it's 12345") in shown
    spoken = [m for m in messages if m["role"] == "bot" and "12345" in m["text"]]
    assert spoken and {m["channel"] for m in spoken} == {"voice"}
    summary = next(m for m in messages if m.get("kind") == "call_summary")
    assert summary["text"] == "Call summary: The caller asked where order 12345 is."
    assert summary["channel"] == "voice" and summary["id"] == f"call:{call.call_id}"
    unknown = next(m for m in messages if m.get("kind") == "survey_invite_v9")
    assert unknown["text"] == "A note of a kind no widget knows."
    assert ("user", "sms", "what's your refund policy") in shown
    policy = [m for m in messages if m["role"] == "bot" and "30 days" in m["text"]]
    assert policy and policy[0]["channel"] == "sms"
    assert shown.index(("user", "sms", "what's your refund policy")) > messages.index(summary)
    assert [m["timestamp"] for m in messages] == sorted(m["timestamp"] for m in messages)
    assert len({m["id"] for m in messages}) == len(messages)
    await chat.ws.close()


@pytest.mark.rasa_server
async def test_history_pages_back_with_a_cursor(rasa_stack: RasaStack, secret: str) -> None:
    sub = "pager-" + secrets.token_hex(4)
    conversation = await IdentityStore(
        aioredis.Redis.from_url(rasa_stack.env["REDIS_URL"])
    ).resolve_conversation(user_address(sub), channel="chat")
    start = time.time() - 3600
    events = []
    for number in range(35):
        events.append(
            {
                "event": "user",
                "timestamp": start + 2 * number,
                "text": f"question {number}",
                "message_id": f"m{number}",
                "metadata": {"channel": "sms"},
                "parse_data": {},
            }
        )
        events.append(
            {"event": "bot", "timestamp": start + 2 * number + 1, "text": f"answer {number}"}
        )
    append_events(rasa_stack, conversation, events)

    chat = await open_chat(rasa_stack, user_token(secret, sub))
    latest = chat.history["messages"]
    assert len(latest) == 50 and latest[-1]["text"] == "answer 34"
    assert latest[0]["text"] == "question 10"
    assert chat.history["before"] is not None
    await chat.ws.send(
        json.dumps({"type": "history", "before": chat.history["before"], "limit": 15})
    )
    older = await recv_until(chat.ws, lambda f: f["type"] == "history")
    assert older["initial"] is False
    assert [m["text"] for m in older["messages"]][:2] == ["answer 2", "question 3"]
    assert older["messages"][-1]["text"] == "answer 9"
    await chat.ws.send(json.dumps({"type": "history", "before": older["before"]}))
    oldest = await recv_until(chat.ws, lambda f: f["type"] == "history")
    assert oldest["before"] is None
    texts = [m["text"] for m in oldest["messages"] + older["messages"] + latest]
    assert texts == [t for n in range(35) for t in (f"question {n}", f"answer {n}")]
    assert {m["channel"] for m in oldest["messages"]} == {"sms"}
    await chat.ws.close()


# -- turns, fan-out, idempotency -------------------------------------------------------------


@pytest.mark.rasa_server
async def test_chat_turn_uses_webchat_variation_and_buttons(
    rasa_stack: RasaStack, secret: str
) -> None:
    sub = "btn-" + secrets.token_hex(4)
    chat = await open_chat(rasa_stack, user_token(secret, sub))
    client_id = await chat.say("hello")
    ack = await recv_until(chat.ws, lambda f: f["type"] == "ack")
    assert ack == {"type": "ack", "id": client_id, "duplicate": False}
    typing = await recv_until(chat.ws, lambda f: f["type"] == "typing")
    assert typing["on"] is True
    greeting = await chat.next_bot()
    assert "<strong>Acme Shop</strong>" in greeting["html"]  # the `channel: webchat` variation
    assert {b["payload"] for b in greeting["buttons"]} == {
        "/check_order_status",
        "/ask_refund_policy",
    }
    await chat.ws.send(
        json.dumps(
            {
                "type": "button",
                "id": secrets.token_hex(8),
                "title": "Refund policy",
                "payload": "/ask_refund_policy",
            }
        )
    )
    policy = await chat.next_bot()
    assert "refund policy" in policy["text"].lower()
    await chat.turn_done()
    await chat.ws.close()

    replay = await open_chat(rasa_stack, user_token(secret, sub))
    users = [m["text"] for m in replay.history["messages"] if m["role"] == "user"]
    assert users == ["hello", "Refund policy"]  # a button shows as its title
    await replay.ws.close()


@pytest.mark.rasa_server
async def test_fan_out_across_replicas_without_double_delivery(
    rasa_stack: RasaStack, rasa_replica: RasaStack, secret: str
) -> None:
    phone = fresh_phone()
    token = user_token(secret, "fan-" + secrets.token_hex(4), phone=phone)
    on_replica = await open_chat(rasa_replica, token)
    on_stack = await open_chat(rasa_stack, token)
    assert on_replica.conversation_id == on_stack.conversation_id

    # A text arrives meanwhile (handled by the first server): both tabs see it live.
    rest_turn(rasa_stack, on_stack.conversation_id, "what's your refund policy", "sms")
    for chat in (on_replica, on_stack):
        user = await recv_until(chat.ws, lambda f: f["type"] == "message")
        assert (user["message"]["role"], user["message"]["channel"]) == ("user", "sms")
        assert user["message"]["text"] == "what's your refund policy"
        bot = await chat.next_bot()
        assert bot["channel"] == "sms" and "30 days" in bot["text"]

    # A chat message sent on the first server reaches the tab served by the replica.
    client_id = await on_stack.say("are you a bot?")
    own_reply = await on_stack.next_bot()
    assert "virtual assistant" in own_reply["text"]
    seen_by_other = await recv_until(on_replica.ws, lambda f: f["type"] == "message")
    assert seen_by_other["message"]["client_message_id"] == client_id
    assert seen_by_other["message"]["channel"] == "chat"
    other_reply = await on_replica.next_bot()
    assert other_reply["id"] == own_reply["id"]

    # The sending tab got its reply once: the live copy of its own turn is not delivered again.
    later = await drain(on_stack.ws, 2.0)
    assert [f for f in later if f["type"] == "message"] == []
    for chat in (on_replica, on_stack):
        await chat.ws.close()


@pytest.mark.rasa_server
async def test_a_slow_turn_keeps_the_socket_responsive(
    rasa_stack: RasaStack, secret: str, fake_llm: FakeLlm
) -> None:
    chat = await open_chat(rasa_stack, user_token(secret, "slow-" + secrets.token_hex(4)))
    fake_llm.reset()
    fake_llm.script(LlmReply(content="Let me think about that for you.", delay=5))
    await chat.say("zxqv blorft wibble")
    await recv_until(chat.ws, lambda f: f["type"] == "typing" and f["on"])
    started = time.monotonic()
    await chat.ws.send(json.dumps({"type": "ping", "id": "during"}))
    assert await recv_until(chat.ws, lambda f: f["type"] == "pong") == {
        "type": "pong",
        "id": "during",
    }
    assert time.monotonic() - started < 1.0  # answered while the LLM is still thinking
    reply = await chat.next_bot(timeout=20)
    assert reply["text"] == "Let me think about that for you."
    assert time.monotonic() - started > 3
    await chat.ws.close()


@pytest.mark.rasa_server
async def test_an_acknowledged_message_is_processed_even_if_the_tab_closes(
    rasa_stack: RasaStack, secret: str, fake_llm: FakeLlm
) -> None:
    chat = await open_chat(rasa_stack, user_token(secret, "leaver-" + secrets.token_hex(4)))
    fake_llm.reset()
    fake_llm.script(LlmReply(content="Here is what I found.", delay=2))
    await chat.say("zxqv blorft wibble")
    assert (await recv_until(chat.ws, lambda f: f["type"] == "ack"))["duplicate"] is False
    await chat.ws.close()  # gone before the (slow) reply
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = tracker_events(rasa_stack, chat.conversation_id)
        if any(e["event"] == "bot" for e in events):
            break
        await asyncio.sleep(0.25)
    assert [e["text"] for e in events if e["event"] == "user"] == ["zxqv blorft wibble"]
    assert [e["text"] for e in events if e["event"] == "bot"] == ["Here is what I found."]


@pytest.mark.rasa_server
async def test_a_resent_message_is_acknowledged_without_a_second_turn(
    rasa_stack: RasaStack, secret: str
) -> None:
    token = user_token(secret, "resend-" + secrets.token_hex(4))
    chat = await open_chat(rasa_stack, token)
    client_id = await chat.say("what's your refund policy")
    assert (await recv_until(chat.ws, lambda f: f["type"] == "ack"))["duplicate"] is False
    await chat.next_bot()
    await chat.ws.close()

    # The page reconnects and resends what it had not seen acknowledged.
    back = await open_chat(rasa_stack, token)
    await back.say("what's your refund policy", client_id)
    ack = await recv_until(back.ws, lambda f: f["type"] == "ack")
    assert ack == {"type": "ack", "id": client_id, "duplicate": True}
    assert [f for f in await drain(back.ws, 2.0) if f["type"] in ("message", "typing")] == []
    await back.ws.close()
    user_turns = [
        e for e in tracker_events(rasa_stack, back.conversation_id) if e["event"] == "user"
    ]
    assert [e["text"] for e in user_turns] == ["what's your refund policy"]
    assert user_turns[0]["metadata"]["client_message_id"] == client_id


@pytest.mark.rasa_server
async def test_bad_frames_get_errors_and_the_socket_stays_usable(
    rasa_stack: RasaStack, secret: str
) -> None:
    chat = await open_chat(rasa_stack, user_token(secret, "bad-" + secrets.token_hex(4)))
    bad = [
        ("{not json", "bad_frame", "not valid JSON"),
        ("[1, 2]", "bad_frame", "JSON object"),
        (json.dumps({"type": "shout", "id": "abcdefgh"}), "bad_frame", "unknown frame type"),
        (json.dumps({"type": "message", "id": "abcdefgh"}), "bad_frame", "text"),
        (json.dumps({"type": "message", "id": "no", "text": "hi"}), "bad_frame", "id"),
        (
            json.dumps({"type": "message", "id": "abcdefgh", "text": "x" * 4001}),
            "bad_frame",
            "text",
        ),
        (
            json.dumps({"type": "message", "id": "abcdefgh", "text": "y" * 20000}),
            "frame_too_large",
            "16384",
        ),
        (b"\x00\x01binary", "bad_frame", "binary"),
        (json.dumps({"type": "auth", "token": "again"}), "bad_frame", "already authenticated"),
    ]
    for number, (data, code, words) in enumerate(bad):
        await chat.ws.send(data)
        error = await recv_until(chat.ws, lambda f: f["type"] == "error")
        assert error["code"] == code and words in error["message"], (number, error)
        await chat.ws.send(json.dumps({"type": "ping", "id": f"p{number}"}))
        assert await recv_until(chat.ws, lambda f: f["type"] == "pong") == {
            "type": "pong",
            "id": f"p{number}",
        }
        await asyncio.sleep(2.1)  # stay under the rate limit: this test is about bad frames
    assert tracker_events(rasa_stack, chat.conversation_id) == []
    await chat.say("hello")
    assert (await chat.next_bot())["buttons"]
    await chat.ws.close()


@pytest.mark.rasa_server
async def test_rate_limit_drops_excess_frames_then_recovers(
    rasa_stack: RasaStack, secret: str
) -> None:
    chat = await open_chat(rasa_stack, user_token(secret, "flood-" + secrets.token_hex(4)))
    for number in range(25):
        await chat.ws.send(json.dumps({"type": "ping", "id": f"f{number}"}))
    frames = [await recv_frame(chat.ws) for _ in range(25)]
    pongs = [f for f in frames if f["type"] == "pong"]
    limited = [f for f in frames if f["type"] == "error"]
    assert 10 <= len(pongs) <= 15  # the burst (10) plus what refilled meanwhile (1/s)
    assert limited and all(f["code"] == "rate_limited" and f["retry_after"] > 0 for f in limited)
    assert {f["id"] for f in limited} | {f["id"] for f in pongs} == {f"f{n}" for n in range(25)}
    await asyncio.sleep(1.5)
    await chat.ws.send(json.dumps({"type": "ping", "id": "after"}))
    assert await recv_frame(chat.ws) == {"type": "pong", "id": "after"}
    await chat.ws.close()


@pytest.mark.rasa_server
async def test_page_and_assets_are_served(rasa_stack: RasaStack) -> None:
    async with httpx.AsyncClient(base_url=rasa_stack.base_url) as http:
        page = await http.get("/webhooks/webchat/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "widget.js" in page.text and "http://" not in page.text.replace(
            "http://www.w3.org", ""
        )
        bare = await http.get("/webhooks/webchat", follow_redirects=True)
        assert bare.status_code == 200 and bare.url.path == "/webhooks/webchat/"
        script = await http.get("/webhooks/webchat/static/widget.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert (await http.get("/webhooks/webchat/static/../webchat.py")).status_code == 404
        assert (await http.get("/webhooks/webchat/static/secrets.env")).status_code == 404


# -- units: tokens, configuration, live hub, failures (real Redis, no Rasa) ----------------------


def test_token_verifier_links_only_verified_phones() -> None:
    key = secrets.token_urlsafe(32)
    verifier = TokenVerifier(key, allow_anonymous=False)
    linked = verifier.verify(user_token(key, "u1", phone="(415) 555-2671"))
    assert linked == ChatIdentity(user_address("u1"), (phone_address("+14155552671"),))
    assert (
        verifier.verify(user_token(key, "u1", phone="+14155552671", verified=False)).link_to == ()
    )
    assert verifier.verify(user_token(key, "u1", phone="12", verified=True)).link_to == ()
    string_true = jwt.encode(
        {
            "sub": "u1",
            "exp": time.time() + 60,
            "phone_number": "+14155552671",
            "phone_number_verified": "true",
        },
        key,
    )
    assert verifier.verify(string_true).link_to == ()  # only a JSON true counts


def test_anonymous_tokens_and_their_switch() -> None:
    key = secrets.token_urlsafe(32)
    allowing = TokenVerifier(key, allow_anonymous=True)
    token, expires_at = allowing.issue_anonymous()
    identity = allowing.verify(token)
    assert identity.address.scheme == "anon" and expires_at > time.time() + 86400
    assert allowing.verify(allowing.issue_anonymous()[0]).address != identity.address
    with pytest.raises(AuthRefused) as refusal:
        TokenVerifier(key, allow_anonymous=False).verify(token)
    assert (refusal.value.code, refusal.value.reason) == (4403, "anonymous chat is disabled")
    # A host-site token cannot pose as anonymous (or the reverse) without the right claims.
    posing = jwt.encode({"aud": ANON_AUDIENCE, "sub": "u1", "exp": time.time() + 60}, key)
    with pytest.raises(AuthRefused, match="anon_id"):
        allowing.verify(posing)


def test_host_site_audience_is_checked_when_configured() -> None:
    key = secrets.token_urlsafe(32)
    verifier = TokenVerifier(key, allow_anonymous=False, audience="acme-chat")
    assert verifier.verify(user_token(key, "u1", aud="acme-chat")).address == user_address("u1")
    with pytest.raises(AuthRefused, match="rejected"):
        verifier.verify(user_token(key, "u1", aud="someone-else"))


def test_demo_link_signs_in_the_demo_customer_with_the_demo_phone() -> None:
    key = secrets.token_urlsafe(32)
    url = demo_chat_url("http://127.0.0.1:5005/", key)
    assert url.startswith("http://127.0.0.1:5005/webhooks/webchat/#token=")
    identity = TokenVerifier(key, allow_anonymous=False).verify(url.split("#token=")[1])
    assert identity == ChatIdentity(user_address("demo-customer"), (phone_address("+14155552671"),))


def test_configuration_errors_name_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBCHAT_JWT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="WEBCHAT_JWT_SECRET"):
        WebChatInput.from_credentials({})
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", "x" * 31)
    with pytest.raises(ConfigError, match="WEBCHAT_JWT_SECRET must be at least 32 bytes"):
        WebChatInput.from_credentials({})
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    with pytest.raises(ConfigError, match="history_pages"):
        WebChatInput.from_credentials({"history_pages": 3})
    with pytest.raises(ConfigError, match="> 0"):
        WebChatInput.from_credentials({"rate_limit_burst": 0})
    channel = WebChatInput.from_credentials({"history_page_size": 20})
    assert channel.config.history_page_size == 20 and channel.name() == "webchat"


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(burst=3, rate=20)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    wait = bucket.take()
    assert 0 < wait <= 0.05
    time.sleep(wait + 0.01)
    assert bucket.take() == 0


async def test_live_hub_fans_out_per_conversation(redis_url: str) -> None:
    hub = LiveHub(redis_url)
    first, second = await hub.subscribe("c_one"), await hub.subscribe("c_one")
    other = await hub.subscribe("c_two")
    publisher = aioredis.Redis.from_url(redis_url)
    await publisher.publish("omni:{c_one}:live", json.dumps({"event": "user", "text": "hi"}))
    for subscription in (first, second):
        assert (await asyncio.wait_for(subscription.queue.get(), 5))["text"] == "hi"
    assert other.queue.empty()
    await hub.unsubscribe(first)
    await publisher.publish("omni:{c_one}:live", json.dumps({"event": "bot", "text": "yo"}))
    assert (await asyncio.wait_for(second.queue.get(), 5))["text"] == "yo"
    assert first.queue.empty()
    for subscription in (second, other):
        await hub.unsubscribe(subscription)
    assert await publisher.pubsub_numsub("omni:{c_one}:live") == [(b"omni:{c_one}:live", 0)]
    await publisher.close()


async def test_live_hub_reports_a_lost_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    hub = LiveHub(server.url)
    try:
        subscription = await hub.subscribe("c_lost")
        server.kill()
        lost = await asyncio.wait_for(subscription.queue.get(), 10)
        assert isinstance(lost, LiveFeedLost)
        with pytest.raises(StateUnavailable):
            await hub.subscribe("c_lost", timeout=2)
    finally:
        server.stop()


class _Socket:
    """The server side of a socket as ChatConnection uses it: frames sent are recorded."""

    def __init__(self) -> None:
        self.sent: List[Frame] = []

    async def send(self, data: str) -> None:
        self.sent.append(json.loads(data))


async def test_a_message_redis_cannot_record_is_answered_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    socket = _Socket()
    connection = ChatConnection(socket, WebChatInput.from_credentials({}), None, None)
    connection.conversation_id = "c_" + secrets.token_hex(8)
    server.kill()
    await connection._accept(TextFrame(type="message", id="abcdefgh12", text="hello"))
    assert socket.sent == [
        {
            "type": "error",
            "code": "not_processed",
            "message": "your message was not processed (conversation state unavailable); "
            "please resend it",
            "id": "abcdefgh12",
            "retry": True,
        }
    ]
    assert connection.turns.empty()


async def test_a_message_before_the_model_is_loaded_is_refused_loudly(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    socket = _Socket()
    connection = ChatConnection(socket, WebChatInput.from_credentials({}), Agent(), None)
    connection.identity = ChatIdentity(user_address("early-bird"))
    connection.conversation_id = "c_" + secrets.token_hex(8)
    frame = TextFrame(type="message", id="abcdefgh34", text="hello")
    await connection._accept(frame)
    assert socket.sent == [{"type": "ack", "id": "abcdefgh34", "duplicate": False}]
    await connection._turn(*connection.turns.get_nowait())
    assert socket.sent[1]["code"] == "not_processed" and socket.sent[1]["retry"] is True
    assert "starting" in socket.sent[1]["message"]
    # Nothing was processed, so resending the same id is a fresh message, not a duplicate.
    await connection._accept(frame)
    assert socket.sent[2] == {"type": "ack", "id": "abcdefgh34", "duplicate": False}


async def test_live_hub_forgets_a_subscriber_gone_before_redis_confirmed(redis_url: str) -> None:
    """A socket closed while its subscription waits for Redis (Sanic cancels the handler) must
    not leave the channel subscribed with a queue nobody reads."""
    hub = LiveHub(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "PAUSE", "800", "ALL")
    pending = asyncio.create_task(hub.subscribe("c_gone"))
    await asyncio.sleep(0.3)
    assert not pending.done()
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert hub._subscribers == {} and hub._confirmations == {}
    await admin.ping()  # answered once the pause is over, after the queued (UN)SUBSCRIBE
    await asyncio.sleep(0.3)
    assert await admin.pubsub_numsub("omni:{c_gone}:live") == [(b"omni:{c_gone}:live", 0)]
    await admin.close()


async def test_live_hub_cuts_off_a_subscriber_that_falls_behind(redis_url: str) -> None:
    """A socket that stops reading gets a bounded backlog, then LiveFeedLost (it reconnects and
    replays the history) instead of an ever-growing queue."""
    hub = LiveHub(redis_url)
    stalled = await hub.subscribe("c_busy")
    probe = await hub.subscribe("c_probe")
    publisher = aioredis.Redis.from_url(redis_url)
    async with publisher.pipeline(transaction=False) as pipe:
        for index in range(LIVE_BACKLOG_LIMIT + 50):
            pipe.publish("omni:{c_busy}:live", json.dumps({"event": "bot", "text": str(index)}))
        await pipe.execute()
    # One connection delivers in order: once the probe arrives, every event was dispatched.
    await publisher.publish("omni:{c_probe}:live", json.dumps({"event": "bot", "text": "probe"}))
    assert (await asyncio.wait_for(probe.queue.get(), 10))["text"] == "probe"
    assert stalled.queue.qsize() <= LIVE_BACKLOG_LIMIT
    items = [stalled.queue.get_nowait() for _ in range(stalled.queue.qsize())]
    assert isinstance(items[-1], LiveFeedLost)
    fresh = await hub.subscribe("c_busy")  # the reconnected socket gets the live feed again
    await publisher.publish("omni:{c_busy}:live", json.dumps({"event": "bot", "text": "new"}))
    assert (await asyncio.wait_for(fresh.queue.get(), 5))["text"] == "new"
    for subscription in (stalled, probe, fresh):
        await hub.unsubscribe(subscription)
    await publisher.close()


async def test_a_history_cursor_past_the_log_end_is_read_as_the_end(redis_url: str) -> None:
    """A client's ``before`` far past the log's end must not walk the gap down to it, one
    empty Redis read per 200 positions (a loop any signed-in client could start)."""
    store = RedisEventLogTrackerStore(host=redis_url)
    publisher = aioredis.Redis.from_url(redis_url)
    for index in range(3):
        event = {"event": "user", "text": f"hi {index}", "timestamp": float(index)}
        await publisher.rpush(store._events_key("c_paged"), json.dumps(event))
    log = EventLog(store)
    await publisher.config_resetstat()
    messages, cursor, _ = await log.page("c_paged", 10**6, 50)
    assert [m["text"] for m in messages] == ["hi 0", "hi 1", "hi 2"] and cursor is None
    reads = (await publisher.info("commandstats")).get("cmdstat_lrange", {}).get("calls", 0)
    assert reads <= 2
    await publisher.close()


async def test_messages_beyond_the_pending_limit_are_refused_not_queued(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turns outlive their socket, so one socket must not queue them without bound."""
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    socket = _Socket()
    connection = ChatConnection(socket, WebChatInput.from_credentials({}), None, None)
    connection.conversation_id = "c_" + secrets.token_hex(8)
    for index in range(MAX_PENDING_TURNS):
        await connection._accept(TextFrame(type="message", id=f"queued{index:04}", text="hi"))
    assert connection.turns.qsize() == MAX_PENDING_TURNS
    extra = TextFrame(type="message", id="onetoomany", text="hi")
    await connection._accept(extra)
    assert connection.turns.qsize() == MAX_PENDING_TURNS
    assert socket.sent[-1]["code"] == "busy" and socket.sent[-1]["id"] == "onetoomany"
    assert socket.sent[-1]["retry"] is True
    connection.turns.get_nowait()  # once one turn ran, the resend is a fresh message
    await connection._accept(extra)
    assert socket.sent[-1] == {"type": "ack", "id": "onetoomany", "duplicate": False}
