"""The fleet test: HAProxy in front of two Rasa replicas, the action server, Redis and
the fakes; customers on all three channels through the load balancer; one replica SIGKILLed
mid-run and a rolling restart by SIGTERM; then every accepted message is checked against the
event logs in Redis and what the fake Twilio received (bench.fleet.checks).

The long version is `make soak` (bench/fleet/soak.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.fleet.checks import check
from bench.fleet.customers import CHANNELS, Traffic
from bench.fleet.local_fleet import Fleet
from bench.fleet.soak import disrupt, kill_and_replace, until_sent

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
