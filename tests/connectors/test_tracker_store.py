"""The Redis event-log tracker store against a real redis-server: Rasa's tracker-store contract
(compared with Rasa's own in-memory store), append-only writes, racing writers in one and in
two OS processes, Redis going away and coming back, and loud failures through Rasa's
FailSafeTrackerStore."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import time
from pathlib import Path
from typing import List

import pytest
import redis
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import FailSafeTrackerStore, InMemoryTrackerStore, create_tracker_store
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    EntitiesAdded,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity
from rasa.utils.endpoints import EndpointConfig

from connectors.rasa_patches import install_loud_state_failures
from connectors.tracker_store import RedisEventLogTrackerStore
from omnichannel.errors import ConfigError
from omnichannel.redis_client import StateUnavailable, conversation_key, subscriber
from testkit.processes import ROOT, RedisServer, python
from testkit.redis_topologies import RedisDeployment
from tests.redis_matrix import (
    AsyncRedis,
    command_stats,
    inspector,
    reset_command_stats,
    sync_client,
)

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet, track_order]
slots:
  channel:
    type: text
    influence_conversation: false
    mappings: [{type: custom}]
  order_id:
    type: text
    influence_conversation: false
    mappings: [{type: custom}]
responses:
  utter_greet: [{text: "Hi!"}]
"""
)


def session_start(metadata: dict | None = None) -> List[Event]:
    """As Rasa's processor logs a session start: metadata of the session's first message goes
    into a slot set just before ``action_session_start`` and is carried over after it."""
    if metadata is None:
        return [
            ActionExecuted("action_session_start"),
            SessionStarted(),
            ActionExecuted("action_listen"),
        ]
    return [
        SlotSet("session_started_metadata", metadata),
        ActionExecuted("action_session_start"),
        SessionStarted(),
        SlotSet("session_started_metadata", metadata),
        ActionExecuted("action_listen"),
    ]


def turn(label: str, channel: str = "chat") -> List[Event]:
    """One user turn as Rasa logs it: the message, a slot, the bot's answer, back to listening."""
    return [
        UserUttered(
            f"where is order {label}?",
            intent={"name": "track_order", "confidence": 0.93},
            entities=[{"entity": "order_id", "value": label, "start": 15, "end": 15 + len(label)}],
            input_channel="webchat",
            metadata={"channel": channel, "address": "anon:k3J9xQ2m"},
        ),
        SlotSet("order_id", label),
        SlotSet("channel", channel),
        ActionExecuted("utter_greet", policy="RulePolicy", confidence=1.0),
        BotUttered(f"order {label} is on its way", metadata={"utter_action": "utter_greet"}),
        ActionExecuted("action_listen", policy="RulePolicy", confidence=1.0),
    ]


def make_store(url: str, **options: object) -> RedisEventLogTrackerStore:
    return RedisEventLogTrackerStore(domain=DOMAIN, host=url, **options)


async def take_turn(store: RedisEventLogTrackerStore, cid: str, events: List[Event]) -> None:
    tracker = await store.retrieve(cid) or store.init_tracker(cid)
    for event in events:
        tracker.update(event)
    await store.save(tracker)


def event_dicts(tracker: DialogueStateTracker) -> List[dict]:
    return [event.as_dict() for event in tracker.events]


@pytest.fixture
async def client(redis_deployment: RedisDeployment):
    """Reads what the store wrote, on whichever deployment the test runs."""
    connection = inspector(redis_deployment.url)
    yield connection
    await connection.close()


# --- configuration ---------------------------------------------------------------------------


def test_endpoints_yml_entry_builds_the_store(redis_url: str) -> None:
    config = EndpointConfig.from_dict(
        {
            "type": "connectors.tracker_store.RedisEventLogTrackerStore",
            "url": redis_url,
            "inactivity_expiry": "600",
        }
    )
    store = create_tracker_store(config, DOMAIN)
    assert isinstance(store, RedisEventLogTrackerStore)
    assert store.url == redis_url
    assert store.inactivity_expiry == 600
    assert store.domain is DOMAIN


