"""Who is calling: phone numbers, signed web callers, anonymous calls."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import List, Optional

import jwt
import pytest
import redis.asyncio as aioredis

import connectors.vapi.callers as callers_module
from connectors.vapi.callers import Callers
from connectors.vapi.wire import Call, Customer
from omnichannel.addresses import Address, anon_address, phone_address, user_address
from omnichannel.customer_tokens import MAX_TOKEN_LIFETIME, HostTokenPolicy
from omnichannel.identity import IdentityStore


@pytest.mark.rasa_server
async def test_web_calls_use_a_signed_user_token_else_the_call(stack, make_call):
    user_id = f"web-{uuid.uuid4().hex[:8]}"
    token = jwt.encode(
        {"sub": user_id, "exp": int(time.time()) + 600},
        stack.env["WEBCHAT_JWT_SECRET"],
        algorithm="HS256",
    )
    signed = make_call(None, call_type="webCall", variables={"user_token": token})
    await signed.say("where is my order")
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        identity = IdentityStore(client)
        user_conversation = await identity.lookup(user_address(user_id))
        assert user_conversation is not None
        # A plain user_id variable is set by whoever starts the web call: not trusted.
        claimed = make_call(None, call_type="webCall", variables={"user_id": user_id})
        await claimed.say("hello")
        digest = hashlib.sha256(claimed.call_id.encode()).hexdigest()[:40]
        anonymous = await identity.lookup(anon_address(f"vapi-call-{digest}"))
        assert anonymous is not None and anonymous != user_conversation
        # A token valid for ten years signs nobody in and creates no record for its user.
        long_lived = f"web-{uuid.uuid4().hex[:8]}"
        ten_years = jwt.encode(
            {"sub": long_lived, "exp": int(time.time()) + 10 * 365 * 24 * 3600},
            stack.env["WEBCHAT_JWT_SECRET"],
            algorithm="HS256",
        )
        await make_call(None, call_type="webCall", variables={"user_token": ten_years}).say("hi")
        assert await identity.lookup(user_address(long_lived)) is None
    finally:
        await client.close()


# -- addresses and conversations, on data ------------------------------------------------------

JWT_SECRET = "a-web-chat-secret-of-at-least-32-bytes!"  # noqa: S105 - a test value


class _Identity:
    """Stands in for IdentityStore: a new conversation per address, counted."""

    def __init__(self) -> None:
        self.resolved: List[str] = []

    async def resolve_conversation(self, address: Address, channel: str) -> str:
        assert channel == "voice"
        self.resolved.append(str(address))
        return f"c_{len(self.resolved)}"


def _callers(trust_user_id: bool = False, audience: Optional[str] = None) -> Callers:
    return Callers(_Identity(), "US", HostTokenPolicy(JWT_SECRET, audience), trust_user_id)


def _token(sub: str, secret: str = JWT_SECRET, lifetime: int = 600, **claims: str) -> str:
    claims = {"sub": sub, "exp": int(time.time()) + lifetime, **claims}
    return jwt.encode(claims, secret, algorithm="HS256")


def _web_call(**variables: str) -> Call:
    return Call(id="web-1", type="webCall", assistantOverrides={"variableValues": variables})


@pytest.mark.unit
def test_a_phone_caller_is_their_number() -> None:
    callers = _callers()
    call = Call(id="call-1", customer={"number": "(415) 555-2671"})
    assert callers.address(call, None) == phone_address("+14155552671")
    # The customer at the top level (older payloads) counts too; the call's own comes first.
    assert callers.address(Call(id="call-1"), Customer(number="+14155552671")) == phone_address(
        "+14155552671"
    )
    # A number that cannot exist is no address: the call itself is.
    assert callers.address(Call(id="call-1", customer={"number": "123"}), None).scheme == "anon"


@pytest.mark.unit
def test_a_web_caller_is_the_user_a_signed_token_names() -> None:
    callers = _callers()
    assert callers.address(_web_call(user_token=_token("user-7")), None) == user_address("user-7")
    assert callers.address(_web_call(userToken=_token("user-7")), None) == user_address("user-7")
    for rejected in (_token("user-7", secret="x" * 40), _token("user-7", lifetime=-60), "junk"):
        assert callers.address(_web_call(user_token=rejected), None).scheme == "anon"
    # A plain user_id is set by whoever starts the call: trusted only when configured so.
    assert callers.address(_web_call(user_id="user-7"), None).scheme == "anon"
    assert _callers(trust_user_id=True).address(_web_call(userId="user-7"), None) == (
        user_address("user-7")
    )


@pytest.mark.unit
def test_a_user_token_has_the_web_chats_lifetime_and_audience_checks() -> None:
    """Before: a token valid for ten years signed the caller in (and created the user's
    identity record); the web chat refused the same token. Now both check alike."""
    callers = _callers()
    ten_years = _token("user-7", lifetime=10 * 365 * 24 * 3600)
    assert callers.address(_web_call(user_token=ten_years), None).scheme == "anon"
    at_the_maximum = _token("user-7", lifetime=MAX_TOKEN_LIFETIME - 60)
    assert callers.address(_web_call(user_token=at_the_maximum), None) == user_address("user-7")
    for_the_shop = _callers(audience="shop.example")
    for token, scheme in (
        (_token("user-7", aud="shop.example"), "user"),
        (_token("user-7", aud="elsewhere.example"), "anon"),
        (_token("user-7"), "anon"),
    ):
        assert for_the_shop.address(_web_call(user_token=token), None).scheme == scheme
    # Without WEBCHAT_JWT_SECRET no token signs anyone in.
    unsigned = Callers(_Identity(), "US", None, False)
    assert unsigned.address(_web_call(user_token=_token("user-7")), None).scheme == "anon"


@pytest.mark.unit
def test_an_anonymous_caller_is_the_call() -> None:
    callers = _callers()
    first = callers.address(Call(id="call-1"), None)
    assert first.scheme == "anon" and first == callers.address(Call(id="call-1"), None)
    assert first != callers.address(Call(id="call-2"), None)
    assert callers.known_caller(Call(), None) is None
    assert callers.known_caller(Call(), Customer(number="+14155552671")) is not None


@pytest.mark.unit
async def test_a_calls_conversation_is_resolved_once(monkeypatch) -> None:
    callers = _callers()
    address = phone_address("+14155552671")
    assert await callers.conversation("call-1", address) == "c_1"
    assert await callers.conversation("call-1", address) == "c_1"
    assert callers.identity.resolved == ["tel:+14155552671"]
    # Only the last calls are remembered.
    monkeypatch.setattr(callers_module, "CALLS_REMEMBERED", 2)
    await callers.conversation("call-2", address)
    await callers.conversation("call-1", address)
    await callers.conversation("call-3", address)
    await callers.conversation("call-2", address)
    assert len(callers.identity.resolved) == 4
