"""A hand-off on a call, both ways: put through to the support line with a summary (the shared
stack has HANDOFF_PHONE_NUMBER), and, on a stack without a line, queued for the team with the
call's transcript, the caller told a person will text them, and the call ended; a caller who
calls back while a person holds the conversation hears what happens instead of silence."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict

import pytest
import redis

from omnichannel.handoff.store import HandoffStore
from testkit.fake_twilio import FakeTwilio
from testkit.fake_vapi_control import FakeVapiControl
from testkit.processes import RedisServer, free_port
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall
from tests.connectors.inbox.helpers import inbox, reply, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone, tracker_events

pytestmark = pytest.mark.rasa_server

QUEUED_CALL = (
    "I can't put you through to a person on this call, so I've passed your request to our "
    "support team, with what we've talked about. A person will text you at this number. "
    "Goodbye for now."
)


@pytest.fixture(scope="module")
def control() -> FakeVapiControl:
    fake = FakeVapiControl().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def lineless(rasa_stack: RasaStack, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A stack whose team has no phone line: its own Redis, action server and Rasa server."""
    work = tmp_path_factory.mktemp("lineless")
    redis_server = RedisServer(work / "redis").start()
    port = free_port()
    env = {k: v for k, v in rasa_stack.env.items() if k != "HANDOFF_PHONE_NUMBER"}
    env.update(
        REDIS_URL=redis_server.url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        METRICS_PORT=str(free_port()),
    )
    stack = RasaStack(
        model=rasa_stack.model,
        env=env,
        credentials=rasa_stack.credentials,
        log_dir=Path(work / "logs"),
        rasa_port=port,
    )
    try:
        stack.start()
    except Exception:
        print(stack.rasa_log()[-5000:])
        stack.stop()
        redis_server.stop()
        raise
    yield {"stack": stack, "redis": redis_server}
    stack.stop()
    redis_server.stop()


def make_call(stack: RasaStack, control: FakeVapiControl, number: Any) -> VapiCall:
    call = VapiCall(stack.base_url, stack.env["VAPI_SERVER_SECRET"], number=number)
    call.control_url = control.control_url(call.call_id)
    return call


def record(redis_url: str, cid: str) -> Dict[str, Any]:
    with redis.Redis.from_url(redis_url) as client:
        raw = client.hget(HandoffStore.record_key(cid), "record")
    return json.loads(raw) if raw else {}


def test_with_a_line_the_caller_is_put_through_with_a_summary(
    rasa_stack: RasaStack, stack_redis, control: FakeVapiControl
) -> None:
    phone = fresh_phone()
    text_sms(rasa_stack, phone, "my parcel arrived damaged")
    call = make_call(rasa_stack, control, phone)

    async def scenario() -> None:
        await call.say("I want to talk to a person")
        await call.aclose()

    asyncio.run(scenario())
    [transfer] = control.wait_for(call.call_id)
    destination = transfer.payload["destination"]
    assert destination["number"] == "+14155550100"
    plan = destination["transferPlan"]
    assert plan["mode"] == "warm-transfer-wait-for-operator-to-speak-first-and-then-say-summary"
    briefing = plan["summaryPlan"]["messages"][0]["content"]
    assert "- by SMS: my parcel arrived damaged" in briefing
    cid = conversation_of(stack_redis, phone)
    stored = record(stack_redis.url, cid)
    assert stored["state"] == "transferred" and stored["channel"] == "voice"
    assert not any(e["event"] == "pause" for e in tracker_events(rasa_stack, cid))


def test_without_a_line_the_caller_is_queued_and_answered_by_text(
    lineless: Dict[str, Any], control: FakeVapiControl, fake_twilio: FakeTwilio
) -> None:
    stack: RasaStack = lineless["stack"]
    phone = fresh_phone()
    call = make_call(stack, control, phone)

    async def first_call() -> Any:
        await call.say("hello")
        reply_ = await call.say("can I speak to an agent")
        await call.hang_up(summary="The caller wants a person about a missing refund.")
        await call.aclose()
        return reply_

    heard = asyncio.run(first_call())
    [said] = control.wait_for(call.call_id)
    # Said, then the call ends: VAPI says it through call control, nothing is streamed twice.
    assert said.payload == {"type": "say", "content": QUEUED_CALL, "endCallAfterSpoken": True}
    assert "text you" not in heard.text

    cid = conversation_of(lineless["redis"], phone)
    assert record(lineless["redis"].url, cid)["state"] == "queued"
    dana = token_for(stack, "Dana")
    detail = inbox(stack, "conversation", dana, {"conversation_id": cid}).json()
    assert detail["reach"]["default"] == "sms", "a caller is answered by text"
    summary = wait_for(
        lambda: [
            e
            for e in inbox(stack, "conversation", dana, {"conversation_id": cid}).json()[
                "timeline"
            ]["entries"]
            if e["type"] == "call_summary"
        ],
        what="the call's transcript in the inbox",
    )
    assert "can I speak to an agent" in summary[0]["transcript"]

    # The caller calls back while nobody has claimed it yet: told what happens, not silence.
    again = make_call(stack, control, phone)

    async def second_call() -> Any:
        heard = await again.say("hello? is anyone there")
        await again.aclose()
        return heard

    assert "a person will reply to you by text or in the chat" in asyncio.run(second_call()).text

    assert inbox(stack, "claim", dana, {"conversation_id": cid}).status_code == 200
    sent = len(fake_twilio.messages_to(phone))
    assert reply(stack, dana, cid, "Hi, Dana here about your refund.", "sms").status_code == 202
    [texted] = wait_for(lambda: fake_twilio.messages_to(phone)[sent:])
    assert texted.body == "Dana: Hi, Dana here about your refund."

    # Once claimed, a call back is told so and ended politely.
    third = make_call(stack, control, phone)

    async def third_call() -> None:
        await third.say("hello")
        await third.aclose()

    asyncio.run(third_call())
    [ended] = control.wait_for(third.call_id)
    assert ended.payload["endCallAfterSpoken"] is True
    assert ended.payload["content"].startswith("A member of our support team is looking after")


def test_a_caller_nobody_could_answer_is_not_promised_a_person(
    lineless: Dict[str, Any], control: FakeVapiControl
) -> None:
    stack: RasaStack = lineless["stack"]
    call = make_call(stack, control, None)  # a web call: no number, no signed-in user

    async def scenario() -> Any:
        heard = await call.say("I want to talk to a human")
        await call.aclose()
        return heard

    heard = asyncio.run(scenario())
    assert heard.text.startswith("I can't pass you to a person from here")
    assert control.requests_for(call.call_id) == []
