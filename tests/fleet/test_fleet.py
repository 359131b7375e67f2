"""The fleet test: HAProxy in front of two Rasa replicas, the action server, Redis and
the fakes; customers on all three channels through the load balancer; one replica SIGKILLed
mid-run and a rolling restart by SIGTERM; then every accepted message is checked against the
event logs in Redis and what the fake Twilio received (bench.fleet.checks).

The long version is `make soak` (bench/fleet/soak.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable, Dict, List

import httpx
import pytest

from bench.fleet.checks import check
from bench.fleet.customers import CHANNELS, Traffic
from bench.fleet.local_fleet import Fleet
from bench.fleet.soak import disrupt, kill_and_replace, until_sent
from testkit.phone_numbers import new_phone_number
from testkit.twilio_webhook import signed_sms

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
