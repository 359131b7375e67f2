"""Who may call: the validators on headers and body, and the routes that use them."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from connectors.vapi.auth import SIGNATURE_TOLERANCE_SECONDS, VapiAuth
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


# -- the validators, on data -------------------------------------------------------------------

SECRET = "server-secret-0123456789"  # noqa: S105 - a test value
KEY = "custom-llm-key-0123456789"
NOW = 1_750_000_000.0
BODY = b'{"message": {"type": "status-update"}}'


@pytest.mark.unit
def test_the_shared_secret_in_each_header_it_may_come_in() -> None:
    auth = VapiAuth(SECRET, KEY)
    for headers in (
        {"Authorization": f"Bearer {SECRET}"},
        {"authorization": f"bearer  {SECRET} "},
        {"Authorization": SECRET},
        {"X-Vapi-Secret": SECRET},
        {"x-vapi-signature": SECRET},
    ):
        assert auth.check_shared_secret(headers), headers
    for headers in (
        {},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {SECRET}"},
        {"X-Vapi-Secret": SECRET + "x"},
        {"X-Other": SECRET},
        {"Authorization": f"Bearer {KEY}"},
    ):
        assert not auth.check_shared_secret(headers), headers


@pytest.mark.unit
def test_nothing_passes_when_no_secret_is_configured() -> None:
    auth = VapiAuth(None, None)
    assert not auth.check_shared_secret({"Authorization": "Bearer ", "X-Vapi-Secret": ""})
    assert not auth.check_custom_llm({"Authorization": "Bearer anything"})
    assert not auth.check_signature(signed("", BODY, str(int(NOW))), BODY, NOW)


@pytest.mark.unit
def test_the_custom_llm_key_is_a_bearer_token_only() -> None:
    auth = VapiAuth(SECRET, KEY)
    assert auth.check_custom_llm({"Authorization": f"Bearer {KEY}"})
    assert auth.check_custom_llm({"Authorization": KEY})
    assert not auth.check_custom_llm({"X-Vapi-Secret": KEY})
    # The server secret is accepted too (VAPI without a custom-LLM credential).
    assert auth.check_custom_llm({"X-Vapi-Secret": SECRET})
    assert not auth.check_custom_llm({"Authorization": "Bearer not-the-key"})
    # Server messages do not take the custom-LLM key.
    assert not auth.check_server_message({"Authorization": f"Bearer {KEY}"}, BODY, NOW)


@pytest.mark.unit
def test_hmac_signature_fresh_and_over_this_body() -> None:
    auth = VapiAuth(SECRET)
    now = str(int(NOW))
    assert auth.check_signature(signed(SECRET, BODY, now), BODY, NOW)
    assert auth.check_server_message(signed(SECRET, BODY, now), BODY, NOW)
    # Milliseconds, a sha256= prefix and upper-case hex are VAPI's variants.
    assert auth.check_signature(signed(SECRET, BODY, str(int(NOW * 1000))), BODY, NOW)
    headers = signed(SECRET, BODY, now)
    prefixed = {**headers, "x-signature": "sha256=" + headers["x-signature"].upper()}
    assert auth.check_signature(prefixed, BODY, NOW)
    # Within the tolerance on both sides, not beyond it.
    assert auth.check_signature(signed(SECRET, BODY, now), BODY, NOW + SIGNATURE_TOLERANCE_SECONDS)
    assert not auth.check_signature(
        signed(SECRET, BODY, now), BODY, NOW + SIGNATURE_TOLERANCE_SECONDS + 1
    )
    assert not auth.check_signature(
        signed(SECRET, BODY, now), BODY, NOW - SIGNATURE_TOLERANCE_SECONDS - 1
    )
    assert not auth.check_signature(signed(SECRET, BODY, now), BODY + b" ", NOW)
    assert not auth.check_signature(signed("other", BODY, now), BODY, NOW)
    for stamp in ("nan", "inf", "-inf", "soon", ""):
        assert not auth.check_signature(signed(SECRET, BODY, stamp), BODY, NOW), stamp
    assert not auth.check_signature({"x-signature": headers["x-signature"]}, BODY, NOW)
