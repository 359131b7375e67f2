"""The mirror's state in a real Redis: the link back from Chatwoot, notes due for agents once,
deliveries taken once, every key expiring."""

from __future__ import annotations

import redis
import redis.asyncio

from connectors.chatwoot.state import KEEP_SECONDS, ChatwootState


async def test_the_mirror_starts_with_its_link_back_and_keeps_its_cursor(redis_url: str) -> None:
    state = ChatwootState(redis_url, account_id=3)
    thread = await state.start_mirror("c_1", "h1", 42, cursor=17)
    assert (thread.handoff_id, thread.conversation, thread.cursor) == ("h1", 42, 17)
    assert not thread.done("summary") and thread.pending == ""
    link = await state.link(42)
    assert (link.conversation_id, link.handoff_id) == ("c_1", "h1")
    assert await ChatwootState(redis_url, account_id=4).link(42) is None, "per account"
    thread = await state.update("c_1", pending="omni:h1:e17")
    thread = await state.update("c_1", cursor=18, pending="", summary=1)
    assert (thread.cursor, thread.pending, thread.done("summary")) == (18, "", True)


async def test_a_new_mirror_resets_the_steps_but_keeps_the_contact(redis_url: str) -> None:
    state = ChatwootState(redis_url, account_id=3)
    await state.update("c_1", contact_id=9, source_id="s-1")
    await state.start_mirror("c_1", "h1", 42, cursor=0)
    await state.update("c_1", summary=1, closing_note=1, closed=1)
    thread = await state.start_mirror("c_1", "h2", 43, cursor=50)
    assert (thread.contact_id, thread.source_id) == (9, "s-1")
    assert not any(thread.done(step) for step in ("summary", "closing_note", "closed"))


async def test_a_notice_is_queued_once_per_id(redis_url: str) -> None:
    state = ChatwootState(redis_url, account_id=3)
    assert await state.add_notice("c_1", "reply-5", 42, "Not sent: …")
    assert not await state.add_notice("c_1", "reply-5", 42, "Not sent: …")
    assert await state.add_notice("c_1", "reply-6", 41, "Not sent either")
    notices = await state.notices("c_1", 0)
    assert [(n["id"], n["conversation"]) for n in notices] == [("reply-5", 42), ("reply-6", 41)]
    assert [n["id"] for n in await state.notices("c_1", 1)] == ["reply-6"]


async def test_a_delivery_is_taken_once_by_id_and_by_signature(redis_url: str) -> None:
    state = ChatwootState(redis_url, account_id=3)
    assert await state.take_delivery("d-1", "a" * 64, 600)
    assert not await state.take_delivery("d-1", "a" * 64, 600), "the same request again"
    assert not await state.take_delivery("d-1", "b" * 64, 600), "a retry re-signed"
    assert not await state.take_delivery("d-2", "a" * 64, 600), "another id, same signature"
    await state.release_delivery("d-3", "c" * 64)
    assert await state.take_delivery("d-3", "c" * 64, 600)
    await state.release_delivery("d-3", "c" * 64)
    assert await state.take_delivery("d-3", "c" * 64, 600), "released after a failure"
    assert await state.take_delivery(None, None, 600), "unsigned: nothing to remember"


async def test_every_key_expires(redis_url: str) -> None:
    state = ChatwootState(redis_url, account_id=3)
    await state.start_mirror("c_1", "h1", 42, cursor=0)
    await state.add_notice("c_1", "reply-5", 42, "Not sent")
    await state.take_delivery("d-1", "a" * 64, 600)
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter())
        assert len(keys) == 6
        for key in keys:
            assert 0 < client.ttl(key) <= KEEP_SECONDS, key


async def test_erasure_drops_the_link_back_from_chatwoot(redis_url: str) -> None:
    """The link is kept under Chatwoot's conversation number, outside the conversation's own
    keys: the desk's eraser finds it through the thread (omnichannel/erasure.py runs it)."""
    state = ChatwootState(redis_url, account_id=3)
    await state.start_mirror("c_1", "h1", 42, cursor=0)
    await state.start_mirror("c_2", "h2", 43, cursor=0)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await state.forget(client, "c_1") == 1
        assert await state.forget(client, "c_1") == 0  # gone: erasing again is harmless
    finally:
        await client.close()
    assert await state.link(42) is None
    assert (await state.link(43)).conversation_id == "c_2"
    assert await state.forget(state._redis(), "c_unknown") == 0
