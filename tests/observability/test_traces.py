"""One trace per customer message, collected from the OTLP endpoint the shared stack exports
to (testkit/fake_otlp.py): the tree of a voice, an SMS and a chat turn, the action server's
spans inside Rasa's, and a takeover continuing the trace of the message it takes over."""

from __future__ import annotations

import asyncio
import time
from typing import Dict, List

import pytest
import redis

from connectors.twilio_sms.turns import SMS_TURN
from omnichannel import tracing
from omnichannel.leases import InFlightWork
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.fake_otlp import FakeOtlp, ReceivedSpan
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall
from tests.connectors.twilio_sms.helpers import inbound, post_signed, replies
from tests.connectors.twilio_sms.test_turns import record_as_dead_replica
from tests.connectors.webchat.helpers import open_chat, user_token
from tests.support import GIBBERISH

pytestmark = pytest.mark.rasa_server

RASA = "rasa-omnichannel"
ACTIONS = "rasa-omnichannel-actions"


def trace_with(otlp: FakeOtlp, root: str, since_ns: int, needed: List[str]) -> List[ReceivedSpan]:
    """The spans of the first trace rooted at ``root`` after ``since_ns`` holding every span
    named in ``needed`` (waiting for the batches to arrive)."""

    def found(spans: List[ReceivedSpan]):
        roots = [s for s in spans if s.name == root and s.start_ns >= since_ns]
        for candidate in roots:
            members = [s for s in spans if s.trace_id == candidate.trace_id]
            names = {s.name for s in members}
            if all(name in names for name in needed):
                return members
        return None

    return otlp.wait_for(found, timeout=20)


def by_id(spans: List[ReceivedSpan]) -> Dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def one(spans: List[ReceivedSpan], name: str, **attributes) -> ReceivedSpan:
    matching = [
        s
        for s in spans
        if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(matching) >= 1, f"no span {name} {attributes}: {[s.name for s in spans]}"
    return matching[0]


def ancestors(span: ReceivedSpan, spans: List[ReceivedSpan]) -> List[str]:
    index = by_id(spans)
    names = []
    while span.parent_id:
        span = index[span.parent_id]
        names.append(span.name)
    return names


@pytest.fixture
def llm(fake_llm: FakeLlm) -> FakeLlm:
    fake_llm.reset()
    yield fake_llm
    fake_llm.reset()


def check_turn(spans: List[ReceivedSpan], root_name: str, channel: str) -> ReceivedSpan:
    """Every part of a Rasa turn in ``spans``, linked as the trace must link them: the turn
    under the request's root, Rasa's parts under the turn, the action server's spans inside
    the Rasa action that called it, the LLM call inside those. Returns the turn span."""
    [root] = [s for s in spans if s.name == root_name]
    assert root.service == RASA and not root.status_code
    turn = one(spans, "turn", channel=channel)
    assert turn.attributes["outcome"] == "ok"
    assert root_name in ancestors(turn, spans)
    for part in ("lock.wait", "rasa.tracker.read", "rasa.nlu", "rasa.policy", "rasa.tracker.save"):
        assert "turn" in ancestors(one(spans, part), spans), part
    assert one(spans, "rasa.nlu").attributes["rasa.intent"] == "nlu_fallback"
    assert one(spans, "rasa.policy", **{"rasa.action": "action_llm_fallback"})
    action = one(spans, "rasa.action", **{"rasa.action": "action_llm_fallback"})
    assert action.attributes["rasa.action_remote"] is True
    assert action.parent_id and "turn" in ancestors(action, spans)
    remote = one(spans, "action_server.run", **{"rasa.action": "action_llm_fallback"})
    assert remote.service == ACTIONS
    assert remote.parent_id == action.span_id
    assert action.start_ns <= remote.start_ns and remote.end_ns <= action.end_ns
    llm = one(spans, "llm.chat")
    assert llm.service == ACTIONS and llm.parent_id == remote.span_id
    assert llm.attributes["gen_ai.request.model"] == "fake-model"
    assert llm.attributes["gen_ai.usage.output_tokens"] > 0
    assert llm.attributes["gen_ai.usage.input_tokens"] > 0
    assert 0 < llm.attributes["time_to_first_token_ms"] < (llm.end_ns - llm.start_ns) / 1e6 + 1
    assert len({s.trace_id for s in spans}) == 1
    return turn


def test_an_sms_turn_with_the_llm_fallback_is_one_trace(
    rasa_stack: RasaStack, fake_otlp: FakeOtlp, llm: FakeLlm
) -> None:
    since = time.time_ns()
    llm.script(LlmReply(content="Happy to help."))
    answer = post_signed(rasa_stack, inbound(rasa_stack, new_phone_number(), GIBBERISH))
    assert replies(answer) == ["Happy to help."]

    root = "omni_twilio_sms.webhook"
    spans = trace_with(fake_otlp, root, since, ["llm.chat", "rasa.tracker.save", "turn"])
    check_turn(spans, root, "sms")
    for part in ("connector.auth", "identity.resolve", "work.record"):
        assert one(spans, part).parent_id == one(spans, root).span_id, part
    assert one(spans, "connector.auth").attributes["admitted"] is True
    assert one(spans, "work.record").attributes == {"kind": SMS_TURN, "duplicate": False}
    # The action server's log line of the LLM request carries the trace's and its span's ids.
    llm = one(spans, "llm.chat")
    actions_log = (rasa_stack.log_dir / f"actions-{rasa_stack.action_port}.log").read_text()
    assert f"trace_id={llm.trace_id} span_id={llm.span_id}" in actions_log


async def test_a_voice_turn_with_the_llm_fallback_is_one_trace(
    rasa_stack: RasaStack, fake_otlp: FakeOtlp, llm: FakeLlm
) -> None:
    call = VapiCall(
        rasa_stack.base_url,
        rasa_stack.env["VAPI_SERVER_SECRET"],
        number=new_phone_number(),
        custom_llm_key=rasa_stack.env["VAPI_CUSTOM_LLM_KEY"],
    )
    await call.assistant_request()
    since = time.time_ns()
    llm.script(LlmReply(content="Happy to help."))
    reply = await call.say(GIBBERISH)
    await call.aclose()
    assert "Happy to help." in reply.text

    root = "omni_vapi.completions"
    spans = await asyncio.to_thread(
        trace_with, fake_otlp, root, since, ["llm.chat", "turn", "vapi.sse"]
    )
    check_turn(spans, root, "voice")
    sse = one(spans, "vapi.sse")
    assert sse.parent_id == one(spans, root).span_id
    assert one(spans, "vapi.sse.first_chunk").parent_id == sse.span_id
    assert one(spans, "connector.auth").parent_id == one(spans, root).span_id


async def test_a_chat_turn_with_the_llm_fallback_is_one_trace(
    rasa_stack: RasaStack, fake_otlp: FakeOtlp, llm: FakeLlm
) -> None:
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], f"trace-{time.time_ns()}")
    chat = await open_chat(rasa_stack, token)
    since = time.time_ns()
    llm.script(LlmReply(content="Happy to help."))
    await chat.say(GIBBERISH)
    assert (await chat.next_bot())["text"] == "Happy to help."
    await chat.turn_done()
    await chat.ws.close()

    root = "omni_webchat.message"
    spans = await asyncio.to_thread(
        trace_with, fake_otlp, root, since, ["llm.chat", "chat.frame", "turn", "chat.turn"]
    )
    turn = check_turn(spans, root, "chat")
    assert "chat.turn" in ancestors(turn, spans)
    assert one(spans, "work.record").parent_id == one(spans, root).span_id
    assert "rasa.action" in ancestors(one(spans, "chat.frame"), spans)


