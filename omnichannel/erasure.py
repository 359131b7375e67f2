"""Forgetting a customer everywhere Redis holds them (the right to erasure), once, with a
receipt.

What one conversation leaves in Redis, and how each goes:

- every key under the conversation's hash tag, ``omni:{<cid>}:…`` (and a namespaced store's
  ``omni:<ns>:{<cid>}:…``): the event log, its session marker, lock tickets, durable work items,
  call state and reports, offered SMS options, WhatsApp's window and held messages, chat
  uploads, delivery receipts, the contact profile, the insight record: found by SCAN on every
  primary and deleted;
- every key under the hash tag of an address the conversation owned, ``omni:{a_<digest>}:…``
  (the address's record, the web chat's sockets, revocations and rate limit);
- its members in the durable work indexes (``omni:work:<kind>``), the hand-off's queues and the
  outbound indexes (``omni:outbound:due``, ``omni:outbound:recent``);
- its not-understood texts in the insight lists and its id in their links
  (:meth:`omnichannel.insight.store.InsightStore.forget`); the counts and HyperLogLogs hold no
  text and no id;
- whatever a part registered with :func:`register_eraser` (a part that keeps customer data
  under a tag of its own adds one function there). Erasers run first, while the conversation's
  own records still exist, so a part can read there what it keeps elsewhere (a helpdesk's link
  from its conversation number back to ours).

Left on purpose: the tombstone ``omni:{<cid>}:forgotten`` (the value ``1``, no data), for
:data:`TOMBSTONE_SECONDS`, so a turn accepted before the erasure cannot write the conversation
back (the tracker store refuses to append to an erased conversation) and a contact racing the
erasure starts a new conversation; the audit log, which names conversations by a one-way digest
only; the consent records of the conversation's addresses (``omni:{a_<digest>}:consent`` and its
log: a time, a source, STOP or START, no message text), so a customer who said STOP is not
texted again because they also asked to be forgotten. The erased customer's next message starts
a new, empty conversation.

The caller (connectors/erasure.py) holds the conversation's lock meanwhile, so no turn runs
during an erasure.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Sequence

from omnichannel.audit import conversation_digest
from omnichannel.handoff.state import CLAIMED, QUEUED
from omnichannel.handoff.store import HandoffStore
from omnichannel.identity import IdentityStore
from omnichannel.insight.store import InsightStore
from omnichannel.outbound.items import OutboundStore
from omnichannel.redis_client import KEY_PREFIX, AnyRedis, conversation_key, global_key

#: How long an erased conversation's tombstone stays: longer than any accepted turn can wait.
TOMBSTONE_SECONDS = 3600
#: The durable work kinds whose indexes name conversations (omnichannel/leases.py).
WORK_KINDS: List[str] = [
    "sms_turn",
    "sms_outbox",
    "chat_turn",
    "voice_turn",
    "handoff_message",
    "desk_sync",
    "outbound_send",
]

#: Erases what a part keeps of a conversation under keys of its own; returns how many it removed.
Eraser = Callable[[AnyRedis, str], Awaitable[int]]
_erasers: Dict[str, Eraser] = {}


def register_eraser(name: str, eraser: Eraser) -> None:
    """Adds a part's eraser (idempotent by name)."""
    _erasers[name] = eraser


def register_work_kind(kind: str) -> None:
    """A durable work kind whose index may name the conversation."""
    if kind not in WORK_KINDS:
        WORK_KINDS.append(kind)


@dataclass
class Receipt:
    """What an erasure removed; ``erased`` is False when nothing was left to remove (a second
    call, or an id never seen): erasure is idempotent."""

    receipt_id: str
    conversation: str
    at: float
    keys_deleted: int = 0
    index_entries_removed: int = 0
    insight_texts_removed: int = 0
    parts: Dict[str, int] = field(default_factory=dict)

    @property
    def erased(self) -> bool:
        return bool(
            self.keys_deleted
            or self.index_entries_removed
            or self.insight_texts_removed
            or any(self.parts.values())
        )

    def as_dict(self) -> Dict[str, Any]:
        return {
            "receipt_id": self.receipt_id,
            "conversation": self.conversation,
            "at": self.at,
            "erased": self.erased,
            "keys_deleted": self.keys_deleted,
            "index_entries_removed": self.index_entries_removed,
            "insight_texts_removed": self.insight_texts_removed,
            "parts": dict(self.parts),
        }


