"""A voice turn whose replica died is answered once anyway (turns.py's takeover), against the
real stack with the ``openai`` SDK as VAPI.

A "dead replica" here is a claim recorded in the stack's Redis by an owner that never renews it
(what a replica SIGKILLed after claiming leaves), before or after Rasa processed the utterance;
one test SIGKILLs a real replica in the middle of a slow turn.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import List, Optional

import pytest
from rasa.shared.core.events import UserUttered

from connectors.vapi.state import CallStore, call_key, turn_id
from connectors.vapi.voice_turn import APOLOGY, VoiceTurn
from omnichannel.addresses import phone_address
from testkit.fake_llm import LlmReply
from testkit.vapi_call import VapiCall
from tests.connectors.vapi.helpers import (
    conversation_of_stack,
    same_call_on,
    tracker_of,
    user_texts,
    wait_until,
)
from tests.redis_matrix import inspector
from tests.support import GIBBERISH

pytestmark = pytest.mark.rasa_server

#: The dead replica's lease: short, so the tests wait little for it to run out.
DEAD_LEASE_SECONDS = 0.5


def _stores(stack) -> CallStore:
    return CallStore(stack.env["REDIS_URL"])


async def _dead_owner_turn(
    stack, call: VapiCall, text: str, message_id: Optional[str] = None
) -> VoiceTurn:
    """Claims the call's next utterance ``text`` as a replica that then died: recorded and in
    flight, its lease never renewed. ``message_id``: the id Rasa already processed it under."""
    conversation = await conversation_of_stack(stack, call.number)
    ordinal = sum(1 for message in call.history if message["role"] == "user") - 1
    turn = VoiceTurn(
        conversation_id=conversation,
        call_id=call.call_id,
        turn_id=turn_id(call.call_id, ordinal, text),
        call_key=call_key(conversation, call.call_id),
        ordinal=ordinal,
        last_text=text,
        control_url=call.control_url,
        metadata={
            "channel": "voice",
            "address": str(phone_address(call.number)),
            "call_id": call.call_id,
            "call_type": call.call_type,
            "phone_number": call.number,
        },
    )
    if message_id is not None:
        turn.message_id = message_id
    dead = CallStore(stack.env["REDIS_URL"], lease_seconds=DEAD_LEASE_SECONDS)
    dead.turns.work.owner = "dead-replica"
    claim = await dead.claim(turn)
    assert claim.lease is not None, "the turn was claimed before"
    return turn


def _user_events(tracker, text: str) -> List[UserUttered]:
    return [e for e in tracker.events if isinstance(e, UserUttered) and e.text == text]


async def _record(stack, turn: VoiceTurn) -> dict:
    return await _stores(stack).answer(turn.conversation_id, turn.turn_id)


async def test_a_re_post_takes_over_a_turn_its_dead_replica_never_processed(stack, make_call):
    call = make_call()
    await call.say("hello")
    call.history.append({"role": "user", "content": "where is my order"})
    turn = await _dead_owner_turn(stack, call, "where is my order")
    reply = await call.complete(list(call.history))
    assert reply.finish_reason == "stop" and reply.text and APOLOGY not in reply.text
    # The caller waited about the dead replica's lease, not the 20 s a duplicate waits.
    print(f"\nre-POST of a turn left running: answered in {reply.done_seconds:.2f} s")
    assert reply.done_seconds < DEAD_LEASE_SECONDS + 3
    tracker = await tracker_of(stack, turn.conversation_id)
    [processed] = _user_events(tracker, "where is my order")
    assert processed.message_id == turn.message_id
    record = await _record(stack, turn)
    assert record["state"] == "done" and " ".join(record["spoken"]) == reply.text
    # A later duplicate replays the answer; the utterance is still in the event log once.
    again = await call.complete(list(call.history))
    assert again.text == reply.text
    assert user_texts(await tracker_of(stack, turn.conversation_id)).count("where is my order") == 1


async def test_a_turn_processed_before_its_replica_died_is_answered_from_the_event_log(
    stack, make_call
):
    call = make_call()
    await call.say("hello")
    answered = await call.say("where is my order")
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    [processed] = _user_events(tracker, "where is my order")
    # The replica processed the utterance, then died before recording the answer: its record
    # is still running, under its id.
    history = call.history[:-1]
    record_key = _stores(stack).turns.work.item_key(
        conversation, turn_id(call.call_id, 1, "where is my order")
    )
    client = inspector(stack.env["REDIS_URL"])
    try:
        assert await client.delete(record_key) == 1
    finally:
        await client.close()
    call.history = history
    await _dead_owner_turn(stack, call, "where is my order", message_id=processed.message_id)
    events_before = len(tracker.events)
    reply = await call.complete(history)
    assert reply.text == answered.text
    tracker = await tracker_of(stack, conversation)
    assert len(tracker.events) == events_before  # no second Rasa turn
    assert _user_events(tracker, "where is my order") == [processed]


async def test_the_sweeper_finishes_a_turn_nobody_re_posts(stack, make_call):
    call = make_call()
    await call.say("hello")
    call.history.append({"role": "user", "content": "where is my order"})
    turn = await _dead_owner_turn(stack, call, "where is my order")
    began = time.monotonic()
    deadline = began + 10
    while (await _record(stack, turn))["state"] == "running" and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    finished_after = time.monotonic() - began
    record = await _record(stack, turn)
    assert record["state"] == "done" and record["spoken"], record
    # The lease, then at most a sweep (every second) and the turn.
    assert finished_after < DEAD_LEASE_SECONDS + 1 + 3
    tracker = await tracker_of(stack, turn.conversation_id)
    assert [e.message_id for e in _user_events(tracker, "where is my order")] == [turn.message_id]
    # VAPI re-POSTing later gets the recorded answer, without a second turn.
    reply = await call.complete(list(call.history))
    assert reply.text == " ".join(record["spoken"])
    tracker = await tracker_of(stack, turn.conversation_id)
    assert len(_user_events(tracker, "where is my order")) == 1


async def test_replicas_taking_over_the_same_turn_run_it_once(
    stack, rasa_replica, make_call, fake_llm
):
    call = make_call()
    await call.say("hello")
    fake_llm.reset()
    fake_llm.script(LlmReply(content="Answered once.", delay=0.5))
    call.history.append({"role": "user", "content": GIBBERISH})
    turn = await _dead_owner_turn(stack, call, GIBBERISH)
    other = same_call_on(call, rasa_replica.base_url)
    await asyncio.sleep(DEAD_LEASE_SECONDS)
    replies = await asyncio.gather(
        *(caller.complete(list(call.history)) for caller in (call, other, call, other))
    )
    assert all("Answered once." in reply.text for reply in replies), [r.text for r in replies]
    assert len({reply.text for reply in replies}) == 1
    assert len(fake_llm.requests) == 1
    tracker = await tracker_of(stack, turn.conversation_id)
    assert [e.message_id for e in _user_events(tracker, GIBBERISH)] == [turn.message_id]
    await other.aclose()


@pytest.fixture
def doomed_replica(rasa_stack):
    """A replica of the stack to SIGKILL (its own process, same Redis and action server)."""
    replica = rasa_stack.replica()
    yield replica
    replica.stop()


async def test_a_re_post_after_its_replica_was_killed_mid_turn_is_answered(
    stack, doomed_replica, make_call, fake_llm
):
    """The owner is SIGKILLed while Rasa runs the turn (it holds the conversation's lock, in
    a slow LLM action); VAPI's re-POST to another replica gets the answer. The figure printed
    is the caller's wait on the re-POST."""
    call = make_call()
    await call.say("hello")
    fake_llm.reset()
    fake_llm.script(
        LlmReply(content="Never heard.", delay=30), LlmReply(content="Answered after all.")
    )
    doomed = same_call_on(call, doomed_replica.base_url)
    call.history.append({"role": "user", "content": GIBBERISH})
    first = asyncio.create_task(doomed.complete(list(call.history)))
    await wait_until(lambda: len(fake_llm.requests) == 1, 15)
    assert len(fake_llm.requests) == 1
    os.killpg(doomed_replica.rasa_proc.pid, signal.SIGKILL)
    killed_at = time.perf_counter()
    with pytest.raises(Exception):  # noqa: B017 - the connection dies with the replica
        await first
    reply = await call.complete(list(call.history))
    waited = time.perf_counter() - killed_at
    print(f"\nre-POST after SIGKILL: answered {waited:.2f} s after the kill")
    assert "Answered after all." in reply.text
    assert waited < 15  # the conversation lock's lease (10 s) bounds it, not VAPI's 20 s
    conversation = await conversation_of_stack(stack, call.number)
    tracker = await tracker_of(stack, conversation)
    assert len(_user_events(tracker, GIBBERISH)) == 1
    await doomed.aclose()
