"""Redis access shared by every part: the one place that turns configuration into a client
(single node, Redis Cluster or Sentinel, see :mod:`omnichannel.redis_config`), the key layout,
retries through failovers, and the one way Lua scripts are run.

All of one conversation's keys carry the conversation id in a hash tag (``omni:{c_…}:…``), and
every address record its own (``omni:{a_…}:…``), so on a cluster every script and command touches
one slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import ssl
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as _RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from omnichannel import metrics
from omnichannel.redis_config import CLUSTER, SENTINEL, RedisConfig, RedisConfigError

logger = logging.getLogger(__name__)

KEY_PREFIX = "omni"

RedisSource = Union[None, str, RedisConfig]
#: Any client this module builds: ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``.
AnyRedis = Union[aioredis.Redis, _RedisCluster]

#: Clients per event loop (weakly keyed: a closed loop's clients go with it) and per config.
_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, Dict[Union[str, RedisConfig], AnyRedis]
] = weakref.WeakKeyDictionary()


class StateUnavailable(RuntimeError):
    """Conversation state could not be read or written (Redis down, timed out, …).

    Connectors turn this into a 503, a spoken or a texted apology: a turn is never answered as
    if its state had been saved.
    """


#: Errors that mean "Redis is not there right now", as opposed to a bug in our own code.
#: (redis-py's cluster client raises RedisClusterException, which is not a RedisError, when no
#: node answers.)
REDIS_FAILURES = (
    RedisError,
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    OSError,
)

#: Errors worth another attempt: the server is unreachable for now, or a cluster is moving
#: slots or electing a new primary, or a Sentinel-managed master was just demoted.
_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
    OSError,
)
#: ...except these, which another attempt cannot fix.
_PERMANENT = (AuthenticationError, AuthorizationError)
_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def conversation_key(conversation_id: str, *parts: str, namespace: str = "") -> str:
    """Key of one conversation's data, hash-tagged so all of it shares a Cluster slot.

    ``namespace`` (a store's ``key_prefix``) separates assistants sharing one Redis while
    keeping every key under ``omni:``, the prefix ACL rules grant.
    """
    head = f"{KEY_PREFIX}:{namespace}:" if namespace else f"{KEY_PREFIX}:"
    return ":".join((f"{head}{{{conversation_id}}}",) + parts)


def check_namespace(namespace: Optional[str]) -> str:
    """A store's ``key_prefix`` option, checked ("" when not set)."""
    if namespace in (None, ""):
        return ""
    if not isinstance(namespace, str) or not NAMESPACE_PATTERN.fullmatch(namespace):
        raise RedisConfigError(f"key_prefix must match {NAMESPACE_PATTERN.pattern}")
    return namespace


def global_key(*parts: str) -> str:
    """Key of a record that belongs to no conversation (SMS dedupe by MessageSid): a single-key
    record, so it may live in any slot."""
    return ":".join((KEY_PREFIX,) + parts)


class _RetryingCommands:
    """Retries a command that failed for a transient reason, with exponential backoff, for at
    most the config's ``retry_seconds``: a failover or a resharding is ridden out, a Redis that
    is really gone still fails the turn loudly once the bound is reached.

    Mixed into the client classes, so every command and script of every part goes through it
    (nothing here uses pipelines). Retrying a write whose reply was lost is safe by design: the
    tracker store's append carries the log length it expects, the lock store's enqueue is keyed
    by the caller's token, identity claims are SET NX of the same value.
    """

    retry_seconds: float = 0.0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = _FIRST_DELAY
        while True:
            try:
                return await super().execute_command(*args, **options)  # type: ignore[misc]
            except _PERMANENT:
                raise
            except _TRANSIENT as error:
                pause = delay * random.uniform(0.5, 1.0)
                if time.monotonic() + pause > deadline:
                    metrics.REDIS_COMMAND_FAILURES.labels(command=metrics.command_name(args)).inc()
                    raise
                metrics.REDIS_RETRIES.labels(command=metrics.command_name(args)).inc()
                logger.warning(
                    "Redis %s failed (%s: %s); retrying in %.0f ms",
                    args[0] if args else "command",
                    type(error).__name__,
                    error,
                    pause * 1000,
                )
                await asyncio.sleep(pause)
                delay = min(delay * 2, _MAX_DELAY)


class RetryingRedis(_RetryingCommands, aioredis.Redis):
    """A single-node (or Sentinel-managed master) client with bounded retries."""


class RetryingRedisCluster(_RetryingCommands, _RedisCluster):
    """A cluster client with bounded retries; redis-py itself follows MOVED and ASK."""

    async def delete(self, *names: Any) -> int:
        """redis-py 4.6 sends even a one-key DEL through a cluster pipeline, which bypasses the
        retries; one key (all this project deletes at once) goes as a plain command."""
        if len(names) == 1:
            return int(await self.execute_command("DEL", names[0]))
        return int(await super().delete(*names))


def redis_client(source: RedisSource = None) -> AnyRedis:
    """The async client for ``source`` bound to the running event loop.

    ``source`` is a :class:`RedisConfig`, a URL (read with the ``REDIS_*`` variables), or None
    for ``REDIS_URL``. redis.asyncio connections belong to the loop that opened them; Rasa's
    server, the action server and tests each run their own loop, so clients are cached per
    (config, loop).
    """
    try:
        loop_clients = _clients.setdefault(asyncio.get_running_loop(), {})
    except RuntimeError:
        return build_client(redis_config(source))
    # Keyed by the URL itself on the hot path: no parsing once a loop has its client.
    key = source if source is not None else redis_config(None)
    client = loop_clients.get(key)
    if client is None:
        client = build_client(redis_config(source))
        loop_clients[key] = client
    return client


def redis_config(source: RedisSource = None) -> RedisConfig:
    """The configuration ``source`` names (see :func:`redis_client`)."""
    if isinstance(source, RedisConfig):
        return source
    if source is None:
        from omnichannel.settings import load_settings

        return load_settings().redis
    return _parsed_url(source, _redis_environment())


def _redis_environment() -> Tuple[Tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("REDIS_")))


