"""Redis access shared by every part: one async client per event loop, the key layout, and
the one way Lua scripts are run.

All of one conversation's keys carry the conversation id in a hash tag (``omni:{c_…}:…``), so
in Redis Cluster they live in one slot and multi-key scripts on them stay legal.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from typing import Any, Dict, Optional, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from omnichannel.settings import load_settings

KEY_PREFIX = "omni"

#: Clients per event loop (weakly keyed: a closed loop's clients go with it) and per URL.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)


class StateUnavailable(RuntimeError):
    """Conversation state could not be read or written (Redis down, timed out, …).

    Connectors turn this into a 503, a spoken or a texted apology: a turn is never answered as
    if its state had been saved.
    """


#: Errors that mean "Redis is not there right now", as opposed to a bug in our own code.
REDIS_FAILURES = (RedisError, RedisConnectionError, RedisTimeoutError, OSError)


def conversation_key(conversation_id: str, *parts: str) -> str:
    """Key of one conversation's data, hash-tagged so all of it shares a Cluster slot."""
    return ":".join((f"{KEY_PREFIX}:{{{conversation_id}}}",) + parts)


def global_key(*parts: str) -> str:
    """Key of data that belongs to no single conversation (address index, dedupe records)."""
    return ":".join((KEY_PREFIX,) + parts)


def redis_client(url: Optional[str] = None) -> aioredis.Redis:
    """The async client for ``url`` (default ``REDIS_URL``) bound to the running event loop.

    redis.asyncio connections belong to the loop that opened them; Rasa's server, the action
    server and tests each run their own loop, so clients are cached per (url, loop).
    """
    url = url or load_settings().redis_url
    try:
        loop_clients = _clients.setdefault(asyncio.get_running_loop(), {})
    except RuntimeError:
        return _new_client(url)
    client = loop_clients.get(url)
    if client is None:
        client = _new_client(url)
        loop_clients[url] = client
    return client


def _new_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry_on_timeout=False,
    )


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
        self, client: aioredis.Redis, keys: Sequence[str] = (), args: Sequence[Any] = ()
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)
