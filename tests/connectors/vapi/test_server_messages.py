"""Server messages against the real stack: assistant-request, end-of-call-report, tool calls,
transfer destination, and the 503 when the report cannot be stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from connectors.vapi.callers import Callers
from connectors.vapi.server_messages import ServerMessages
from connectors.vapi.tools import UNKNOWN_CALLER
from connectors.vapi.wire import ServerMessage
from omnichannel.identity import IdentityStore
from omnichannel.settings import Settings
from testkit.fake_llm import LlmReply
from tests.connectors.vapi.helpers import (
    conversation_of_stack,
    tracker_of,
    wait_until,
)
from tests.support import GIBBERISH, post_sms, seed_order


@pytest.mark.rasa_server
async def test_assistant_request_points_back_and_greets_newcomers(stack, make_call):
    call = make_call()
    answer = await call.assistant_request()
    assistant = answer["assistant"]
    assert assistant["model"]["provider"] == "custom-llm"
    assert assistant["model"]["url"] == f"{stack.env['PUBLIC_BASE_URL']}/webhooks/vapi"
    assert assistant["firstMessage"] == "Hi, this is the Acme Shop assistant. How can I help?"


@pytest.mark.rasa_server
async def test_a_replayed_signed_assistant_request_yields_no_secret(stack) -> None:
    """Before: with VAPI_CUSTOM_LLM_KEY unset, the answer's model carried the server secret as
    an X-Vapi-Secret header, so an HMAC-signed assistant-request captured and replayed within
    its five minutes returned the secret. Now the key is required and no answer carries one."""
    body = json.dumps(
        {
            "message": {
                "type": "assistant-request",
                "call": {"id": f"call-{uuid.uuid4().hex[:8]}", "type": "inboundPhoneCall"},
                "customer": {"number": "+14155550123"},
            }
        }
    ).encode()
    stamp = str(int(time.time() * 1000))
    signed = hmac.new(
        stack.env["VAPI_SERVER_SECRET"].encode(), stamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    headers = {"x-signature": signed, "x-timestamp": stamp, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        answers = [await client.post("/webhooks/vapi/events", content=body, headers=headers)]
        answers.append(await client.post("/webhooks/vapi/events", content=body, headers=headers))
    for answer in answers:
        assert answer.status_code == 200 and answer.json()["assistant"]["model"]
        assert "headers" not in answer.json()["assistant"]["model"]
        for secret in (stack.env["VAPI_SERVER_SECRET"], stack.env["VAPI_CUSTOM_LLM_KEY"]):
            assert secret not in answer.text


@pytest.mark.rasa_server
async def test_end_of_call_report_is_seen_by_a_later_sms_turn(stack, make_call, fake_llm):
    call = make_call()
    await call.say("hello")
    summary = f"Caller {uuid.uuid4().hex[:6]} asked whether gift cards can be refunded."
    await call.hang_up(summary=summary, recording_url="https://storage.example/rec.wav")
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    report = tracker.get_slot("last_call")
    assert report["summary"] == summary
    assert report["recording_url"] == "https://storage.example/rec.wav"
    assert "User: hello" in report["transcript"]
    assert report["call_id"] == call.call_id
    # A later SMS turn that reaches the LLM has the call in its prompt.
    fake_llm.reset()
    fake_llm.script(LlmReply(content="Yes, about the call: gift cards are final sale."))
    reply = await post_sms(stack, call.number, GIBBERISH)
    assert reply.status_code == 200
    await wait_until(lambda: bool(fake_llm.requests), 15)
    prompt = json.dumps(fake_llm.requests[-1]["messages"])
    assert summary in prompt


@pytest.mark.rasa_server
async def test_end_of_call_report_reads_legacy_top_level_fields(stack, make_call):
    call = make_call()
    await call.say("hello")
    reply = await call.event(
        {
            "type": "end-of-call-report",
            "endedReason": "assistant-ended-call",
            "summary": "Legacy summary.",
            "transcript": "AI: Hi\nUser: hello",
            "recordingUrl": "https://storage.example/legacy.wav",
        }
    )
    assert reply.status_code == 200
    tracker = await tracker_of(stack, await conversation_of_stack(stack, call.number))
    report = tracker.get_slot("last_call")
    assert report["summary"] == "Legacy summary."
    assert report["transcript"] == "AI: Hi\nUser: hello"
    assert report["recording_url"] == "https://storage.example/legacy.wav"
    assert report["ended_reason"] == "assistant-ended-call"


@pytest.mark.rasa_server
async def test_other_server_messages(stack, make_call):
    call = make_call()
    shipped = seed_order(stack, phone=call.number)
    delivered = seed_order(stack, phone=call.number, like="77801")
    processing = seed_order(stack, phone=call.number, like="40213")
    for message in (
        {"type": "status-update", "status": "in-progress"},
        {"type": "user-interrupted", "turnId": "t1"},
        {"type": "conversation-update", "messages": []},
        {"type": "some-future-type", "whatever": 1},
    ):
        reply = await call.event(message)
        assert (reply.status_code, reply.json()) == (200, {}), message
    tools = await call.event(
        {
            "type": "tool-calls",
            "toolCallList": [
                {"id": "a", "name": "order_status", "arguments": {"order_number": shipped}},
                {
                    "id": "b",
                    "type": "function",
                    "function": {
                        "name": "order_status",
                        "arguments": json.dumps({"order_number": delivered}),
                    },
                },
                {"id": "c", "name": "launch_rocket", "arguments": {}},
                {"id": "d", "name": "order_status", "arguments": "{not json"},
                {"id": "e", "name": "order_status", "arguments": "[" * 50_000 + "]" * 50_000},
            ],
        }
    )
    assert tools.status_code == 200
    results = {r["toolCallId"]: r for r in tools.json()["results"]}
    assert " ".join(shipped) in results["a"]["result"] and "shipped" in results["a"]["result"]
    assert "delivered" in results["b"]["result"]
    assert "launch_rocket" in results["c"]["error"] and "result" not in results["c"]
    assert "JSON" in results["d"]["error"]
    assert "JSON" in results["e"]["error"]
    legacy = await call.event(
        {
            "type": "function-call",
            "functionCall": {"name": "order_status", "parameters": {"order_number": processing}},
        }
    )
    assert " ".join(processing) in legacy.json()["result"]
    unknown = await call.event({"type": "function-call", "functionCall": {"name": "x"}})
    assert unknown.json() == {"error": "Unknown tool 'x'."}
    transfer = await call.event({"type": "transfer-destination-request"})
    assert transfer.json() == {
        "destination": {"type": "number", "number": stack.env["HANDOFF_PHONE_NUMBER"]}
    }


@pytest.mark.rasa_server
async def test_a_call_hung_up_before_any_turn_still_leaves_its_report(stack, make_call):
    call = make_call()
    await call.assistant_request()
    await call.hang_up(summary="The caller hung up during the greeting.")
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    names = [e.as_dict().get("name") for e in tracker.events]
    assert names.index("action_session_start") < names.index("last_call")
    assert tracker.get_slot("last_call")["summary"] == "The caller hung up during the greeting."
    # The next contact continues that conversation.
    reply = await call.say("hello")
    assert reply.text == "Hi, this is the Acme Shop assistant. How can I help?"


@pytest.mark.rasa_server
async def test_a_replayed_end_of_call_report_is_applied_once(stack, make_call):
    """Before: a retried or replayed report appended another last_call each time."""
    call = make_call()
    await call.say("hello")
    report = {"type": "end-of-call-report", "summary": "First and only.", "endedReason": "x"}
    replies = [await call.event(report) for _ in range(3)]
    assert [reply.status_code for reply in replies] == [200, 200, 200]
    tracker = await tracker_of(stack, await conversation_of_stack(stack, call.number))
    reports = [e for e in tracker.events if e.as_dict().get("name") == "last_call"]
    assert len(reports) == 1 and tracker.get_slot("last_call")["summary"] == "First and only."


@pytest.mark.rasa_server
async def test_call_report_while_redis_refuses_writes_is_a_503(stack, make_call):
    call = make_call()
    await call.say("hello")
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    await client.config_set("maxmemory", 1)
    try:
        reply = await call.event({"type": "end-of-call-report", "summary": "Lost?"})
    finally:
        await client.config_set("maxmemory", 0)
        await client.close()
    assert reply.status_code == 503
    assert reply.json() == {"error": "conversation state unavailable"}
    tracker = await tracker_of(stack, await conversation_of_stack(stack, call.number))
    assert tracker.get_slot("last_call") is None
    # VAPI's retry, once Redis takes writes again, is stored: the failed one claimed nothing.
    retried = await call.event({"type": "end-of-call-report", "summary": "Lost?"})
    assert retried.status_code == 200
    tracker = await tracker_of(stack, await conversation_of_stack(stack, call.number))
    assert tracker.get_slot("last_call")["summary"] == "Lost?"


# -- the answers that need no state, on data ---------------------------------------------------


def _messages(**env: str) -> ServerMessages:
    settings = Settings.from_env({"VAPI_SERVER_SECRET": "s" * 32, **env})
    # Callers only reads the message here (the caller's number); no identity lookups.
    callers = Callers(IdentityStore(), "US", user_tokens=None, trust_user_id_variable=False)
    return ServerMessages(settings, callers=callers, greeter=None, calls=None)


def _order_status(order_number: Any, **message: Any) -> ServerMessage:
    tool = {
        "id": "a",
        "function": {"name": "order_status", "arguments": {"order_number": order_number}},
    }
    return ServerMessage(type="tool-calls", toolCalls=[tool, {"name": "nope"}], **message)


@pytest.mark.unit
def test_tool_calls_are_answered_one_by_one_for_the_caller() -> None:
    # The demo orders belong to +1 415 555 2671 (omnichannel/fixtures/orders.json).
    owner = {"call": {"id": "call-1", "customer": {"number": "+14155552671"}}}
    results = _messages().tool_calls(_order_status(12345, **owner))["results"]
    assert [r["toolCallId"] for r in results] == ["a", ""]
    assert "1 2 3 4 5" in results[0]["result"] and "shipped" in results[0]["result"]
    assert results[1] == {"toolCallId": "", "name": "nope", "error": "Unknown tool 'nope'."}
    assert _messages().tool_calls(ServerMessage(type="tool-calls")) == {"results": []}


@pytest.mark.unit
def test_tools_tell_another_caller_nothing_about_an_order() -> None:
    stranger = {"call": {"id": "call-2"}, "customer": {"number": "+16175550123"}}
    theirs = _messages().tool_calls(_order_status("12345", **stranger))["results"][0]
    missing = _messages().tool_calls(_order_status("99999", **stranger))["results"][0]
    assert theirs["result"] == "I couldn't find order 1 2 3 4 5."
    assert missing["result"] == "I couldn't find order 9 9 9 9 9."
    # A message naming no call and no number is nobody's: no order for it either.
    nobody = _messages().tool_calls(_order_status("12345"))["results"][0]
    assert nobody["result"] == UNKNOWN_CALLER
    legacy = _messages().function_call(
        ServerMessage(
            type="function-call",
            functionCall={"name": "order_status", "parameters": {"order_number": "12345"}},
            **stranger,
        )
    )
    assert legacy == {"result": "I couldn't find order 1 2 3 4 5."}


@pytest.mark.unit
def test_the_transfer_destination_is_the_hand_off_line() -> None:
    assert _messages().transfer_destination() == {"error": "No transfer destination is configured."}
    assert _messages(HANDOFF_PHONE_NUMBER="+14155550100").transfer_destination() == {
        "destination": {"type": "number", "number": "+14155550100"}
    }
