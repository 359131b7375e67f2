"""Local Redis deployments of the kinds production runs (Redis Cluster, Sentinel, TLS with a
private CA, ACL users), made of real redis-server processes on free loopback ports, so the
Redis-backed tests and benchmarks can run against each of them.

Every class keeps its data under the directory it is given and has start(), stop() and a url
in the form the client factory reads (``redis+cluster://``, ``redis+sentinel://``, with an
``s`` after ``redis`` for TLS). Fixtures empty a deployment with ``flushall()``: FLUSHALL on
every primary, as the default user (the admin; with ``users`` it gets a random password,
``admin_password``). The named ACL users are for the code under test, never for setup.
"""

from __future__ import annotations

import functools
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar
from urllib.parse import quote

import redis
from redis.crc import key_slot

from testkit.processes import RedisServer, free_port, redis_server_binary
from testkit.tls import TlsMaterial

SLOTS = 16384
#: A cluster node's bus listens on its port + 10000 (Redis 6.2 cannot be told otherwise).
CLUSTER_BUS_OFFSET = 10000
#: How long start() waits for a deployment to settle before giving up.
SETTLE_SECONDS = 30

T = TypeVar("T")
_Node = TypeVar("_Node", bound=RedisServer)


@dataclass(frozen=True)
class RedisDeployment:
    """What a test sees of the deployment it runs on: its kind and the URL in REDIS_URL."""

    kind: str
    url: str


def with_credentials(url: str, username: str, password: str) -> str:
    """``url`` with ``username:password@`` after the scheme, both percent-encoded."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{rest}"


def wait_until(check: Callable[[], Optional[T]], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something other than None; a Redis error (a node still
    starting, a connection refused mid-failover) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except redis.RedisError:
            result = None
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(0.05)


def _live(nodes: Sequence[_Node]) -> List[_Node]:
    return [node for node in nodes if node.proc is not None and node.proc.poll() is None]


def _start_all(servers: Sequence[RedisServer]) -> None:
    """Start the processes side by side: each start() waits for its port, and one after the
    other those waits add up."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda server: server.start(), servers))


def _cluster_port(taken: set) -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if port in taken or bus > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", bus))
            except OSError:
                continue
        taken.add(port)
        return port


@dataclass(frozen=True)
class ClusterNodeView:
    """One node as another node's CLUSTER NODES describes it."""

    role: str
    master_port: Optional[int]
    slots: Tuple[str, ...]


def _cluster_view(node: RedisServer) -> Dict[int, ClusterNodeView]:
    """What ``node`` believes: port -> role, master and slots of every node it does not
    consider failed (a node merely suspected, ``fail?``, is still in)."""
    with node.admin_client(decode_responses=True, socket_timeout=2) as client:
        lines = [line.split() for line in client.execute_command("CLUSTER", "NODES").splitlines()]
    port_of = {fields[0]: int(fields[1].split("@")[0].rsplit(":", 1)[1]) for fields in lines}
    view = {}
    for node_id, _address, flags, master_id, *rest in lines:
        flag_set = set(flags.split(","))
        if flag_set & {"fail", "handshake", "noaddr"}:
            continue
        view[port_of[node_id]] = ClusterNodeView(
            role="master" if "master" in flag_set else "replica",
            master_port=port_of.get(master_id),
            slots=tuple(rest[4:]),
        )
    return view


def _slot_ranges(specs: Sequence[str]) -> List[Tuple[int, int]]:
    """CLUSTER NODES slot fields ("0-5460", "5461") as inclusive ranges; the bracketed ones
    are slots in migration, still served by their owner."""
    ranges = []
    for spec in specs:
        if not spec.startswith("["):
            low, _, high = spec.partition("-")
            ranges.append((int(low), int(high or low)))
    return ranges


def _advertised_replicas(node: RedisServer) -> set:
    """Ports of the replicas that ``node``'s CLUSTER SLOTS gives clients."""
    with node.admin_client(socket_timeout=2) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    return {int(replica[1]) for entry in ranges for replica in entry[3:]}


