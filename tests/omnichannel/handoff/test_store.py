"""The fleet's hand-off records (omnichannel/handoff/store.py) on a real Redis of each
deployment kind: the record, its notes and the indexes live in different Cluster slots."""

from __future__ import annotations

import asyncio
import json

import pytest

from omnichannel.handoff.state import CLAIMED, QUEUED, Actor, Handoff, TransitionRefused
from omnichannel.handoff.store import FLEET_FEED, HandoffStore, StaleHandoff, live_channel
from omnichannel.redis_client import redis_client, subscriber
from testkit.redis_topologies import RedisDeployment

DANA = Actor.agent("agent-dana", "Dana")
SAM = Actor.agent("agent-sam", "Sam")


def request(cid: str, at: float = 100.0) -> Handoff:
    return Handoff.requested(
        cid, "sms", "customer_asked", at, notice_at=at + 60, give_up_at=at + 600
    )


async def test_one_open_hand_off_per_conversation(redis_deployment: RedisDeployment) -> None:
    store = HandoffStore(redis_deployment.url)
    first, created = await store.request(request("c_a"))
    assert created and first.state == QUEUED
    again, created_again = await store.request(request("c_a", 200.0))
    assert not created_again and again == first
    assert await store.get("c_a") == first
    assert await store.get("c_none") is None


async def test_a_claim_race_has_exactly_one_winner(redis_deployment: RedisDeployment) -> None:
    stores = [HandoffStore(redis_deployment.url) for _ in range(8)]
    await stores[0].request(request("c_race"))
    agents = [Actor.agent(f"agent-{n}", f"Agent {n}") for n in range(8)]

    async def claim(store: HandoffStore, agent: Actor) -> str:
        try:
            await store.update("c_race", lambda h: h.claim(agent, 150.0))
        except TransitionRefused:
            return "refused"
        return agent.id

    outcomes = await asyncio.gather(*(claim(s, a) for s, a in zip(stores, agents, strict=True)))
    winners = [outcome for outcome in outcomes if outcome != "refused"]
    assert len(winners) == 1
    stored = await stores[0].get("c_race")
    assert stored.state == CLAIMED and stored.agent.id == winners[0] and stored.version == 2


async def test_a_stale_change_is_refused(redis_deployment: RedisDeployment) -> None:
    store = HandoffStore(redis_deployment.url)
    queued, _ = await store.request(request("c_stale"))
    await store.update("c_stale", lambda h: h.claim(DANA, 110.0))
    with pytest.raises(StaleHandoff, match="claimed now"):
        await store.save(queued, queued.claim(SAM, 120.0))
    # A change computed from an earlier hand-off never lands on a later one with its version.
    _, handed_back = await store.update("c_stale", lambda h: h.hand_back(DANA, 130.0))
    newer, created = await store.request(request("c_stale", 140.0))
    assert created and newer.version == 1 and newer.id != queued.id
    with pytest.raises(StaleHandoff):
        await store.save(queued, queued.claim(SAM, 150.0))
    with pytest.raises(LookupError):
        await store.update("c_nothing", lambda h: h.claim(DANA, 1.0))


async def test_the_queue_lists_open_hand_offs_oldest_first(
    redis_deployment: RedisDeployment,
) -> None:
    store = HandoffStore(redis_deployment.url)
    for cid, at in (("c_q2", 200.0), ("c_q1", 100.0), ("c_q3", 300.0)):
        await store.request(request(cid, at))
    await store.update("c_q2", lambda h: h.claim(DANA, 250.0))
    listed = await store.open_handoffs(10)
    assert [(h.conversation_id, h.state) for h in listed] == [
        ("c_q1", QUEUED),
        ("c_q3", QUEUED),
        ("c_q2", CLAIMED),
    ]
    assert await store.depth() == {QUEUED: 2, CLAIMED: 1}
    assert await store.due(160.0) == ["c_q1"]
    await store.update("c_q1", lambda h: h.resolve(SAM, 400.0))
    assert [h.conversation_id for h in await store.open_handoffs(10)] == ["c_q3", "c_q2"]
    assert await store.due(10_000.0) == ["c_q3"]
    assert [h.conversation_id for h in await store.open_handoffs(1)] == ["c_q3"]


async def test_stale_index_members_are_dropped(redis_deployment: RedisDeployment) -> None:
    store = HandoffStore(redis_deployment.url)
    await store.request(request("c_gone"))
    await redis_client(redis_deployment.url).delete(store.record_key("c_gone"))
    assert await store.open_handoffs(10) == []
    assert await store.depth() == {QUEUED: 0, CLAIMED: 0}


async def test_every_key_expires_and_closed_records_are_kept_briefly(
    redis_deployment: RedisDeployment,
) -> None:
    store = HandoffStore(redis_deployment.url, open_ttl=1000, closed_ttl=50)
    await store.request(request("c_ttl"))
    await store.add_note("c_ttl", {"id": "n1", "at": 1.0, "text": "VIP"})
    client = redis_client(redis_deployment.url)
    assert 990 < await client.ttl(store.record_key("c_ttl")) <= 1000
    assert 990 < await client.ttl(store.notes_key("c_ttl")) <= 1000
    for name in ("queued", "due"):
        assert await client.ttl(store.index_key(name)) > 0
    await store.update("c_ttl", lambda h: h.resolve(DANA, 2.0))
    assert 40 < await client.ttl(store.record_key("c_ttl")) <= 50
    assert 40 < await client.ttl(store.notes_key("c_ttl")) <= 50
    assert await store.notes("c_ttl") == [{"id": "n1", "at": 1.0, "text": "VIP"}]


async def test_changes_are_published_and_notes_only_to_agents(redis_url: str) -> None:
    store = HandoffStore(redis_url)
    conversation = await subscriber(redis_url)
    fleet = await subscriber(redis_url)
    await conversation.subscribe(live_channel("c_pub"))
    await fleet.subscribe(live_channel(FLEET_FEED))

    async def published(pubsub) -> list:
        found = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "message":
                found.append(json.loads(message["data"]))
        return found

    await published(conversation)
    await published(fleet)
    await store.request(request("c_pub"))
    await store.update("c_pub", lambda h: h.claim(DANA, 120.0))
    await store.add_note("c_pub", {"id": "n1", "text": "secret internal note"})
    seen_by_conversation = await published(conversation)
    seen_by_fleet = await published(fleet)
    assert [m["handoff"]["state"] for m in seen_by_conversation] == [QUEUED, CLAIMED]
    assert "secret internal note" not in json.dumps(seen_by_conversation)
    assert [m["event"] for m in seen_by_fleet] == ["handoff", "handoff", "handoff_note"]
    assert seen_by_fleet[-1]["conversation_id"] == "c_pub"
    await conversation.close()
    await fleet.close()


async def test_desks_count_as_answering_only_while_renewed(redis_url: str) -> None:
    store = HandoffStore(redis_url)
    assert await store.desks_alive(1000.0) == []
    await store.heartbeat("inbox", 1000.0)
    await store.heartbeat("helpdesk", 1030.0)
    assert await store.desks_alive(1050.0) == ["helpdesk", "inbox"]
    assert await store.desks_alive(1080.0) == ["helpdesk"], "inbox went quiet 80 s ago"
    assert await redis_client(redis_url).ttl(store.index_key("desks")) > 0
