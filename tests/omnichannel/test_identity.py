"""Identity against a real redis-server: the conversation index, contact profiles, and first
contact racing between two OS processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from omnichannel.addresses import (
    anon_address,
    phone_address,
    user_address,
)
from omnichannel.identity import SMS_FAILURES_KEPT, IdentityStore, UnknownConversation
from omnichannel.redis_client import StateUnavailable, conversation_key
from testkit.processes import ROOT, RedisServer, python
from testkit.redis_topologies import RedisDeployment
from tests.redis_matrix import inspector, sync_client

CONVERSATION_ID = re.compile(r"c_[A-Za-z0-9_-]{22}")
ANON_ID = "k3J9xQ2mT7vL0pZ8aB4c"


@pytest.fixture
async def client(redis_deployment: RedisDeployment):
    """Reads what the store wrote, on whichever deployment the test runs."""
    connection = inspector(redis_deployment.url)
    yield connection
    await connection.close()


@pytest.fixture
def store(redis_deployment: RedisDeployment) -> IdentityStore:
    """The store as the connectors build it: on REDIS_URL's client."""
    return IdentityStore()


# --- the conversation index -------------------------------------------------------------------


async def test_resolve_creates_then_finds_with_default_client(
    redis_deployment: RedisDeployment,
) -> None:
    store = IdentityStore()
    tel = phone_address("+14155552671")
    assert await store.lookup(tel) is None

    cid = await store.resolve_conversation(tel, channel="voice")
    assert CONVERSATION_ID.fullmatch(cid)
    assert await store.resolve_conversation(phone_address("whatsapp:+1 415 555 2671")) == cid
    assert await store.lookup(tel) == cid
    assert await store.conversation_for_phone("tel:+14155552671") == cid
    assert await store.conversation_for_phone("(415) 555-2671") == cid
    assert await store.conversation_for_phone("+12125553000") is None
    other = await store.resolve_conversation(phone_address("+12125553000"))
    assert other != cid

    with sync_client(redis_deployment.url) as inspect:
        keys = [key.decode() for key in inspect.scan_iter(count=1000)]
    assert keys and not any("4155552671" in key or "2125553000" in key for key in keys)


async def test_link_to_adopts_the_phone_conversation_for_a_new_user(store: IdentityStore) -> None:
    tel = phone_address("+14155552671")
    phone_cid = await store.resolve_conversation(tel, channel="voice")

    user = user_address("alice")
    assert await store.resolve_conversation(user, channel="chat", link_to=[tel]) == phone_cid
    assert await store.lookup(user) == phone_cid
    profile = await store.profile(phone_cid)
    assert (profile.phone, profile.user_id) == ("+14155552671", "alice")
    assert set(profile.channels) == {"voice", "chat"}


async def test_new_user_with_new_phone_maps_both_to_one_new_conversation(
    store: IdentityStore,
) -> None:
    user, tel = user_address("bob"), phone_address("+12125553000")
    cid = await store.resolve_conversation(user, channel="chat", link_to=[tel])
    assert await store.lookup(tel) == cid
    assert await store.resolve_conversation(tel, channel="sms") == cid
    profile = await store.profile(cid)
    assert (profile.phone, profile.user_id) == ("+12125553000", "bob")


async def test_mapped_addresses_are_never_moved(store: IdentityStore) -> None:
    tel = phone_address("+14155552671")
    phone_cid = await store.resolve_conversation(tel, channel="sms")
    user = user_address("carol")
    user_cid = await store.resolve_conversation(user, channel="chat")
    assert user_cid != phone_cid

    assert await store.resolve_conversation(user, link_to=[tel]) == user_cid
    assert await store.lookup(tel) == phone_cid
    assert (await store.profile(user_cid)).phone is None

    assert await store.link(tel, user_cid) == phone_cid
    assert await store.lookup(tel) == phone_cid

    anon = anon_address(ANON_ID)
    assert await store.link(anon, user_cid) == user_cid
    assert await store.resolve_conversation(anon) == user_cid
    assert await store.link(user_address("dave"), user_cid) == user_cid
    assert (await store.profile(user_cid)).user_id == "carol"


