"""The Chatwoot mirror against the fake Chatwoot, with a real Redis, the real event-log tracker
store, hand-off store and engine (no Rasa server: the engine is given the tracker store a Rasa
agent would have). Each test calls ``sync`` as the engine does, at least once per change, and
checks that Chatwoot ends up with each message once, in order, whatever failed on the way."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import List

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.chatwoot.api import ChatwootUnavailable
from connectors.chatwoot.desk import ChatwootDesk
from connectors.chatwoot.options import SECTION, ChatwootOptions
from connectors.handoff.engine import HandoffEngine
from connectors.tracker_store import RedisEventLogTrackerStore
from omnichannel import metrics
from omnichannel.addresses import phone_address
from omnichannel.handoff.state import CUSTOMER_ASKED, Actor, Handoff
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import redis_client
from omnichannel.settings import load_settings
from testkit.fake_chatwoot import AFTER_CREATE_500, AFTER_CREATE_DROP, FakeChatwoot

PHONE = "+14155550123"


class World:
    """One customer's conversation, its hand-off engine and the fake Chatwoot."""

    def __init__(self, redis_url: str, chatwoot: FakeChatwoot, **options: object) -> None:
        self.chatwoot = chatwoot
        self.store = RedisEventLogTrackerStore(Domain.empty(), host=redis_url)
        self.engine = HandoffEngine(load_settings())
        # What the engine reads of the Rasa agent it runs in: its tracker store.
        self.engine.app_context = SimpleNamespace(agent=SimpleNamespace(tracker_store=self.store))
        self.options = ChatwootOptions.parse(
            SECTION,
            {
                "url": chatwoot.url,
                "account_id": chatwoot.account_id,
                "inbox_id": chatwoot.inbox_id,
                "api_access_token": chatwoot.access_token,
                "webhook_secret": chatwoot.webhook_secret,
                "request_timeout_seconds": 2,
                **options,
            },
        )
        self.desk = ChatwootDesk(self.options, redis_url)
        self.redis_url = redis_url
        self.cid = ""
        self.clock = time.time() - 1000

    async def start(self) -> World:
        identity = IdentityStore(redis_client(self.redis_url))
        self.cid = await identity.resolve_conversation(phone_address(PHONE), channel="sms")
        return self

    def tick(self) -> float:
        self.clock += 1
        return self.clock

    async def log(self, *events: object) -> None:
        tracker = await self.store.retrieve(self.cid) or DialogueStateTracker(self.cid, [])
        for event in events:
            tracker.update(event)
        await self.store.save(tracker)

    async def customer(self, text: str) -> None:
        await self.log(
            UserUttered(
                text,
                input_channel="twilio_sms",
                metadata={"channel": "sms"},
                timestamp=self.tick(),
            )
        )

    async def assistant(self, text: str) -> None:
        await self.log(BotUttered(text, timestamp=self.tick()))

    async def hand_off(self) -> Handoff:
        handoff, created = await self.engine.store.request(
            Handoff.requested(self.cid, "sms", CUSTOMER_ASKED, self.tick())
        )
        assert created
        return handoff

    async def sync(self) -> None:
        await self.desk.sync(self.cid, self.engine)

    def conversation(self) -> int:
        [conversation] = self.chatwoot.conversation_of(self.cid)
        return conversation.id

    def contents(self, number: int = 0) -> List[str]:
        return [m.content for m in self.chatwoot.messages_of(number or self.conversation())]


