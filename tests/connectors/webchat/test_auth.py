"""Chat tokens: host-site JWTs, anonymous sessions, the demo link (units, no server), and the
same checks at the socket of the real stack."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import jwt
import pytest

from connectors.webchat.auth import (
    ANON_AUDIENCE,
    AuthRefused,
    ChatIdentity,
    TokenVerifier,
    demo_chat_url,
)
from omnichannel.addresses import phone_address, user_address
from omnichannel.errors import ConfigError
from testkit.stack import RasaStack
from tests.connectors.webchat.helpers import (
    fresh_phone,
    open_chat,
    phone_conversation,
    recv_until,
    refused,
    rest_turn,
    tracker_events,
    user_token,
)


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_host_site_audience_is_checked_when_configured() -> None:
    key = secrets.token_urlsafe(32)
    verifier = TokenVerifier(key, allow_anonymous=False, audience="acme-chat")
    assert verifier.verify(user_token(key, "u1", aud="acme-chat")).address == user_address("u1")
    with pytest.raises(AuthRefused, match="rejected"):
        verifier.verify(user_token(key, "u1", aud="someone-else"))


@pytest.mark.unit
def test_demo_link_signs_in_the_demo_customer_with_the_demo_phone() -> None:
    key = secrets.token_urlsafe(32)
    url = demo_chat_url("http://127.0.0.1:5005/", key)
    assert url.startswith("http://127.0.0.1:5005/webhooks/webchat/#token=")
    identity = TokenVerifier(key, allow_anonymous=False).verify(url.split("#token=")[1])
    assert identity == ChatIdentity(user_address("demo-customer"), (phone_address("+14155552671"),))


@pytest.mark.unit
def test_a_secret_too_short_for_hs256_is_refused() -> None:
    with pytest.raises(ConfigError, match="WEBCHAT_JWT_SECRET must be at least 32 bytes"):
        TokenVerifier("é" * 15 + "x", allow_anonymous=False)  # 31 bytes, 16 characters
    TokenVerifier("é" * 16, allow_anonymous=False)  # 32 bytes


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
