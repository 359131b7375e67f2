"""A local fleet on real parts: Redis, one action server, N Rasa replicas and HAProxy in front.

The topology of ``deploy/`` (compose.yml, haproxy.cfg), on loopback: every replica has the same
environment, ``PUBLIC_BASE_URL`` is the load balancer's URL (Twilio signs over it, VAPI is handed
it), ``TRUSTED_PROXY_HOPS=1`` (HAProxy sets ``X-Forwarded-For``), and each replica serves its
metrics on its own ``METRICS_PORT``. Twilio's REST API, VAPI's control URL and the LLM provider
are the local fakes the tests use. HAProxy is Debian's (``make system-packages`` installs it),
run on a config made from ``deploy/haproxy.cfg`` itself, so the fleet test exercises the
deployed health check and timeouts; only the listen address, the static servers (instead of
Docker's DNS) and a probe interval short enough for a test differ.

Operations: :meth:`Fleet.kill` (SIGKILL, as a crash or an OOM kill), :meth:`Fleet.restart`
(SIGTERM, wait for the drained process to exit, start it again on the same port, wait until
HAProxy sees it ready), :meth:`Fleet.rolling_restart` (that, one replica after another, as a
deploy does), :meth:`Fleet.redis_failover` (Sentinel topology: the master SIGKILLed, its replica
promoted), :meth:`Fleet.status` (HAProxy's view, from its admin socket) and
:meth:`Fleet.work_held_by` (the durable work a replica holds, so a kill can pick a moment when
it matters). ``bench.fleet.soak`` and ``tests/fleet`` drive it; run alone it starts a fleet and
waits (``python -m bench.fleet.local_fleet --replicas 3``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple, Union

from redis import Redis as RedisClient  # the attribute Fleet.redis shadows the module

from devtools.model import ensure_model
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.fake_twilio import FakeTwilio
from testkit.fake_vapi import FakeVapi
from testkit.processes import ROOT, RedisServer, spawn, stop, wait_for_port
from testkit.redis_topologies import RedisSentinelProcesses
from testkit.stack import action_server_command, local_secrets, rasa_server_command, wait_for_model

#: Debian's package (`make system-packages` installs it).
HAPROXY = Path("/usr/sbin/haproxy")
DEPLOY_HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
READY_PATH = "/webhooks/ops/readyz"

#: SIGTERM'd replicas drain for up to drain_seconds (20 s) and Sanic then waits up to 15 s for
#: open connections: the deploy files' 45 s grace period.
EXIT_GRACE_SECONDS = 45
MODEL_LOAD_TIMEOUT = 240

Redis = Union[RedisServer, RedisSentinelProcesses]

#: Where the fleet's own ports come from: below Linux's ephemeral range (32768-60999), where
#: free_port() and outgoing connections take theirs. A replica binds its port only after some
#: 10 s of imports, and the same port handed meanwhile to another process (a test's metrics
#: exporter, say) was seen answering the replica's model probe.
FLEET_PORTS = range(20000, 30000)
_taken_ports: Set[int] = set()


def fleet_port() -> int:
    """A free loopback port from FLEET_PORTS that no fleet of this process was given yet."""
    while True:
        port = random.choice(FLEET_PORTS)
        if port in _taken_ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken_ports.add(port)
        return port


def haproxy_config(
    deployed: str, port: int, servers: Dict[str, int], stats_socket: Path, inter_ms: int
) -> str:
    """``deploy/haproxy.cfg`` (``deployed``) for loopback: it binds ``127.0.0.1:port`` in plain
    HTTP (the TLS listener and the redirect to it are left out: the local clients speak HTTP),
    its server template becomes one static server per replica (``servers``: name → port) with
    the deployed check options but a probe every ``inter_ms``, and an admin socket is added for
    :meth:`Fleet.status`. Everything else (timeouts, retries, forwarded headers, the readiness
    check) is taken as deployed."""
    lines: List[str] = []
    skipping = False
    for line in deployed.splitlines():
        stripped = line.strip()
        if not line.startswith((" ", "\t")):
            # Docker's DNS resolver section has no use without the template.
            skipping = stripped.startswith("resolvers ")
        if skipping:
            continue
        if stripped.startswith("http-request redirect scheme https"):
            continue
        if stripped.startswith("bind ") and " ssl " in f"{stripped} ":
            continue
        if stripped.startswith("bind "):
            lines.append(f"  bind 127.0.0.1:{port}")
        elif stripped.startswith("server-template "):
            words = stripped.split()
            options = words[words.index("check") :]
            if "resolvers" in options:
                options = options[: options.index("resolvers")]
            if "inter" in options:
                options[options.index("inter") + 1] = f"{inter_ms}ms"
            for name, server_port in servers.items():
                lines.append(f"  server {name} 127.0.0.1:{server_port} {' '.join(options)}")
        else:
            lines.append(line)
        if stripped == "global":
            lines.append(f"  stats socket {stats_socket} mode 600 level admin")
    return "\n".join(lines) + "\n"


def haproxy_command(socket_path: Path, command: str) -> str:
    """One command on HAProxy's admin socket (e.g. ``show stat``), its answer as text."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def running_work(client: RedisClient) -> List[Tuple[str, str]]:
    """(key, owner) of each durable work item (omnichannel/leases.py) still running: the item,
    not its kind's index, says so."""
    found: List[Tuple[str, str]] = []
    for key in client.scan_iter(match="omni:{*}:work:*", count=1000):
        if client.type(key) != b"hash":
            continue
        state, owner = client.hmget(key, "state", "owner")
        if state == b"running":
            found.append((key.decode(), (owner or b"?").decode()))
    return found