_parsed_urls: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], RedisConfig] = {}


def _parsed_url(url: str, environment: Tuple[Tuple[str, str], ...]) -> RedisConfig:
    config = _parsed_urls.get((url, environment))
    if config is None:
        config = RedisConfig.from_url(url, dict(environment))
        _parsed_urls[(url, environment)] = config
    return config


def _connection_options(config: RedisConfig) -> Dict[str, Any]:
    options: Dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "health_check_interval": 15,
        "username": config.username,
        "password": config.password,
    }
    if config.tls:
        options.update(
            ssl=True,
            ssl_cert_reqs="required",
            ssl_ca_certs=config.tls_ca_file,
            ssl_certfile=config.tls_cert_file,
            ssl_keyfile=config.tls_key_file,
            ssl_check_hostname=config.tls_check_hostname,
        )
    return options


def build_client(config: RedisConfig) -> AnyRedis:
    """A new client for ``config`` (callers normally want the cached :func:`redis_client`)."""
    options = _connection_options(config)
    client: AnyRedis
    if config.deployment == CLUSTER:
        client = RetryingRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in config.nodes],
            # 1, not 0: redis-py 4.6 runs multi-key commands as a pipeline that makes exactly
            # this many attempts (0 would fail every one); single commands retry in our mixin.
            cluster_error_retry_attempts=1,
            connection_error_retry_attempts=0,
            **{k: v for k, v in options.items() if k != "health_check_interval"},
        )
    elif config.deployment == SENTINEL:
        sentinel_options = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl"))}
        sentinel_options.update(
            username=config.sentinel_username, password=config.sentinel_password
        )
        sentinel = Sentinel(config.nodes, sentinel_kwargs=sentinel_options, **options)
        client = sentinel.master_for(config.service_name, redis_class=RetryingRedis, db=config.db)
    elif config.unix_path:
        client = RetryingRedis(
            unix_socket_path=config.unix_path,
            db=config.db,
            **{k: v for k, v in options.items() if not k.startswith("ssl")},
        )
    else:
        ((host, port),) = config.nodes
        client = RetryingRedis(host=host, port=port, db=config.db, **options)
    client.retry_seconds = config.retry_seconds
    return client


