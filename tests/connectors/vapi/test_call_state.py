"""A call's state and its turns' answers in Redis: claims, answers, supersede marks, expiries."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from connectors.vapi.call_state import (
    ANSWER_TTL_SECONDS,
    CALL_STATE_TTL_SECONDS,
    CallSnapshot,
    CallStore,
    answer_key,
    call_key,
)
from connectors.vapi.turn import VoiceTurn
from devtools.redis_topologies import RedisDeployment
from omnichannel.redis_client import StateUnavailable
from tests.connectors.vapi.helpers import conversation_of_stack
from tests.redis_matrix import inspector

CONVERSATION = "c_calltest"


def _turn(text: str = "hello", ordinal: int = 0, call_id: str = "call-1") -> VoiceTurn:
    return VoiceTurn(
        conversation_id=CONVERSATION,
        call_id=call_id,
        answer_key=answer_key(CONVERSATION, call_id, ordinal, text),
        call_key=call_key(CONVERSATION, call_id),
        ordinal=ordinal,
        last_text=text,
        control_url=None,
    )


def _answered(turn: VoiceTurn, *speech: str) -> VoiceTurn:
    turn.start()
    for item in speech:
        turn.say(item)
    turn.finish()
    return turn


def test_keys_live_with_the_conversation_and_name_no_call_id() -> None:
    key = call_key(CONVERSATION, "call-1")
    assert key.startswith("omni:{c_calltest}:vapi:call:") and "call-1" not in key
    assert key != call_key(CONVERSATION, "call-2")
    turn = answer_key(CONVERSATION, "call-1", 0, "hello")
    assert turn.startswith("omni:{c_calltest}:vapi:turn:")
    assert len({turn, answer_key(CONVERSATION, "call-1", 1, "hello")}) == 2
    assert turn != answer_key(CONVERSATION, "call-1", 0, "hello there")


async def test_a_turn_is_claimed_once(redis_deployment: RedisDeployment) -> None:
    store = CallStore(redis_deployment.url)
    first = _turn()
    claim = await store.claim(first)
    assert claim.call == CallSnapshot(in_flight=None, last_sent=None, interrupted_at=0.0)
    duplicate = await store.claim(_turn())
    assert duplicate.call is None
    assert duplicate.answer == {"state": "running", "request": first.request_id, "spoken": []}
    # The next turn of the call finds the first one in flight.
    in_flight = (await store.claim(_turn("where is my order", ordinal=1))).call.in_flight
    assert in_flight == {
        "request": first.request_id,
        "ordinal": 0,
        "text": "hello",
        "message_id": first.message_id,
        "answer_key": first.answer_key,
    }


async def test_a_single_turn_call_state_still_expires(redis_deployment: RedisDeployment) -> None:
    """Issue 14, finding 5: finishing the call's only turn removed the hash's only field (and
    with it the expiry); what the turn sent was then stored in a key that never expired."""
    store = CallStore(redis_deployment.url)
    turn = _turn()
    await store.claim(turn)
    await store.store_answer(_answered(turn, "Hi there."))
    client = inspector(redis_deployment.url)
    try:
        assert set(await client.hkeys(turn.call_key)) == {b"last_sent"}
        assert 0 < await client.ttl(turn.call_key) <= CALL_STATE_TTL_SECONDS
        assert 0 < await client.ttl(turn.answer_key) <= ANSWER_TTL_SECONDS
    finally:
        await client.close()
    assert await store.answer(turn.answer_key) == {
        "state": "done",
        "request": turn.request_id,
        "spoken": ["Hi there."],
    }
    last_sent = (await store.claim(_turn("bye", ordinal=1))).call.last_sent
    assert last_sent == {
        "ordinal": 0,
        "first_ordinal": 0,
        "text": "Hi there.",
        "at": turn.started_at,
    }


async def test_a_superseded_turn_says_nothing_and_leaves_the_call_to_its_successor(
    redis_deployment: RedisDeployment,
) -> None:
    store = CallStore(redis_deployment.url)
    cut = _turn("I need my")
    await store.claim(cut)
    whole = _turn("I need my tracking number")
    assert (await store.claim(whole)).call.in_flight["request"] == cut.request_id
    await store.mark_superseded(whole.call_key, cut.request_id)
    assert await store.is_superseded(cut) and not await store.is_superseded(whole)
    cut.say("Answer to the cut-off question.")
    cut.supersede()
    await store.store_answer(cut)
    assert await store.answer(cut.answer_key) == {
        "state": "superseded",
        "request": cut.request_id,
        "spoken": [],
    }
    client = inspector(redis_deployment.url)
    try:
        assert b"last_sent" not in await client.hkeys(whole.call_key)
        await store.store_answer(_answered(whole, "Your tracking number is 1Z."))
        assert b"inflight" not in await client.hkeys(whole.call_key)
        assert 0 < await client.ttl(whole.call_key) <= CALL_STATE_TTL_SECONDS
    finally:
        await client.close()
    # An answer that expired counts as done, with nothing to replay.
    assert await store.answer(answer_key(CONVERSATION, "call-1", 9, "gone")) == {
        "state": "done",
        "spoken": [],
    }


async def test_an_interruption_is_noted_for_the_next_turn(
    redis_deployment: RedisDeployment,
) -> None:
    store = CallStore(redis_deployment.url)
    await store.record_interruption(CONVERSATION, "call-1", 1234.5)
    client = inspector(redis_deployment.url)
    try:
        assert 0 < await client.ttl(call_key(CONVERSATION, "call-1")) <= CALL_STATE_TTL_SECONDS
    finally:
        await client.close()
    assert (await store.claim(_turn())).call.interrupted_at == 1234.5


async def test_redis_down_is_loud_where_the_caller_would_otherwise_miss_it(caplog) -> None:
    store = CallStore("redis://127.0.0.1:1/0")
    turn = _turn()
    with pytest.raises(StateUnavailable, match="claiming a voice turn"):
        await store.claim(turn)
    with pytest.raises(StateUnavailable):
        await store.is_superseded(turn)
    with pytest.raises(StateUnavailable):
        await store.answer(turn.answer_key)
    # After the answer was heard, or for a courtesy mark, a failure is only logged.
    await store.store_answer(_answered(turn, "Hi."))
    await store.mark_superseded(turn.call_key, "other")
    assert "could not store the turn's answer" in caplog.text
    assert "could not mark a superseded voice turn" in caplog.text


@pytest.mark.rasa_server
async def test_after_a_single_turn_call_the_call_state_expires(stack, make_call) -> None:
    call = make_call()
    await call.say("hello")
    key = call_key(await conversation_of_stack(stack, call.number), call.call_id)
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        deadline = time.monotonic() + 10
        # The answer is stored by a background task once the stream has ended.
        while not await client.hexists(key, "last_sent") and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert set(await client.hkeys(key)) == {b"last_sent"}
        assert 0 < await client.ttl(key) <= CALL_STATE_TTL_SECONDS
    finally:
        await client.close()
