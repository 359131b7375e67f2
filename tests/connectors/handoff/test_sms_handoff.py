"""A hand-off by SMS on the real stack: the bot stands aside (Rasa's ConversationPaused), the
customer's messages are logged but not answered, an agent claims and replies through the inbox
(one SMS, as the SMS renderer writes it), hands back, and the bot answers with the slots it had."""

from __future__ import annotations

import pytest

from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, queued_ids, reply, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone, tracker_events
from tests.support import seed_order

pytestmark = pytest.mark.rasa_server

QUEUED = (
    "I've passed this to our support team. A person will text you back here, with our whole "
    "conversation in front of them. Reply NEVER MIND to carry on with me instead."
)


def bot_texts_after(events: list, index: int) -> list:
    return [e.get("text") for e in events[index:] if e["event"] == "bot"]


def test_sms_hand_off_stands_the_bot_aside_until_handed_back(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis
) -> None:
    phone = fresh_phone()
    number = seed_order(rasa_stack, phone=phone)
    text_sms(rasa_stack, phone, f"where is my order {number}")
    assert text_sms(rasa_stack, phone, "i want to talk to a person") == [QUEUED]
    cid = conversation_of(stack_redis, phone)
    events = tracker_events(rasa_stack, cid)
    assert events[-1] == {**events[-1], "event": "action", "name": "action_listen"}
    assert any(e["event"] == "pause" for e in events)

    # Held: logged with its NLU, not answered.
    before = len(tracker_events(rasa_stack, cid))
    assert text_sms(rasa_stack, phone, "hello? is anyone there") == []
    held = tracker_events(rasa_stack, cid)[before:]
    assert [e["event"] for e in held if e["event"] in ("user", "bot")] == ["user"]
    assert held[-1]["event"] == "action" and held[-1]["name"] == "action_listen"
    assert held[0]["text"] == "hello? is anyone there" and held[0]["parse_data"]["intent"]["name"]

    dana = token_for(rasa_stack, "Dana")
    assert cid in queued_ids(rasa_stack, dana)
    claimed = inbox(rasa_stack, "claim", dana, {"conversation_id": cid})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["handoff"]["state"] == "claimed"

    sent_before = len(fake_twilio.messages_to(phone))
    answer = reply(rasa_stack, dana, cid, "Hi, Dana here. Your parcel is on its way.", "sms")
    assert answer.status_code == 202, answer.text
    [texted] = wait_for(
        lambda: fake_twilio.messages_to(phone)[sent_before:], what="the agent's SMS"
    )
    assert texted.body == "Dana: Hi, Dana here. Your parcel is on its way."
    logged = wait_for(
        lambda: [
            e for e in tracker_events(rasa_stack, cid) if (e.get("metadata") or {}).get("agent")
        ]
    )
    assert logged[0]["metadata"]["agent"]["name"] == "Dana"

    back = inbox(rasa_stack, "hand_back", dana, {"conversation_id": cid})
    assert back.status_code == 200, back.text
    returned = wait_for(lambda: fake_twilio.messages_to(phone)[sent_before + 1 :])
    assert returned[0].body.startswith("You're back with the Acme Shop assistant.")

    # The bot answers again, with the order number it had before the hand-off.
    answer = text_sms(rasa_stack, phone, "what's the tracking number")
    assert number in " ".join(answer), answer
    assert len(fake_twilio.messages_to(phone)) == sent_before + 2, "each message sent once"
