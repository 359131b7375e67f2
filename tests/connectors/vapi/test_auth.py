"""Who may call: the validators on headers and body, and the routes that use them."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.connectors.vapi.helpers import (
    completion_body,
    conversation_of_stack,
    raw_completion,
    signed,
    sse_frames,
)


@pytest.mark.rasa_server
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-secret"},
        {"X-Vapi-Secret": "wrong-secret"},
        {"Authorization": "Basic abc"},
    ],
    ids=["none", "wrong-bearer", "wrong-header", "basic"],
)
async def test_custom_llm_rejects_bad_credentials(stack, make_call, headers):
    call = make_call()
    reply = await raw_completion(stack, completion_body(call, "hello"), headers)
    assert reply.status_code == 401
    assert reply.json()["error"]["type"] == "authentication_error"
    assert await conversation_of_stack(stack, call.number) is None


@pytest.mark.rasa_server
async def test_custom_llm_accepts_every_form_of_the_secret(stack, make_call):
    secret = stack.env["VAPI_SERVER_SECRET"]
    for headers in (
        {"Authorization": f"Bearer {secret}"},
        {"Authorization": secret},
        {"X-Vapi-Secret": secret},
        {"X-Vapi-Signature": secret},
    ):
        reply = await raw_completion(stack, completion_body(make_call(), "hello"), headers)
        assert reply.status_code == 200, headers
        assert sse_frames(reply.text)[-1] == "[DONE]"
    with pytest.raises(openai.AuthenticationError):
        await make_call(custom_llm_key="not-the-key").say("hello")


@pytest.mark.rasa_server
async def test_server_messages_authenticate(stack):
    secret = stack.env["VAPI_SERVER_SECRET"]
    body = json.dumps({"message": {"type": "speech-update", "status": "started"}}).encode()
    now = str(int(time.time()))
    stale = str(int(time.time()) - 600)
    cases = [
        ({}, 401),
        ({"X-Vapi-Secret": "nope"}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({**signed("other-secret", body, now)}, 401),
        ({**signed(secret, body, stale)}, 401),
        # A non-finite timestamp is never fresh (NaN would pass any "older than" comparison).
        ({**signed(secret, body, "nan")}, 401),
        ({**signed(secret, body, "inf")}, 401),
        ({"x-signature": signed(secret, body, now)["x-signature"]}, 401),
        ({"X-Vapi-Secret": secret}, 200),
        ({"X-Vapi-Signature": secret}, 200),
        ({"Authorization": f"Bearer {secret}"}, 200),
        ({**signed(secret, body, now)}, 200),
        ({**signed(secret, body, str(int(time.time() * 1000)))}, 200),
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        for headers, status in cases:
            reply = await client.post(
                f"{stack.base_url}/webhooks/vapi/events",
                content=body,
                headers={"Content-Type": "application/json", **headers},
            )
            assert reply.status_code == status, headers
            if status == 401:
                assert reply.json() == {"error": "missing or wrong credentials"}
            else:
                assert reply.json() == {}
