"""The local Redis deployments the tests run on (testkit/redis_topologies): a cluster that
serves every slot and survives a killed primary, Sentinel that reports and replaces its
master, TLS with a private CA, ACL users. Real redis-server processes and redis-py's own sync
clients only, so a fault here is the tooling's and not our client factory's."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.sentinel import Sentinel

from testkit.processes import RedisServer
from testkit.redis_topologies import (
    SLOTS,
    RedisClusterProcesses,
    RedisDeployment,
    RedisSentinelProcesses,
    with_credentials,
)
from testkit.tls import TlsMaterial

OMNI_PASSWORD = secrets.token_hex(8)
#: The least-privileged ACL user: its own keys and channels, nothing dangerous.
OMNI_USER = f"omni on >{OMNI_PASSWORD} ~omni:* &omni:* +@all -@dangerous +info +cluster|info"
#: A failover must be over well within this (node timeout / down-after are 1 s).
FAILOVER_BOUND_SECONDS = 10
SCHEMES = {"single": "redis://", "cluster": "redis+cluster://", "sentinel": "redis+sentinel://"}


def cluster_client(cluster: RedisClusterProcesses, **kwargs) -> RedisCluster:
    seeds = [ClusterNode("127.0.0.1", node.port) for node in cluster.nodes]
    return RedisCluster(startup_nodes=seeds, **kwargs)


def sentinel_client(deployment: RedisSentinelProcesses, **kwargs) -> Sentinel:
    return Sentinel([("127.0.0.1", s.port) for s in deployment.sentinels], **kwargs)


def one_key_per_slot() -> List[str]:
    """Keys ``omni:<n>``, the one at index i in slot i."""
    by_slot: Dict[int, str] = {}
    number = 0
    while len(by_slot) < SLOTS:
        key = f"omni:{number}"
        by_slot.setdefault(key_slot(key.encode()), key)
        number += 1
    return [by_slot[slot] for slot in range(SLOTS)]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """One private CA and its certificates for the whole module (each key takes a moment)."""
    return TlsMaterial(tmp_path_factory.mktemp("tls"))


# --- cluster ------------------------------------------------------------------------------


def test_cluster_has_three_primaries_each_followed_by_a_replica(
    redis_cluster: RedisClusterProcesses,
) -> None:
    seeds = redis_cluster.nodes[:3]
    assert redis_cluster.url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{node.port}" for node in seeds
    )
    with cluster_client(redis_cluster) as client:
        primaries = {node.port for node in client.get_primaries()}
        replicas = {node.port for node in client.get_replicas()}
    assert primaries == {node.port for node in seeds}
    assert replicas == {node.port for node in redis_cluster.nodes[3:]}
    followed = []
    for port in replicas:
        with redis_cluster.node_on(port).admin_client(decode_responses=True) as admin:
            role, _host, primary_port, *_ = admin.execute_command("ROLE")
        assert role == "slave"
        followed.append(primary_port)
    assert sorted(followed) == sorted(primaries)


def test_cluster_serves_a_key_on_every_slot(redis_cluster: RedisClusterProcesses) -> None:
    redis_cluster.flushall()
    keys = one_key_per_slot()
    with cluster_client(redis_cluster, decode_responses=True) as client:
        pipe = client.pipeline()
        for key in keys:
            pipe.set(key, key)
        assert all(pipe.execute())
        pipe = client.pipeline()
        for key in keys:
            pipe.get(key)
        assert pipe.execute() == keys
    per_primary = []
    for node in redis_cluster.nodes[:3]:
        with node.admin_client() as admin:
            per_primary.append(admin.dbsize())
    assert sum(per_primary) == SLOTS
    assert min(per_primary) > SLOTS // 4
    assert redis_cluster.primary_for_key(keys[0]) is redis_cluster.nodes[0]
    assert redis_cluster.primary_for_key(keys[-1]) is redis_cluster.nodes[2]


def test_a_killed_primary_is_replaced_by_its_replica_tls_and_acl_included(
    tls: TlsMaterial, tmp_path: Path
) -> None:
    """A throwaway cluster (the session one must stay whole), with TLS and an ACL user so the
    nice-to-have parts of the cluster are exercised by the same failover."""
    cluster = RedisClusterProcesses(
        tmp_path / "cluster", primaries=3, replicas=1, users=[OMNI_USER], tls=tls
    ).start()
    try:
        assert cluster.url.startswith("rediss+cluster://127.0.0.1:")
        # Connects now: the ACL user must be allowed to discover the cluster (CLUSTER SLOTS).
        client = cluster_client(
            cluster, username="omni", password=OMNI_PASSWORD, **tls.client_kwargs()
        )
        victim = cluster.primary_for_key("omni:survivor")
        with victim.admin_client() as admin:
            admin.set("omni:survivor", "kept")
            # WAIT on the connection that wrote: the replica has the key before the crash.
            assert admin.execute_command("WAIT", 1, 2000) == 1
        started = time.monotonic()
        cluster.kill(victim)
        promoted = cluster.wait_for_failover(victim, timeout=FAILOVER_BOUND_SECONDS)
        elapsed = time.monotonic() - started
        print(f"cluster failover (TLS, ACL): {elapsed:.2f} s")
        assert cluster.started_as_replica_of[promoted.port] == victim.port
        assert cluster.primary_for_key("omni:survivor") is promoted
        with client:
            assert client.get("omni:survivor") == b"kept"
    finally:
        cluster.stop()


# --- Sentinel -----------------------------------------------------------------------------


def test_sentinel_reports_the_master_and_its_replica(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    master, replica = redis_sentinel.nodes
    sentinel = sentinel_client(redis_sentinel)
    assert sentinel.discover_master("omni") == ("127.0.0.1", master.port)
    assert sentinel.discover_slaves("omni") == [("127.0.0.1", replica.port)]
    with sentinel.master_for("omni", decode_responses=True) as client:
        client.set("omni:via-sentinel", "1")
        assert client.execute_command("ROLE")[0] == "master"
    assert redis_sentinel.url == (
        "redis+sentinel://"
        + ",".join(f"127.0.0.1:{s.port}" for s in redis_sentinel.sentinels)
        + "/omni/0"
    )


def test_sentinel_promotes_the_replica_after_kill_master_tls_and_acl_included(
    tls: TlsMaterial, tmp_path: Path
) -> None:
    """A throwaway set-up (the session one must stay whole), with TLS and an ACL user on the
    data nodes: the client authenticates to the master, not to the Sentinels."""
    deployment = RedisSentinelProcesses(
        tmp_path / "sentinel", replicas=1, sentinels=3, users=[OMNI_USER], tls=tls
    ).start()
    try:
        assert deployment.url.startswith("rediss+sentinel://127.0.0.1:")
        old, replica = deployment.nodes
        sentinel = sentinel_client(
            deployment,
            sentinel_kwargs=tls.client_kwargs(),
            username="omni",
            password=OMNI_PASSWORD,
            **tls.client_kwargs(),
        )
        with old.admin_client() as admin:
            admin.set("omni:survivor", "kept")
            assert admin.execute_command("WAIT", 1, 2000) == 1
        started = time.monotonic()
        deployment.kill_master()
        promoted = deployment.wait_for_failover(timeout=FAILOVER_BOUND_SECONDS)
        elapsed = time.monotonic() - started
        print(f"sentinel failover (TLS, ACL): {elapsed:.2f} s")
        assert promoted is replica is deployment.master
        assert sentinel.discover_master("omni") == ("127.0.0.1", replica.port)
        with sentinel.master_for("omni") as client:
            assert client.get("omni:survivor") == b"kept"
    finally:
        deployment.stop()


# --- the fixture the Redis-backed tests will use ------------------------------------------


@pytest.mark.parametrize("visit", ["first", "second"])
def test_redis_deployment_is_emptied_and_exported(
    redis_deployment: RedisDeployment,
    request: pytest.FixtureRequest,
    visit: str,
) -> None:
    """Each deployment is visited twice and each visit leaves a key behind, so at least one
    visit per deployment starts after another test wrote to it: the fixture must have
    emptied it."""
    assert os.environ["REDIS_URL"] == redis_deployment.url
    if redis_deployment.kind == "single":
        client = request.getfixturevalue("redis_server").admin_client()
    elif redis_deployment.kind == "cluster":
        client = cluster_client(request.getfixturevalue("redis_cluster"))
    else:
        client = sentinel_client(request.getfixturevalue("redis_sentinel")).master_for("omni")
    assert redis_deployment.url.startswith(SCHEMES[redis_deployment.kind])
    assert client.exists("omni:leftover") == 0
    client.set("omni:leftover", visit)
    client.close()


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tls: TlsMaterial, tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("tls-redis"), tls=tls).start()
    yield server
    server.stop()


def test_tls_server_accepts_a_client_that_trusts_the_private_ca(
    tls: TlsMaterial, tls_server: RedisServer
) -> None:
    assert tls_server.url == f"rediss://127.0.0.1:{tls_server.port}/0"
    anonymous = redis.Redis(port=tls_server.port, ssl=True, ssl_ca_certs=str(tls.ca_file))
    with anonymous, redis.Redis(port=tls_server.port, **tls.client_kwargs()) as with_cert:
        assert anonymous.ping() and with_cert.ping()
        assert anonymous.execute_command("ROLE")[0] == b"master"


#: Clients the TLS server must refuse, and the reason it logs (what the client sees varies
#: with the TLS version: a client certificate is refused after the client's handshake ends).
REFUSED_CLIENTS: Dict[str, Tuple[Callable[[TlsMaterial], Dict[str, object]], str]] = {
    "client-trusts-wrong-ca": (
        lambda tls: {"ssl": True, "ssl_ca_certs": str(tls.wrong_ca_file)},
        "alert unknown ca",
    ),
    "client-cert-from-wrong-ca": (
        lambda tls: {
            **tls.client_kwargs(),
            "ssl_certfile": str(tls.stranger_cert_file),
            "ssl_keyfile": str(tls.stranger_key_file),
        },
        "certificate verify failed",
    ),
    "plaintext": (lambda tls: {}, "wrong version number"),
}


@pytest.mark.parametrize("case", list(REFUSED_CLIENTS), ids=list(REFUSED_CLIENTS))
def test_tls_server_refuses(tls: TlsMaterial, tls_server: RedisServer, case: str) -> None:
    options, reason = REFUSED_CLIENTS[case]
    log = tls_server.data_dir / "redis.log"
    seen = log.stat().st_size
    with redis.Redis(port=tls_server.port, socket_timeout=5, **options(tls)) as client:
        with pytest.raises(redis.ConnectionError):
            client.ping()
    deadline = time.monotonic() + 5
    while reason not in log.read_text()[seen:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reason in log.read_text()[seen:]


# --- ACL ----------------------------------------------------------------------------------


def test_acl_user_reaches_its_own_keys_and_channels_only(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", users=[OMNI_USER]).start()
    try:
        with redis.Redis.from_url(with_credentials(server.url, "omni", OMNI_PASSWORD)) as client:
            assert client.set("omni:x", "1")
            client.publish("omni:live", "hello")
            with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
                client.set("other:x", "1")
            with pytest.raises(redis.exceptions.NoPermissionError, match="channel"):
                client.publish("other:live", "hello")
        with redis.Redis(port=server.port) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        server.flushall()  # the admin (default user, random password) still may
        with server.admin_client() as admin:
            assert admin.dbsize() == 0
    finally:
        server.stop()
