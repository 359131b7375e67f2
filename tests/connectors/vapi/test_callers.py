"""Who is calling: phone numbers, signed web callers, anonymous calls."""

from __future__ import annotations

import hashlib
import time
import uuid

import jwt
import pytest
import redis.asyncio as aioredis

from omnichannel.identity import IdentityStore, anon_address, user_address


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
    finally:
        await client.close()