async def test_link_to_an_unknown_conversation_is_refused(store: IdentityStore) -> None:
    anon = anon_address(ANON_ID)
    with pytest.raises(UnknownConversation):
        await store.link(anon, "c_doesnotexist0000000000")
    assert await store.lookup(anon) is None


async def test_profile_fields(store: IdentityStore) -> None:
    before = time.time()
    cid = await store.resolve_conversation(phone_address("+14155552671"), channel="voice")
    profile = await store.profile(cid)
    assert profile.conversation_id == cid
    assert profile.phone == "+14155552671" and profile.user_id is None
    assert before <= profile.channels["voice"] <= time.time()
    assert not profile.sms_opted_out and profile.sms_opted_out_at is None
    assert profile.sms_failures == [] and profile.extra == {}

    voice_seen = profile.channels["voice"]
    await store.record_channel(cid, "sms")
    await store.set_extra(cid, "language", "es")
    await store.set_extra(cid, "language", "fr")
    profile = await store.profile(cid)
    assert set(profile.channels) == {"voice", "sms"} and profile.channels["voice"] == voice_seen
    assert profile.channels["sms"] >= voice_seen
    assert profile.extra == {"language": "fr"}

    with pytest.raises(ValueError):
        await store.record_channel(cid, "sms:evil")
    with pytest.raises(ValueError):
        await store.set_extra(cid, "", "x")
    with pytest.raises(ValueError):
        await store.resolve_conversation(phone_address("+14155552671"), channel="")

    empty = await store.profile("c_neverseen000000000000")
    assert empty.phone is None and empty.channels == {} and not empty.sms_opted_out


async def test_sms_opt_out_and_back_in(store: IdentityStore) -> None:
    cid = await store.resolve_conversation(phone_address("+14155552671"), channel="sms")
    before = time.time()
    await store.set_sms_opt_out(cid, True)
    profile = await store.profile(cid)
    assert profile.sms_opted_out and before <= profile.sms_opted_out_at <= time.time()

    await store.set_sms_opt_out(cid, False)
    profile = await store.profile(cid)
    assert not profile.sms_opted_out and profile.sms_opted_out_at is None
    assert profile.phone == "+14155552671"


async def test_sms_failures_keep_only_the_most_recent(store: IdentityStore) -> None:
    cid = await store.resolve_conversation(phone_address("+14155552671"), channel="sms")
    total = SMS_FAILURES_KEPT + 5
    for index in range(total):
        await store.record_sms_failure(
            cid, sid=f"SM{index}", status="undelivered", error_code="30003" if index else None
        )
    failures = (await store.profile(cid)).sms_failures
    assert [failure["sid"] for failure in failures] == [f"SM{i}" for i in range(5, total)]
    assert failures[-1]["status"] == "undelivered" and failures[-1]["error_code"] == "30003"
    assert failures[0]["at"] <= failures[-1]["at"] <= time.time()


async def test_forget_erases_profile_and_mappings(store: IdentityStore, client) -> None:
    tel, user = phone_address("+14155552671"), user_address("erin")
    cid = await store.resolve_conversation(tel, channel="voice", link_to=[user])
    await store.record_sms_failure(cid, sid="SM1", status="failed", error_code="30006")
    await store.forget(cid)

    assert await store.lookup(tel) is None and await store.lookup(user) is None
    assert await client.exists(conversation_key(cid, "profile")) == 0
    assert (await store.profile(cid)).sms_failures == []
    assert await store.resolve_conversation(tel) != cid


# --- first contact from two OS processes ------------------------------------------------------

RACER = """
import asyncio, json, sys
from omnichannel.identity import IdentityStore
from omnichannel.addresses import parse_address, phone_address
from omnichannel.redis_client import redis_client

async def main():
    url, jobs = sys.argv[1], json.loads(sys.argv[2])
    client = redis_client(url)
    store = IdentityStore(client)
    await client.incr("race:ready")
    await client.blpop(["race:go"], timeout=30)

    async def run(job):
        address = phone_address(job["phone"], "US") if "phone" in job else parse_address(
            job["address"])
        link_to = [parse_address(text) for text in job.get("link_to", [])]
        return await store.resolve_conversation(address, channel=job["channel"], link_to=link_to)

    print(json.dumps(await asyncio.gather(*(run(job) for job in jobs))))
    await client.close()

asyncio.run(main())
"""

