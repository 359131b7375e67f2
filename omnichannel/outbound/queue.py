"""The process's one outbound queue, shared by every kind of business-initiated item.

Each replica runs one :class:`~omnichannel.outbound.items.OutboundQueue` with a courier for
every kind (notifications, callbacks): a second queue in the same process, missing the other's
courier, would claim that kind's due items and sit on them until their lease ran out. Parts
register their courier with :func:`register_courier` when their server starts and call
``outbound_queue().start()``; tests build their own queue with a controllable clock instead.
"""

from __future__ import annotations

import asyncio
import weakref

from omnichannel.outbound.gate import OutboundGate
from omnichannel.outbound.items import Courier, OutboundQueue
from omnichannel.outbound.policy import OutboundPolicy
from omnichannel.settings import load_settings

_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OutboundQueue] = (
    weakref.WeakKeyDictionary()
)


def outbound_queue() -> OutboundQueue:
    """This event loop's queue, made on first use from the environment (REDIS_URL and the
    OUTBOUND_* policy variables)."""
    loop = asyncio.get_running_loop()
    found = _queues.get(loop)
    if found is None:
        gate = OutboundGate(OutboundPolicy.from_env())
        found = _queues[loop] = OutboundQueue(load_settings().redis_url, gate)
    return found


def register_courier(kind: str, courier: Courier) -> OutboundQueue:
    """Registers ``courier`` for ``kind`` on this loop's queue, starts the queue, returns it."""
    queue = outbound_queue()
    queue.register(kind, courier)
    queue.start()
    return queue
