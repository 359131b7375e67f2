"""Stored events as chat messages and history pages: units on plain events, the cursor on a real
Redis, and the whole cross-channel history on the real stack."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Dict, List

import pytest
import redis.asyncio as aioredis

from connectors.event_log.reading import CALL_REPORT_SLOT
from connectors.tracker_store import RedisEventLogTrackerStore
from connectors.webchat.history import EventLog, chat_message, is_shown, message_id
from omnichannel.addresses import user_address
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall
from tests.connectors.webchat.helpers import (
    append_events,
    fresh_phone,
    open_chat,
    phone_conversation,
    recv_until,
    sms_exchanges,
    text_from_phone,
    user_token,
)
from tests.support import seed_order


def user(text: str, timestamp: float, **fields: Any) -> Dict[str, Any]:
    return {"event": "user", "text": text, "timestamp": timestamp, **fields}


def bot(text: str, timestamp: float, **fields: Any) -> Dict[str, Any]:
    return {"event": "bot", "text": text, "timestamp": timestamp, **fields}


def call_report(call_id: str, summary: str, timestamp: float = 5.0) -> Dict[str, Any]:
    value = {"call_id": call_id, "summary": summary, "reported_at": 7.0}
    return {"event": "slot", "name": CALL_REPORT_SLOT, "value": value, "timestamp": timestamp}


@pytest.mark.unit
def test_user_messages_carry_their_channel_title_and_client_id() -> None:
    texted = user("refund", 1.0, message_id="m1", input_channel="twilio_sms")
    assert chat_message(texted, None) == {
        "id": "u:m1",
        "timestamp": 1.0,
        "role": "user",
        "channel": "sms",
        "text": "refund",
    }
    clicked = user(
        "/ask_refund_policy",
        2.0,
        input_channel="webchat",
        metadata={"channel": "chat", "button_title": "Refund policy", "client_message_id": "c1"},
    )
    shown = chat_message(clicked, None)
    assert shown is not None
    assert (shown["channel"], shown["text"], shown["client_message_id"]) == (
        "chat",
        "Refund policy",
        "c1",
    )
    assert shown["id"] == "u:2.0"  # no message id: the timestamp
    typed = user("hi", 3.0, input_channel="rest")  # typed text of unknown origin
    assert chat_message(typed, None)["channel"] is None
    assert chat_message(user("", 4.0), "sms") is None


@pytest.mark.unit
def test_bot_messages_take_their_own_channel_or_the_turns() -> None:
    answer = chat_message(bot("It ships **today**.", 1.0), "voice")
    assert answer is not None and answer["channel"] == "voice" and answer["role"] == "bot"
    assert "<strong>today</strong>" in answer["html"]
    texted = chat_message(bot("Sent.", 2.0, metadata={"channel": "sms", "kind": "note"}), "voice")
    assert texted is not None and (texted["channel"], texted["kind"]) == ("sms", "note")
    assert chat_message(bot("", 3.0), "chat") is None  # nothing to show
    assert chat_message({"event": "action", "name": "action_listen"}, "chat") is None


@pytest.mark.unit
def test_a_reply_from_the_support_team_is_the_agents() -> None:
    metadata = {"agent": {"id": "a1", "name": "Dana"}, "channel": "sms"}
    reply = chat_message(bot("On its way <b>now</b>.", 4.0, metadata=metadata), "chat")
    assert reply is not None
    assert (reply["role"], reply["agent_name"], reply["channel"]) == ("agent", "Dana", "sms")
    assert "<b>" not in reply["html"], "an agent's text is escaped like the bot's"


@pytest.mark.unit
def test_a_call_report_is_a_voice_summary_once_per_call() -> None:
    report = call_report("call-1", "  Asked about order 12345.  ")
    summary = chat_message(report, "sms")
    assert summary is not None
    assert summary["id"] == message_id(call_report("call-1", "other", 99.0)) == "call:call-1"
    assert (summary["channel"], summary["kind"], summary["timestamp"]) == (
        "voice",
        "call_summary",
        7.0,
    )
    assert summary["text"] == "Call summary: Asked about order 12345."
    assert chat_message(call_report("call-2", "   "), None) is None
    other_slot = {"event": "slot", "name": "order_id", "value": "12345", "timestamp": 1.0}
    assert is_shown(report) and not is_shown(other_slot)
    assert chat_message(other_slot, None) is None
    assert is_shown(user("x", 1.0)) and is_shown(bot("x", 1.0))
    assert not is_shown({"event": "action", "name": "action_listen"})


class MemoryStore:
    """The two reads EventLog makes of the tracker store, on a list."""

    def __init__(self, events: List[Dict[str, Any]]) -> None:
        self.events = events
        self.reads = 0

    async def event_count(self, conversation_id: str) -> int:
        return len(self.events)

    async def read_events(self, conversation_id: str, start: int, end: int) -> List[Dict]:
        self.reads += 1
        return self.events[start : end + 1]


@pytest.mark.unit
async def test_a_page_of_bot_messages_gets_the_channel_of_the_turn_before_it() -> None:
    events = [user("where is my order", 0.0, input_channel="vapi")]
    events += [{"event": "action", "name": "action_listen", "timestamp": 0.5}] * 450
    events += [bot(f"answer {n}", 1.0 + n) for n in range(3)]
    events += [user("thanks", 10.0, metadata={"channel": "sms"}), bot("welcome", 11.0)]
    log = EventLog(MemoryStore(events))
    messages, cursor, turn_channel = await log.page("c", len(events), 3)
    assert [(m["text"], m["channel"]) for m in messages] == [
        ("answer 2", "voice"),
        ("thanks", "sms"),
        ("welcome", "sms"),
    ]
    assert cursor == 453 and turn_channel == "sms"
    older, cursor, _ = await log.page("c", cursor, 10)
    assert [m["text"] for m in older] == ["where is my order", "answer 0", "answer 1"]
    assert cursor is None
    assert await log.page("c", 0, 10) == ([], None, None)


@pytest.mark.unit
def test_the_history_needs_the_event_log_tracker_store() -> None:
    class Wrapper:
        def __init__(self, inner: Any) -> None:
            self._tracker_store = inner

    class Agent:
        tracker_store = Wrapper(Wrapper(MemoryStore([])))

    assert isinstance(EventLog.of_agent(Agent()), EventLog)
    Agent.tracker_store = Wrapper(object())
    with pytest.raises(ConfigError, match="RedisEventLogTrackerStore"):
        EventLog.of_agent(Agent())


async def test_a_history_cursor_past_the_log_end_is_read_as_the_end(redis_url: str) -> None:
    """A client's ``before`` far past the log's end must not walk the gap down to it, one
    empty Redis read per 200 positions (a loop any signed-in client could start)."""
    store = RedisEventLogTrackerStore(host=redis_url)
    publisher = aioredis.Redis.from_url(redis_url)
    for index in range(3):
        event = {"event": "user", "text": f"hi {index}", "timestamp": float(index)}
        await publisher.rpush(store._events_key("c_paged"), json.dumps(event))
    log = EventLog(store)
    await publisher.config_resetstat()
    messages, cursor, _ = await log.page("c_paged", 10**6, 50)
    assert [m["text"] for m in messages] == ["hi 0", "hi 1", "hi 2"] and cursor is None
    reads = (await publisher.info("commandstats")).get("cmdstat_lrange", {}).get("calls", 0)
    assert reads <= 2
    await publisher.close()


@pytest.mark.rasa_server
async def test_history_spans_sms_voice_and_call_summaries(
    rasa_stack: RasaStack, secret: str
) -> None:
    phone = fresh_phone()
    call = VapiCall(
        base_url=rasa_stack.base_url,
        server_secret=rasa_stack.env["VAPI_SERVER_SECRET"],
        number=phone,
    )
    order = seed_order(rasa_stack, phone=phone)
    await call.say("where is my order")
    await call.say(f"it's {order}")
    await call.hang_up(summary=f"The caller asked where order {order} is.")
    conversation = await phone_conversation(rasa_stack, phone)
    append_events(
        rasa_stack,
        conversation,
        [
            {
                "event": "bot",
                "timestamp": time.time(),
                "text": "A note of a kind no widget knows.",
                "metadata": {"kind": "survey_invite_v9"},
            }
        ],
    )
    text_from_phone(rasa_stack, phone, "what's your refund policy")

    chat = await open_chat(
        rasa_stack, user_token(secret, "hist-" + secrets.token_hex(4), phone=phone)
    )
    assert chat.conversation_id == conversation
    messages = chat.history["messages"]
    assert chat.history["before"] is None
    shown = [(m["role"], m["channel"], m["text"]) for m in messages]
    assert shown[0] == ("user", "voice", "where is my order")
    assert ("user", "voice", f"it's {order}") in shown
    spoken = [m for m in messages if m["role"] == "bot" and f"Order {order}, the" in m["text"]]
    assert spoken and {m["channel"] for m in spoken} == {"voice"}
    summary = next(m for m in messages if m.get("kind") == "call_summary")
    assert summary["text"] == f"Call summary: The caller asked where order {order} is."
    assert summary["channel"] == "voice" and summary["id"] == f"call:{call.call_id}"
    unknown = next(m for m in messages if m.get("kind") == "survey_invite_v9")
    assert unknown["text"] == "A note of a kind no widget knows."
    assert ("user", "sms", "what's your refund policy") in shown
    policy = [m for m in messages if m["role"] == "bot" and "30 days" in m["text"]]
    assert policy and policy[0]["channel"] == "sms"
    assert shown.index(("user", "sms", "what's your refund policy")) > messages.index(summary)
    assert [m["timestamp"] for m in messages] == sorted(m["timestamp"] for m in messages)
    assert len({m["id"] for m in messages}) == len(messages)
    await chat.ws.close()


@pytest.mark.rasa_server
async def test_history_pages_back_with_a_cursor(rasa_stack: RasaStack, secret: str) -> None:
    sub = "pager-" + secrets.token_hex(4)
    conversation = await IdentityStore(
        aioredis.Redis.from_url(rasa_stack.env["REDIS_URL"])
    ).resolve_conversation(user_address(sub), channel="chat")
    append_events(rasa_stack, conversation, sms_exchanges(time.time() - 3600, 35))

    chat = await open_chat(rasa_stack, user_token(secret, sub))
    latest = chat.history["messages"]
    assert len(latest) == 50 and latest[-1]["text"] == "answer 34"
    assert latest[0]["text"] == "question 10"
    assert chat.history["before"] is not None
    await chat.ws.send(
        json.dumps({"type": "history", "before": chat.history["before"], "limit": 15})
    )
    older = await recv_until(chat.ws, lambda f: f["type"] == "history")
    assert older["initial"] is False
    assert [m["text"] for m in older["messages"]][:2] == ["answer 2", "question 3"]
    assert older["messages"][-1]["text"] == "answer 9"
    await chat.ws.send(json.dumps({"type": "history", "before": older["before"]}))
    oldest = await recv_until(chat.ws, lambda f: f["type"] == "history")
    assert oldest["before"] is None
    texts = [m["text"] for m in oldest["messages"] + older["messages"] + latest]
    assert texts == [t for n in range(35) for t in (f"question {n}", f"answer {n}")]
    assert {m["channel"] for m in oldest["messages"]} == {"sms"}
    await chat.ws.close()
