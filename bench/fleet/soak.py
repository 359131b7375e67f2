"""`make soak`: the long fleet run. Customers on all three channels through HAProxy while replicas
are SIGKILLed and restarted, rolling restarts go through the fleet, and Redis fails over
(Sentinel); then every message is checked (bench.fleet.checks) and the figures printed.

    .venv/bin/python -m bench.fleet.soak                      # 3 replicas, >= 5000 messages
    .venv/bin/python -m bench.fleet.soak --replicas 4 --messages 20000 --no-failover

The short version of the same run is tests/fleet/test_fleet.py, in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

from bench.fleet.checks import Report, check
from bench.fleet.customers import Traffic
from bench.fleet.local_fleet import Fleet


async def disrupt(traffic: Traffic, what: str, action: Callable[[], object]) -> None:
    """Run a blocking fleet operation while the customers keep going, recording its window."""
    index = traffic.disruption(what)
    try:
        await asyncio.to_thread(action)
    finally:
        traffic.disruption_over(index)


#: How long a kill waits for its victim to hold work in flight.
BUSY_WAIT_SECONDS = 15


async def kill_and_replace(traffic: Traffic, replica_index: int) -> List[str]:
    """SIGKILL one replica, as a crash, once it holds durable work in flight (or after
    BUSY_WAIT_SECONDS), and start it again (as its orchestrator would). Returns the kinds of
    the work items it held when killed: what the other replicas had to take over."""
    fleet = traffic.fleet
    replica = fleet.members[replica_index]
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while len(held := await asyncio.to_thread(fleet.work_held_by, replica)) < 2:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    def crash_and_restart() -> None:
        fleet.kill(replica)
        fleet.start_replica(replica)

    await disrupt(traffic, "kill", crash_and_restart)
    traffic.killed_holding.extend(held)
    return held


async def until_sent(traffic: Traffic, count: int, at_least_seconds: float = 0) -> None:
    """Wait until the customers have sent ``count`` messages (and ``at_least_seconds`` passed)."""
    await asyncio.sleep(at_least_seconds)
    while len(traffic.sent) < count:  # noqa: ASYNC110 - customers append, none signals
        await asyncio.sleep(0.5)


async def soak(
    traffic: Traffic, messages: int, failover: bool, calm_seconds: float, log=print
) -> None:
    """Cycles of: calm, a replica killed and replaced, calm, a rolling restart, (a Redis
    failover), until ``messages`` were sent; then the customers leave."""
    customers = asyncio.create_task(traffic.run())
    fleet = traffic.fleet
    cycle = 0
    try:
        while len(traffic.sent) < messages:
            cycle += 1
            await asyncio.sleep(calm_seconds)
            victim = random.randrange(len(fleet.members))
            log(f"cycle {cycle}: {len(traffic.sent)} sent; SIGKILL {fleet.members[victim].name}")
            held = await kill_and_replace(traffic, victim)
            log(f"cycle {cycle}: it held {len(held)} work item(s) in flight: {sorted(held)}")
            await asyncio.sleep(calm_seconds)
            log(f"cycle {cycle}: {len(traffic.sent)} sent; rolling restart")
            await disrupt(traffic, "rolling restart", fleet.rolling_restart)
            if failover:
                await asyncio.sleep(calm_seconds)
                log(f"cycle {cycle}: {len(traffic.sent)} sent; Redis failover")
                await disrupt(traffic, "redis failover", fleet.redis_failover)
        await until_sent(traffic, messages, calm_seconds)
    finally:
        traffic.stop()
        await customers


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="The long fleet run (make soak)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--customers-per-channel", type=int, default=8)
    parser.add_argument("--calm-seconds", type=float, default=20)
    parser.add_argument("--no-failover", action="store_true", help="single Redis, no Sentinel")
    parser.add_argument("--work-dir", type=Path, help="logs and data (default: a temp dir)")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    failover = not args.no_failover
    print(f"soak: {args.replicas} replicas, >= {args.messages} messages; logs in {work_dir}")
    fleet = Fleet(work_dir, replicas=args.replicas, sentinel=failover).start()
    started = time.monotonic()
    try:
        print(fleet.describe(), flush=True)
        traffic = Traffic(fleet, per_channel=args.customers_per_channel)
        asyncio.run(
            soak(
                traffic,
                args.messages,
                failover,
                args.calm_seconds,
                log=lambda line: print(line, flush=True),
            )
        )
        report: Report = check(traffic)
    finally:
        fleet.stop()
    print(f"\nsoak finished in {time.monotonic() - started:.0f} s\n")
    print(report.table())
    for problem in report.problems:
        print("PROBLEM:", problem)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
