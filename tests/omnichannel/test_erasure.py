"""Erasure against a real redis-server, without a Rasa stack: what a part registers is erased
too. An eraser runs while the conversation's own records still exist (a helpdesk's link from
its conversation number back to ours is found through them), its count is on the receipt, and
a registered work kind's index and the hand-off's queues lose the conversation's entries."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from omnichannel import erasure
from omnichannel.addresses import phone_address
from omnichannel.handoff.store import HandoffStore
from omnichannel.identity import IdentityStore
from omnichannel.outbound.consent import OPT_OUT, ConsentStore
from omnichannel.outbound.items import OutboundStore
from omnichannel.redis_client import conversation_key, global_key


async def test_registered_erasers_and_work_kinds_are_erased_with_the_conversation(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        cid = await IdentityStore(client).resolve_conversation(
            phone_address("+14155550123"), channel="sms"
        )
        other = await IdentityStore(client).resolve_conversation(
            phone_address("+14155550999"), channel="sms"
        )
        # A desk's state: its thread under our tag, a link back under the desk's own tag.
        thread = conversation_key(cid, "desk_thread")
        await client.hset(thread, mapping={"desk_conversation": "42"})
        link = conversation_key("~desk:42", "handoff")
        await client.set(link, cid, ex=3600)
        kept = conversation_key("~desk:43", "handoff")
        await client.set(kept, other, ex=3600)
        index = global_key("work", "desk_job")
        await client.zadd(index, {json.dumps([cid, "job-1"]): 1, json.dumps([other, "job-2"]): 2})

        async def desk_eraser(redis, conversation_id: str) -> int:
            number = await redis.hget(
                conversation_key(conversation_id, "desk_thread"), "desk_conversation"
            )
            if number is None:
                return 0
            return int(await redis.delete(conversation_key(f"~desk:{number.decode()}", "handoff")))

        queued = HandoffStore.index_key("queued")
        await client.zadd(queued, {cid: 1, other: 2})

        erasure.register_eraser("desk", desk_eraser)
        erasure.register_work_kind("desk_job")
        try:
            receipt = await erasure.erase(client, cid)
            again = await erasure.erase(client, cid)
        finally:
            erasure._erasers.pop("desk", None)
            erasure.WORK_KINDS.remove("desk_job")

        assert receipt.parts == {"desk": 1} and receipt.index_entries_removed == 2
        assert await client.zrange(queued, 0, -1) == [other.encode()]
        assert receipt.erased and receipt.keys_deleted >= 3  # thread, profile, address record
        assert not await client.exists(link, thread)
        assert await client.get(kept) == other.encode()
        assert await client.zrange(index, 0, -1) == [json.dumps([other, "job-2"]).encode()]
        assert again.as_dict()["erased"] is False and again.parts == {"desk": 0}
    finally:
        await client.close()


async def test_a_stop_outlives_the_erasure_and_outbound_indexes_lose_the_conversation(
    redis_url: str,
) -> None:
    """Forgetting a customer who said STOP must not make their number textable again, and the
    outbound queue's global indexes must not keep naming the erased conversation."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        phone = phone_address("+14155550177")
        cid = await IdentityStore(client).resolve_conversation(phone, channel="sms")
        other = await IdentityStore(client).resolve_conversation(
            phone_address("+14155550178"), channel="sms"
        )
        consent = ConsentStore(client)
        await consent.record(phone, OPT_OUT, "sms_keyword")
        for index in (OutboundStore.DUE_KEY, OutboundStore.RECENT_KEY):
            await client.zadd(
                index, {json.dumps([cid, "n-1"]): 1, json.dumps([other, "n-2"]): 2}
            )

        receipt = await erasure.erase(client, cid)

        assert receipt.erased
        assert not await client.exists(phone.record_key)
        assert (await consent.current(phone)).state == OPT_OUT
        assert [entry.action for entry in await consent.history(phone)] == [OPT_OUT]
        for index in (OutboundStore.DUE_KEY, OutboundStore.RECENT_KEY):
            assert await client.zrange(index, 0, -1) == [json.dumps([other, "n-2"]).encode()]
    finally:
        await client.close()