async def subscriber(source: RedisSource = None) -> PubSub:
    """A pub/sub connection that hears every ``PUBLISH`` of the deployment.

    Classic pub/sub messages reach every node of a cluster, so one connection to any node
    (picked at random, so replicas spread the load) hears all conversations; on Sentinel it
    follows the master. See docs/OPERATORS.md, "Production Redis", for why not sharded pub/sub.
    """
    config = redis_config(source)
    if config.deployment != CLUSTER:
        return redis_client(config).pubsub()
    cluster = redis_client(config)
    await cluster.initialize()
    node = random.choice(cluster.get_nodes())
    options = _connection_options(config)
    return RetryingRedis(host=node.host, port=node.port, **options).pubsub()


def _missing_right(error: BaseException) -> Optional[str]:
    """The ACL right an error from Redis says the user lacks, or None if it is no ACL refusal.

    Redis words these differently per command and version: ``NOPERM … no permissions to run the
    'info' command``, ``… to access one of the channels``, and, inside a script, ``The user
    executing the script can't publish to the channel …``.
    """
    text = str(error).lower()
    if not any(mark in text for mark in ("noperm", "permission", "user executing the script")):
        return None
    command = re.search(r"run the '([\w|]+)' command", text)
    if command and command.group(1) not in ("eval", "evalsha", "script|load"):
        return f"+{command.group(1)} (a command the client runs)"
    if "channel" in text or "publish" in text:
        return (
            f"&{KEY_PREFIX}:* (pub/sub channels: every tracker save publishes the new events "
            "for the web chat's live feed)"
        )
    if "key" in text:
        return f"~{KEY_PREFIX}:* (keys)"
    return "+@scripting +@read +@write (Lua scripts and the commands they run)"


def _causes(error: BaseException) -> List[BaseException]:
    """``error`` and what it was raised from: redis-py's cluster client wraps the real error."""
    chain: List[BaseException] = []
    seen: Optional[BaseException] = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


async def check_access(source: RedisSource = None) -> None:
    """Fail with a :class:`RedisConfigError` naming the ACL right the configured user lacks.

    Probes what every part needs (a script that writes an ``omni:`` key with an expiry and
    publishes on an ``omni:`` channel). Connection failures are raised as they are: a Redis that
    is down is not a configuration error.
    """
    config = redis_config(source)
    client = build_client(config)
    probe = conversation_key("access-check", "probe")
    try:
        await _ACCESS_PROBE(client, [probe], [conversation_key("access-check", "live")])
    except REDIS_FAILURES as error:
        problem = _access_problem(error, config)
        if problem is None:
            raise
        raise RedisConfigError(problem) from None
    finally:
        await client.close()


def _access_problem(error: BaseException, config: RedisConfig) -> Optional[str]:
    """What an operator must fix, when ``error`` means wrong credentials, a missing ACL right
    or a TLS problem; None when Redis is merely unreachable."""
    for cause in _causes(error):
        if isinstance(cause, AuthenticationError):
            return f"Redis refused the credentials for {config.display()} ({type(cause).__name__})"
        right = _missing_right(cause) if isinstance(cause, ResponseError) else None
        if right is not None:
            return (
                f"Redis user {config.username or 'default'!r} on {config.display()} lacks the "
                f"ACL right {right}; see docs/OPERATORS.md, 'Production Redis'"
            )
    return _tls_problem(error, config)


