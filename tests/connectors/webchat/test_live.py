"""The live hub on a real Redis (no Rasa), and fan-out across two real replicas, each on a
single node, a Redis Cluster and Sentinel."""

from __future__ import annotations

import asyncio
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Tuple

import pytest
from redis.crc import key_slot

from connectors.webchat.live import LIVE_BACKLOG_LIMIT, LiveFeedLost, LiveHub
from omnichannel.redis_client import StateUnavailable
from testkit.processes import RedisServer
from testkit.redis_topologies import RedisClusterProcesses, RedisDeployment, RedisSentinelProcesses
from testkit.stack import RasaStack
from tests.conftest import REDIS_DEPLOYMENTS
from tests.connectors.webchat.helpers import (
    drain,
    fresh_phone,
    open_chat,
    recv_until,
    rest_turn,
    user_token,
)
from tests.redis_matrix import inspector, pause_clients, publish, subscribers


async def test_live_hub_fans_out_per_conversation(redis_deployment: RedisDeployment) -> None:
    hub = LiveHub(redis_deployment.url)
    first, second = await hub.subscribe("c_one"), await hub.subscribe("c_one")
    other = await hub.subscribe("c_two")
    publisher = inspector(redis_deployment.url)
    assert await subscribers(publisher, "omni:{c_one}:live") == 1  # one per process, not socket
    await publish(publisher, "omni:{c_one}:live", json.dumps({"event": "user", "text": "hi"}))
    for subscription in (first, second):
        assert (await asyncio.wait_for(subscription.queue.get(), 5))["text"] == "hi"
    assert other.queue.empty()
    await hub.unsubscribe(first)
    await publish(publisher, "omni:{c_one}:live", json.dumps({"event": "bot", "text": "yo"}))
    assert (await asyncio.wait_for(second.queue.get(), 5))["text"] == "yo"
    assert first.queue.empty()
    for subscription in (second, other):
        await hub.unsubscribe(subscription)
    assert await subscribers(publisher, "omni:{c_one}:live") == 0
    await publisher.close()


async def test_live_hub_reports_a_lost_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    hub = LiveHub(server.url)
    try:
        subscription = await hub.subscribe("c_lost")
        server.kill()
        lost = await asyncio.wait_for(subscription.queue.get(), 10)
        assert isinstance(lost, LiveFeedLost)
        with pytest.raises(StateUnavailable):
            await hub.subscribe("c_lost", timeout=2)
    finally:
        server.stop()


async def test_live_hub_forgets_a_subscriber_gone_before_redis_confirmed(
    redis_deployment: RedisDeployment,
) -> None:
    """A socket closed while its subscription waits for Redis (Sanic cancels the handler) must
    not leave the channel subscribed with a queue nobody reads."""
    hub = LiveHub(redis_deployment.url)
    admin = inspector(redis_deployment.url)
    await pause_clients(admin, 800)
    pending = asyncio.create_task(hub.subscribe("c_gone"))
    await asyncio.sleep(0.3)
    assert not pending.done()
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert hub._subscribers == {} and hub._confirmations == {}
    await admin.ping()  # answered once the pause is over, after the queued (UN)SUBSCRIBE
    await asyncio.sleep(0.3)
    assert await subscribers(admin, "omni:{c_gone}:live") == 0
    await admin.close()


def same_slot_conversation(conversation_id: str) -> str:
    """Another conversation id whose keys and channels share ``conversation_id``'s cluster slot."""
    slot = key_slot(conversation_id.encode())
    return next(
        candidate
        for candidate in (f"c_probe{number}" for number in range(1_000_000))
        if key_slot(candidate.encode()) == slot
    )


async def test_live_hub_cuts_off_a_subscriber_that_falls_behind(
    redis_deployment: RedisDeployment,
) -> None:
    """A socket that stops reading gets a bounded backlog, then LiveFeedLost (it reconnects and
    replays the history) instead of an ever-growing queue."""
    hub = LiveHub(redis_deployment.url)
    stalled = await hub.subscribe("c_busy")
    # On a cluster the node that publishes forwards to the subscriber's node in order only per
    # publishing node: the probe goes through the same one as the backlog.
    probe_id = same_slot_conversation("c_busy")
    probe = await hub.subscribe(probe_id)
    publisher = inspector(redis_deployment.url)
    for index in range(LIVE_BACKLOG_LIMIT + 50):
        await publish(
            publisher, "omni:{c_busy}:live", json.dumps({"event": "bot", "text": str(index)})
        )
    # One connection delivers in order: once the probe arrives, every event was dispatched.
    await publish(
        publisher, LiveHub.channel(probe_id), json.dumps({"event": "bot", "text": "probe"})
    )
    assert (await asyncio.wait_for(probe.queue.get(), 10))["text"] == "probe"
    assert stalled.queue.qsize() <= LIVE_BACKLOG_LIMIT
    items = [stalled.queue.get_nowait() for _ in range(stalled.queue.qsize())]
    assert isinstance(items[-1], LiveFeedLost)
    fresh = await hub.subscribe("c_busy")  # the reconnected socket gets the live feed again
    await publish(publisher, "omni:{c_busy}:live", json.dumps({"event": "bot", "text": "new"}))
    assert (await asyncio.wait_for(fresh.queue.get(), 5))["text"] == "new"
    for subscription in (stalled, probe, fresh):
        await hub.unsubscribe(subscription)
    await publisher.close()