async def test_a_takeover_continues_the_trace_of_the_message_it_takes_over(
    rasa_stack: RasaStack,
    fake_otlp: FakeOtlp,
    fake_twilio: FakeTwilio,
    llm: FakeLlm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This test process plays a replica with tracing on that records an SMS turn and dies;
    the stack's sweeper takes the item over and its spans join the dead replica's trace."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", fake_otlp.endpoint)
    assert tracing.configure("test-replica")
    number = new_phone_number()
    llm.script(LlmReply(content="Happy to help."))
    with tracing.span("omni_twilio_sms.webhook", kind=tracing.SERVER):
        recorded = await record_as_dead_replica(rasa_stack, number, GIBBERISH)
        dead_root = tracing.current_ids()
    tracing.force_flush()
    assert dead_root is not None
    [sent] = await asyncio.to_thread(fake_twilio.wait_for_messages, number, 1, 30)
    assert sent.body == "Happy to help."

    def taken(spans: List[ReceivedSpan]):
        members = [s for s in spans if s.trace_id == dead_root[0]]
        names = {s.name for s in members}
        needed = ("work.takeover", "llm.chat", "twilio.send", "turn")
        return members if all(n in names for n in needed) else None

    spans = await asyncio.to_thread(fake_otlp.wait_for, taken, 20)
    takeover = one(spans, "work.takeover", kind=SMS_TURN)
    assert takeover.service == RASA and takeover.attributes["attempt"] == 2
    assert takeover.parent_id == dead_root[1]
    turn = check_turn(spans, "work.takeover", "sms")
    assert "work.takeover" in ancestors(turn, spans)
    send = one(spans, "twilio.send")
    assert "work.takeover" in ancestors(send, spans) and send.kind == 3  # SPAN_KIND_CLIENT
    with redis.Redis.from_url(rasa_stack.env["REDIS_URL"]) as client:
        item = InFlightWork(rasa_stack.env["REDIS_URL"], SMS_TURN).item_key(
            recorded["cid"], recorded["sid"]
        )
        assert client.hget(item, "traceparent").decode().split("-")[1] == dead_root[0]