@pytest.mark.unit
@pytest.mark.parametrize(
    "options",
    [
        {"inactivity_expiry": -1},
        {"inactivity_expiry": "a month"},
        {"record_expiry": 30},
        {"key_prefix": "two:parts"},
        {"port": "http"},
    ],
)
def test_bad_options_are_config_errors_not_a_silent_in_memory_store(options: dict) -> None:
    config = EndpointConfig.from_dict(
        {
            "type": "connectors.tracker_store.RedisEventLogTrackerStore",
            "url": "redis://x",
            **options,
        }
    )
    with pytest.raises(ConfigError, match=next(iter(options))):
        create_tracker_store(config, DOMAIN)


# --- the tracker-store contract --------------------------------------------------------------


async def test_round_trip_appends_only_new_events(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    store = make_store(redis_deployment.url)
    events_key = conversation_key("c_round", "events")
    assert await store.retrieve("c_round") is None

    tracker = store.init_tracker("c_round")
    for event in session_start() + turn("A1"):
        tracker.update(event)
    await store.save(tracker)
    assert await client.llen(events_key) == 9

    await store.save(tracker)  # nothing new
    assert await client.llen(events_key) == 9

    retrieved = await store.retrieve("c_round")
    assert event_dicts(retrieved) == event_dicts(tracker)
    assert retrieved.current_state(EventVerbosity.ALL) == tracker.current_state(EventVerbosity.ALL)
    assert retrieved.get_slot("order_id") == "A1"

    for event in turn("B2"):
        retrieved.update(event)
    await store.save(retrieved)
    assert await client.llen(events_key) == 15
    stored = [json.loads(raw) for raw in await client.lrange(events_key, 0, -1)]
    assert stored == event_dicts(retrieved)
    assert await store.event_count("c_round") == 15
    assert await store.read_events("c_round", 10, 11) == stored[10:12]

    await client.delete(events_key)  # lost (e.g. a crash before the append-only file synced)
    await store.save(retrieved)  # nothing new for this tracker, but the log must hold it
    assert [json.loads(raw) for raw in await client.lrange(events_key, 0, -1)] == stored


async def test_multi_session_reads_match_rasas_in_memory_store(
    redis_deployment: RedisDeployment,
) -> None:
    """Three sessions written turn by turn; the last one started by a second replica."""
    replica_a, replica_b = make_store(redis_deployment.url), make_store(redis_deployment.url)
    reference = InMemoryTrackerStore(DOMAIN)
    every_event: List[Event] = [ActionExecuted("action_listen")]
    turns = [
        (replica_a, session_start({"channel": "voice"}) + turn("V1", "voice")),
        (replica_a, turn("V2", "voice")),
        (replica_b, session_start({"channel": "sms"}) + turn("S1", "sms")),
        (replica_a, turn("S2", "sms")),
        (replica_b, session_start() + turn("W1")),
        (replica_a, turn("W2")),
    ]
    await take_turn(replica_a, "c_sessions", every_event[:1])
    for store, events in turns:
        await take_turn(store, "c_sessions", events)
        every_event.extend(events)
    full = reference.init_tracker("c_sessions")
    for event in every_event:
        full.update(event)
    await reference.save(full)

    expected_last = await reference.retrieve("c_sessions")
    expected_full = await reference.retrieve_full_tracker("c_sessions")
    assert len(expected_last.events) == len(session_start() + turn("W1") + turn("W2"))

    cold_replica = make_store(redis_deployment.url)
    for store in (replica_a, replica_b, cold_replica):
        last = await store.retrieve("c_sessions")
        assert event_dicts(last) == event_dicts(expected_last)
        assert last.current_state(EventVerbosity.ALL) == expected_last.current_state(
            EventVerbosity.ALL
        )
        full_tracker = await store.retrieve_full_tracker("c_sessions")
        assert event_dicts(full_tracker) == event_dicts(expected_full)
        assert full_tracker.current_state(EventVerbosity.ALL) == expected_full.current_state(
            EventVerbosity.ALL
        )


class CollectingBroker(EventBroker):
    """Rasa's event-broker interface, keeping what it is given."""

    def __init__(self) -> None:
        self.published: List[dict] = []

    def publish(self, event: dict) -> None:
        self.published.append(event)


async def test_rasas_event_broker_gets_each_new_event_once(
    redis_deployment: RedisDeployment,
) -> None:
    broker = CollectingBroker()
    store = RedisEventLogTrackerStore(domain=DOMAIN, host=redis_deployment.url, event_broker=broker)
    await take_turn(store, "c_broker", session_start() + turn("A1"))
    await take_turn(store, "c_broker", turn("A2"))
    await store.save(await store.retrieve("c_broker"))

    stored = await store.read_events("c_broker")
    assert broker.published == [{"sender_id": "c_broker", **event} for event in stored]


async def test_handed_out_trackers_are_independent_of_the_cache(
    redis_deployment: RedisDeployment,
) -> None:
    store = make_store(redis_deployment.url)
    await take_turn(store, "c_copy", session_start() + turn("A1"))
    first = await store.retrieve("c_copy")
    first.update(SlotSet("order_id", "unsaved"))
    first.update(UserUttered("never saved"))

    second = await store.retrieve("c_copy")
    assert second.get_slot("order_id") == "A1"
    assert second.latest_message.text == "where is order A1?"
    assert len(second.events) == len(first.events) - 2


async def test_a_replaced_log_is_not_mistaken_for_the_cached_one(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    """The conversation expired and a new one with the same id grew past the cached length."""
    store = make_store(redis_deployment.url)
    await take_turn(store, "c_reborn", session_start() + turn("OLD"))
    assert (await store.retrieve("c_reborn")).get_slot("order_id") == "OLD"
    await client.delete(conversation_key("c_reborn", "events"))

    other_replica = make_store(redis_deployment.url)
    await take_turn(other_replica, "c_reborn", session_start() + turn("NEW1") + turn("NEW2"))
    tracker = await store.retrieve("c_reborn")
    assert tracker.get_slot("order_id") == "NEW2"
    assert [e.text for e in tracker.events if isinstance(e, UserUttered)] == [
        "where is order NEW1?",
        "where is order NEW2?",
    ]


# --- racing writers ---------------------------------------------------------------------------


async def test_racing_replicas_lose_and_duplicate_nothing(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    replica_a, replica_b = make_store(redis_deployment.url), make_store(redis_deployment.url)
    await take_turn(replica_a, "c_race", session_start())
    seen_by_a = await replica_a.retrieve("c_race")
    seen_by_b = await replica_b.retrieve("c_race")
    for event in turn("A"):
        seen_by_a.update(event)
    for event in turn("B"):
        seen_by_b.update(event)

    await asyncio.gather(replica_a.save(seen_by_a), replica_b.save(seen_by_b))
    for event in turn("A+"):
        seen_by_a.update(event)
    # The same tracker saved twice at once (a retried save racing the original one).
    await asyncio.gather(replica_a.save(seen_by_a), replica_a.save(seen_by_a))

    stored = [
        json.loads(raw) for raw in await client.lrange(conversation_key("c_race", "events"), 0, -1)
    ]
    assert len(stored) == 3 + 6 + 6 + 6
    for label in ("A", "B", "A+"):
        texts = [e.get("text") for e in stored]
        start = texts.index(f"where is order {label}?")
        assert stored[start : start + 6] == [
            e.as_dict() for e in turn_of(seen_by_a, seen_by_b, label=label)
        ]
    # Each replica's next read reflects the log as it is, in log order.
    for store in (replica_a, replica_b):
        assert event_dicts(await store.retrieve("c_race")) == stored


def turn_of(*trackers: DialogueStateTracker, label: str) -> List[Event]:
    for tracker in trackers:
        events = list(tracker.events)
        for index, event in enumerate(events):
            if isinstance(event, UserUttered) and event.text == f"where is order {label}?":
                return events[index : index + 6]
    raise AssertionError(label)


async def test_a_tracker_from_elsewhere_adds_only_what_the_log_lacks(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    """E.g. a full tracker rebuilt by another component, or a log cut short by a crash."""
    store = make_store(redis_deployment.url)
    await take_turn(store, "c_foreign", session_start() + turn("A1") + turn("A2"))
    stored = await store.read_events("c_foreign")
    rebuilt = DialogueStateTracker.from_dict("c_foreign", stored, DOMAIN.slots)
    for event in turn("A3"):
        rebuilt.update(event)
    await make_store(redis_deployment.url).save(rebuilt)
    assert await store.read_events("c_foreign") == event_dicts(rebuilt)

    await client.ltrim(conversation_key("c_foreign", "events"), 0, 9)  # lose the tail
    tracker = await store.retrieve("c_foreign")
    assert len(tracker.events) == 10
    await store.save(rebuilt)
    assert await store.read_events("c_foreign") == event_dicts(rebuilt)


def turn_with_entities_added(label: str) -> List[Event]:
    """A turn in which TEDPolicy added an entity to the user message (``EntitiesAdded``)."""
    events = turn(label)
    added = {"entity": "channel", "value": "chat", "start": 0, "end": 5, "extractor": "TED"}
    return events[:1] + [EntitiesAdded([added])] + events[1:]


async def test_a_tracker_rebuilt_from_a_log_with_entities_added_appends_nothing(
    redis_deployment: RedisDeployment,
) -> None:
    """Replaying ``EntitiesAdded`` changes the rebuilt user message (Rasa's deserialised
    ``UserUttered`` shares its entity list with its ``parse_data``), so that message no longer
    serialises as it was logged; it is the logged one all the same."""
    store = make_store(redis_deployment.url)
    await take_turn(store, "c_ted", session_start() + turn_with_entities_added("A1"))
    await take_turn(store, "c_ted", turn_with_entities_added("A2"))
    stored = await store.read_events("c_ted")
    assert len(stored) == 3 + 2 * 7

    # Copies: the replay changes even the dicts the events were read from.
    rebuilt_by_http_api = DialogueStateTracker.from_dict(
        "c_ted", copy.deepcopy(stored), DOMAIN.slots
    )
    rebuilt_from_events = DialogueStateTracker.from_events(
        "c_ted", [Event.from_parameters(event) for event in copy.deepcopy(stored)], DOMAIN.slots
    )
    assert len(rebuilt_by_http_api.latest_message.entities) == 2
    for rebuilt in (rebuilt_by_http_api, rebuilt_from_events):
        for saver in (store, make_store(redis_deployment.url)):
            await saver.save(rebuilt)
            assert await store.read_events("c_ted") == stored

    new_turn = turn_with_entities_added("A3")
    for event in new_turn:
        rebuilt_by_http_api.update(event)
    await make_store(redis_deployment.url).save(rebuilt_by_http_api)
    assert await store.read_events("c_ted") == stored + [event.as_dict() for event in new_turn]
    assert (await store.retrieve("c_ted")).get_slot("order_id") == "A3"


WRITER = """
import asyncio, random, sys
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from connectors.tracker_store import RedisEventLogTrackerStore
from omnichannel.redis_client import redis_client

async def main():
    url, cid, name, turns = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = RedisEventLogTrackerStore(host=url)
    client = redis_client(store.redis)  # ready before the gate opens, as a running replica's
    await client.incr("race:ready")
    # Short waits: a blocked read longer than the client's socket timeout (5 s) fails, and the
    # other writer may take longer than that to import Rasa on a loaded machine.
    for _ in range(300):
        if await client.blpop(["race:go"], timeout=1):
            break
    for number in range(turns):
        tracker = await store.retrieve(cid)
        tracker.update(UserUttered(f"{name} {number}", intent={"name": "greet"}))
        await asyncio.sleep(random.uniform(0, 0.004))
        tracker.update(ActionExecuted("utter_greet", policy=name))
        tracker.update(BotUttered(f"{name} {number} answered"))
        tracker.update(ActionExecuted("action_listen", policy=name))
        await store.save(tracker)
    await client.close()

asyncio.run(main())
"""


def test_two_processes_appending_to_one_conversation_keep_every_event_once(
    redis_deployment: RedisDeployment,
) -> None:
    turns = 40
    url = redis_deployment.url
    asyncio.run(take_turn(make_store(url), "c_two", session_start()))
    writers = [
        subprocess.Popen(
            [python(), "-c", WRITER, url, "c_two", name, str(turns)],
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    with sync_client(url) as inspect:
        # Each writer imports Rasa first (with TensorFlow): slow on a loaded machine.
        deadline = time.monotonic() + 300
        while int(inspect.get("race:ready") or 0) < 2:
            assert time.monotonic() < deadline, "writers did not start"
            for writer in writers:
                assert writer.poll() is None, writer.stderr.read()
            time.sleep(0.02)
        inspect.rpush("race:go", "go", "go")
        for writer in writers:
            _, stderr = writer.communicate(timeout=300)
            assert writer.returncode == 0, stderr
        stored = [json.loads(raw) for raw in inspect.lrange("omni:{c_two}:events", 0, -1)]

    assert len(stored) == 3 + 2 * turns * 4
    user_texts = [e["text"] for e in stored if e["event"] == "user"]
    assert sorted(user_texts) == sorted(
        f"{name} {n}" for name in ("p1", "p2") for n in range(turns)
    )
    for name in ("p1", "p2"):
        mine = [text for text in user_texts if text.startswith(name)]
        assert mine == [f"{name} {n}" for n in range(turns)], "a writer's turns out of order"
    for index, event in enumerate(stored):
        if event["event"] == "user":
            name = event["text"].split()[0]
            assert [e["event"] for e in stored[index + 1 : index + 4]] == [
                "action",
                "bot",
                "action",
            ]
            assert stored[index + 2]["text"] == event["text"] + " answered"
            assert stored[index + 1]["policy"] == stored[index + 3]["policy"] == name
    owners = [text.split()[0] for text in user_texts]
    switches = sum(1 for a, b in zip(owners[:-1], owners[1:], strict=True) if a != b)
    assert switches > 1, "the two writers never overlapped: the race was not exercised"


# --- Redis failures ---------------------------------------------------------------------------


def wait_until_loaded(url: str) -> None:
    """A restarted Redis listens before it has replayed its append-only file."""
    with redis.Redis.from_url(url) as sync_client:
        deadline = time.monotonic() + 10
        while sync_client.info("persistence")["loading"]:
            assert time.monotonic() < deadline, "Redis did not finish loading its data"
            time.sleep(0.02)


async def test_redis_stopped_mid_conversation_then_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        store = make_store(server.url)
        await take_turn(store, "c_outage", session_start() + turn("A1"))
        await take_turn(store, "c_outage", turn("A2"))
        before = await store.read_events("c_outage")
        tracker = await store.retrieve("c_outage")
        for event in turn("A3"):
            tracker.update(event)

        server.stop()
        with pytest.raises(StateUnavailable, match="append to the log"):
            await store.save(tracker)
        with pytest.raises(StateUnavailable):
            await store.retrieve("c_outage")
        with pytest.raises(StateUnavailable):
            await store.keys()

        server = RedisServer(server.data_dir, port=server.port).start()
        wait_until_loaded(server.url)
        assert await store.read_events("c_outage") == before, "the failed save left a trace"
        again = await make_store(server.url).retrieve("c_outage")
        assert event_dicts(again) == before
        await store.save(tracker)  # the turn that failed, retried
        after = await store.read_events("c_outage")
        assert after == before + [e.as_dict() for e in turn_of(tracker, label="A3")]
        assert (await store.retrieve("c_outage")).get_slot("order_id") == "A3"
    finally:
        server.stop()


async def test_loud_state_failures_replace_rasas_silent_fallback(tmp_path: Path) -> None:
    from rasa.core.agent import Agent

    server = RedisServer(tmp_path / "redis").start()
    store = make_store(server.url)
    try:
        await take_turn(store, "c_loud", session_start() + turn("A1"))
    finally:
        server.stop()
    tracker = store.init_tracker("c_loud")
    for event in turn("A2"):
        tracker.update(event)

    stock = FailSafeTrackerStore(store)
    await stock.save(tracker)  # Rasa's behaviour: swallowed into an unread in-memory store
    assert await stock.fallback_tracker_store.retrieve("c_loud") is not None
    assert await stock.retrieve("c_loud") is None  # and a read "finds" a new conversation

    agent = Agent(tracker_store=store)
    for target in (agent, stock):
        install_loud_state_failures(target)
        install_loud_state_failures(target)  # idempotent
        fail_safe = target.tracker_store if target is agent else target
        assert isinstance(fail_safe, FailSafeTrackerStore)
        with pytest.raises(StateUnavailable, match="tracker store could not"):
            await fail_safe.save(tracker)
        with pytest.raises(StateUnavailable, match="read the last session"):
            await fail_safe.retrieve("c_loud")
        with pytest.raises(StateUnavailable):
            await fail_safe.retrieve_full_tracker("c_loud")
        with pytest.raises(StateUnavailable):
            await fail_safe.keys()
    assert agent.tracker_store._fallback_tracker_store is None, "something fell back silently"


# --- keys, expiry, fan-out --------------------------------------------------------------------


async def test_keys_lists_every_conversation_by_scan(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    store = make_store(redis_deployment.url)
    await reset_command_stats(client)
    ids = [f"c_many_{i:04d}" for i in range(1500)]
    async with client.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.rpush(
                conversation_key(cid, "events"),
                json.dumps(ActionExecuted("action_listen").as_dict()),
            )
        pipe.set(conversation_key("c_other", "profile"), "not a tracker")
        await pipe.execute()
    await take_turn(store, "c_real", session_start())

    assert sorted(await store.keys()) == sorted(ids + ["c_real"])
    assert all(stats.get("cmdstat_keys") is None for stats in await command_stats(client))


async def test_keys_lists_ids_with_braces_colons_and_glob_characters(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    """Rasa's REST channel and HTTP API take the id from the client; ``rasa export`` lists
    conversations through ``keys()``, so every id ``save()`` accepts must come back."""
    store = make_store(redis_deployment.url)
    ids = ["c_plain", "rest}user", "{json}", "a}:b", "x:y:z", "*", "a*b}{", "[?]"]
    logs = {cid: session_start() for cid in ids}
    for cid, events in logs.items():
        await take_turn(store, cid, events)
    # Matches the pattern but is no event log: the web chat's dedupe record of a message
    # whose client-chosen id is "x}:events".
    await client.set(conversation_key("c_chat", "webchat", "client_message", "x}:events"), b"1")

    assert sorted(await store.keys()) == sorted(ids)
    for cid, events in logs.items():
        assert event_dicts(await store.retrieve(cid)) == [e.as_dict() for e in events]
    assert all(stats.get("cmdstat_keys") is None for stats in await command_stats(client))


async def test_every_save_slides_the_expiry_of_all_conversation_keys(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    store = make_store(redis_deployment.url, inactivity_expiry=600)
    keys = [conversation_key("c_ttl", "events"), conversation_key("c_ttl", "session_start")]

    async def expire_in_600_s_from(saved_at: float) -> None:
        """Each key's expiry was set to 600 s by the save that started at ``saved_at``."""
        since = time.monotonic() - saved_at
        for key in keys:
            assert 600 - since - 1 <= await client.ttl(key) <= 600

    saved_at = time.monotonic()
    await take_turn(store, "c_ttl", session_start() + turn("A1"))
    await expire_in_600_s_from(saved_at)

    for key in keys:
        await client.expire(key, 5)
    saved_at = time.monotonic()
    await take_turn(store, "c_ttl", turn("A2"))
    await expire_in_600_s_from(saved_at)

    for key in keys:
        await client.expire(key, 5)
    saved_at = time.monotonic()
    await store.save(await store.retrieve("c_ttl"))  # activity without new events
    await expire_in_600_s_from(saved_at)

    await take_turn(make_store(redis_deployment.url, inactivity_expiry=0), "c_ttl", turn("A3"))
    for key in keys:
        assert await client.ttl(key) == -1


async def test_appended_events_are_published_for_live_chat(
    redis_deployment: RedisDeployment, client: AsyncRedis
) -> None:
    store = make_store(redis_deployment.url)
    pubsub = await subscriber(redis_deployment.url)
    await pubsub.subscribe(conversation_key("c_live", "live"))
    assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
    try:
        events = session_start() + turn("A1")
        await take_turn(store, "c_live", events)
        received = []
        deadline = time.monotonic() + 5
        while len(received) < len(events) and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message:
                received.append(json.loads(message["data"]))
        assert received == [{"conversation_id": "c_live", **e.as_dict()} for e in events]
    finally:
        await pubsub.close()