def _two_servers(
    shared: RasaStack, redis_url: str, model: Path, log_dir: Path
) -> Tuple[RasaStack, RasaStack]:
    """Two Rasa servers and their action server on ``redis_url``, not started yet, with the
    shared stack's secrets (so the fake Twilio account, the fake LLM and the chat tokens of
    the tests work for them too)."""
    env = {**shared.env, "REDIS_URL": redis_url}
    first = RasaStack(model=model, env=env, credentials=shared.credentials, log_dir=log_dir)
    log_dir.mkdir(parents=True)
    first.start_actions()
    # As RasaStack.replica() builds it, but started alongside the first server, not after it.
    second = RasaStack(
        model=model,
        env=env,
        credentials=shared.credentials,
        log_dir=log_dir,
        action_port=first.action_port,
        action_proc=first.action_proc,
        owns_action_server=False,
    )
    return first, second


@pytest.fixture(scope="module")
def servers_on_cluster_and_sentinel(
    rasa_stack: RasaStack,
    trained_model: Path,
    redis_cluster: RedisClusterProcesses,
    redis_sentinel: RedisSentinelProcesses,
    tmp_path_factory: pytest.TempPathFactory,
) -> Dict[str, Tuple[RasaStack, RasaStack]]:
    """Two Rasa servers (+ one action server) on the Redis Cluster and two on Sentinel, the
    four loading their model at once: about one start's wall time instead of four."""
    work = tmp_path_factory.mktemp("fan-out")
    pairs: Dict[str, Tuple[RasaStack, RasaStack]] = {}
    try:
        for kind, deployment in (("cluster", redis_cluster), ("sentinel", redis_sentinel)):
            pairs[kind] = _two_servers(rasa_stack, deployment.url, trained_model, work / kind)
        servers = [server for pair in pairs.values() for server in pair]
        with ThreadPoolExecutor(len(servers)) as pool:
            for started in [pool.submit(server.start) for server in servers]:
                started.result()
        yield pairs
    finally:
        for pair in pairs.values():
            for server in reversed(pair):  # the action server's owner last
                server.stop()


@pytest.fixture(params=list(REDIS_DEPLOYMENTS), ids=list(REDIS_DEPLOYMENTS))
def two_servers(request: pytest.FixtureRequest) -> Tuple[RasaStack, RasaStack]:
    """Two Rasa processes sharing one Redis of each kind: the shared stack and its replica on
    a single node, the pairs above on the cluster and on Sentinel."""
    if request.param == "single":
        return request.getfixturevalue("rasa_stack"), request.getfixturevalue("rasa_replica")
    return request.getfixturevalue("servers_on_cluster_and_sentinel")[request.param]


@pytest.mark.rasa_server
async def test_fan_out_across_replicas_without_double_delivery(
    two_servers: Tuple[RasaStack, RasaStack], secret: str
) -> None:
    rasa_stack, rasa_replica = two_servers
    phone = fresh_phone()
    token = user_token(secret, "fan-" + secrets.token_hex(4), phone=phone)
    on_replica = await open_chat(rasa_replica, token)
    on_stack = await open_chat(rasa_stack, token)
    assert on_replica.conversation_id == on_stack.conversation_id

    # A text arrives meanwhile (handled by the first server): both tabs see it live.
    rest_turn(rasa_stack, on_stack.conversation_id, "what's your refund policy", "sms")
    for chat in (on_replica, on_stack):
        user = await recv_until(chat.ws, lambda f: f["type"] == "message")
        assert (user["message"]["role"], user["message"]["channel"]) == ("user", "sms")
        assert user["message"]["text"] == "what's your refund policy"
        bot = await chat.next_bot()
        assert bot["channel"] == "sms" and "30 days" in bot["text"]

    # A chat message sent on the first server reaches the tab served by the replica.
    client_id = await on_stack.say("are you a bot?")
    own_reply = await on_stack.next_bot()
    assert "virtual assistant" in own_reply["text"]
    seen_by_other = await recv_until(on_replica.ws, lambda f: f["type"] == "message")
    assert seen_by_other["message"]["client_message_id"] == client_id
    assert seen_by_other["message"]["channel"] == "chat"
    other_reply = await on_replica.next_bot()
    assert other_reply["id"] == own_reply["id"]

    # The sending tab got its reply once: the live copy of its own turn is not delivered again.
    later = await drain(on_stack.ws, 2.0)
    assert [f for f in later if f["type"] == "message"] == []
    for chat in (on_replica, on_stack):
        await chat.ws.close()
