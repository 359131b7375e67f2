"""Erasure as the Rasa server runs it: under the conversation's lock, so no turn of that
customer runs meanwhile (a turn queued behind it then finds the conversation erased and stores
nothing), then :func:`omnichannel.erasure.erase`, then this process's cached copy of the
conversation dropped. Audited with the receipt's id."""

from __future__ import annotations

from typing import Any, Optional

from connectors.admin_auth import ADMIN
from connectors.event_log.reading import event_log_of
from omnichannel import audit
from omnichannel.erasure import Receipt, erase
from omnichannel.redis_client import AnyRedis


async def erase_conversation(
    agent: Any, redis: AnyRedis, conversation_id: str, client: Optional[str]
) -> Receipt:
    store = event_log_of(agent, "erasure")
    namespace = getattr(store, "namespace", "")
    async with agent.lock_store.lock(conversation_id):
        receipt = await erase(
            redis, conversation_id, namespace if isinstance(namespace, str) else ""
        )
    sessions = getattr(store, "_sessions", None)
    if sessions is not None:
        sessions.drop(conversation_id)
    await audit.record(redis, ADMIN, f"erase {receipt.receipt_id}", conversation_id, client)
    return receipt
