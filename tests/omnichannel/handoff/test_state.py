"""The hand-off's transitions (omnichannel/handoff/state.py): pure, on records built directly."""

from __future__ import annotations

import pytest

from omnichannel.handoff.state import (
    ABANDONED,
    CLAIMED,
    HANDED_BACK,
    QUEUED,
    RESOLVED,
    TRANSFERRED,
    Actor,
    Handoff,
    TransitionRefused,
)

pytestmark = pytest.mark.unit

DANA = Actor.agent("agent-dana", "Dana")
SAM = Actor.agent("agent-sam", "Sam")


def queued() -> Handoff:
    return Handoff.requested(
        "c_1", "sms", "customer_asked", 100.0, notice_at=1000.0, give_up_at=5000.0
    )


def test_a_request_is_queued_with_who_and_when() -> None:
    handoff = queued()
    assert handoff.state == QUEUED and handoff.is_open and handoff.version == 1
    assert [step.state for step in handoff.history] == [QUEUED]
    assert handoff.history[0].by.kind == "customer"
    assert handoff.next_deadline() == 1000.0


def test_claim_records_the_agent_and_is_idempotent_for_them() -> None:
    claimed = queued().claim(DANA, 160.0)
    assert claimed.state == CLAIMED and claimed.agent == DANA and claimed.claimed_at == 160.0
    assert claimed.version == 2 and claimed.held_by("agent-dana")
    assert claimed.next_deadline() is None, "a claimed hand-off has no waiting deadline"
    assert claimed.claim(DANA, 170.0) is claimed


def test_another_agents_claim_is_taken_only_explicitly_and_recorded() -> None:
    claimed = queued().claim(DANA, 160.0)
    with pytest.raises(TransitionRefused, match="Dana holds this conversation"):
        claimed.claim(SAM, 170.0)
    taken = claimed.claim(SAM, 170.0, take_over=True)
    assert taken.agent == SAM and taken.claimed_at == 160.0
    assert taken.history[-1].detail == "taken over from Dana" and taken.history[-1].by == SAM


def test_only_the_holder_hands_back_or_resolves() -> None:
    claimed = queued().claim(DANA, 160.0)
    with pytest.raises(TransitionRefused, match="take it over first"):
        claimed.resolve(SAM, 200.0)
    back = claimed.hand_back(DANA, 200.0)
    assert back.state == HANDED_BACK and not back.is_open and back.agent is None
    assert back.closed_by == DANA and back.closed_at == 200.0
    with pytest.raises(TransitionRefused, match="already handed_back"):
        back.claim(SAM, 210.0)
    assert queued().claim(DANA, 1.0).resolve(DANA, 2.0).state == RESOLVED


def test_an_unclaimed_request_can_be_answered_or_withdrawn_but_a_claimed_one_not_abandoned() -> (
    None
):
    assert queued().resolve(SAM, 150.0).state == RESOLVED
    abandoned = queued().abandon(Actor.customer(), 150.0, "never mind")
    assert abandoned.state == ABANDONED and abandoned.history[-1].detail == "never mind"
    with pytest.raises(TransitionRefused):
        queued().claim(DANA, 1.0).abandon(Actor.system(), 2.0, "too late")


def test_the_waiting_notice_is_sent_once() -> None:
    noticed = queued().with_notice_sent(1000.0)
    assert noticed.notice_sent and noticed.next_deadline() == 5000.0
    with pytest.raises(TransitionRefused):
        noticed.with_notice_sent(1001.0)


def test_a_transfer_is_closed_as_it_is_made() -> None:
    transfer = Handoff.transferred("c_1", "voice", "customer_asked", 5.0, "+14155550100")
    assert transfer.state == TRANSFERRED and not transfer.is_open
    assert transfer.next_deadline() is None


def test_the_stored_form_round_trips_and_history_is_bounded() -> None:
    handoff = queued().claim(DANA, 2.0)
    for n in range(60):
        handoff = handoff.claim(SAM if n % 2 == 0 else DANA, 3.0 + n, take_over=True)
    assert len(handoff.history) == 50
    assert Handoff.from_dict(handoff.as_dict()) == handoff
    with pytest.raises(ValueError):
        Handoff.from_dict({**handoff.as_dict(), "state": "lost"})
