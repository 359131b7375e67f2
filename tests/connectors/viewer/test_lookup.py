"""Finding a conversation and reading a page of it, on a real Redis with the real identity and
tracker stores (no Rasa server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, UserUttered

from connectors.tracker_store import RedisEventLogTrackerStore
from connectors.viewer.lookup import NotFound, timeline_page
from connectors.viewer.wire import Query, parse_query
from omnichannel.addresses import phone_address, user_address
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import StateUnavailable
from testkit.processes import RedisServer

PHONE = "+14155550142"


def query(**body: object) -> Query:
    return parse_query(json.dumps(body).encode(), page_events=50, max_page_events=100)


async def texted_conversation(store: RedisEventLogTrackerStore, identity: IdentityStore) -> str:
    """A customer who texted once and got ten answers back."""
    cid = await identity.resolve_conversation(phone_address(PHONE), channel="sms")
    await identity.link(user_address("alice"), cid)
    tracker = store.init_tracker(cid)
    tracker.update(
        UserUttered(
            "hi", {"name": "greet", "confidence": 0.9}, input_channel="twilio_sms",
            metadata={"channel": "sms", "address": f"tel:{PHONE}"},
        )
    )  # fmt: skip
    for number in range(10):
        tracker.update(BotUttered(f"answer {number}"))
    await store.save(tracker)
    return cid


def test_a_page_of_the_log_keeps_the_channel_of_the_turn_before_it(redis_url: str) -> None:
    async def scenario() -> None:
        store = RedisEventLogTrackerStore(domain=Domain.empty(), host=redis_url)
        identity = IdentityStore()
        cid = await texted_conversation(store, identity)
        total = await store.event_count(cid)
        last = await timeline_page(identity, store, query(phone=PHONE, limit=3))
        assert last["conversation_id"] == cid and last["total_events"] == total
        assert last["page"] == {"start": total - 3, "stop": total}
        assert [entry["rendered"]["body"] for entry in last["entries"]] == [
            "answer 7",
            "answer 8",
            "answer 9",
        ]
        assert {entry["channel"] for entry in last["entries"]} == {"sms"}  # from the look-back
        first = await timeline_page(identity, store, query(user_id="alice", before=1))
        assert [entry["type"] for entry in first["entries"]] == ["user"]
        assert first["older_before"] is None and first["profile"]["phone"] == "+1415***0142"
        by_id = await timeline_page(identity, store, query(conversation_id=cid, limit=100))
        assert len(by_id["entries"]) == 11 and by_id["profile"]["user_id"] == "alice"
        with pytest.raises(NotFound, match="phone number"):
            await timeline_page(identity, store, query(phone="+14155550143"))
        with pytest.raises(NotFound, match="user id"):
            await timeline_page(identity, store, query(user_id="bob"))
        with pytest.raises(NotFound, match="no stored events"):
            await timeline_page(identity, store, query(conversation_id="c_nothing_here"))

    asyncio.run(scenario())


def test_redis_down_is_state_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = RedisServer(tmp_path).start()
    monkeypatch.setenv("REDIS_URL", server.url)

    async def scenario() -> None:
        store = RedisEventLogTrackerStore(domain=Domain.empty(), host=server.url)
        identity = IdentityStore()
        cid = await texted_conversation(store, identity)
        server.stop()
        for search in (query(phone=PHONE), query(conversation_id=cid)):
            with pytest.raises(StateUnavailable):
                await timeline_page(identity, store, search)

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