def _glob_escaped(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


async def _scan_delete(
    redis: AnyRedis, patterns: Sequence[str], keep: Sequence[str], uncounted: str
) -> int:
    """Deletes the keys ``patterns`` match but ``keep``; returns how many, leaving out those
    containing ``uncounted`` (the lock the erasure itself holds: not the customer's data)."""
    deleted = 0
    for pattern in patterns:
        found = [key async for key in redis.scan_iter(match=pattern, count=1000)]
        for key in found:
            name = key.decode() if isinstance(key, bytes) else str(key)
            if name in keep:
                continue
            removed = int(await redis.delete(name))
            if uncounted not in name:
                deleted += removed
    return deleted


async def erase(redis: AnyRedis, conversation_id: str, namespace: str = "") -> Receipt:
    """Forgets ``conversation_id`` everywhere listed in the module docstring (``namespace``: the
    tracker store's ``key_prefix``, under which its insight record is kept)."""
    receipt = Receipt(
        receipt_id="er_" + secrets.token_urlsafe(12),
        conversation=conversation_digest(conversation_id),
        at=round(time.time(), 3),
    )
    identity = IdentityStore(redis)
    records = await redis.smembers(conversation_key(conversation_id, "addresses"))
    address_tags = []
    for record in records:
        name = record.decode() if isinstance(record, bytes) else str(record)
        start, end = name.find("{"), name.find("}")
        if 0 <= start < end:
            address_tags.append(name[start + 1 : end])
    for name, eraser in _erasers.items():
        receipt.parts[name] = await eraser(redis, conversation_id)
    insight = InsightStore(redis, namespace=namespace)
    receipt.insight_texts_removed = await insight.forget(conversation_id)
    tombstone = conversation_key(conversation_id, "forgotten")
    # The identity's own keys, which forget() deletes: counted first for the receipt.
    owned = [conversation_key(conversation_id, part) for part in ("profile", "addresses")]
    owned.append(conversation_key(conversation_id, "sms_failures"))
    identity_keys = int(await redis.exists(*owned))
    for record in records:
        identity_keys += int(await redis.exists(record))
    await identity.forget(conversation_id)
    await redis.pexpire(tombstone, TOMBSTONE_SECONDS * 1000)
    escaped = _glob_escaped(conversation_id)
    patterns = [f"{KEY_PREFIX}:{{{escaped}}}:*", f"{KEY_PREFIX}:*:{{{escaped}}}:*"]
    patterns += [f"{KEY_PREFIX}:{{{_glob_escaped(tag)}}}:*" for tag in address_tags]
    lock = conversation_key(conversation_id, "lock")
    # The consent records (omnichannel/outbound/consent.py ConsentStore.record_key, log_key).
    consent = [
        key
        for tag in address_tags
        for key in (conversation_key(tag, "consent"), conversation_key(tag, "consent", "log"))
    ]
    receipt.keys_deleted = identity_keys + await _scan_delete(
        redis, patterns, keep=[tombstone, *consent], uncounted=lock
    )
    for name in (QUEUED, CLAIMED, "due"):  # the hand-off's queues (omnichannel/handoff/store.py)
        index = HandoffStore.index_key(name)
        receipt.index_entries_removed += int(await redis.zrem(index, conversation_id))
    indexes = [global_key("work", kind) for kind in WORK_KINDS]
    indexes += [OutboundStore.DUE_KEY, OutboundStore.RECENT_KEY]
    for index in indexes:
        prefix = json.dumps([conversation_id, ""])[:-3]
        members = [
            member
            async for member, _ in redis.zscan_iter(index, match=_glob_escaped(prefix) + "*")
        ]
        for member in members:
            receipt.index_entries_removed += int(await redis.zrem(index, member))
    return receipt
