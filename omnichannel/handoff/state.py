"""One conversation's hand-off to a person: its state, who moved it and when, and the explicit
transitions between states. Pure: no Redis, no Rasa (the store in :mod:`.store` keeps it).

The life of a hand-off::

    queued ──claim──► claimed ──hand_back──► handed_back
      │                 │  ▲ take_over
      │                 │  └── (another agent, explicitly; recorded)
      │                 └──resolve──► resolved
      ├──resolve / hand_back (an agent answers it without claiming)
      └──abandon──► abandoned   (the customer said "never mind", or nobody claimed in time)

    transferred: a call put through to the support line (created closed: the person on the
    line has it now, the bot is not standing aside for anything)

``queued`` and ``claimed`` are *open*: while a hand-off is open the bot stands aside (the
tracker is paused, Rasa's ``ConversationPaused``). Every other state is closed and final; a
customer who asks again later opens a new hand-off. Every transition bumps ``version``, which
the store compares atomically, so two replicas (or two agents) racing for one hand-off cannot
both win.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

QUEUED = "queued"
CLAIMED = "claimed"
HANDED_BACK = "handed_back"
RESOLVED = "resolved"
ABANDONED = "abandoned"
TRANSFERRED = "transferred"
STATES = (QUEUED, CLAIMED, HANDED_BACK, RESOLVED, ABANDONED, TRANSFERRED)
OPEN_STATES = frozenset({QUEUED, CLAIMED})

#: Why a hand-off was asked for (the ``reason`` field).
CUSTOMER_ASKED = "customer_asked"
ASSISTANT_GAVE_UP = "assistant_gave_up"
#: Who moved a hand-off, besides agents: the customer ("never mind") and the system (timeouts).
CUSTOMER = "customer"
SYSTEM = "system"
AGENT = "agent"

#: Transitions kept in a record (the oldest are dropped beyond this).
MAX_HISTORY = 50
MAX_NAME_CHARS = 120
MAX_ID_CHARS = 200


class TransitionRefused(Exception):
    """The transition does not apply to the hand-off as it is now; the message says why and is
    safe to show an agent (``conflict``: someone else moved it or holds it)."""

    def __init__(self, message: str, *, conflict: bool = True) -> None:
        super().__init__(message)
        self.conflict = conflict


@dataclass(frozen=True)
class Actor:
    """Who made a transition: an agent (``id`` from their token, ``name`` shown to customers and
    colleagues), the customer, or the system."""

    kind: str
    id: str
    name: str = ""

    @classmethod
    def agent(cls, agent_id: str, name: str) -> Actor:
        return cls(AGENT, agent_id[:MAX_ID_CHARS], (name or agent_id)[:MAX_NAME_CHARS])

    @classmethod
    def customer(cls) -> Actor:
        return cls(CUSTOMER, CUSTOMER, "Customer")

    @classmethod
    def system(cls, what: str = SYSTEM) -> Actor:
        return cls(SYSTEM, what, "System")

    def as_dict(self) -> Dict[str, str]:
        return {"kind": self.kind, "id": self.id, "name": self.name}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Actor:
        return cls(
            str(raw.get("kind") or AGENT), str(raw.get("id") or ""), str(raw.get("name") or "")
        )


@dataclass(frozen=True)
class Step:
    """One transition as recorded: the state reached, when, by whom (and for a takeover, from
    whom)."""

    state: str
    at: float
    by: Actor
    detail: str = ""

    def as_dict(self) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"state": self.state, "at": self.at, "by": self.by.as_dict()}
        if self.detail:
            entry["detail"] = self.detail
        return entry

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Step:
        return cls(
            str(raw["state"]),
            float(raw["at"]),
            Actor.from_dict(raw.get("by") or {}),
            str(raw.get("detail") or ""),
        )


@dataclass(frozen=True)
class Handoff:
    """A conversation's hand-off as stored; every change is a method returning a new one."""

    conversation_id: str
    #: This hand-off's own id: a conversation has one hand-off at a time, but many over its
    #: life, and a transition computed from an earlier one must not land on a later one.
    id: str
    state: str
    #: The channel kind the customer asked on (voice, sms, chat; the metrics' label).
    channel: str
    reason: str
    requested_at: float
    version: int = 1
    #: The agent holding it (claimed), else None.
    agent: Optional[Actor] = None
    claimed_at: Optional[float] = None
    closed_at: Optional[float] = None
    closed_by: Optional[Actor] = None
    #: When the customer is told nobody has claimed it yet, and when it is given up
    #: (epoch seconds, counted in business hours by :mod:`.policy`); None: not applicable.
    notice_at: Optional[float] = None
    give_up_at: Optional[float] = None
    notice_sent: bool = False
    history: Tuple[Step, ...] = field(default_factory=tuple)

    # -- reading -----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def held_by(self, agent_id: str) -> bool:
        return self.state == CLAIMED and self.agent is not None and self.agent.id == agent_id

    def next_deadline(self) -> Optional[float]:
        """The next moment the sweeper must look at this hand-off (queued ones only)."""
        if self.state != QUEUED:
            return None
        due = [self.give_up_at] if self.give_up_at is not None else []
        if self.notice_at is not None and not self.notice_sent:
            due.append(self.notice_at)
        return min(due) if due else None

    # -- creating ----------------------------------------------------------------------------

    @classmethod
    def requested(
        cls,
        conversation_id: str,
        channel: str,
        reason: str,
        at: float,
        *,
        notice_at: Optional[float] = None,
        give_up_at: Optional[float] = None,
    ) -> Handoff:
        """A new hand-off in the queue."""
        return cls(
            conversation_id=conversation_id,
            id=uuid.uuid4().hex,
            state=QUEUED,
            channel=channel,
            reason=reason,
            requested_at=at,
            notice_at=notice_at,
            give_up_at=give_up_at,
            history=(
                Step(
                    QUEUED,
                    at,
                    Actor.customer() if reason == CUSTOMER_ASKED else Actor.system(reason),
                ),
            ),
        )

    @classmethod
    def transferred(
        cls, conversation_id: str, channel: str, reason: str, at: float, line: str
    ) -> Handoff:
        """A call put through to the support line: closed as it is made."""
        return cls(
            conversation_id=conversation_id,
            id=uuid.uuid4().hex,
            state=TRANSFERRED,
            channel=channel,
            reason=reason,
            requested_at=at,
            closed_at=at,
            closed_by=Actor.system("transfer"),
            history=(Step(TRANSFERRED, at, Actor.system("transfer"), line),),
        )

    # -- transitions -------------------------------------------------------------------------

    def _moved(self, state: str, at: float, by: Actor, detail: str = "", **changes: Any) -> Handoff:
        history = (*self.history, Step(state, at, by, detail))[-MAX_HISTORY:]
        return dataclasses.replace(
            self, state=state, version=self.version + 1, history=history, **changes
        )

    def _require_open(self, what: str) -> None:
        if not self.is_open:
            raise TransitionRefused(f"cannot {what}: the hand-off is already {self.state}")

    def claim(self, agent: Actor, at: float, *, take_over: bool = False) -> Handoff:
        """``agent`` takes the conversation. Claiming one's own claim again changes nothing;
        another agent's claim is taken only with ``take_over`` (and recorded as such)."""
        self._require_open("claim it")
        if self.state == CLAIMED and self.agent is not None:
            if self.agent.id == agent.id:
                return self
            if not take_over:
                raise TransitionRefused(
                    f"{self.agent.name} holds this conversation; take it over to answer it"
                )
            return self._moved(
                CLAIMED, at, agent, f"taken over from {self.agent.name}", agent=agent
            )
        return self._moved(CLAIMED, at, agent, agent=agent, claimed_at=at)

    def _close(self, state: str, by: Actor, at: float, what: str, detail: str = "") -> Handoff:
        self._require_open(what)
        if (
            by.kind == AGENT
            and self.state == CLAIMED
            and self.agent is not None
            and self.agent.id != by.id
        ):
            raise TransitionRefused(
                f"{self.agent.name} holds this conversation; take it over first"
            )
        return self._moved(state, at, by, detail, agent=None, closed_at=at, closed_by=by)

    def hand_back(self, by: Actor, at: float) -> Handoff:
        """The bot takes the conversation back (by the holding agent, or any agent while only
        queued)."""
        return self._close(HANDED_BACK, by, at, "hand it back")

    def resolve(self, by: Actor, at: float) -> Handoff:
        """Done: the bot answers the customer's next message."""
        return self._close(RESOLVED, by, at, "resolve it")

    def abandon(self, by: Actor, at: float, why: str) -> Handoff:
        """Nobody will answer it: the customer withdrew (only while queued: once an agent holds
        the conversation, the agent decides) or nobody claimed it within the bound."""
        if self.state != QUEUED:
            raise TransitionRefused(f"cannot abandon it: the hand-off is {self.state}")
        return self._close(ABANDONED, by, at, "abandon it", why)

    def with_notice_sent(self, at: float) -> Handoff:
        """The customer has been told that nobody has claimed it yet."""
        if self.state != QUEUED or self.notice_sent:
            raise TransitionRefused("no waiting notice is due")
        return dataclasses.replace(self, notice_sent=True, version=self.version + 1)

    # -- storage form ------------------------------------------------------------------------

    def as_dict(self) -> Dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "id": self.id,
            "state": self.state,
            "channel": self.channel,
            "reason": self.reason,
            "requested_at": self.requested_at,
            "version": self.version,
            "agent": self.agent.as_dict() if self.agent else None,
            "claimed_at": self.claimed_at,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by.as_dict() if self.closed_by else None,
            "notice_at": self.notice_at,
            "give_up_at": self.give_up_at,
            "notice_sent": self.notice_sent,
            "history": [step.as_dict() for step in self.history],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Handoff:
        def actor(value: Any) -> Optional[Actor]:
            return Actor.from_dict(value) if isinstance(value, Mapping) else None

        def number(value: Any) -> Optional[float]:
            return float(value) if isinstance(value, (int, float)) else None

        state = str(raw["state"])
        if state not in STATES:
            raise ValueError(f"unknown hand-off state {state!r}")
        return cls(
            conversation_id=str(raw["conversation_id"]),
            id=str(raw["id"]),
            state=state,
            channel=str(raw.get("channel") or ""),
            reason=str(raw.get("reason") or CUSTOMER_ASKED),
            requested_at=float(raw["requested_at"]),
            version=int(raw.get("version") or 1),
            agent=actor(raw.get("agent")),
            claimed_at=number(raw.get("claimed_at")),
            closed_at=number(raw.get("closed_at")),
            closed_by=actor(raw.get("closed_by")),
            notice_at=number(raw.get("notice_at")),
            give_up_at=number(raw.get("give_up_at")),
            notice_sent=bool(raw.get("notice_sent")),
            history=tuple(Step.from_dict(step) for step in raw.get("history") or ()),
        )
