"""The rules of waiting (omnichannel/handoff/policy.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from omnichannel.handoff.hours import BusinessHours
from omnichannel.handoff.policy import ANSWER, HOLD, WITHDRAW, HeldTurn, WaitingBounds
from omnichannel.handoff.state import Actor, Handoff

pytestmark = pytest.mark.unit

LONDON = ZoneInfo("Europe/London")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=LONDON).timestamp()


BOUNDS = WaitingBounds(
    BusinessHours.parse("Europe/London", "mon-fri 09:00-17:00"),
    notice_seconds=15 * 60,
    give_up_seconds=8 * 3600,
)


def test_deadlines_count_open_time_from_the_request() -> None:
    notice, give_up = BOUNDS.deadlines(at("2026-03-06T16:50"))  # Friday
    assert notice == at("2026-03-09T09:05")
    assert give_up == at("2026-03-09T16:50")


def test_reopening_is_known_only_while_closed() -> None:
    assert BOUNDS.reopens(at("2026-03-04T10:00")) is None
    assert BOUNDS.reopens(at("2026-03-07T10:00")) == at("2026-03-09T09:00")


def test_held_turns() -> None:
    policy = HeldTurn()
    queued = Handoff.requested("c", "sms", "customer_asked", 0.0)
    claimed = queued.claim(Actor.agent("a", "Dana"), 1.0)
    assert policy.decide(queued, "deny", 0.95) == WITHDRAW
    assert policy.decide(queued, "ask_refund_policy", 0.9) == ANSWER
    assert policy.decide(queued, "ask_refund_policy", 0.5) == HOLD, "unsure: the person decides"
    assert policy.decide(queued, "greet", 0.99) == HOLD
    assert policy.decide(queued, "check_order_status", 0.99) == HOLD, "a form would be left waiting"
    assert policy.decide(queued, None, 0.0) == HOLD
    assert policy.decide(claimed, "deny", 0.99) == HOLD, "the agent hands back"
    assert policy.decide(claimed, "ask_refund_policy", 0.99) == HOLD
    assert policy.notice(queued, ANSWER, "sms") == "utter_handoff_still_queued"
    assert policy.notice(queued, HOLD, "sms") is None
    assert policy.notice(queued, HOLD, "voice") == "utter_handoff_held_voice"
    assert policy.notice(claimed, HOLD, "voice") == "utter_handoff_claimed_voice"
    assert policy.notice(queued, WITHDRAW, "voice") is None
