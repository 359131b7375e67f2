"""A call's state and its turns' answers in Redis: claims, leases and takeovers, answers,
supersede marks, expiries."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from connectors.vapi.hearing import SpokenTurn
from connectors.vapi.state import (
    ANSWER_TTL_SECONDS,
    CALL_STATE_TTL_SECONDS,
    CallSnapshot,
    CallStore,
    call_key,
    turn_id,
)
from connectors.vapi.voice_turn import VoiceTurn
from omnichannel.leases import Lease
from omnichannel.redis_client import StateUnavailable
from testkit.redis_topologies import RedisDeployment
from tests.connectors.vapi.helpers import conversation_of_stack
from tests.redis_matrix import inspector

CONVERSATION = "c_calltest"


def _turn(text: str = "hello", ordinal: int = 0, call_id: str = "call-1") -> VoiceTurn:
    return VoiceTurn(
        conversation_id=CONVERSATION,
        call_id=call_id,
        turn_id=turn_id(call_id, ordinal, text),
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


@pytest.mark.unit
def test_keys_live_with_the_conversation_and_name_no_call_id() -> None:
    key = call_key(CONVERSATION, "call-1")
    assert key.startswith("omni:{c_calltest}:vapi:call:") and "call-1" not in key
    assert key != call_key(CONVERSATION, "call-2")
    turn = CallStore("redis://unused").turns.work.item_key(
        CONVERSATION, turn_id("call-1", 0, "hello")
    )
    assert turn.startswith("omni:{c_calltest}:work:voice_turn:") and "call-1" not in turn
    assert len({turn_id("call-1", 0, "hello"), turn_id("call-1", 1, "hello")}) == 2
    assert turn_id("call-1", 0, "hello") != turn_id("call-1", 0, "hello there")


async def test_a_turn_is_claimed_once(redis_deployment: RedisDeployment) -> None:
    store = CallStore(redis_deployment.url)
    first = _turn()
    claim = await store.claim(first)
    assert claim.call == CallSnapshot(in_flight=None, last_sent=None, interrupted_at=0.0)
    assert claim.lease is not None and claim.lease.payload == first.payload()
    duplicate = await store.claim(_turn())
    assert duplicate.call is None and duplicate.lease is None
    assert duplicate.answer == {"state": "running"}
    # The next turn of the call finds the first one in flight.
    in_flight = (await store.claim(_turn("where is my order", ordinal=1))).call.in_flight
    assert in_flight == {
        "request": first.request_id,
        "ordinal": 0,
        "text": "hello",
        "message_id": first.message_id,
        "turn_id": first.turn_id,
    }


async def test_a_single_turn_call_state_still_expires(redis_deployment: RedisDeployment) -> None:
    """Before: finishing the call's only turn removed the hash's only field (and
    with it the expiry); what the turn sent was then stored in a key that never expired."""
    store = CallStore(redis_deployment.url)
    turn = _turn()
    lease = (await store.claim(turn)).lease
    assert await store.finish(lease, _answered(turn, "Hi there."))
    client = inspector(redis_deployment.url)
    try:
        assert set(await client.hkeys(turn.call_key)) == {b"last_sent"}
        assert 0 < await client.ttl(turn.call_key) <= CALL_STATE_TTL_SECONDS
        record = store.turns.work.item_key(CONVERSATION, turn.turn_id)
        assert 0 < await client.ttl(record) <= ANSWER_TTL_SECONDS
    finally:
        await client.close()
    assert await store.answer(CONVERSATION, turn.turn_id) == {
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
    cut_lease = (await store.claim(cut)).lease
    whole = _turn("I need my tracking number")
    whole_claim = await store.claim(whole)
    assert whole_claim.call.in_flight["request"] == cut.request_id
    await store.mark_superseded(whole.call_key, cut.request_id)
    assert await store.is_superseded(cut) and not await store.is_superseded(whole)
    cut.say("Answer to the cut-off question.")
    cut.supersede()
    assert await store.finish(cut_lease, cut)
    assert await store.answer(CONVERSATION, cut.turn_id) == {
        "state": "superseded",
        "request": cut.request_id,
        "spoken": [],
    }
    client = inspector(redis_deployment.url)
    try:
        assert b"last_sent" not in await client.hkeys(whole.call_key)
        await store.finish(whole_claim.lease, _answered(whole, "Your tracking number is 1Z."))
        assert b"inflight" not in await client.hkeys(whole.call_key)
        assert 0 < await client.ttl(whole.call_key) <= CALL_STATE_TTL_SECONDS
    finally:
        await client.close()
    # An answer that expired counts as done, with nothing to replay.
    assert await store.answer(CONVERSATION, turn_id("call-1", 9, "gone")) == {
        "state": "done",
        "spoken": [],
    }


async def test_a_turn_whose_replica_stopped_is_taken_over_once(
    redis_deployment: RedisDeployment,
) -> None:
    """A running turn's lease holds while renewed; once it runs out exactly one of the
    replicas asking gets the turn (as prepared, with its utterance), and the dead owner's late
    answer is not recorded over the new owner's."""
    dead = CallStore(redis_deployment.url, lease_seconds=0.5)
    turn = _turn("where is my order", ordinal=1)
    lease = (await dead.claim(turn)).lease
    turn.hear(SpokenTurn(ordinal=1, first_ordinal=0, text="hi where is my order"), 100)
    await dead.prepare(lease, turn)
    replicas = [CallStore(redis_deployment.url, lease_seconds=5) for _ in range(2)]
    for replica in replicas:
        replica.turns.work.owner = f"replica-{id(replica)}"
    assert await replicas[0].take_over(CONVERSATION, turn.turn_id) is None  # lease holds
    await asyncio.sleep(0.6)
    taken = await asyncio.gather(
        *(replica.take_over(CONVERSATION, turn.turn_id) for replica in replicas for _ in (1, 2))
    )
    leases = [found for found in taken if found is not None]
    assert len(leases) == 1 and leases[0].attempt == 2
    assert leases[0].payload["text"] == "hi where is my order"
    assert leases[0].payload["message_id"] == turn.message_id
    assert await dead.answer(CONVERSATION, turn.turn_id) == {"state": "running"}
    # The dead replica coming back cannot record its answer: the turn is not its own now.
    assert not await dead.finish(lease, _answered(turn, "Stale."))
    owner = next(r for r in replicas if r.turns.work.owner == leases[0].owner)
    again = VoiceTurn.from_payload(leases[0].payload)
    assert await owner.finish(leases[0], _answered(again, "Your order shipped."))
    assert await dead.answer(CONVERSATION, turn.turn_id) == {
        "state": "done",
        "request": turn.request_id,
        "spoken": ["Your order shipped."],
    }
    assert await owner.take_over(CONVERSATION, turn.turn_id) is None


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


@pytest.mark.unit
async def test_redis_down_is_loud_where_the_caller_would_otherwise_miss_it(caplog) -> None:
    store = CallStore("redis://127.0.0.1:1/0")
    turn = _turn()
    with pytest.raises(StateUnavailable, match="claiming a voice turn"):
        await store.claim(turn)
    with pytest.raises(StateUnavailable):
        await store.is_superseded(turn)
    with pytest.raises(StateUnavailable):
        await store.answer(CONVERSATION, turn.turn_id)
    with pytest.raises(StateUnavailable):
        await store.take_over(CONVERSATION, turn.turn_id)
    # After the answer was heard, or for a courtesy mark, a failure is only logged (a turn left
    # running is taken over by another replica).
    lease = Lease("voice_turn", CONVERSATION, turn.turn_id, turn.payload(), 1)
    assert not await store.finish(lease, _answered(turn, "Hi."))
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
