"""What waiting for a person means, as rules on data: when the customer is told nobody has
claimed their request yet, when it is given up, and what the bot does with a message the
customer sends while a person is (or will be) answering. Pure.

While a hand-off is open the bot stands aside, but not blindly:

- **queued** (nobody holds it yet): "never mind" (``withdraw_intents``) withdraws the request
  and the bot answers again; a question the bot can answer on its own (``answer_intents``,
  recognised with at least ``min_confidence``) is answered, and the request keeps its place in
  the queue (the answer ends with a reminder that it still stands). Anything else ("hello?
  anyone there?", details for the person) is recorded for the agent and not answered;
- **claimed** (a person holds it): everything is recorded for the agent, nothing is answered;
  only the agent hands the conversation back.

On a call nothing can be left unanswered (the caller hears silence), so a held voice turn
always gets a spoken notice (the responses named in :class:`HeldTurn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple

from omnichannel.channels import VOICE
from omnichannel.handoff.hours import BusinessHours
from omnichannel.handoff.state import QUEUED, Handoff

#: Intents that take back a request while it is only queued: "never mind", "forget it",
#: "no thanks" (the demo's ``deny``, which also leaves forms and declines offers).
DEFAULT_WITHDRAW_INTENTS = ("deny",)
#: Questions the bot answers while the customer waits (their request stays queued). Only
#: answers complete in one turn: an intent whose answer asks something back (a form) would
#: leave that question waiting until the bot is back.
DEFAULT_ANSWER_INTENTS = ("ask_refund_policy", "bot_challenge")
DEFAULT_MIN_CONFIDENCE = 0.7
DEFAULT_WAIT_NOTICE_SECONDS = 15 * 60
DEFAULT_GIVE_UP_SECONDS = 24 * 3600

#: What a held turn does (:func:`held_turn`).
HOLD = "hold"
ANSWER = "answer"
WITHDRAW = "withdraw"


@dataclass(frozen=True)
class WaitingBounds:
    """How long a request may wait, in the team's open time (:class:`BusinessHours`)."""

    hours: BusinessHours
    #: Open time after which a customer whose request nobody claimed is told so.
    notice_seconds: float = DEFAULT_WAIT_NOTICE_SECONDS
    #: Open time after which an unclaimed request is given up (the bot takes over again).
    give_up_seconds: float = DEFAULT_GIVE_UP_SECONDS

    def deadlines(self, requested_at: float) -> Tuple[Optional[float], Optional[float]]:
        """``(notice_at, give_up_at)`` of a request made at ``requested_at``."""
        return (
            self.hours.after_open_seconds(requested_at, self.notice_seconds),
            self.hours.after_open_seconds(requested_at, self.give_up_seconds),
        )

    def reopens(self, now: float) -> Optional[float]:
        """When the team is back, if it is not there ``now``; None while it is."""
        if self.hours.is_open(now):
            return None
        return self.hours.next_open(now)


@dataclass(frozen=True)
class HeldTurn:
    """The rules for a customer message while a hand-off is open (see the module docstring)."""

    withdraw_intents: FrozenSet[str] = frozenset(DEFAULT_WITHDRAW_INTENTS)
    answer_intents: FrozenSet[str] = frozenset(DEFAULT_ANSWER_INTENTS)
    min_confidence: float = DEFAULT_MIN_CONFIDENCE

    def decide(self, handoff: Handoff, intent: Optional[str], confidence: float) -> str:
        """HOLD, ANSWER or WITHDRAW for a message NLU read as ``intent``."""
        if handoff.state != QUEUED or not intent or confidence < self.min_confidence:
            return HOLD
        if intent in self.withdraw_intents:
            return WITHDRAW
        if intent in self.answer_intents:
            return ANSWER
        return HOLD

    @staticmethod
    def notice(handoff: Handoff, decision: str, channel: Optional[str]) -> Optional[str]:
        """The response a held turn adds, if any: on a call, what happens while a person has
        (or will have) the conversation; after an answer while queued, that the request
        still stands."""
        if decision == WITHDRAW:
            return None
        if decision == ANSWER:
            return "utter_handoff_still_queued"
        if channel == VOICE:
            return (
                "utter_handoff_held_voice"
                if handoff.state == QUEUED
                else "utter_handoff_claimed_voice"
            )
        return None