_checked: set[RedisConfig] = set()


def _tls_problem(error: BaseException, config: RedisConfig) -> Optional[str]:
    """What an operator must fix when a TLS handshake failed, or None for other failures.

    redis-py reports a refused certificate as "Error 1 connecting … 1."; the SSL error behind it
    says which side is wrong.
    """
    handshake = next((c for c in _causes(error) if isinstance(c, ssl.SSLError)), None)
    if handshake is None:
        return None
    detail = f"{type(handshake).__name__}: {getattr(handshake, 'verify_message', '') or handshake}"
    if isinstance(handshake, ssl.SSLCertVerificationError):
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return (
                f"TLS: the certificate of {config.display()} does not name that host "
                f"({detail}); connect by a name on the certificate, or set "
                "REDIS_TLS_CHECK_HOSTNAME=false"
            )
        where = config.tls_ca_file or "the system's trusted CAs (REDIS_TLS_CA_FILE is not set)"
        return (
            f"TLS: the certificate of {config.display()} is not trusted by {where} ({detail}); "
            "set REDIS_TLS_CA_FILE to the CA that signed the server's certificate"
        )
    reason = getattr(handshake, "reason", None) or ""
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" or (
        reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and not config.tls_cert_file
    ):
        return (
            f"TLS: {config.display()} requires a client certificate ({detail}); set "
            "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE to one its CA signed"
        )
    if reason in ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE"):
        return (
            f"TLS: {config.display()} does not accept the client certificate of "
            f"REDIS_TLS_CERT_FILE ({detail}); use one signed by the CA the server trusts"
        )
    return f"TLS handshake with {config.display()} failed ({detail})"


def check_access_at_start_up(source: RedisSource = None) -> None:
    """:func:`check_access` once per process and configuration, from synchronous start-up code
    (Rasa builds its stores outside any coroutine we own), without retries. A Redis that cannot
    be reached is only logged: turns will then fail loudly, as they would later anyway."""
    config = redis_config(source).replace(retry_seconds=0)
    if config in _checked:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="redis-access-check") as pool:
        try:
            pool.submit(asyncio.run, check_access(config)).result()
        except RedisConfigError:
            raise
        except REDIS_FAILURES as error:
            logger.warning(
                "Redis %s not reachable at start-up (%s); its ACL rights were not checked",
                config.display(),
                type(error).__name__,
            )
            return
    _checked.add(config)


class RedisBacked:
    """Base of the small stores of per-conversation state: they work on the client they were
    given, or else on :func:`redis_client` of the running event loop at each call, so one store
    object serves the Rasa server's loop, the action server's and tests' alike."""

    def __init__(self, redis: Optional[AnyRedis] = None) -> None:
        self._redis = redis

    @property
    def redis(self) -> AnyRedis:
        return self._redis if self._redis is not None else redis_client()

    @property
    def given(self) -> Optional[AnyRedis]:
        """The client this store was given (None: the running loop's), for a store working
        beside it on the same client."""
        return self._redis


class LuaScript:
    """A Lua script run atomically on Redis: EVALSHA first, EVAL when the server lacks it.

    Declare one per script at module level (``_APPEND = LuaScript("...")``) and call it with the
    client of the moment, so the same script serves every event loop's client and pipelines
    alike. EVAL on a miss also caches the script on the server (after a restart or a failover to
    a replica that never saw it).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()

    async def __call__(
        self, client: AnyRedis, keys: Sequence[str] = (), args: Sequence[Any] = ()
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


# Writes a key and publishes on a channel of the project's namespaces, as every tracker save
# does: run at start-up, it turns a missing ACL right into a clear error instead of a failure on
# every turn. KEYS: a probe key. ARGV: a channel.
_ACCESS_PROBE = LuaScript(
    """
redis.call('SET', KEYS[1], '1', 'PX', 10000)
redis.call('PUBLISH', ARGV[1], 'access check')
return 1
"""
)