def _role(node: RedisServer) -> str:
    with node.admin_client(decode_responses=True, socket_timeout=2) as client:
        return client.execute_command("ROLE")[0]


def _knows_every_node(node: RedisServer, everyone: Set[int]) -> Optional[bool]:
    return set(_cluster_view(node)) == everyone or None


def _in_sync_or_none(node: RedisServer) -> Optional[bool]:
    return _replica_in_sync(node) or None


def _replica_in_sync(node: RedisServer) -> bool:
    with node.admin_client(decode_responses=True, socket_timeout=2) as client:
        return client.info("replication").get("master_link_status") == "up"


class _Topology:
    """What the cluster and the Sentinel set-up share: data nodes under one directory, all
    with the same TLS material, ACL users and admin password (replicas authenticate to their
    primary with it)."""

    def __init__(
        self, data_dir: Path, users: Optional[Sequence[str]], tls: Optional[TlsMaterial]
    ) -> None:
        self.data_dir = Path(data_dir)
        self.users = users
        self.tls = tls
        self.admin_password = secrets.token_hex(12) if users else None
        self.nodes: List[RedisServer] = []

    def _data_node(self, port: int, extra_args: Sequence[str]) -> RedisServer:
        return RedisServer(
            self.data_dir / f"node-{port}",
            port=port,
            tls=self.tls,
            users=self.users,
            admin_password=self.admin_password,
            extra_args=extra_args,
        )

    def node_on(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def flushall(self) -> None:
        """FLUSHALL, as the admin, on every live node that is a primary now."""
        for node in _live(self.nodes):
            if _role(node) == "master":
                node.flushall()


class RedisClusterProcesses(_Topology):
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each, formed from
    Python (CLUSTER ADDSLOTS, MEET, REPLICATE) so it needs no redis-cli; start() returns once
    every node reports ``cluster_state:ok`` and all nodes agree on who owns the 16384 slots
    and whom each replica follows."""

    def __init__(
        self,
        data_dir: Path,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        users: Optional[Sequence[str]] = None,
        tls: Optional[TlsMaterial] = None,
    ) -> None:
        super().__init__(data_dir, users, tls)
        self.primaries = primaries
        extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms)]
        if self.admin_password:
            extra += ["--masterauth", self.admin_password]
        if tls:
            extra += ["--tls-cluster", "yes", "--tls-replication", "yes"]
        taken: set = set()
        for _ in range(primaries * (1 + replicas)):
            port = _cluster_port(taken)
            config = self.data_dir / f"node-{port}" / "nodes.conf"
            self.nodes.append(self._data_node(port, [*extra, "--cluster-config-file", str(config)]))
        #: The primary each replica was made to follow (port -> port), for wait_for_failover.
        self.started_as_replica_of: Dict[int, int] = {
            replica.port: self.nodes[index % primaries].port
            for index, replica in enumerate(self.nodes[primaries:])
        }

    @property
    def url(self) -> str:
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[: self.primaries])
        return f"{scheme}://{seeds}"

    def start(self) -> RedisClusterProcesses:
        try:
            _start_all(self.nodes)
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        ids = {}
        for node in self.nodes:
            with node.admin_client(decode_responses=True) as client:
                ids[node.port] = client.execute_command("CLUSTER", "MYID")
        for index, node in enumerate(self.nodes[: self.primaries]):
            low = index * SLOTS // self.primaries
            high = (index + 1) * SLOTS // self.primaries
            with node.admin_client() as client:
                # Distinct epochs up front, as redis-cli does, so no collision has to be resolved.
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high))
        with self.nodes[0].admin_client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        everyone = {node.port for node in self.nodes}
        for node in self.nodes:
            wait_until(
                functools.partial(_knows_every_node, node, everyone),
                SETTLE_SECONDS,
                f"node {node.port} did not meet every other node",
            )
        for replica_port, primary_port in self.started_as_replica_of.items():
            with self.node_on(replica_port).admin_client() as client:
                client.execute_command("CLUSTER", "REPLICATE", ids[primary_port])
        for replica_port in self.started_as_replica_of:
            wait_until(
                functools.partial(_in_sync_or_none, self.node_on(replica_port)),
                SETTLE_SECONDS,
                f"replica {replica_port} did not sync",
            )
        # CLUSTER SLOTS leaves out a replica whose replication offset is still 0, and an idle
        # primary sends its replicas nothing for 10 s: a write (FLUSHALL) makes them visible.
        self.flushall()
        wait_until(self._settled, SETTLE_SECONDS, "the cluster did not settle")

    def _settled(self) -> Optional[Dict[int, ClusterNodeView]]:
        """The view every live node shares, once the cluster is ok on all of them, only live
        nodes are in it, its primaries cover every slot and every node's CLUSTER SLOTS (what
        clients read) names all the replicas."""
        live = _live(self.nodes)
        views = []
        for node in live:
            with node.admin_client(decode_responses=True, socket_timeout=2) as client:
                if client.cluster("INFO").get("cluster_state") != "ok":
                    return None
            views.append(_cluster_view(node))
        view = views[0]
        if any(other != view for other in views) or set(view) != {n.port for n in live}:
            return None
        owned = sum(
            high - low + 1
            for entry in view.values()
            if entry.role == "master"
            for low, high in _slot_ranges(entry.slots)
        )
        if owned != SLOTS:
            return None
        replicas = {port for port, entry in view.items() if entry.role == "replica"}
        for node in live:
            if _advertised_replicas(node) != replicas:
                return None
        return view

    def primary_for_key(self, key: str) -> RedisServer:
        """The node that serves ``key`` now, as the first live node sees the cluster."""
        slot = key_slot(key.encode())
        for port, entry in _cluster_view(_live(self.nodes)[0]).items():
            if any(low <= slot <= high for low, high in _slot_ranges(entry.slots)):
                return self.node_on(port)
        raise LookupError(f"no live primary owns slot {slot} of {key!r}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node, as a crash would: no shutdown, no last write to disk."""
        node.kill()

    def wait_for_failover(self, old_node: RedisServer, timeout: float) -> RedisServer:
        """Wait until a replica of the killed ``old_node`` is a primary, every live node agrees
        and the cluster is ok again; returns the promoted node."""

        def promoted() -> Optional[RedisServer]:
            view = self._settled()
            if view is None:
                return None
            for port, primary in self.started_as_replica_of.items():
                entry = view.get(port)
                if primary == old_node.port and entry is not None and entry.role == "master":
                    return self.node_on(port)
            return None

        return wait_until(promoted, timeout, f"no replica of {old_node.port} took over")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelServer(RedisServer):
    """One redis-server in Sentinel mode, watching what its ``monitor`` lines name; its config
    file is written at start and left writable, since Sentinel records what it learns there."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        monitor: Sequence[str],
        tls: Optional[TlsMaterial] = None,
    ) -> None:
        # Sentinel reaches a TLS master (and the other Sentinels) with TLS only if told so.
        super().__init__(
            data_dir, port=port, tls=tls, extra_args=["--tls-replication", "yes"] if tls else ()
        )
        self.monitor = list(monitor)
        self.config_file = self.data_dir / "sentinel.conf"

    def command(self) -> List[str]:
        return [
            redis_server_binary(),
            str(self.config_file),
            "--sentinel",
            *self.listen_args(),
            *self.extra_args,
        ]

    def start(self) -> SentinelServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("\n".join(self.monitor) + "\n")
        super().start()
        return self

    def master_address(self, service: str) -> Optional[Tuple[str, int]]:
        with self.admin_client(decode_responses=True, socket_timeout=2) as client:
            answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
        return (answer[0], int(answer[1])) if answer else None


def _as_dict(flat: Sequence[str]) -> Dict[str, str]:
    """Sentinel's ``[name, value, name, value, ...]`` replies as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisSentinelProcesses(_Topology):
    """A master, ``replicas`` replicas of it and ``sentinels`` Sentinels watching it as
    ``service``. start() returns once the replicas have synced and every Sentinel knows the
    master, each replica and all the other Sentinels (so a failover can get its quorum).

    Only the data nodes carry the ACL ``users``: the Sentinels ask for no password, so a client
    authenticates to the master it is pointed at, not to the Sentinels. With ``tls`` the
    Sentinels, the replication and the data nodes all speak TLS only.
    """

    def __init__(
        self,
        data_dir: Path,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "omni",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        users: Optional[Sequence[str]] = None,
        tls: Optional[TlsMaterial] = None,
    ) -> None:
        super().__init__(data_dir, users, tls)
        self.service = service
        self.master = self._data_node(free_port(), ())
        follow = ["--replicaof", "127.0.0.1", str(self.master.port)]
        if self.admin_password:
            follow += ["--masterauth", self.admin_password]
        if tls:
            follow += ["--tls-replication", "yes"]
        #: The data nodes, the master first; after a failover ``master`` is another of them.
        self.nodes = [self.master, *(self._data_node(free_port(), follow) for _ in range(replicas))]
        monitor = [
            f"sentinel monitor {service} 127.0.0.1 {self.master.port} {sentinels // 2 + 1}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
        ]
        if self.admin_password:
            monitor.append(f"sentinel auth-pass {service} {self.admin_password}")
        self.sentinels = [
            SentinelServer(self.data_dir / f"sentinel-{port}", port, monitor, tls=tls)
            for port in (free_port() for _ in range(sentinels))
        ]

    @property
    def url(self) -> str:
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"{scheme}://{hosts}/{self.service}/0"

    def start(self) -> RedisSentinelProcesses:
        try:
            _start_all(self.nodes)
            for replica in self.nodes[1:]:
                wait_until(
                    functools.partial(_in_sync_or_none, replica),
                    SETTLE_SECONDS,
                    f"replica {replica.port} did not sync",
                )
            # Only now: a Sentinel learns the replicas from the master's INFO, which it reads
            # every 10 s, so a replica not yet attached at its first look stays unknown long.
            _start_all(self.sentinels)
            for sentinel in self.sentinels:
                wait_until(
                    functools.partial(self._sees_everyone_or_none, sentinel),
                    SETTLE_SECONDS,
                    f"sentinel {sentinel.port} did not find the replicas and other sentinels",
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _sees_everyone_or_none(self, sentinel: SentinelServer) -> Optional[bool]:
        return self._sees_everyone(sentinel) or None

    def _sees_everyone(self, sentinel: SentinelServer) -> bool:
        with sentinel.admin_client(decode_responses=True, socket_timeout=2) as client:
            master = client.execute_command("SENTINEL", "MASTER", self.service)
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
        fields = _as_dict(master)
        healthy = [reply for reply in replicas if _as_dict(reply)["flags"] == "slave"]
        return (
            fields["flags"] == "master"
            and int(fields["num-other-sentinels"]) == len(self.sentinels) - 1
            and len(healthy) == len(self.nodes) - 1
        )

    def kill_master(self) -> None:
        """SIGKILL the current master, as a crash would."""
        self.master.kill()

    def wait_for_failover(self, timeout: float) -> RedisServer:
        """Wait until every live Sentinel names a new master and that node answers ROLE as a
        master; it becomes ``self.master`` and is returned."""
        old = self.master

        def new_master() -> Optional[RedisServer]:
            answers = {sentinel.master_address(self.service) for sentinel in _live(self.sentinels)}
            if len(answers) != 1:
                return None
            (address,) = answers
            if address is None or address[1] == old.port:
                return None
            node = self.node_on(address[1])
            return node if _role(node) == "master" else None

        self.master = wait_until(new_master, timeout, f"no sentinel failover of {self.service}")
        return self.master

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()
