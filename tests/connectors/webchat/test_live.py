"""The live hub on a real Redis (no Rasa), and fan-out across two real replicas."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from connectors.webchat.live import LIVE_BACKLOG_LIMIT, LiveFeedLost, LiveHub
from devtools.processes import RedisServer
from devtools.stack import RasaStack
from omnichannel.redis_client import StateUnavailable
from tests.connectors.webchat.helpers import (
    drain,
    fresh_phone,
    open_chat,
    recv_until,
    rest_turn,
    user_token,
)


async def test_live_hub_fans_out_per_conversation(redis_url: str) -> None:
    hub = LiveHub(redis_url)
    first, second = await hub.subscribe("c_one"), await hub.subscribe("c_one")
    other = await hub.subscribe("c_two")
    publisher = aioredis.Redis.from_url(redis_url)
    await publisher.publish("omni:{c_one}:live", json.dumps({"event": "user", "text": "hi"}))
    for subscription in (first, second):
        assert (await asyncio.wait_for(subscription.queue.get(), 5))["text"] == "hi"
    assert other.queue.empty()
    await hub.unsubscribe(first)
    await publisher.publish("omni:{c_one}:live", json.dumps({"event": "bot", "text": "yo"}))
    assert (await asyncio.wait_for(second.queue.get(), 5))["text"] == "yo"
    assert first.queue.empty()
    for subscription in (second, other):
        await hub.unsubscribe(subscription)
    assert await publisher.pubsub_numsub("omni:{c_one}:live") == [(b"omni:{c_one}:live", 0)]
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


async def test_live_hub_forgets_a_subscriber_gone_before_redis_confirmed(redis_url: str) -> None:
    """A socket closed while its subscription waits for Redis (Sanic cancels the handler) must
    not leave the channel subscribed with a queue nobody reads."""
    hub = LiveHub(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "PAUSE", "800", "ALL")
    pending = asyncio.create_task(hub.subscribe("c_gone"))
    await asyncio.sleep(0.3)
    assert not pending.done()
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert hub._subscribers == {} and hub._confirmations == {}
    await admin.ping()  # answered once the pause is over, after the queued (UN)SUBSCRIBE
    await asyncio.sleep(0.3)
    assert await admin.pubsub_numsub("omni:{c_gone}:live") == [(b"omni:{c_gone}:live", 0)]
    await admin.close()


async def test_live_hub_cuts_off_a_subscriber_that_falls_behind(redis_url: str) -> None:
    """A socket that stops reading gets a bounded backlog, then LiveFeedLost (it reconnects and
    replays the history) instead of an ever-growing queue."""
    hub = LiveHub(redis_url)
    stalled = await hub.subscribe("c_busy")
    probe = await hub.subscribe("c_probe")
    publisher = aioredis.Redis.from_url(redis_url)
    async with publisher.pipeline(transaction=False) as pipe:
        for index in range(LIVE_BACKLOG_LIMIT + 50):
            pipe.publish("omni:{c_busy}:live", json.dumps({"event": "bot", "text": str(index)}))
        await pipe.execute()
    # One connection delivers in order: once the probe arrives, every event was dispatched.
    await publisher.publish("omni:{c_probe}:live", json.dumps({"event": "bot", "text": "probe"}))
    assert (await asyncio.wait_for(probe.queue.get(), 10))["text"] == "probe"
    assert stalled.queue.qsize() <= LIVE_BACKLOG_LIMIT
    items = [stalled.queue.get_nowait() for _ in range(stalled.queue.qsize())]
    assert isinstance(items[-1], LiveFeedLost)
    fresh = await hub.subscribe("c_busy")  # the reconnected socket gets the live feed again
    await publisher.publish("omni:{c_busy}:live", json.dumps({"event": "bot", "text": "new"}))
    assert (await asyncio.wait_for(fresh.queue.get(), 5))["text"] == "new"
    for subscription in (stalled, probe, fresh):
        await hub.unsubscribe(subscription)
    await publisher.close()


@pytest.mark.rasa_server
async def test_fan_out_across_replicas_without_double_delivery(
    rasa_stack: RasaStack, rasa_replica: RasaStack, secret: str
) -> None:
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
