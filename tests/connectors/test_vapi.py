"""The VAPI connector against the real stack: trained assistant, Redis, action server.

The caller is the ``openai`` SDK's streaming client (what VAPI itself uses), driven through
devtools.sim_vapi.VapiCall; VAPI's control URL is the local fake; the LLM is devtools.fake_llm.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import httpx
import jwt
import openai
import pytest
import redis.asyncio as aioredis
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, UserUtteranceReverted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.vapi import (
    APOLOGY,
    ChatMessage,
    SpokenTurn,
    extends,
    heard_ratio,
    heard_since,
    spoken_turn,
)
from devtools.fake_llm import LlmReply
from devtools.fake_vapi_control import FakeVapiControl
from devtools.processes import ROOT
from devtools.sim_vapi import VapiCall, play_call
from omnichannel.identity import IdentityStore, anon_address, phone_address, user_address
from tests.support import GIBBERISH, new_phone_number, post_sms

pytestmark = pytest.mark.rasa_server


@pytest.fixture(scope="module")
def control() -> FakeVapiControl:
    fake = FakeVapiControl().start()
    yield fake
    fake.stop()


@pytest.fixture
def stack(rasa_stack):
    return rasa_stack


@pytest.fixture
def make_call(stack, control):
    def make(number: Optional[str] = "new", **kwargs: Any) -> VapiCall:
        call = VapiCall(
            base_url=stack.base_url,
            server_secret=stack.env["VAPI_SERVER_SECRET"],
            number=new_phone_number() if number == "new" else number,
            **kwargs,
        )
        call.control_url = control.control_url(call.call_id)
        return call

    return make


async def conversation_of_stack(stack, number: str) -> Optional[str]:
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return await IdentityStore(client).lookup(phone_address(number))
    finally:
        await client.close()


@functools.lru_cache(maxsize=1)
def _domain() -> Domain:
    return Domain.load(str(ROOT / "domain.yml"))


async def tracker_of(stack, conversation_id: str) -> DialogueStateTracker:
    token = stack.env["RASA_AUTH_TOKEN"]
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.get(
            f"{stack.base_url}/conversations/{conversation_id}/tracker",
            params={"token": token, "include_events": "ALL"},
        )
    reply.raise_for_status()
    return DialogueStateTracker.from_dict(conversation_id, reply.json()["events"], _domain().slots)


def user_texts(tracker: DialogueStateTracker) -> List[str]:
    """The user turns that count: each UserUtteranceReverted takes the last one back."""
    texts: List[str] = []
    for event in tracker.events:
        if isinstance(event, UserUttered):
            texts.append(event.text)
        elif isinstance(event, UserUtteranceReverted) and texts:
            texts.pop()
    return texts


async def raw_completion(
    stack, body: Any, headers: Dict[str, str], path: str = "/chat/completions"
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{stack.base_url}/webhooks/vapi{path}",
            content=content,
            headers={"Content-Type": "application/json", **headers},
        )


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll a condition met by another process (the fakes record requests in threads)."""
    deadline = time.monotonic() + timeout
    while not condition():  # noqa: ASYNC110 - the condition is set by other threads/processes
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def sse_frames(text: str) -> List[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


def completion_body(call: VapiCall, text: str) -> Dict[str, Any]:
    return {
        "model": "rasa",
        "stream": True,
        "messages": [{"role": "user", "content": text}],
        "call": call.call,
        "customer": {"number": call.number},
    }


# -- streaming ---------------------------------------------------------------------------------


async def test_rule_turn_streams_openai_chunks_exactly(stack, make_call):
    call = make_call()
    secret = stack.env["VAPI_SERVER_SECRET"]
    reply = await raw_completion(
        stack, completion_body(call, "hello"), {"Authorization": f"Bearer {secret}"}
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    frames = sse_frames(reply.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["choices"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1])
    # A "<flush />" may follow the words when the turn's end (saving the tracker) takes a while.
    assert (
        content.replace("<flush />", "") == "Hi, this is the Acme Shop assistant. How can I help?"
    )
    assert len({c["id"] for c in chunks}) == 1


async def test_openai_sdk_reads_a_conversation_and_doubled_path(stack, make_call):
    call = make_call()
    first = await call.say("where is my order")
    assert first.finish_reason == "stop"
    assert "order number" in first.text.lower()
    second = await call.say("12345")
    assert "1 2 3 4 5" in second.text and "shipped" in second.text
    # Some VAPI set-ups call .../chat/completions/chat/completions.
    client = openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/webhooks/vapi/chat/completions",
        api_key=stack.env["VAPI_SERVER_SECRET"],
        max_retries=0,
    )
    call.history.append({"role": "user", "content": "thanks"})
    stream = await client.chat.completions.create(
        model="rasa", messages=call.history, stream=True, extra_body={"call": call.call}
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    await client.close()
    assert "welcome" in text.lower()


async def test_filler_streams_first_while_a_slow_action_runs(stack, make_call, fake_llm):
    fake_llm.reset()
    fake_llm.script(LlmReply(content="I looked into it for you.", delay=2))
    call = make_call()
    reply = await call.say(GIBBERISH)
    assert reply.chunks[0] == "One moment."
    assert "I looked into it for you." in reply.text
    assert reply.text.index("One moment.") < reply.text.index("I looked into it")
    # The filler left the server long before the 2 s action finished.
    assert reply.first_content_seconds < 1.0
    assert reply.done_seconds >= 2.0
    # The filler is flushed so VAPI speaks it at once instead of waiting for more text.
    assert reply.chunks[1] == "<flush />"


# -- authentication ----------------------------------------------------------------------------


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


def _signed(secret: str, body: bytes, timestamp: str) -> Dict[str, str]:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {"x-timestamp": timestamp, "x-signature": digest.hexdigest()}


async def test_server_messages_authenticate(stack):
    secret = stack.env["VAPI_SERVER_SECRET"]
    body = json.dumps({"message": {"type": "speech-update", "status": "started"}}).encode()
    now = str(int(time.time()))
    stale = str(int(time.time()) - 600)
    cases = [
        ({}, 401),
        ({"X-Vapi-Secret": "nope"}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({**_signed("other-secret", body, now)}, 401),
        ({**_signed(secret, body, stale)}, 401),
        # A non-finite timestamp is never fresh (NaN would pass any "older than" comparison).
        ({**_signed(secret, body, "nan")}, 401),
        ({**_signed(secret, body, "inf")}, 401),
        ({"x-signature": _signed(secret, body, now)["x-signature"]}, 401),
        ({"X-Vapi-Secret": secret}, 200),
        ({"X-Vapi-Signature": secret}, 200),
        ({"Authorization": f"Bearer {secret}"}, 200),
        ({**_signed(secret, body, now)}, 200),
        ({**_signed(secret, body, str(int(time.time() * 1000)))}, 200),
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


# -- duplicates, superseded turns, barge-in ------------------------------------------------------


async def test_duplicate_request_replays_without_a_second_turn(stack, make_call):
    call = make_call()
    await call.say("hello")
    first = await call.say("where is my order")
    repeat = await call.complete(call.history[:-1])
    assert repeat.text == first.text
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    assert user_texts(tracker).count("where is my order") == 1
    # A duplicate of an earlier, in-flight turn attaches to it: both get the same answer.
    call.history.append({"role": "user", "content": "12345"})
    both = await asyncio.gather(call.complete(call.history), call.complete(call.history))
    assert both[0].text == both[1].text and "1 2 3 4 5" in both[0].text
    tracker = await tracker_of(stack, conversation)
    assert user_texts(tracker).count("12345") == 1


async def test_longer_utterance_supersedes_the_one_in_flight(stack, make_call, fake_llm):
    fake_llm.reset()
    fake_llm.script(
        LlmReply(content="Answer to the cut-off question.", delay=2),
        LlmReply(content="Answer to the whole question."),
    )
    call = make_call()
    short = GIBBERISH
    longer = GIBBERISH + " frobnicate quux"
    first = asyncio.create_task(call.complete([{"role": "user", "content": short}]))
    await wait_until(lambda: len(fake_llm.requests) == 1, 10)  # in its slow LLM action now
    second = await call.complete([{"role": "user", "content": longer}])
    cut = await first
    assert "cut-off" not in cut.text
    assert "cut-off" not in second.text
    assert "Answer to the whole question." in second.text
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    assert user_texts(tracker) == [longer]


async def test_barge_in_metadata_records_what_the_caller_heard(stack, make_call):
    call = make_call()
    policy = await call.say("what's your refund policy", interrupt_after=60)
    heard = call.history[-1]["content"]
    assert len(heard) <= 60 < len(policy.text)
    await call.say("where is my order")
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    last = [e for e in tracker.events if isinstance(e, UserUttered)][-1]
    barge_in = last.metadata["barge_in"]
    assert barge_in["sent_text"] == policy.text
    assert barge_in["heard_text"] == heard
    assert 0 < barge_in["heard_ratio"] < 0.5
    assert last.metadata["channel"] == "voice" and last.metadata["call_id"] == call.call_id
    # A turn heard in full carries no barge-in.
    await call.say("12345")
    tracker = await tracker_of(stack, conversation)
    assert "barge_in" not in [e for e in tracker.events if isinstance(e, UserUttered)][-1].metadata


async def test_a_reported_interruption_is_a_barge_in_even_when_most_was_heard(stack, make_call):
    """Above the heard-ratio threshold, only VAPI's user-interrupted event tells of a cut-off."""
    for interrupted in (True, False):
        call = make_call()
        call.history.append({"role": "user", "content": "what's your refund policy"})
        policy = await call.complete(list(call.history))
        heard = policy.text.rsplit(" ", 3)[0]  # all but the last three words
        call.history.append({"role": "assistant", "content": heard})
        if interrupted:
            reply = await call.event({"type": "user-interrupted", "turnId": "t1"})
            assert (reply.status_code, reply.json()) == (200, {})
        await call.say("where is my order")
        tracker = await tracker_of(stack, await conversation_of_stack(stack, call.number))
        metadata = [e for e in tracker.events if isinstance(e, UserUttered)][-1].metadata
        if interrupted:
            assert metadata["barge_in"]["heard_text"] == heard
            assert 0.9 <= metadata["barge_in"]["heard_ratio"] < 1.0
        else:
            assert "barge_in" not in metadata


# -- server messages ---------------------------------------------------------------------------


async def test_assistant_request_points_back_and_greets_newcomers(stack, make_call):
    call = make_call()
    answer = await call.assistant_request()
    assistant = answer["assistant"]
    assert assistant["model"]["provider"] == "custom-llm"
    assert assistant["model"]["url"] == f"{stack.env['PUBLIC_BASE_URL']}/webhooks/vapi"
    assert assistant["firstMessage"] == "Hi, this is the Acme Shop assistant. How can I help?"


async def test_assistant_request_personalised_from_an_earlier_sms(stack, make_call, fake_twilio):
    number = new_phone_number()
    reply = await post_sms(stack, number, "where is order 40213")
    assert reply.status_code == 200, reply.text
    call = make_call(number)
    answer = await call.assistant_request()
    greeting = answer["assistant"]["firstMessage"]
    assert "4 0 2 1 3" in greeting and "texted" in greeting
    # The greeting is what the caller hears first; the conversation goes on from the SMS.
    reply = await call.say("yes, what's the tracking number")
    assert "hasn't shipped" in reply.text or "4 0 2 1 3" in reply.text


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


async def test_other_server_messages(stack, make_call):
    call = make_call()
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
                {"id": "a", "name": "order_status", "arguments": {"order_number": "12345"}},
                {
                    "id": "b",
                    "type": "function",
                    "function": {"name": "order_status", "arguments": '{"order_number": "77801"}'},
                },
                {"id": "c", "name": "launch_rocket", "arguments": {}},
                {"id": "d", "name": "order_status", "arguments": "{not json"},
                {"id": "e", "name": "order_status", "arguments": "[" * 50_000 + "]" * 50_000},
            ],
        }
    )
    assert tools.status_code == 200
    results = {r["toolCallId"]: r for r in tools.json()["results"]}
    assert "1 2 3 4 5" in results["a"]["result"] and "shipped" in results["a"]["result"]
    assert "delivered" in results["b"]["result"]
    assert "launch_rocket" in results["c"]["error"] and "result" not in results["c"]
    assert "JSON" in results["d"]["error"]
    assert "JSON" in results["e"]["error"]
    legacy = await call.event(
        {
            "type": "function-call",
            "functionCall": {"name": "order_status", "parameters": {"order_number": "40213"}},
        }
    )
    assert "4 0 2 1 3" in legacy.json()["result"]
    unknown = await call.event({"type": "function-call", "functionCall": {"name": "x"}})
    assert unknown.json() == {"error": "Unknown tool 'x'."}
    transfer = await call.event({"type": "transfer-destination-request"})
    assert transfer.json() == {
        "destination": {"type": "number", "number": stack.env["HANDOFF_PHONE_NUMBER"]}
    }


# -- call control ------------------------------------------------------------------------------


async def test_goodbye_ends_the_call_after_saying_it(stack, make_call, control):
    call = make_call()
    await call.say("hello")
    reply = await call.say("bye")
    assert reply.finish_reason == "stop"
    requests = control.wait_for(call.call_id)
    assert requests[0].payload == {
        "type": "say",
        "content": "Goodbye, and thanks for calling Acme!",
        "endCallAfterSpoken": True,
    }
    # Said by VAPI through the control request, so not streamed too.
    assert "Goodbye" not in reply.text


async def test_asking_for_a_human_transfers_the_call(stack, make_call, control):
    call = make_call()
    reply = await call.say("I want to talk to a human")
    requests = control.wait_for(call.call_id)
    payload = requests[0].payload
    assert payload["type"] == "transfer"
    assert payload["destination"] == {"type": "number", "number": "+14155550100"}
    assert payload["content"].endswith("Transferring you now.")
    assert reply.finish_reason == "stop"


async def test_failing_control_url_does_not_break_the_turn(stack, make_call, control):
    control.fail_next(500)
    call = make_call()
    reply = await call.say("bye")
    assert reply.finish_reason == "stop"
    await asyncio.sleep(0.5)
    assert control.requests_for(call.call_id) == []
    assert "call control say answered HTTP 500" in stack.rasa_log()
    # VAPI was not asked to say the goodbye, so it is streamed: never silence.
    assert reply.text == "Goodbye, and thanks for calling Acme!"


async def test_failed_transfer_is_an_apology_not_an_announcement(stack, make_call, control):
    control.fail_next(503)
    call = make_call()
    reply = await call.say("I want to talk to a human")
    assert reply.finish_reason == "stop"
    assert reply.text == APOLOGY
    assert "call control transfer answered HTTP 503" in stack.rasa_log()


@pytest.mark.parametrize(
    "template",
    [
        # aiohttp's InvalidURL quotes the URL (and so the token) in its repr.
        "http://127.0.0.1:99999/calls/{call}/control/{token}",
        # A host IDNA cannot encode: a UnicodeError, not an aiohttp error.
        "http://a..b/calls/{call}/control/{token}",
    ],
    ids=["invalid-port", "unencodable-host"],
)
async def test_unusable_control_url_ends_the_turn_and_stays_out_of_logs(stack, make_call, template):
    call = make_call(timeout=10)
    token = "tok" + uuid.uuid4().hex
    call.control_url = template.format(call=call.call_id, token=token)
    reply = await call.say("bye")
    assert reply.finish_reason == "stop"
    assert reply.text == "Goodbye, and thanks for calling Acme!"
    log = stack.rasa_log()
    assert f"call {call.call_id}: call control say failed" in log
    assert token not in log


# -- bad input ---------------------------------------------------------------------------------


def _call_body(**overrides: Any) -> Dict[str, Any]:
    body = {
        "model": "rasa",
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
        "call": {"id": str(uuid.uuid4()), "customer": {"number": new_phone_number()}},
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    "body, status, reason",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"call": {"id": "x"}}).encode(), 400, "messages"),
        (json.dumps(_call_body(messages="hello")).encode(), 400, "messages"),
        (json.dumps(_call_body(messages=[{"content": "hi"}])).encode(), 400, "role"),
        (json.dumps(_call_body(call={"type": "webCall"})).encode(), 400, "call.id"),
        (
            json.dumps(_call_body(messages=[{"role": "user", "content": "a" * 5000}])).encode(),
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


async def test_no_user_message_gets_a_valid_stream(stack, make_call):
    call = make_call()
    greeting = await call.complete([{"role": "system", "content": "You are a helpful agent."}])
    assert greeting.finish_reason == "stop"
    assert greeting.text == "Hi, this is the Acme Shop assistant. How can I help?"
    after_bot = await call.complete(
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi there."}]
    )
    assert (after_bot.text, after_bot.finish_reason) == ("", "stop")
    blank = await call.complete([{"role": "user", "content": "   "}])
    assert (blank.text, blank.finish_reason) == ("", "stop")


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


# -- addresses ---------------------------------------------------------------------------------


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


# -- end to end --------------------------------------------------------------------------------


async def test_a_call_then_an_sms_from_the_same_number_continues_it(stack, make_call, fake_twilio):
    call = make_call()
    await call.assistant_request()
    assert "order number" in (await call.say("where is my order")).text.lower()
    status = await call.say("it's 12345")
    assert "1 2 3 4 5" in status.text
    await call.hang_up(summary="Caller checked order 12345.")
    reply = await post_sms(stack, call.number, "what's the tracking number")
    assert reply.status_code == 200

    def replies() -> List[str]:
        return [reply.text] + [m.body for m in fake_twilio.messages_to(call.number)]

    await wait_until(lambda: any("1Z999AA" in t for t in replies()), 20)
    texts = replies()
    assert any("1Z999AA10123456784" in t for t in texts), texts
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    channels = [e.metadata.get("channel") for e in tracker.events if isinstance(e, UserUttered)]
    assert channels == ["voice", "voice", "sms"]
    assert not any("order number" in text.lower() for text in _bot_after_sms(tracker))


def _bot_after_sms(tracker: DialogueStateTracker) -> List[str]:
    events = list(tracker.events)
    last_sms = max(
        i
        for i, e in enumerate(events)
        if isinstance(e, UserUttered) and (e.metadata or {}).get("channel") == "sms"
    )
    return [e.text or "" for e in events[last_sms:] if isinstance(e, BotUttered)]


# -- several replicas ------------------------------------------------------------------------


async def test_replicas_share_duplicates_and_supersedes(stack, rasa_replica, make_call, fake_llm):
    call = make_call()
    on_one = await call.say("where is my order")
    other = VapiCall(
        base_url=rasa_replica.base_url,
        server_secret=call.server_secret,
        number=call.number,
        call_id=call.call_id,
        control_url=call.control_url,
    )
    replayed = await other.complete(call.history[:-1])
    assert replayed.text == on_one.text
    conversation = await conversation_of_stack(stack, call.number)
    assert user_texts(await tracker_of(stack, conversation)).count("where is my order") == 1
    # A longer utterance re-POSTed to the other replica supersedes the slow turn on the first.
    fake_llm.reset()
    fake_llm.script(
        LlmReply(content="Answer to the cut-off question.", delay=2),
        LlmReply(content="Answer to the whole question."),
    )
    base = call.history[:-1] + [{"role": "assistant", "content": on_one.text}]
    first = asyncio.create_task(call.complete(base + [{"role": "user", "content": GIBBERISH}]))
    await wait_until(lambda: len(fake_llm.requests) == 1, 10)
    longer = GIBBERISH + " frobnicate quux"
    second = await other.complete(base + [{"role": "user", "content": longer}])
    cut = await first
    assert "cut-off" not in cut.text and "cut-off" not in second.text
    assert "Answer to the whole question." in second.text
    tracker = await tracker_of(stack, conversation)
    texts = user_texts(tracker)
    assert texts[-1] == longer and GIBBERISH not in texts
    # The dialogue went on as if only the longer utterance had been said: the order form
    # (active before it) is still waiting for the order number.
    assert tracker.active_loop_name == "order_status_form"
    # A duplicate reaching the other replica while the turn still runs waits for its answer.
    fake_llm.reset()
    fake_llm.script(LlmReply(content="Slow but sure.", delay=2))
    history = base + [
        {"role": "assistant", "content": second.text},
        {"role": "user", "content": "blorft zxqv again"},
    ]
    original = asyncio.create_task(call.complete(history))
    await wait_until(lambda: len(fake_llm.requests) == 1, 10)
    duplicate = await other.complete(history)
    assert "Slow but sure." in duplicate.text
    assert duplicate.text == (await original).text
    tracker = await tracker_of(stack, conversation)
    assert user_texts(tracker).count("blorft zxqv again") == 1
    assert len(fake_llm.requests) == 1


# -- failures ------------------------------------------------------------------------------------


async def test_redis_refusing_writes_is_spoken_as_an_apology(stack, make_call):
    call = make_call()
    await call.say("hello")
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    await client.config_set("maxmemory", 1)  # every write now fails with OOM
    try:
        reply = await call.say("where is my order")
    finally:
        await client.config_set("maxmemory", 0)
        await client.close()
    assert reply.text == APOLOGY and reply.finish_reason == "stop"
    assert "Redis unavailable" in stack.rasa_log()
    conversation = await conversation_of_stack(stack, call.number)
    assert user_texts(await tracker_of(stack, conversation)) == ["hello"]


async def test_assistant_request_answers_in_time_when_redis_hangs(stack, make_call):
    number = new_phone_number()
    reply = await post_sms(stack, number, "where is order 40213")
    assert reply.status_code == 200
    call = make_call(number)
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    await client.execute_command("CLIENT", "PAUSE", 4000, "ALL")
    began = time.monotonic()
    try:
        answer = await call.assistant_request()
        elapsed = time.monotonic() - began
    finally:
        # Waits for the pause to end (the pause holds this client too).
        await client.execute_command("CLIENT", "UNPAUSE")
        await client.close()
    assert elapsed < 3.0  # VAPI's budget is 7.5 s; the Redis read gets 2 s
    assert answer["assistant"]["firstMessage"] == (
        "Hi, this is the Acme Shop assistant. How can I help?"
    )


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


async def test_simulator_plays_a_scripted_call(stack, control, capsys):
    call = VapiCall(
        base_url=stack.base_url,
        server_secret=stack.env["VAPI_SERVER_SECRET"],
        number=new_phone_number(),
    )
    await play_call(call, ["where is my order", "12345", "bye"], interrupt_after=None)
    out = capsys.readouterr().out
    assert "assistant: Hi, this is the Acme Shop assistant. How can I help?" in out
    assert "caller: 12345" in out and "1 2 3 4 5" in out
    assert '"endCallAfterSpoken": true' in out
    assert "end-of-call-report sent" in out
    tracker = await tracker_of(stack, await conversation_of_stack(stack, call.number))
    assert tracker.get_slot("last_call")["call_id"] == call.call_id


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


# -- the history VAPI sends (pure functions) ---------------------------------------------------


def _history(*pairs: str) -> List[ChatMessage]:
    roles = {"U": "user", "A": "assistant", "S": "system"}
    return [ChatMessage(role=roles[p[0]], content=p[2:]) for p in pairs]


def test_the_utterance_is_the_unanswered_user_messages():
    history = _history("S:be nice", "A:Hi!", "U:where is", "U:my order")
    assert spoken_turn(history) == SpokenTurn(ordinal=1, first_ordinal=0, text="where is my order")
    # "where is" was answered already (an empty answer, e.g. a backchannel): only the rest.
    answered = {"ordinal": 0, "first_ordinal": 0}
    assert spoken_turn(history, answered) == SpokenTurn(1, 1, "my order")
    # The same request again after it was answered: the same utterance, so the same key.
    done = {"ordinal": 1, "first_ordinal": 0}
    assert spoken_turn(history, done) == SpokenTurn(1, 0, "where is my order")
    assert spoken_turn(_history("U:hello", "A:Hi there.")) is None
    assert spoken_turn(_history("S:only a prompt")) is None


def test_extends_and_heard_ratio():
    assert extends("I need my tracking number", "I need my")
    assert extends("I need, my tracking number.", "i need my")
    assert not extends("I need my", "I need my")
    assert not extends("you need my tracking number", "I need my")
    sent = "Here's our refund policy. You can return most items within 30 days of delivery."
    assert heard_ratio(sent, sent) == 1.0
    assert heard_ratio(sent, "Here's our refund policy.") == pytest.approx(4 / 14, abs=0.01)
    assert heard_ratio(sent, "") == 0.0
    history = _history("U:refunds?", f"A:{sent[:25]}", "U:wait")
    assert heard_since(history, after_ordinal=0, before_ordinal=1) == sent[:25]


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
