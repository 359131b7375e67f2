"""What agents do in Chatwoot, carried out through the hand-off engine (the same transitions,
durable replies, metrics and bot resumption as the embedded inbox's):

- a **public reply** (``message_created``: ``outgoing``, not ``private``, written by an agent,
  not our own post): sent to the customer on the channel they last used, through the engine's
  durable reply path (recorded before the webhook is answered, sent once whatever happens to
  this replica; a resent webhook is the same Chatwoot message id, so it is not sent twice). An
  agent who does not hold the conversation takes it by answering (recorded as a takeover when
  another agent held it: in Chatwoot, who may write where is Chatwoot's decision);
- a **private note**: kept as the hand-off's internal note; the customer never sees it;
- **assignment** (``conversation_updated`` with ``assignee_id`` changed, or the conversation
  opened with an assignee): a claim by the assignee;
- **resolving** (``conversation_status_changed`` to ``resolved``, or to ``pending``, Chatwoot's
  "the bot has it"; an agent bot's ``conversation_resolved``): the conversation goes back to the
  assistant (``on_resolve``: handed back, the customer is told so; or resolved silently).

A reply that cannot reach the customer (the hand-off is over, no channel reaches them, too
long, not text) is not dropped silently: a private note in the Chatwoot conversation says why
(:meth:`~connectors.chatwoot.state.ChatwootState.add_notice`, posted by the mirror).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from connectors.chatwoot.desk import AGENT_ID_PREFIX
from connectors.chatwoot.options import HAND_BACK, ChatwootOptions
from connectors.chatwoot.state import ChatwootState
from connectors.chatwoot.transcript import reply_message_id
from connectors.chatwoot.wire import (
    AGENT_SENDER,
    CONVERSATION_OPENED,
    CONVERSATION_RESOLVED,
    CONVERSATION_STATUS_CHANGED,
    CONVERSATION_UPDATED,
    MESSAGE_CREATED,
    OPEN,
    OUTGOING,
    PENDING,
    RESOLVED,
    Message,
    Person,
    WebhookEvent,
)
from connectors.handoff.engine import HandoffEngine, Unreachable
from omnichannel.channels import LABELS
from omnichannel.handoff.state import CLAIMED, Actor, Handoff, TransitionRefused

logger = logging.getLogger(__name__)

ACTED = "acted"
IGNORED = "ignored"
UNKNOWN = "unknown"
NOT_SENT = "not_sent"
#: Who resolved a conversation in Chatwoot when it had no assignee (the payload does not say).
SOMEONE_IN_CHATWOOT = Actor.agent(f"{AGENT_ID_PREFIX}unassigned", "Chatwoot")


@dataclass(frozen=True)
class Outcome:
    """The webhook's answer: HTTP ``status``, ``result`` (acted, ignored, unknown, not_sent)
    and a short ``detail``."""

    status: int
    result: str
    detail: str


def _ignored(detail: str) -> Outcome:
    return Outcome(200, IGNORED, detail)


def agent_actor(person: Person) -> Actor:
    return Actor.agent(f"{AGENT_ID_PREFIX}{person.id}", person.name or f"Agent {person.id}")


@dataclass(frozen=True)
class _Target:
    """What a webhook event is about: our conversation and its hand-off, if it is the one the
    Chatwoot conversation mirrors (``current``; None once a newer one replaced it)."""

    engine: HandoffEngine
    event: WebhookEvent
    conversation_id: str
    current: Optional[Handoff]


class AgentActions:
    """Carries out verified webhook events (see the module docstring)."""

    def __init__(
        self,
        options: ChatwootOptions,
        state: ChatwootState,
        engine: Callable[[], HandoffEngine],
    ) -> None:
        self.options = options
        self.state = state
        self.engine = engine

    async def handle(self, event: WebhookEvent) -> Outcome:
        if event.account_id is not None and event.account_id != self.options.account_id:
            return _ignored("another Chatwoot account")
        if event.inbox_id is not None and event.inbox_id != self.options.inbox_id:
            return _ignored("another inbox")
        if event.event not in (
            MESSAGE_CREATED,
            CONVERSATION_STATUS_CHANGED,
            CONVERSATION_UPDATED,
            CONVERSATION_OPENED,
            CONVERSATION_RESOLVED,
        ):
            return _ignored(f"{event.event} needs nothing from us")
        if event.conversation_id is None:
            return Outcome(400, IGNORED, "no conversation named")
        link = await self.state.link(event.conversation_id)
        if link is None:
            return Outcome(404, UNKNOWN, "this conversation was never handed off to Chatwoot")
        engine = self.engine()
        handoff = await engine.store.get(link.conversation_id)
        current = handoff if handoff is not None and handoff.id == link.handoff_id else None
        at = _Target(engine, event, link.conversation_id, current)
        if event.message is not None:
            return await self._message(at, event.message)
        status = {CONVERSATION_RESOLVED: RESOLVED, CONVERSATION_OPENED: OPEN}.get(
            event.event, event.status
        )
        if event.event == CONVERSATION_UPDATED:
            if "assignee_id" in event.changed and event.assignee is not None:
                return await self._claim(at, event.assignee)
            return _ignored("no new assignee")
        if status in (RESOLVED, PENDING):
            return await self._close(at, event.assignee)
        if status == OPEN and event.assignee is not None:
            return await self._claim(at, event.assignee)
        return _ignored(f"status {status} needs nothing from us")

    # -- messages -----------------------------------------------------------------------------

    async def _message(self, at: _Target, message: Message) -> Outcome:
        if message.is_ours:
            return _ignored("our own message")
        if message.message_type != OUTGOING:
            return _ignored(f"an {message.message_type or 'unknown'} message")
        if message.sender is None or message.sender.type != AGENT_SENDER:
            return _ignored("not written by an agent")
        agent = agent_actor(message.sender)
        if not message.private:
            return await self._reply(at, message, agent)
        text = message.content.strip()
        if not text or at.current is None:
            return _ignored("nothing to keep")
        await at.engine.note(
            at.conversation_id,
            agent,
            reply_message_id(message.id),
            text[: at.engine.options.max_reply_chars],
        )
        return Outcome(200, ACTED, "noted")

    async def _notice(self, at: _Target, notice_id: str, text: str) -> None:
        """A private note for agents in the Chatwoot conversation (posted by the mirror)."""
        assert at.event.conversation_id is not None
        await self.state.add_notice(at.conversation_id, notice_id, at.event.conversation_id, text)
        await at.engine.changed(at.conversation_id)

    async def _reply(self, at: _Target, message: Message, agent: Actor) -> Outcome:
        engine, current, cid = at.engine, at.current, at.conversation_id
        text = message.content.strip()

        async def not_sent(why: str) -> Outcome:
            await self._notice(at, f"reply-{message.id}", f"Not sent to the customer: {why}")
            logger.info("Chatwoot reply %s not sent: %s", message.id, why)
            return Outcome(200, NOT_SENT, why)

        if current is None or not current.is_open:
            return await not_sent(
                "this conversation is back with the assistant. The customer can ask for a "
                "person again; that opens a new conversation here."
            )
        if not text:
            return await not_sent("only text reaches the customer; attachments are not sent.")
        if not current.held_by(agent.id):
            await engine.claim(cid, agent, take_over=True)
        found = await engine.reach(cid)
        if found.default is None:
            reasons = "; ".join(found.unavailable.values()) or "no channel reaches them"
            return await not_sent(f"the customer cannot be reached ({reasons}).")
        try:
            await engine.reply(cid, agent, reply_message_id(message.id), found.default, text)
        except (Unreachable, ValueError, TransitionRefused) as error:
            return await not_sent(f"{error}.")
        if message.attachments:
            await self._notice(
                at,
                f"attachments-{message.id}",
                "The text was sent; attachments are not sent to the customer.",
            )
        return Outcome(200, ACTED, f"replied by {LABELS.get(found.default, found.default)}")

    # -- the conversation's state ---------------------------------------------------------------

    async def _claim(self, at: _Target, assignee: Person) -> Outcome:
        current = at.current
        if current is None or not current.is_open:
            return _ignored("the hand-off is over")
        if assignee.type not in (AGENT_SENDER, ""):
            return _ignored("assigned to a bot")
        agent = agent_actor(assignee)
        if current.held_by(agent.id):
            return _ignored("already held by that agent")
        await at.engine.claim(current.conversation_id, agent, take_over=True)
        return Outcome(200, ACTED, "claimed")

    async def _close(self, at: _Target, assignee: Optional[Person]) -> Outcome:
        current = at.current
        if current is None or not current.is_open:
            return _ignored("the hand-off is over already")
        if current.state == CLAIMED and current.agent is not None:
            by = current.agent
        elif assignee is not None and assignee.type in (AGENT_SENDER, ""):
            by = agent_actor(assignee)
        else:
            by = SOMEONE_IN_CHATWOOT
        try:
            if self.options.on_resolve == HAND_BACK:
                await at.engine.hand_back(current.conversation_id, by)
                return Outcome(200, ACTED, "handed back")
            await at.engine.resolve(current.conversation_id, by)
            return Outcome(200, ACTED, "resolved")
        except TransitionRefused as error:
            return _ignored(str(error))
