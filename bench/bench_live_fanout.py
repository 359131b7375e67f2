"""The web chat's live feed on one node and on a cluster: classic PUBLISH/SUBSCRIBE.

Every tracker save publishes its new events on ``omni:{<cid>}:live``; each Rasa process holds
one subscriber connection (``omnichannel.redis_client.subscriber``), on a cluster to any node.
Measured here, in one run: publish-to-delivery latency when the subscriber sits on a different
node than the one the publish reaches, and how many cluster-bus messages one publish costs
(classic pub/sub floods every node; sharded pub/sub would keep it on one shard, which redis-py
4.x's asyncio client cannot subscribe to). Target: median delivery <= 5 ms on both.

Run: ``python -m bench.bench_live_fanout`` (``make bench`` runs it with the others).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

from redis.asyncio.cluster import RedisCluster

from omnichannel.redis_client import (
    LuaScript,
    build_client,
    conversation_key,
    redis_config,
    subscriber,
)
from testkit.processes import RedisServer
from testkit.redis_topologies import RedisClusterProcesses

MESSAGES = 2000
EVENT = {"event": "bot", "text": "Your order has shipped with UPS. " * 4, "timestamp": 0.0}
TARGET_MEDIAN_MS = 5.0
#: Published from a script on the conversation's slot, as the tracker store's append does.
ROUTE = conversation_key("c_bench", "events")
_PUBLISH = LuaScript("return redis.call('PUBLISH', ARGV[1], ARGV[2])")


async def delivery_ms(url: str) -> List[float]:
    """Publishes MESSAGES events one after another; returns each one's delivery time (ms)."""
    channel = conversation_key("c_bench", "live")
    listener = await subscriber(url)
    await listener.subscribe(channel)
    while (await listener.get_message(timeout=1.0) or {}).get("type") != "subscribe":
        pass
    publisher = build_client(redis_config(url))
    latencies = []
    try:
        for _ in range(MESSAGES):
            sent = time.perf_counter()
            await _PUBLISH(publisher, [ROUTE], [channel, json.dumps(EVENT)])
            while True:
                message = await listener.get_message(timeout=1.0)
                if message and message["type"] == "message":
                    break
            latencies.append((time.perf_counter() - sent) * 1000)
    finally:
        await listener.reset()
        await publisher.close()
    return latencies


async def bus_messages_per_publish(url: str) -> float:
    """Cluster-bus publish messages sent, over all nodes, per PUBLISH."""
    cluster = build_client(redis_config(url))
    assert isinstance(cluster, RedisCluster)
    await cluster.initialize()

    async def sent() -> int:
        infos = await asyncio.gather(
            *(node.execute_command("CLUSTER INFO") for node in cluster.get_nodes())
        )
        # redis-py parses CLUSTER INFO into a dict.
        return sum(int(info.get("cluster_stats_messages_publish_sent", 0)) for info in infos)

    before = await sent()
    for _ in range(200):
        await _PUBLISH(cluster, [ROUTE], [conversation_key("c_bench", "live"), "x"])
    after = await sent()
    await cluster.close()
    return (after - before) / 200


def summary(latencies: List[float]) -> Tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95)]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as work:
        single = RedisServer(Path(work) / "single").start()
        cluster = RedisClusterProcesses(Path(work) / "cluster", primaries=3).start()
        try:
            single_ms = asyncio.run(delivery_ms(single.url))
            cluster_ms = asyncio.run(delivery_ms(cluster.url))
            bus = asyncio.run(bus_messages_per_publish(cluster.url))
        finally:
            single.stop()
            cluster.stop()
    rows = [("single node", *summary(single_ms)), ("cluster, 3 primaries", *summary(cluster_ms))]
    print(f"{'live feed delivery (ms)':<26}{'median':>9}{'p95':>9}")
    for name, median, p95 in rows:
        print(f"{name:<26}{median:>9.2f}{p95:>9.2f}")
    print(f"cluster-bus messages per PUBLISH (3 primaries): {bus:.1f}")
    missed = [name for name, median, _ in rows if median > TARGET_MEDIAN_MS]
    print(
        f"target median <= {TARGET_MEDIAN_MS:.0f} ms: "
        + ("MISSED on " + ", ".join(missed) if missed else "met")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
