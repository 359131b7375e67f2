"""An agent asks the assistant to call a handed-off customer back, on the real stack: booked on
the conversation's own number with the agent's opening words, listed in the conversation's
outbound items, moved by a second request, refused (and not booked) for a number that opted
out, a time that cannot be read, or anyone but an agent."""

from __future__ import annotations

import pytest
import yaml

from omnichannel.callbacks.items import BY_AGENT
from omnichannel.outbound.items import CANCELLED, SCHEDULED
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import callbacks, cancel_callbacks, inbox, token_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone

pytestmark = pytest.mark.rasa_server


def _opening() -> str:
    with open("domain.yml", encoding="utf-8") as handle:
        domain = yaml.safe_load(handle)
    return domain["responses"]["utter_callback_opening_agent"][0]["text"]


def test_an_agent_books_a_callback_for_the_conversations_own_number(
    rasa_stack: RasaStack, stack_redis
) -> None:
    phone = fresh_phone()
    text_sms(rasa_stack, phone, "i want to talk to a person")
    cid = conversation_of(stack_redis, phone)
    token = token_for(rasa_stack)
    try:
        answer = inbox(
            rasa_stack, "callback", token, {"conversation_id": cid, "when": "tomorrow at 10am"}
        )
        assert answer.status_code == 200, answer.text
        booked = answer.json()["callback"]
        assert booked["result"] == "booked"
        assert booked["when"].startswith("tomorrow at 10:00")
        [item] = callbacks(rasa_stack, cid)
        assert (item.item_id, item.status, item.source) == (booked["item_id"], SCHEDULED, BY_AGENT)
        assert not item.customer_requested  # quiet hours may hold it
        assert item.payload["opening"] == _opening()
        assert "person" not in item.payload["opening"]  # the assistant calls, not the agent

        # The conversation view lists it among the conversation's outbound items.
        view = inbox(rasa_stack, "conversation", token, {"conversation_id": cid}).json()
        [listed] = [e for e in view["timeline"]["outbound"] if e["kind"] == "callback"]
        assert (listed["id"], listed["status"], listed["source"]) == (
            item.item_id,
            "scheduled",
            "agent",
        )

        # Asking again moves the one callback.
        again = inbox(
            rasa_stack, "callback", token, {"conversation_id": cid, "when": "tomorrow at 3pm"}
        ).json()["callback"]
        assert again["result"] == "moved" and again["when"].startswith("tomorrow at 15:00")
        assert [c.status for c in callbacks(rasa_stack, cid)] == [SCHEDULED]

        # Words that name no time are not "now" from an agent.
        for words in ("later", "whenever suits"):
            unclear = inbox(
                rasa_stack, "callback", token, {"conversation_id": cid, "when": words}
            ).json()["callback"]
            assert (unclear["result"], unclear["reason"]) == ("refused", "unclear"), words
    finally:
        cancel_callbacks(rasa_stack, cid)
    assert [c.status for c in callbacks(rasa_stack, cid)] == [CANCELLED]


def test_callbacks_the_gate_refuses_are_not_booked(rasa_stack: RasaStack, stack_redis) -> None:
    phone = fresh_phone()
    text_sms(rasa_stack, phone, "i want to talk to a person")
    cid = conversation_of(stack_redis, phone)
    text_sms(rasa_stack, phone, "STOP")
    token = token_for(rasa_stack)
    answer = inbox(rasa_stack, "callback", token, {"conversation_id": cid, "when": ""})
    assert answer.status_code == 200, answer.text
    assert answer.json()["callback"] == {
        "result": "refused",
        "reason": "opted_out",
        "why": "the customer's number opted out (STOP)",
    }
    assert callbacks(rasa_stack, cid) == []
    # Only agents, only handed-off conversations, only bounded bodies.
    assert inbox(rasa_stack, "callback", None, {"conversation_id": cid}).status_code == 401
    assert inbox(rasa_stack, "callback", token, {"conversation_id": "c_nope"}).status_code == 404
    long_when = {"conversation_id": cid, "when": "x" * 201}
    assert inbox(rasa_stack, "callback", token, long_when).status_code == 400
    assert callbacks(rasa_stack, cid) == []
