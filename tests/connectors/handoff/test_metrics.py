"""The hand-off's metrics on the shared stack's /metrics: what happened to hand-offs per channel
(bounded labels), the time to claim, and the open queue's depth."""

from __future__ import annotations

import pytest

from omnichannel.channels import KINDS
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, token_for, wait_for
from tests.connectors.test_ops import scrape
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone

pytestmark = pytest.mark.rasa_server


def handoffs(event: str, channel: str = "sms") -> tuple:
    return ("omnichannel_handoffs_total", frozenset({("channel", channel), ("event", event)}))


def test_hand_offs_are_counted_timed_and_the_queue_measured(
    rasa_stack: RasaStack, stack_redis
) -> None:
    claim_seconds = ("omnichannel_handoff_claim_seconds_count", frozenset({("channel", "sms")}))
    _, before = scrape(rasa_stack)
    phone = fresh_phone()
    text_sms(rasa_stack, phone, "i want to talk to a person")
    cid = conversation_of(stack_redis, phone)
    token = token_for(rasa_stack, "Dana")
    assert inbox(rasa_stack, "claim", token, {"conversation_id": cid}).status_code == 200
    assert inbox(rasa_stack, "resolve", token, {"conversation_id": cid}).status_code == 200
    other = fresh_phone()
    text_sms(rasa_stack, other, "i want to talk to a person")
    assert text_sms(rasa_stack, other, "never mind")[0].startswith("OK, I've cancelled")

    def moved() -> dict:
        _, after = scrape(rasa_stack)
        done = all(
            after.get(handoffs(event), 0) >= before.get(handoffs(event), 0) + count
            for event, count in (
                ("requested", 2),
                ("claimed", 1),
                ("resolved", 1),
                ("abandoned", 1),
            )
        )
        return after if done else {}

    after = wait_for(moved, what="the hand-off counters to move")
    assert after[claim_seconds] >= before.get(claim_seconds, 0) + 1
    # The open queue, fleet-wide, as the sweeper (every second) last counted it.
    assert ("omnichannel_handoffs_open", frozenset({("state", "queued")})) in after
    assert ("omnichannel_handoffs_open", frozenset({("state", "claimed")})) in after
    labels = {
        dict(key[1]).get("channel") for key in after if key[0] == "omnichannel_handoffs_total"
    }
    assert labels <= {*KINDS, "other"}, "bounded labels: channel kinds only"
