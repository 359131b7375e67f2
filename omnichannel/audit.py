"""Who looked at what: an append-only record of access to customers' conversations (the viewer,
the insight page, erasures; the inbox when it is on), kept for ``AUDIT_RETENTION_DAYS``.

Each entry is ``{at, actor, action, conversation, client}``: ``conversation`` is the
conversation's one-way digest (:func:`conversation_digest`), so erasing a customer leaves no id
of theirs here; ``actor`` is the identity the
route authenticated (``admin`` for the Rasa auth token; an agent's id for the inbox),
``client`` the address the request came from (after the trusted proxies). Entries of one UTC day
go to ``omni:{audit}:<day>`` (a LIST, newest first, capped at :data:`MAX_ENTRIES_PER_DAY`), which
expires with the retention period; :func:`read` gives a day's entries back.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, List, Mapping, Optional

from omnichannel.errors import ConfigError
from omnichannel.redis_client import REDIS_FAILURES, AnyRedis, LuaScript, conversation_key

logger = logging.getLogger(__name__)

TAG = "audit"
DEFAULT_RETENTION_DAYS = 400
MAX_ENTRIES_PER_DAY = 100_000

# KEYS: the day's list. ARGV: entry, cap, ttl seconds.
_APPEND = LuaScript(
    """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)


def retention_days(env: Optional[Mapping[str, str]] = None) -> int:
    raw = ((os.environ if env is None else env).get("AUDIT_RETENTION_DAYS") or "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    if not raw.isdigit() or not 1 <= int(raw) <= 3660:
        raise ConfigError(f"AUDIT_RETENTION_DAYS must be a number of days (1-3660), got {raw!r}")
    return int(raw)


def conversation_digest(conversation_id: str) -> str:
    """A one-way name for a conversation, as the audit log keeps it: the same for the same id
    (an auditor finds a conversation's accesses by its id), useless once it is erased."""
    return hashlib.sha256(conversation_id.encode("utf-8")).hexdigest()[:24]


def day_key(day: str) -> str:
    return conversation_key(TAG, day)


def _today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


async def record(
    redis: AnyRedis,
    actor: str,
    action: str,
    conversation_id: Optional[str] = None,
    client: Optional[str] = None,
) -> None:
    """Appends one entry. An audit entry that cannot be written is logged loudly; the access
    itself is not refused for it (the log line is then the record)."""
    entry = {
        "at": round(time.time(), 3),
        "actor": actor,
        "action": action,
        "conversation": conversation_digest(conversation_id) if conversation_id else None,
        "client": client,
    }
    try:
        await _APPEND(
            redis,
            [day_key(_today())],
            [json.dumps(entry), MAX_ENTRIES_PER_DAY, retention_days() * 24 * 3600],
        )
    except REDIS_FAILURES as error:
        logger.error("audit entry not stored (%s): %s", type(error).__name__, json.dumps(entry))


async def read(redis: AnyRedis, day: str, limit: int = 1000) -> List[Dict[str, Any]]:
    """A day's entries, newest first."""
    raw = await redis.lrange(day_key(day), 0, limit - 1)
    return [json.loads(item) for item in raw]