RACE_SIZE = 50


def _start_racer(url: str, jobs: list[dict]) -> subprocess.Popen:
    return subprocess.Popen(
        [python(), "-c", RACER, url, json.dumps(jobs)],
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_first_contact_and_link_races_between_two_processes_end_in_one_conversation(
    redis_deployment: RedisDeployment,
) -> None:
    """A call and an SMS from each of 50 new numbers (first contact), and a verified-phone web
    chat login racing an SMS from each of 50 more (link), handled by two processes at the same
    moment. On a cluster the phone's and the user's records live in different slots."""
    calls = [f"+1415555{2600 + i:04d}" for i in range(RACE_SIZE)]
    logins = [f"+1212555{3000 + i:04d}" for i in range(RACE_SIZE)]
    voice_and_chat = [{"phone": number, "channel": "voice"} for number in calls] + [
        {"address": f"user:racer-{i}", "link_to": [f"tel:{number}"], "channel": "chat"}
        for i, number in enumerate(logins)
    ]
    sms = (
        [  # the same numbers, as Twilio and a national-format caller id would give them
            {"phone": f"({number[2:5]}) {number[5:8]}-{number[8:]}", "channel": "sms"}
            for number in calls
        ]
        + [{"phone": f"whatsapp:{number}", "channel": "sms"} for number in logins]
    )

    url = redis_deployment.url
    racers = [_start_racer(url, voice_and_chat), _start_racer(url, sms)]
    try:
        with sync_client(url) as inspect:
            deadline = time.monotonic() + 15
            while int(inspect.get("race:ready") or 0) < 2:
                assert time.monotonic() < deadline, "racers did not start"
                assert all(racer.poll() is None for racer in racers), racers[0].stderr.read()
                time.sleep(0.02)
            inspect.rpush("race:go", "go", "go")
            outputs = [racer.communicate(timeout=30) for racer in racers]
            for racer, (_, stderr) in zip(racers, outputs, strict=True):
                assert racer.returncode == 0, stderr
            first, second = (json.loads(stdout) for stdout, _ in outputs)

            assert first == second
            assert len(set(first)) == 2 * RACE_SIZE
            profiles = list(inspect.scan_iter(match="omni:{*}:profile", count=1000))
            assert len(profiles) == 2 * RACE_SIZE, "a losing racer left an orphan conversation"
            for number, cid in zip(calls + logins, first, strict=True):
                profile = inspect.hgetall(conversation_key(cid, "profile"))
                assert profile[b"phone"] == number.encode()
                expected_seen = (
                    {b"seen:voice", b"seen:sms"} if number in calls else {b"seen:chat", b"seen:sms"}
                )
                assert expected_seen <= set(profile)
            for i, cid in enumerate(first[RACE_SIZE:]):
                assert inspect.hget(conversation_key(cid, "profile"), "user_id") == (
                    f"racer-{i}".encode()
                )
                assert inspect.get(user_address(f"racer-{i}").record_key) == cid.encode()
            for number, cid in zip(calls + logins, first, strict=True):
                assert inspect.get(phone_address(number).record_key) == cid.encode()
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()


# --- Redis down -------------------------------------------------------------------------------


async def test_redis_down_raises_state_unavailable(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=2)
    try:
        store = IdentityStore(client)
        tel = phone_address("+14155552671")
        cid = await store.resolve_conversation(tel, channel="voice")
        server.stop()

        operations = [
            store.resolve_conversation(tel, channel="sms"),
            store.lookup(tel),
            store.link(user_address("frank"), cid),
            store.profile(cid),
            store.record_channel(cid, "sms"),
            store.set_sms_opt_out(cid, True),
            store.record_sms_failure(cid, sid="SM1", status="failed", error_code=None),
            store.set_extra(cid, "language", "de"),
            store.conversation_for_phone("+14155552671"),
            store.forget(cid),
        ]
        for operation in operations:
            with pytest.raises(StateUnavailable) as error:
                await operation
            assert "4155552671" not in str(error.value)
    finally:
        await client.close()
        server.stop()