@dataclass
class Replica:
    """One Rasa server process of the fleet, always on the same port."""

    name: str
    port: int
    metrics_port: int
    proc: Optional[subprocess.Popen] = None
    #: Starts of this replica (the first included), SIGKILLs and SIGTERMs it got.
    starts: int = 0
    kills: int = 0
    terminations: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Fleet:
    """Redis, the fakes, an action server, ``replicas`` Rasa servers and HAProxy; see module doc.

    ``sentinel`` runs Redis as a master, a replica and 3 Sentinels (so :meth:`redis_failover`
    can move the master), else one redis-server.
    """

    work_dir: Path
    replicas: int = 2
    sentinel: bool = False
    model: Optional[Path] = None
    #: HAProxy's probe interval, also its check timeout: with ``fall 2`` a dead or draining
    #: replica is out of rotation within two of them. Under 1 s, a replica busy with turns
    #: misses probes (its event loop answers late) and HAProxy takes it out for nothing.
    check_inter_ms: int = 1000
    #: How long the fake LLM takes to answer: by default past the SMS connector's 5 s inline
    #: budget, so those replies are texted later by REST, the work a dying replica must not
    #: take with it.
    llm_seconds: float = 6.0
    lb_port: int = field(default_factory=fleet_port)
    action_port: int = field(default_factory=fleet_port)
    redis: Optional[Redis] = None
    twilio: Optional[FakeTwilio] = None
    llm: Optional[FakeLlm] = None
    #: VAPI's call API (callbacks are placed here) and Live Call Control.
    control: Optional[FakeVapi] = None
    env: Dict[str, str] = field(default_factory=dict)
    members: List[Replica] = field(default_factory=list)
    action_proc: Optional[subprocess.Popen] = None
    haproxy_proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The load balancer: the fleet's public URL."""
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def stats_socket(self) -> Path:
        return self.work_dir / "haproxy.sock"

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> Fleet:
        if not os.access(HAPROXY, os.X_OK):
            raise RuntimeError(f"{HAPROXY} missing: run `make system-packages` (installs haproxy)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        model = self.model or ensure_model(quiet=True)
        self.model = model
        if self.sentinel:
            self.redis = RedisSentinelProcesses(self.work_dir / "redis", replicas=1).start()
        else:
            self.redis = RedisServer(self.work_dir / "redis").start()
        secrets = local_secrets(self.lb_port)
        self.twilio = FakeTwilio(secrets["TWILIO_ACCOUNT_SID"], secrets["TWILIO_AUTH_TOKEN"])
        self.twilio.start()
        self.llm = FakeLlm(default=LlmReply(delay=self.llm_seconds)).start()
        secrets["VAPI_API_KEY"] = uuid.uuid4().hex
        secrets["VAPI_PHONE_NUMBER_ID"] = str(uuid.uuid4())
        self.control = FakeVapi(secrets["VAPI_API_KEY"], secrets["VAPI_PHONE_NUMBER_ID"]).start()
        self.env = {
            **secrets,
            "VAPI_API_BASE_URL": self.control.url,
            "REDIS_URL": self.redis.url,
            "TWILIO_API_BASE_URL": self.twilio.url,
            "OPENAI_BASE_URL": self.llm.base_url,
            "OPENAI_API_KEY": "sk-local-fake",
            "LLM_MODEL": "fake-model",
            "HANDOFF_PHONE_NUMBER": "+14155550100",
            "TRUSTED_PROXY_HOPS": "1",
            "ACTION_SERVER_URL": f"http://127.0.0.1:{self.action_port}/webhook",
            # The shop's notifications go at any hour of the run (quiet hours are unit-tested).
            "OUTBOUND_QUIET_HOURS": "off",
        }
        self.action_proc = spawn(
            action_server_command(self.action_port),
            env=self.env,
            log_path=self.log_dir / "actions.log",
        )
        self.members = [
            Replica(f"rasa{index + 1}", fleet_port(), fleet_port())
            for index in range(self.replicas)
        ]
        # Each replica loads the model for tens of seconds: all at once.
        for replica in self.members:
            self._spawn(replica)
        wait_for_port(self.action_port, 60, self.action_proc)
        self._start_haproxy()
        with ThreadPoolExecutor(len(self.members)) as pool:
            list(pool.map(self.wait_ready, self.members))

    def _start_haproxy(self) -> None:
        config = self.work_dir / "haproxy.cfg"
        config.write_text(
            haproxy_config(
                DEPLOY_HAPROXY_CFG.read_text(),
                self.lb_port,
                {replica.name: replica.port for replica in self.members},
                self.stats_socket,
                self.check_inter_ms,
            )
        )
        check = subprocess.run(
            [str(HAPROXY), "-c", "-q", "-f", str(config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused {config}: {check.stdout}{check.stderr}")
        # -db: stay in the foreground, so stop() ends it like the other processes.
        self.haproxy_proc = spawn(
            [str(HAPROXY), "-db", "-f", str(config)], log_path=self.log_dir / "haproxy.log"
        )
        wait_for_port(self.lb_port, 10, self.haproxy_proc)

    def stop(self) -> None:
        stop(self.haproxy_proc)
        with ThreadPoolExecutor(max(1, len(self.members))) as pool:
            list(pool.map(lambda replica: stop(replica.proc, EXIT_GRACE_SECONDS), self.members))
        stop(self.action_proc)
        for fake in (self.control, self.llm, self.twilio):
            if fake is not None:
                fake.stop()
        if self.redis is not None:
            self.redis.stop()

    # -- replicas ---------------------------------------------------------------------------------

    def _spawn(self, replica: Replica) -> None:
        assert self.model is not None
        replica.proc = spawn(
            rasa_server_command(
                self.model, replica.port, ROOT / "credentials.yml", self.env["RASA_AUTH_TOKEN"]
            ),
            env={**self.env, "METRICS_PORT": str(replica.metrics_port)},
            log_path=self.log_dir / f"{replica.name}.log",
        )
        replica.starts += 1

    def wait_ready(self, replica: Replica) -> None:
        """The replica's model is loaded, its readiness probe says ready and HAProxy has put it
        in rotation."""
        assert replica.proc is not None
        try:
            wait_for_model(
                replica.base_url, self.env["RASA_AUTH_TOKEN"], MODEL_LOAD_TIMEOUT, replica.proc
            )
        except (RuntimeError, TimeoutError) as error:
            log = self.logs(replica.name)
            raise RuntimeError(f"{replica.name}: {error}; its log ends:\n{log}") from error
        deadline = time.monotonic() + 60
        while self.status().get(replica.name) != "UP":
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy did not put {replica.name} in rotation")
            time.sleep(0.1)

    def kill(self, replica: Replica) -> None:
        """SIGKILL the replica's process group: no drain, no cleanup, as a crash."""
        assert replica.proc is not None
        os.killpg(replica.proc.pid, signal.SIGKILL)
        replica.proc.wait(10)
        replica.kills += 1

    def terminate(self, replica: Replica) -> float:
        """SIGTERM, as an orchestrator's stop: the replica drains and exits. Returns the seconds
        it took to exit (it is killed past the deploy files' grace period, as Kubernetes does)."""
        assert replica.proc is not None
        started = time.monotonic()
        os.killpg(replica.proc.pid, signal.SIGTERM)
        replica.terminations += 1
        try:
            replica.proc.wait(EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(replica.proc.pid, signal.SIGKILL)
            replica.proc.wait(10)
        return time.monotonic() - started

    def start_replica(self, replica: Replica) -> None:
        """Start a stopped replica again on its port and wait until it is in rotation."""
        self._spawn(replica)
        self.wait_ready(replica)

    def restart(self, replica: Replica) -> float:
        """SIGTERM, wait for the exit, start again, wait ready; returns the exit time."""
        exit_seconds = self.terminate(replica)
        self.start_replica(replica)
        return exit_seconds

    def rolling_restart(self) -> List[float]:
        """Restart every replica in turn, as a rolling deploy; the exit time of each."""
        return [self.restart(replica) for replica in self.members]

    def redis_failover(self, timeout: float = 30) -> None:
        """Move the Redis master to its replica (SIGKILL of the master; Sentinel promotes the
        replica), then bring the old master back as a replica. Sentinel topology only."""
        if not isinstance(self.redis, RedisSentinelProcesses):
            raise RuntimeError("a Redis failover needs the Sentinel topology (sentinel=True)")
        old = self.redis.master
        self.redis.kill_master()
        self.redis.wait_for_failover(timeout)
        # Restarted with its old options it would be a master again beside the new one; the
        # Sentinels reconfigure it as a replica of the new master as soon as it is up.
        old.start()

    def admin_client(self) -> RedisClient:
        """A client of the current Redis master, for reading back state."""
        assert self.redis is not None
        node = self.redis.master if isinstance(self.redis, RedisSentinelProcesses) else self.redis
        return node.admin_client()

    def work_held_by(self, replica: Replica) -> List[str]:
        """The kinds of the running durable work items (omnichannel/leases.py) the replica's
        process owns, one entry per item: what a SIGKILL now leaves for a takeover."""
        if not replica.running:
            return []
        assert replica.proc is not None
        # An owner is "<host>/<pid>/<random>" (leases.REPLICA_ID).
        pid = f"/{replica.proc.pid}/"
        with self.admin_client() as client:
            return [
                key.split(":work:", 1)[1].split(":", 1)[0]
                for key, owner in running_work(client)
                if pid in owner
            ]

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> Dict[str, str]:
        """HAProxy's view of each replica: ``UP``, ``DOWN``, ``MAINT``, ``UP 1/2`` ..."""
        answer = haproxy_command(self.stats_socket, "show stat")
        header, *rows = [line for line in answer.splitlines() if line.strip()]
        columns = header.lstrip("# ").split(",")
        states: Dict[str, str] = {}
        for row in rows:
            values = dict(zip(columns, row.split(","), strict=False))
            if values.get("pxname") == "rasa" and values.get("svname") not in (
                "BACKEND",
                "FRONTEND",
            ):
                states[values["svname"]] = values["status"]
        return states

    def describe(self) -> str:
        states = self.status()
        lines = [f"load balancer {self.url}  redis {self.redis_url}"]
        for replica in self.members:
            lines.append(
                f"  {replica.name} :{replica.port} (metrics :{replica.metrics_port}) "
                f"{'running' if replica.running else 'stopped'}, HAProxy {states.get(replica.name)}"
                f", started {replica.starts}x, killed {replica.kills}x, "
                f"terminated {replica.terminations}x"
            )
        return "\n".join(lines)

    def metrics(self, replica: Replica) -> str:
        """The replica's Prometheus exposition."""
        url = f"http://127.0.0.1:{replica.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def logs(self, name: str, tail: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local fleet behind HAProxy")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--sentinel", action="store_true", help="Redis behind Sentinel")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "var" / "fleet")
    args = parser.parse_args()
    fleet = Fleet(args.work_dir, replicas=args.replicas, sentinel=args.sentinel).start()
    print(fleet.describe(), flush=True)
    print("Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()


if __name__ == "__main__":
    main()
