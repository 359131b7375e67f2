"""Inspecting Redis from tests that run once per deployment (``redis_deployment``: single node,
Cluster, Sentinel).

A test checks what the code under test stored through a client that reaches every key: on a
cluster a plain ``redis.Redis`` would only see the slots of the node it happens to be pointed
at (``MOVED`` for the rest), behind Sentinel it must find the master. These are redis-py's own
cluster and Sentinel clients, so what a test sees does not depend on the client factory under
test. Server-wide figures (command statistics, channel subscribers) are gathered from every
node that holds some.
"""

from __future__ import annotations

from typing import Dict, List, Union

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from omnichannel.redis_client import redis_config
from omnichannel.redis_config import CLUSTER, SENTINEL

SyncRedis = Union[redis.Redis, RedisCluster]
AsyncRedis = Union[aioredis.Redis, AsyncRedisCluster]


def _client(url: str, asynchronous: bool) -> Union[SyncRedis, AsyncRedis]:
    """redis-py's own client for the deployment ``url`` names, independent of the factory under
    test (the test deployments have no TLS and no ACL user: hosts, db and service suffice)."""
    config = redis_config(url)
    if config.deployment == CLUSTER:
        cluster, node = (
            (AsyncRedisCluster, AsyncClusterNode) if asynchronous else (RedisCluster, ClusterNode)
        )
        return cluster(startup_nodes=[node(host, port) for host, port in config.nodes])
    if config.deployment == SENTINEL:
        sentinel = (AsyncSentinel if asynchronous else Sentinel)(list(config.nodes))
        return sentinel.master_for(config.service_name, db=config.db)
    return (aioredis.Redis if asynchronous else redis.Redis).from_url(url)


def sync_client(url: str) -> SyncRedis:
    """A synchronous client for tests that drive OS processes."""
    return _client(url, asynchronous=False)


def inspector(url: str) -> AsyncRedis:
    """An async client, owned (and closed) by the test."""
    return _client(url, asynchronous=True)


def _on(client: AsyncRedis, nodes: str) -> Dict[str, str]:
    """Where a cluster client sends a server-wide command (by default: one node); nothing for
    the other clients, which have one server."""
    return {"target_nodes": nodes} if isinstance(client, AsyncRedisCluster) else {}


async def reset_command_stats(client: AsyncRedis) -> None:
    """CONFIG RESETSTAT on every primary."""
    await client.config_resetstat(**_on(client, AsyncRedisCluster.PRIMARIES))


async def command_stats(client: AsyncRedis) -> List[Dict]:
    """INFO commandstats of every primary."""
    stats = await client.info("commandstats", **_on(client, AsyncRedisCluster.PRIMARIES))
    return list(stats.values()) if isinstance(client, AsyncRedisCluster) else [stats]


async def publish(client: AsyncRedis, channel: str, message: str) -> None:
    """PUBLISH; redis-py 4.6's async cluster client has no ``publish`` and cannot route the
    raw command, so it goes to the primary of the channel's slot, as the tracker store's
    append script publishes from there."""
    options = {}
    if isinstance(client, AsyncRedisCluster):
        await client.initialize()
        options["target_nodes"] = client.get_node_from_key(channel)
    await client.execute_command("PUBLISH", channel, message, **options)


async def subscribers(client: AsyncRedis, channel: str) -> int:
    """Subscribers of a classic pub/sub ``channel``: a cluster node counts only its own
    connections, and a subscriber may be connected to any node, replicas included."""
    counts = await client.execute_command(
        "PUBSUB NUMSUB", channel, **_on(client, AsyncRedisCluster.ALL_NODES)
    )
    return sum(count for _, count in counts)


async def pause_clients(client: AsyncRedis, milliseconds: int) -> None:
    """CLIENT PAUSE ... ALL on every node a connection of the code under test may use."""
    await client.execute_command(
        "CLIENT", "PAUSE", str(milliseconds), "ALL", **_on(client, AsyncRedisCluster.ALL_NODES)
    )
