"""The Chatwoot mirror's state in Redis (every key expires).

- ``omni:{<cid>}:chatwoot`` (HASH, the conversation's slot): the customer's Chatwoot contact
  (``contact_id``, ``source_id``: their session in our API inbox, kept across hand-offs) and the
  mirror of the latest hand-off: ``handoff_id``, the Chatwoot ``conversation`` (display id),
  ``cursor`` (the event-log index mirrored up to, exclusive), ``notes_cursor`` and
  ``notices_cursor`` (how many of the inbox's notes and of :meth:`ChatwootState.add_notice`'s
  notes are posted), the steps done (``summary``, ``closed``), the last message we posted
  (``last_message``) and the post under way (``pending``: its ``source_id``; after a crash or a
  failed answer, Chatwoot's messages are searched for it before anything is posted again),
  likewise ``pending_conversation`` (the hand-off whose Chatwoot conversation is being created).
  Kept :data:`KEEP_SECONDS` after its last change.
- ``omni:{<cid>}:chatwoot:notices`` (LIST) + ``…:notice_ids`` (SET): notes for agents about
  what they did in Chatwoot (a reply that could not be sent, and why), posted by the mirror.
- ``omni:{~chatwoot:<account>:<conversation>}:handoff`` (STRING, its own slot): which of our
  conversations and hand-offs a Chatwoot conversation mirrors, for the webhook.
- ``omni:chatwoot:delivery:<sha256>`` / ``omni:chatwoot:signature:<hex>`` (STRING): webhook
  deliveries (``X-Chatwoot-Delivery``) and signatures already taken, for twice the signature's
  maximum age: a replay is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from omnichannel.redis_client import AnyRedis, LuaScript, conversation_key, global_key, redis_client

#: How long a conversation's mirror state (and a Chatwoot conversation's link back) is kept after
#: its last change: long enough for an agent's late reply to be answered with why it was not
#: sent, and for the customer's next hand-off to reuse their Chatwoot contact.
KEEP_SECONDS = 30 * 24 * 3600
#: Notes kept for agents per conversation (the oldest go).
MAX_NOTICES = 200

# KEYS: notices list, notice ids set. ARGV: id, notice json, max notices, ttl seconds.
# Returns 1 when added, 0 when a notice with that id was added before.
_ADD_NOTICE = LuaScript(
    """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _int(value: Optional[str]) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else 0


@dataclass(frozen=True)
class Thread:
    """One conversation's mirror state (see the module docstring); empty values when unset."""

    fields: Dict[str, str]

    def get(self, name: str) -> str:
        return self.fields.get(name, "")

    @property
    def handoff_id(self) -> str:
        return self.get("handoff_id")

    @property
    def conversation(self) -> int:
        return _int(self.get("conversation"))

    @property
    def contact_id(self) -> int:
        return _int(self.get("contact_id"))

    @property
    def source_id(self) -> str:
        return self.get("source_id")

    @property
    def cursor(self) -> int:
        return _int(self.get("cursor"))

    @property
    def notes_cursor(self) -> int:
        return _int(self.get("notes_cursor"))

    @property
    def notices_cursor(self) -> int:
        return _int(self.get("notices_cursor"))

    @property
    def last_message(self) -> int:
        return _int(self.get("last_message"))

    @property
    def pending(self) -> str:
        return self.get("pending")

    def done(self, step: str) -> bool:
        return self.get(step) == "1"


@dataclass(frozen=True)
class Link:
    """Which hand-off of which of our conversations a Chatwoot conversation mirrors."""

    conversation_id: str
    handoff_id: str


