"""The agent side, as an interface: where people answer hand-offs.

Two kinds of desk exist. The embedded inbox (:mod:`connectors.inbox`) reads the hand-off
records and the event log directly and acts through :class:`~connectors.handoff.engine.
HandoffEngine`; it needs nothing pushed to it. A helpdesk the team already runs (Chatwoot, say)
keeps its own copy of each handed-off conversation, so it implements :class:`AgentDesk`:

- **out** (the engine calls it): :meth:`AgentDesk.sync` brings the desk up to date with one
  conversation: its hand-off record (``engine.store.get``) and its event log
  (``engine.event_log().read_events``: the customer's messages, the bot's and agents' replies).
  The engine asks for a sync after every change that matters to agents (a hand-off requested,
  claimed, handed back, resolved, abandoned or given up; a customer message while it is open;
  an agent's reply) as durable work (kind ``desk_sync``): at least once, on any replica,
  retried after a crash. Calls can repeat and can come after later changes, so a desk syncs to
  *the state it reads*, not to the change that triggered it, keeping its own cursor (the log
  index it mirrored up to) in Redis; syncs of one conversation run one at a time
  (:meth:`HandoffEngine.sync_lock` holds a per-conversation, per-desk lock).
- **in** (the desk's webhooks call the engine): ``claim``, ``reply``, ``note``, ``hand_back``,
  ``resolve`` of :class:`~connectors.handoff.engine.HandoffEngine`, with the agent as an
  :class:`~omnichannel.handoff.state.Actor` (``Actor.agent(id, name)``): the same transitions,
  metrics, durable replies and bot resumption as the inbox's.

A desk registers itself when its Rasa channel starts (``await handoff_engine().add_desk(desk)``,
after ``handoff_engine().start(app.ctx)``);
``owns_agent_side`` makes the inbox read-only (agents act in the helpdesk).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

from omnichannel.handoff.reach import Reach
from omnichannel.handoff.store import HandoffStore


class DeskContext(Protocol):
    """What a desk's sync reads (the engine is one): the hand-off records, the conversations'
    event logs (``read_events(cid, start, stop)``, ``event_count(cid)``) and where each
    customer can be answered; and how it asks for another sync."""

    store: HandoffStore

    def event_log(self) -> Any: ...

    async def reach(self, conversation_id: str) -> Reach: ...

    async def changed(self, conversation_id: str) -> None:
        """Asks for another sync (durably): a desk that ran out of time continues there."""


class AgentDesk(ABC):
    """A helpdesk kept in sync with handed-off conversations (see the module docstring)."""

    #: Short, fixed name: the desk's work items and its entry in the desks agents can use.
    name: ClassVar[str]
    #: True when agents answer in this desk: the embedded inbox then shows conversations but
    #: refuses claims and replies.
    owns_agent_side: ClassVar[bool] = False

    @abstractmethod
    async def sync(self, conversation_id: str, engine: DeskContext) -> None:
        """Brings the desk up to date with the conversation (see the module docstring).
        Raising leaves the work item to be retried (after its lease) by any replica."""

    def retry_delay(self, attempt: int) -> float:
        """Seconds before a sync that failed on its ``attempt``-th try is tried again (by any
        replica); 0: after the work item's lease, as any work taken over. A desk calling a
        vendor backs off here."""
        return 0.0
