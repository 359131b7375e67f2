"""The fleet test: HAProxy in front of two Rasa replicas, the action server, Redis and
the fakes; customers on all three channels and the shop's backend sending notifications through
the load balancer; one replica SIGKILLed
mid-run and a rolling restart by SIGTERM; then every accepted message is checked against the
event logs in Redis and what the fake Twilio received (bench.fleet.checks). A notification
whose replica is killed at the moment it texts is sent once by another replica. Last, a
hand-off whose agent reply is in flight when its replica is killed.

The long version is `make soak` (bench/fleet/soak.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from bench.fleet.checks import check
from bench.fleet.customers import CHANNELS, Traffic
from bench.fleet.local_fleet import Fleet, Replica
from bench.fleet.soak import disrupt, kill_and_replace, until_sent
from connectors.inbox.auth import agent_token
from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from omnichannel.outbound.gate import TIMEZONE_FIELD
from omnichannel.outbound.items import OutboundStore
from omnichannel.redis_client import conversation_key
from testkit.fake_twilio import AFTER_CREATE_HOLD
from testkit.phone_numbers import new_phone_number
from testkit.twilio_webhook import signed_sms
from tests.connectors.notifications.helpers import zone_at_local_hour

#: The floor of messages for the short run.
MIN_MESSAGES = 150


@pytest.fixture(scope="module")
def fleet(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), replicas=2, model=trained_model).start()
    yield fleet
    fleet.stop()


async def _run(traffic: Traffic) -> None:
    """Calm, a SIGKILL mid-run (the replica then replaced), a rolling restart, calm again, until
    at least MIN_MESSAGES messages were sent; then the customers leave."""
    customers = asyncio.create_task(traffic.run())
    try:
        await until_sent(traffic, 30)
        assert await kill_and_replace(traffic, 0), "the killed replica held no work in flight"
        await until_sent(traffic, 0, 3)
        await disrupt(traffic, "rolling restart", traffic.fleet.rolling_restart)
        await until_sent(traffic, MIN_MESSAGES, 5)
    finally:
        traffic.stop()
        await customers


# Start-up ~15 s, traffic through the kill and the rolling restart ~1.5 min, checks up to 1 min
# while a takeover waits out a lease: more than the suite's 300 s default on a loaded machine.
@pytest.mark.timeout(600)
def test_fleet_loses_nothing_through_a_crash_and_a_rolling_restart(fleet: Fleet) -> None:
    traffic = Traffic(fleet, per_channel=4)
    asyncio.run(_run(traffic))
    report = check(traffic)
    print(report.table())
    print(fleet.describe())
    assert report.accepted >= MIN_MESSAGES, report.table()
    for channel in CHANNELS:
        assert report.channels[channel].accepted > 0, f"no {channel} traffic got through"
    assert report.callbacks[1] > 0, "no customer was promised a callback"
    sent, accepted, once = report.notifications
    assert accepted > 0 and once == accepted, report.table()
    assert [replica.kills for replica in fleet.members] == [1, 0]
    assert all(replica.terminations == 1 for replica in fleet.members)
    assert not report.problems, "\n".join([report.table(), *report.problems])


def _callback_items(fleet: Fleet) -> List[Dict[str, str]]:
    """Every callback's outbound item in the fleet's Redis (field -> value)."""
    found = []
    with fleet.admin_client() as client:
        for key in client.scan_iter(match="omni:{*}:outbound:item:*", count=1000):
            fields = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
            if fields.get("kind") == "callback":
                found.append(fields)
    return found


def _wait(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_a_replica_killed_while_placing_a_callback_yields_exactly_one_call(fleet: Fleet) -> None:
    """The send moment of a callback: the replica that holds it dies while VAPI creates the
    call; another replica takes the send over, finds the call at VAPI and adopts it; the
    killed replica, back, dials nothing."""
    vapi = fleet.control
    assert vapi is not None
    phone = new_phone_number()
    vapi.hold_creates()
    try:
        sms = signed_sms(fleet.env, phone, "please call me back now")
        answer = httpx.post(fleet.url + sms.path, data=sms.form, headers=sms.headers, timeout=30)
        assert answer.status_code == 200, answer.text
        vapi.wait_for_calls(1 + len(vapi.calls), timeout=30)
        [call] = [c for c in vapi.calls if c["customer"]["number"] == phone]
        holder = next(r for r in fleet.members if "outbound_send" in fleet.work_held_by(r))
        fleet.kill(holder)
    finally:
        vapi.release()
    _wait(
        "the other replica adopts the call",
        lambda: any(
            item.get("status") == "sent" and call["id"] in item.get("outcome", "")
            for item in _callback_items(fleet)
        ),
        timeout=60,
    )
    fleet.start_replica(holder)
    # Back in rotation, its queue registered and swept once (the sweeper reports the kind's
    # depth): the callback is done, nothing is dialled again.
    _wait(
        "a sweep of the restarted replica",
        lambda: 'omnichannel_in_flight_work{kind="outbound_send"}' in fleet.metrics(holder),
        timeout=30,
    )
    assert [c["id"] for c in vapi.calls if c["customer"]["number"] == phone] == [call["id"]]
    assert holder.kills >= 1


def _text_first(fleet: Fleet, number: str) -> str:
    """The customer texts the shop (through the load balancer); returns their conversation."""
    sms = signed_sms(fleet.env, number, "hi")
    answer = httpx.post(fleet.url + sms.path, data=sms.form, headers=sms.headers, timeout=60)
    assert answer.status_code == 200, answer.text
    with redis.Redis.from_url(fleet.redis_url) as client:
        cid = client.get(phone_address(number).record_key).decode()

    async def in_the_afternoon() -> None:
        client = aioredis.Redis.from_url(fleet.redis_url)
        try:
            await IdentityStore(client).set_extra(cid, TIMEZONE_FIELD, zone_at_local_hour(15))
        finally:
            await client.close()

    asyncio.run(in_the_afternoon())
    return cid


def _notify(base_url: str, fleet: Fleet, number: str, key: str) -> httpx.Response:
    return httpx.post(
        base_url + "/webhooks/notifications/send",
        json={
            "customer": {"phone": number},
            "response": "utter_order_shipped",
            "slots": {"order_number": "40213"},
        },
        headers={
            "Authorization": f"Bearer {fleet.env['NOTIFICATIONS_API_KEY']}",
            "Idempotency-Key": key,
        },
        timeout=90,
    )


@pytest.mark.timeout(300)
def test_a_replica_killed_at_the_send_moment_sends_a_notification_once(fleet: Fleet) -> None:
    number = new_phone_number()
    cid = _text_first(fleet, number)
    assert fleet.twilio is not None
    texts = len(fleet.twilio.messages_to(number))  # "hi" is answered inline (TwiML)
    victim = fleet.members[1]
    key = f"order-40213-{secrets.token_hex(4)}"
    fleet.twilio.holding.clear()
    fleet.twilio.release.clear()
    fleet.twilio.fail_after_create(AFTER_CREATE_HOLD)
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(_notify, victim.base_url, fleet, number, key)
        assert fleet.twilio.holding.wait(60), "the notification never reached Twilio"
        started = time.monotonic()
        fleet.kill(victim)  # Twilio took the text; the replica dies before it hears so
        fleet.twilio.release.set()
        with pytest.raises(httpx.HTTPError):
            request.result()
    # Another replica takes the send over once its lease lapses, finds the text at Twilio
    # and records it sent: one text, not two.
    store = OutboundStore(fleet.redis_url)
    while True:
        [item] = asyncio.run(store.of_conversation(cid))
        if item.status == "sent" or time.monotonic() - started > 60:
            break
        time.sleep(0.5)
    assert (item.status, item.channel) == ("sent", "sms"), item
    sent = fleet.twilio.messages_to(number)
    assert len(sent) == texts + 1, [m.body for m in sent]
    assert sent[-1].body.startswith("Acme Shop: your order 40213 has shipped.")
    # The backend's retry (through the load balancer) gets the notification as it stands.
    retry = _notify(fleet.url, fleet, number, key)
    assert retry.status_code == 200 and retry.json()["status"] == "sent", retry.text
    assert retry.json()["id"] == item.item_id
    # The killed replica comes back: nothing is sent again.
    fleet.start_replica(victim)
    assert asyncio.run(store.due(time.time() + 3600)) == []
    assert len(fleet.twilio.messages_to(number)) == texts + 1


@pytest.mark.timeout(300)
def test_an_agents_reply_in_flight_survives_its_replica_being_killed(fleet: Fleet) -> None:
    """A hand-off through the load balancer; the agent's page is on replica 1, whose SMS send is
    in flight (Twilio created the message, its answer is held) when the replica is SIGKILLed.
    Replica 2 takes the work over, finds the message in Twilio's records and sends nothing
    again: the customer gets the reply once, and the event log holds it once."""
    assert fleet.twilio is not None
    phone = f"+1628555{secrets.randbelow(10000):04d}"
    sms = signed_sms(fleet.env, phone, "i want to talk to a person")
    answer = httpx.post(fleet.url + sms.path, data=sms.form, headers=sms.headers, timeout=30)
    assert "passed this to our support team" in answer.text
    cid = conversation_for(fleet, phone)
    first, second = fleet.members
    token = agent_token(fleet.env["INBOX_JWT_SECRET"], "agent-dana", "Dana", audience="omni-inbox")

    def inbox(replica: Replica, path: str, body: dict) -> httpx.Response:
        return httpx.post(
            f"{replica.base_url}/webhooks/inbox/api/{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    assert inbox(first, "claim", {"conversation_id": cid}).status_code == 200
    release = fleet.twilio.hold_after_create()
    message_id = secrets.token_hex(8)
    text = "Hi, Dana here. A replacement is on its way."
    reply = {"conversation_id": cid, "message_id": message_id, "channel": "sms", "text": text}
    assert inbox(first, "reply", reply).status_code == 202
    fleet.twilio.wait_for_messages(phone, count=1, timeout=30)  # created; the answer is held
    assert "sms_outbox" in fleet.work_held_by(first), "the send is in flight on replica 1"
    fleet.kill(first)
    killed = time.monotonic()
    release.set()
    # (Not restarted: this is the module's last test, and a model load costs half a minute.)
    item = conversation_key(cid, "work", "sms_outbox", f"handoff-{message_id}")
    deadline = time.monotonic() + 60
    with fleet.admin_client() as client:
        while client.hget(item, "state") != b"done":
            assert time.monotonic() < deadline, "replica 2 did not finish the reply"
            time.sleep(0.2)
        finished = time.monotonic() - killed
        outcome = json.loads(client.hget(item, "outcome"))
        taken_over_by = client.hget(item, "owner").decode()
        events = [json.loads(raw) for raw in client.lrange(f"omni:{{{cid}}}:events", 0, -1)]
    print(f"the agent's reply finished by replica 2 {finished:.1f} s after replica 1 was killed")
    assert [m.body for m in fleet.twilio.messages_to(phone)] == [f"Dana: {text}"]
    assert outcome["sids"] == [fleet.twilio.messages_to(phone)[0].sid]
    assert f"/{second.proc.pid}/" in taken_over_by
    logged = [
        e for e in events if (e.get("metadata") or {}).get("handoff_message_id") == message_id
    ]
    assert len(logged) == 1 and logged[0]["metadata"]["agent"]["name"] == "Dana"
    # The other replica serves the agent from here on: the hand-off carries on.
    assert inbox(second, "hand_back", {"conversation_id": cid}).status_code == 200


def conversation_for(fleet: Fleet, phone: str) -> str:
    with fleet.admin_client() as client:
        return client.get(phone_address(phone).record_key).decode()
