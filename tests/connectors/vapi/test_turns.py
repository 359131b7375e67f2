"""A turn through Rasa once, whatever VAPI re-POSTs: duplicates, superseded turns and barge-in,
on one replica and across two (turns.py, against the real stack)."""

from __future__ import annotations

import asyncio

import pytest
from rasa.shared.core.events import UserUttered

from connectors.vapi.channel import VapiOutput
from connectors.vapi.state import CallStore, call_key, turn_id
from connectors.vapi.turns import TurnRunner
from connectors.vapi.voice_turn import APOLOGY, END, VoiceTurn
from omnichannel.tasks import BackgroundTasks
from testkit.fake_llm import LlmReply
from tests.connectors.vapi.helpers import (
    conversation_of_stack,
    same_call_on,
    tracker_of,
    user_texts,
    wait_until,
)
from tests.support import GIBBERISH, seed_order

pytestmark = pytest.mark.rasa_server


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
    order = seed_order(stack, phone=call.number)
    call.history.append({"role": "user", "content": order})
    both = await asyncio.gather(call.complete(call.history), call.complete(call.history))
    assert both[0].text == both[1].text and f"Order {' '.join(order)}, the" in both[0].text
    tracker = await tracker_of(stack, conversation)
    assert user_texts(tracker).count(order) == 1


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


async def test_replicas_share_duplicates_and_supersedes(stack, rasa_replica, make_call, fake_llm):
    call = make_call()
    on_one = await call.say("where is my order")
    other = same_call_on(call, rasa_replica.base_url)
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


async def test_a_duplicate_still_waiting_at_its_bound_hears_the_apology(redis_url):
    """A turn running elsewhere past ``duplicate_wait_seconds`` (its replica alive and renewing,
    so not to be taken over): the duplicate's caller hears the apology, not silence."""

    def the_turn() -> VoiceTurn:
        return VoiceTurn(
            conversation_id="c_slowturn",
            call_id="call-slow",
            turn_id=turn_id("call-slow", 0, "hello"),
            call_key=call_key("c_slowturn", "call-slow"),
            ordinal=0,
            last_text="hello",
            control_url=None,
        )

    elsewhere = CallStore(redis_url, lease_seconds=60)
    elsewhere.turns.work.owner = "a-live-replica"
    assert (await elsewhere.claim(the_turn())).lease is not None
    runner = TurnRunner(
        CallStore(redis_url), BackgroundTasks("test"), VapiOutput, 0.9, duplicate_wait_seconds=0.3
    )
    started = await runner.start(None, the_turn(), [])
    assert not started.claimed and started.turn is None
    said = [await asyncio.wait_for(started.listener.get(), 2) for _ in range(2)]
    assert said == [APOLOGY, END]
