"""VAPI's wire format: parsing payloads (current and legacy shapes), the 4xx reasons for bad
bodies, and the OpenAI chunks we stream."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from rasa.shared.core.events import UserUttered

from connectors.vapi.wire import (
    BadRequest,
    Call,
    ChunkWriter,
    ToolCall,
    openai_error,
    parse_completion_request,
    parse_server_message,
)
from tests.connectors.vapi.helpers import (
    call_body,
    conversation_of_stack,
    raw_completion,
    tracker_of,
)

ROOT = Path(__file__).resolve().parents[3]

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
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested deeper than 64"),
        (json.dumps(call_body(call={"id": "c1\nFORGED log line"})).encode(), 400, "call.id"),
        (json.dumps(call_body(call={"id": "c1\n"})).encode(), 400, "call.id"),
        (json.dumps(call_body(call={"id": "x" * 129})).encode(), 400, "call.id"),
    ],
    ids=[
        "malformed",
        "array",
        "no-messages",
        "messages-str",
        "no-role",
        "no-call-id",
        "long",
        "deeply-nested",
        "newline-in-call-id",
        "trailing-newline-call-id",
        "overlong-call-id",
    ],
)
# Bodies over the size limit are refused before they are read: tests/connectors/test_http_limits.
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
        (b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        (b'{"message": {"type": "end-of-call-report", "call": {"id": "a\\nb"}}}', 400),
    ],
    ids=["malformed", "no-message", "no-type", "message-str", "deeply-nested", "bad-call-id"],
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


# -- parsing, on data --------------------------------------------------------------------------


def _body(**overrides: Any) -> bytes:
    body = {"messages": [{"role": "user", "content": "hello"}], "call": {"id": "call-1"}}
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.mark.unit
@pytest.mark.parametrize(
    "body, status, reason",
    [
        (b"", 400, "body is not valid JSON"),
        (b"{not json", 400, "body is not valid JSON"),
        (b"[1, 2]", 400, "body must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "body is JSON nested deeper than 64 levels"),
        (json.dumps({"call": {"id": "x"}}).encode(), 400, "messages: field required"),
        (_body(messages=[{"content": "hi"}]), 400, "messages.0.role: field required"),
        (_body(call={"type": "webCall"}), 400, "call.id is required"),
        (_body(call=None), 400, "call.id is required"),
        (b"x" * 500_001, 413, "body larger than 500000 bytes"),
    ],
    ids=[
        "empty",
        "malformed",
        "array",
        "deeply-nested",
        "no-messages",
        "no-role",
        "no-call-id",
        "call-null",
        "huge",
    ],
)
def test_a_bad_completion_request_says_why(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_completion_request(body, max_bytes=500_000)
    assert (refused.value.status, refused.value.reason) == (status, reason)


@pytest.mark.unit
def test_completion_request_current_and_legacy_shapes() -> None:
    parsed = parse_completion_request(
        _body(
            messages=[
                {"role": "system", "content": "prompt"},
                {"role": "user", "content": [{"type": "text", "text": " where is "}]},
                {"role": "user", "content": [{"text": "it"}]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                {"role": "user", "content": None},
            ],
            call={
                "callId": "legacy-1",
                "type": "inboundPhoneCall",
                "monitor": {"controlUrl": "https://vapi.example/control"},
                "assistantOverrides": {"variableValues": {"user_token": "t"}},
            },
            phoneNumber={"number": "+15557654321"},
            unknownField=1,
        ),
        max_bytes=10_000,
    )
    assert parsed.call.call_id == "legacy-1"
    assert parsed.call.control_url == "https://vapi.example/control"
    assert parsed.call.variables == {"user_token": "t"}
    assert parsed.phone_number.number == "+15557654321"
    assert [m.text for m in parsed.messages] == ["prompt", "where is", "it", "", ""]
    # Only an http(s) control URL is ever called.
    assert Call(id="c", monitor={"controlUrl": "file:///etc/passwd"}).control_url is None


@pytest.mark.unit
@pytest.mark.parametrize(
    "body, status, reason",
    [
        (b"{oops", 400, "invalid JSON"),
        (b'{"nomessage": {}}', 400, "message: field required"),
        (b'{"message": {"no_type": 1}}', 400, "message.type: field required"),
        (b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "nested deeper"),
        (b'{"message": {"type": "x", "pad": "' + b"x" * 500_000 + b'"}}', 413, "larger than"),
    ],
    ids=["malformed", "no-message", "no-type", "deeply-nested", "huge"],
)
def test_a_bad_server_message_says_why(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_server_message(body, max_bytes=500_000)
    assert refused.value.status == status and reason in refused.value.reason


@pytest.mark.unit
def test_server_message_fields_by_their_vapi_names() -> None:
    message = parse_server_message(
        json.dumps(
            {
                "message": {
                    "type": "end-of-call-report",
                    "endedReason": "customer-ended-call",
                    "artifact": {"transcript": "AI: Hi", "recordingUrl": "https://r/1.wav"},
                    "toolCallList": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}],
                }
            }
        ).encode(),
        max_bytes=10_000,
    )
    assert message.ended_reason == "customer-ended-call"
    assert message.artifact.recording_url == "https://r/1.wav"
    assert message.tool_call_list[0].tool_name == "f"


@pytest.mark.unit
@pytest.mark.parametrize("bad_id", ["c1\n", "c1\r\n", "c1\nFORGED", "\nc1"])
def test_call_and_tool_call_ids_with_a_newline_are_refused(bad_id: str) -> None:
    """Before: the id patterns ended in ``$``, which matches before a final newline, so
    ``"c1\\n"`` passed and split the log line it was written into."""
    with pytest.raises(BadRequest, match="call.id"):
        parse_completion_request(_body(call={"id": bad_id}), max_bytes=10_000)
    with pytest.raises(BadRequest, match="toolCallList.0.id"):
        parse_server_message(
            json.dumps(
                {"message": {"type": "tool-calls", "toolCallList": [{"id": bad_id, "name": "f"}]}}
            ).encode(),
            max_bytes=10_000,
        )


@pytest.mark.unit
def test_no_id_pattern_ends_in_a_dollar() -> None:
    """Pydantic matches ``constr(regex=...)`` with ``re.match``: ``$`` lets one trailing newline
    through, ``\\Z`` does not. Every pattern a model checks input against ends in ``\\Z``."""
    sources = [*ROOT.glob("connectors/**/*.py"), *ROOT.glob("omnichannel/**/*.py")]
    patterns = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        named = dict(re.findall(r'^([A-Z_]+) = r?"([^"]*)"', text, re.MULTILINE))
        for literal, name in re.findall(r'regex=(?:r?"([^"]*)"|([A-Z_]+))', text):
            patterns.append((path.name, literal or named[name]))
    assert len(patterns) >= 8, f"found too few constr(regex=...) patterns: {patterns}"
    assert [entry for entry in patterns if entry[1].endswith("$")] == []


@pytest.mark.unit
def test_tool_call_arguments() -> None:
    assert ToolCall(arguments={"a": 1}).tool_arguments == {"a": 1}
    assert ToolCall(function={"arguments": '{"a": 2}'}).tool_arguments == {"a": 2}
    assert ToolCall(arguments="  ").tool_arguments == {}
    assert ToolCall().tool_arguments == {}
    for bad, why in (("{not", "not valid JSON"), ("[1]", "JSON object"), (5, "JSON object")):
        with pytest.raises(ValueError, match=why):
            ToolCall(arguments=bad).tool_arguments  # noqa: B018 - the property raises


@pytest.mark.unit
def test_chunks_are_openai_completion_chunks() -> None:
    writer = ChunkWriter(model="rasa", completion_id="chatcmpl-1", created=7)
    frames = [writer.role(), writer.content("Hi."), writer.stop()]
    assert all(frame.startswith("data: ") and frame.endswith("\n\n") for frame in frames)
    assert frames[-1].endswith("data: [DONE]\n\n")
    chunks = [json.loads(frame.split("\n\n")[0][len("data: ") :]) for frame in frames]
    assert {(c["id"], c["object"], c["created"], c["model"]) for c in chunks} == {
        ("chatcmpl-1", "chat.completion.chunk", 7, "rasa")
    }
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi."},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert openai_error("no", "authentication_error") == {
        "error": {"message": "no", "type": "authentication_error"}
    }