@pytest.fixture
def chatwoot() -> FakeChatwoot:
    fake = FakeChatwoot(account_id=3, inbox_id=12).start()
    yield fake
    fake.stop()


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """SMS is set up, so replies can reach the customer by SMS (the summary says so)."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "0" * 32)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", "+15005550006")
    monkeypatch.setenv("DEFAULT_PHONE_REGION", "US")


async def handed_off_world(redis_url: str, chatwoot: FakeChatwoot, **options: object) -> World:
    world = await World(redis_url, chatwoot, **options).start()
    await world.customer("where is my order 12345")
    await world.assistant("Order 12345 is on its way.")
    await world.customer(f"i want to talk to a person, call me on {PHONE}")
    await world.hand_off()
    await world.assistant("I've passed this to our support team.")
    return world


async def test_a_hand_off_becomes_a_chatwoot_conversation_with_its_transcript(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await handed_off_world(redis_url, chatwoot)
    await world.sync()
    [contact] = chatwoot.contacts.values()
    assert contact.identifier == world.cid and PHONE not in contact.name
    assert contact.phone_number is None, "the number is not shared unless configured"
    [conversation] = chatwoot.conversation_of(world.cid)
    assert conversation.status == "open" and conversation.inbox_id == 12
    assert conversation.additional_attributes["omni_handoff_id"]
    messages = chatwoot.messages_of(conversation.id)
    assert messages[0].private and messages[0].content.startswith("Hand-off from SMS")
    assert [(m.message_type, m.private, m.content) for m in messages[1:]] == [
        ("incoming", False, "[SMS] where is my order 12345"),
        ("outgoing", True, "Assistant (SMS): Order 12345 is on its way."),
        ("incoming", False, "[SMS] i want to talk to a person, call me on +1415***0123"),
        ("outgoing", True, "Assistant (SMS): I've passed this to our support team."),
    ]
    assert all(m.source_id and m.source_id.startswith("omni:") for m in messages)

    await world.customer("hello? is anyone there")
    await world.sync()
    await world.sync()
    assert world.contents()[-1] == "[SMS] hello? is anyone there"
    assert len(world.contents()) == len(messages) + 1, "each message once, however many syncs"


async def test_only_the_last_messages_before_the_hand_off_are_copied(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await World(redis_url, chatwoot, transcript_messages=2).start()
    for n in range(5):
        await world.customer(f"message {n}")
    await world.hand_off()
    await world.customer("after the request")
    await world.sync()
    assert world.contents()[1:] == [
        "[SMS] message 3",
        "[SMS] message 4",
        "[SMS] after the request",
    ]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_chatwoot_failing_is_retried_and_nothing_is_lost_or_doubled(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None, status: int
) -> None:
    world = await handed_off_world(redis_url, chatwoot)
    failed = metrics.DESK_SYNCS.labels(desk="chatwoot", outcome="failed")
    before = failed._value.get()
    chatwoot.fail_next(status, count=2, operation="create_message")
    for _ in range(2):
        with pytest.raises(ChatwootUnavailable):
            await world.sync()
    assert failed._value.get() == before + 2
    await world.sync()
    assert len(world.contents()) == 5
    assert len(set(world.contents())) == 5


@pytest.mark.parametrize("how", [AFTER_CREATE_500, AFTER_CREATE_DROP])
async def test_a_post_whose_answer_was_lost_is_found_not_posted_again(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None, how: str
) -> None:
    world = await handed_off_world(redis_url, chatwoot)
    chatwoot.fail_after_create("create_message", how)
    with pytest.raises(ChatwootUnavailable):
        await world.sync()
    assert len(world.contents()) == 1, "Chatwoot has the summary; we do not know it"
    await world.sync()
    assert chatwoot.calls("list_messages") == 1, "looked for before posting again"
    assert len(world.contents()) == 5 and world.contents()[0].startswith("Hand-off from SMS")


async def test_a_conversation_created_without_an_answer_is_found_again(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await handed_off_world(redis_url, chatwoot)
    chatwoot.fail_after_create("create_conversation", AFTER_CREATE_DROP)
    with pytest.raises(ChatwootUnavailable):
        await world.sync()
    await world.sync()
    assert len(chatwoot.conversation_of(world.cid)) == 1
    assert chatwoot.calls("create_conversation") == 1
    assert len(world.contents()) == 5


async def test_the_contact_is_reused_by_the_next_hand_off_even_when_our_state_is_gone(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await handed_off_world(redis_url, chatwoot)
    await world.sync()
    await world.engine.store.update(
        world.cid, lambda h: h.hand_back(Actor.agent("chatwoot:1", "Alex"), world.tick())
    )
    await world.sync()
    await redis_client(redis_url).delete(world.desk.state.thread_key(world.cid))
    await world.customer("me again: a person please")
    await world.hand_off()
    await world.sync()
    assert len(chatwoot.contacts) == 1, "found by its identifier, not made twice"
    conversations = chatwoot.conversation_of(world.cid)
    assert len(conversations) == 2
    assert world.contents(conversations[1].id)[-1] == "[SMS] me again: a person please"


async def test_a_hand_off_closed_here_is_noted_and_resolved_in_chatwoot(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await handed_off_world(redis_url, chatwoot)
    await world.sync()
    await world.customer("thanks, bye")
    await world.engine.store.update(
        world.cid, lambda h: h.hand_back(Actor.agent("inbox-dana", "Dana"), world.tick())
    )
    await world.customer("what about my refund")  # after the hand-back: the bot's, not mirrored
    await world.sync()
    contents = world.contents()
    assert contents[-2:] == [
        "[SMS] thanks, bye",
        "Handed back to the assistant by Dana. Replies here no longer reach the customer.",
    ]
    assert chatwoot.conversations[world.conversation()].status == "resolved"
    await world.sync()
    assert world.contents() == contents and chatwoot.calls("toggle_status") == 1


async def test_a_hand_off_resolved_in_chatwoot_is_not_resolved_again(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await handed_off_world(redis_url, chatwoot)
    await world.sync()
    await world.engine.store.update(
        world.cid, lambda h: h.resolve(Actor.agent("chatwoot:1", "Alex"), world.tick())
    )
    await world.sync()
    assert world.contents()[-1].startswith("Resolved by Alex")
    assert chatwoot.calls("toggle_status") == 0


async def test_a_sync_out_of_time_leaves_the_rest_to_the_next(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await handed_off_world(redis_url, chatwoot, sync_budget_seconds=0.001)
    for n in range(6):
        await world.customer(f"held {n}")
    await world.sync()
    first = len(world.contents())
    assert first < 11
    for _ in range(12):
        await world.sync()
    assert len(world.contents()) == 11 and len(set(world.contents())) == 11


async def test_nothing_is_mirrored_of_what_is_gone_or_never_open(
    redis_url: str, chatwoot: FakeChatwoot, twilio_env: None
) -> None:
    world = await World(redis_url, chatwoot).start()
    await world.sync()
    await world.engine.store.request(
        Handoff.transferred(world.cid, "voice", CUSTOMER_ASKED, world.tick(), "+14155550100")
    )
    await world.sync()
    assert chatwoot.requests == []


def test_retries_back_off_exponentially_up_to_a_bound(
    redis_url: str, chatwoot: FakeChatwoot
) -> None:
    desk = World(redis_url, chatwoot, retry_base_seconds=2, retry_max_seconds=60).desk
    assert [desk.retry_delay(n) for n in (1, 2, 3, 5, 6, 20)] == [2, 4, 8, 32, 60, 60]