class ChatwootState:
    """Reads and writes the keys of the module docstring."""

    def __init__(self, redis_url: Optional[str], account_id: int) -> None:
        self.redis_url = redis_url
        self.account_id = account_id

    def _redis(self) -> AnyRedis:
        return redis_client(self.redis_url)

    @staticmethod
    def thread_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "chatwoot")

    @staticmethod
    def notices_key(conversation_id: str) -> Tuple[str, str]:
        return (
            conversation_key(conversation_id, "chatwoot", "notices"),
            conversation_key(conversation_id, "chatwoot", "notice_ids"),
        )

    def link_key(self, chatwoot_conversation: int) -> str:
        return conversation_key(f"~chatwoot:{self.account_id}:{chatwoot_conversation}", "handoff")

    async def forget(self, redis: AnyRedis, conversation_id: str) -> int:
        """Erasure (omnichannel/erasure.py): the link back from this conversation's Chatwoot
        conversation, kept under Chatwoot's number; the thread itself is under our tag."""
        raw = await redis.hget(self.thread_key(conversation_id), "conversation")
        number = _int(_text(raw)) if raw is not None else 0
        if not number:
            return 0
        return int(await redis.delete(self.link_key(number)))

    # -- the mirror ---------------------------------------------------------------------------

    async def thread(self, conversation_id: str) -> Thread:
        raw = await self._redis().hgetall(self.thread_key(conversation_id))
        return Thread({_text(k): _text(v) for k, v in raw.items()})

    async def update(self, conversation_id: str, **fields: Any) -> Thread:
        """Sets ``fields`` (one HSET: all or none) and renews the expiry; returns the state."""
        key = self.thread_key(conversation_id)
        client = self._redis()
        await client.hset(key, mapping={name: str(value) for name, value in fields.items()})
        await client.expire(key, KEEP_SECONDS)
        return await self.thread(conversation_id)

    async def start_mirror(
        self, conversation_id: str, handoff_id: str, chatwoot_conversation: int, cursor: int
    ) -> Thread:
        """The Chatwoot conversation of hand-off ``handoff_id`` exists: the link back is written
        first (a webhook about it must find it), then the mirror starts at ``cursor``."""
        await self._redis().set(
            self.link_key(chatwoot_conversation),
            json.dumps({"conversation_id": conversation_id, "handoff_id": handoff_id}),
            ex=KEEP_SECONDS,
        )
        return await self.update(
            conversation_id,
            handoff_id=handoff_id,
            conversation=chatwoot_conversation,
            cursor=cursor,
            pending="",
            pending_conversation="",
            summary="",
            closing_note="",
            closed="",
            last_message=0,
        )

    async def link(self, chatwoot_conversation: int) -> Optional[Link]:
        raw = await self._redis().get(self.link_key(chatwoot_conversation))
        if not raw:
            return None
        found = json.loads(raw)
        return Link(str(found["conversation_id"]), str(found["handoff_id"]))

    # -- notes for agents -----------------------------------------------------------------------

    async def add_notice(
        self, conversation_id: str, notice_id: str, chatwoot_conversation: int, text: str
    ) -> bool:
        """Queues a private note for agents in ``chatwoot_conversation`` (posted by the mirror's
        next sync); once per ``notice_id``."""
        notices, ids = self.notices_key(conversation_id)
        added = await _ADD_NOTICE(
            self._redis(),
            [notices, ids],
            [
                notice_id,
                json.dumps({"id": notice_id, "conversation": chatwoot_conversation, "text": text}),
                MAX_NOTICES,
                KEEP_SECONDS,
            ],
        )
        return bool(int(added))

    async def notices(self, conversation_id: str, start: int) -> List[Dict[str, Any]]:
        notices, _ = self.notices_key(conversation_id)
        raw = await self._redis().lrange(notices, start, start + MAX_NOTICES)
        return [json.loads(item) for item in raw]

    # -- webhook deliveries -----------------------------------------------------------------------

    @staticmethod
    def _delivery_keys(delivery_id: Optional[str], signature: Optional[str]) -> List[str]:
        keys = []
        if signature:
            keys.append(global_key("chatwoot", "signature", signature))
        if delivery_id:
            digest = hashlib.sha256(delivery_id.encode("utf-8")).hexdigest()
            keys.append(global_key("chatwoot", "delivery", digest))
        return keys

    async def take_delivery(
        self, delivery_id: Optional[str], signature: Optional[str], ttl_seconds: int
    ) -> bool:
        """True the first time a delivery (by its id, and by its signature) is seen; False for a
        replay. Each key lives in its own slot, so they are set one after the other."""
        for key in self._delivery_keys(delivery_id, signature):
            if not await self._redis().set(key, "1", nx=True, ex=ttl_seconds):
                return False
        return True

    async def release_delivery(self, delivery_id: Optional[str], signature: Optional[str]) -> None:
        """Forgets a delivery that could not be handled, so Chatwoot's retry is taken."""
        for key in self._delivery_keys(delivery_id, signature):
            await self._redis().delete(key)
