"""VAPI's wire format: parsing payloads (current and legacy shapes), the 4xx reasons for bad
bodies, and the OpenAI chunks we stream."""

from __future__ import annotations

import json

import httpx
import pytest
from rasa.shared.core.events import UserUttered

from tests.connectors.vapi.helpers import (
    call_body,
    conversation_of_stack,
    raw_completion,
    tracker_of,
)


@pytest.mark.rasa_server
@pytest.mark.parametrize(
    "body, status, reason",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"call": {"id": "x"}}).encode(), 400, "messages"),
        (json.dumps(call_body(messages="hello")).encode(), 400, "messages"),
        (json.dumps(call_body(messages=[{"content": "hi"}])).encode(), 400, "role"),
        (json.dumps(call_body(call={"type": "webCall"})).encode(), 400, "call.id"),
        (
            json.dumps(call_body(messages=[{"role": "user", "content": "a" * 5000}])).encode(),
            400,
            "longer than",
        ),
        (b'{"messages": [], "pad": "' + b"x" * 1_100_000 + b'"}', 413, "larger than"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ],
    ids=[
        "malformed",
        "array",
        "no-messages",
        "messages-str",
        "no-role",
        "no-call-id",
        "long",
        "huge",
        "deeply-nested",
    ],
)
async def test_bad_custom_llm_input_gets_a_4xx_with_a_reason(stack, body, status, reason):
    secret = stack.env["VAPI_SERVER_SECRET"]
    reply = await raw_completion(stack, body, {"Authorization": f"Bearer {secret}"})
    assert reply.status_code == status
    assert reason in reply.json()["error"]["message"]


@pytest.mark.rasa_server
@pytest.mark.parametrize(
    "body, status",
    [
        (b"{oops", 400),
        (b'{"nomessage": {}}', 400),
        (b'{"message": {"no_type": 1}}', 400),
        (b'{"message": "text"}', 400),
        (b'{"message": {"type": "status-update", "pad": "' + b"x" * 5_100_000 + b'"}}', 413),
        (b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ],
    ids=["malformed", "no-message", "no-type", "message-str", "huge", "deeply-nested"],
)
async def test_bad_server_messages_get_a_4xx(stack, body, status):
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            f"{stack.base_url}/webhooks/vapi/events",
            content=body,
            headers={"X-Vapi-Secret": stack.env["VAPI_SERVER_SECRET"]},
        )
    assert reply.status_code == status
    assert reply.json()["error"]


@pytest.mark.rasa_server
async def test_legacy_payload_shapes_are_understood(stack, make_call):
    """Older VAPI payloads: ``call.callId``, the customer only at the top level, content parts."""
    call = make_call()
    secret = stack.env["VAPI_SERVER_SECRET"]
    body = {
        "model": "rasa",
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "where is my order"}]}],
        "call": {"callId": call.call_id, "type": "inboundPhoneCall"},
        "customer": {"number": call.number},
        "functions": [],
    }
    reply = await raw_completion(stack, body, {"Authorization": f"Bearer {secret}"})
    assert reply.status_code == 200
    assert "order number" in reply.text
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    last = [e for e in tracker.events if isinstance(e, UserUttered)][-1]
    assert last.text == "where is my order"
    assert last.metadata["call_id"] == call.call_id
    assert last.metadata["address"] == f"tel:{call.number}"
