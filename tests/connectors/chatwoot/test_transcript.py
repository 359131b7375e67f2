"""What agents see in Chatwoot: the event log's messages as posts, the summary note, the contact."""

from __future__ import annotations

import pytest

from connectors.chatwoot.transcript import (
    INCOMING,
    OUTGOING,
    closing_note,
    contact_of,
    posts_of,
    reply_message_id,
    summary_note,
)
from connectors.event_log.reading import CALL_REPORT_SLOT
from connectors.viewer.timeline import Masker
from omnichannel.handoff.reach import Reach
from omnichannel.handoff.state import Actor, Handoff
from omnichannel.identity import ContactProfile

pytestmark = pytest.mark.unit

PHONE = "+14155550123"


def user(text: str, channel: str = "sms", **metadata) -> dict:
    return {
        "event": "user",
        "timestamp": 1.0,
        "text": text,
        "input_channel": "twilio_sms" if channel == "sms" else "webchat",
        "metadata": {"channel": channel, **metadata},
    }


def bot(text: str, **metadata) -> dict:
    return {"event": "bot", "timestamp": 2.0, "text": text, "data": {}, "metadata": metadata}


def test_customer_messages_are_incoming_with_their_channel_and_masked_numbers() -> None:
    ([(index, post, channel)],) = [
        posts_of([(4, user(f"call me at {PHONE} please"))], None, Masker())
    ]
    assert (index, channel) == (4, "sms")
    assert post.message_type == INCOMING and post.private is False
    assert post.content.startswith("[SMS] call me at ") and PHONE not in post.content


def test_a_button_reply_shows_the_button_the_customer_chose() -> None:
    [(_, post, _)] = posts_of(
        [(0, user("/track_order", button_title="Track my order"))], None, Masker()
    )
    assert post.content == "[SMS] Track my order"


def test_the_assistants_messages_are_notes_rendered_for_the_channel_they_answered() -> None:
    items = posts_of(
        [(0, user("hi", channel="chat")), (1, bot("Hello! How can I help?"))], None, Masker()
    )
    post = items[1][1]
    assert post.private is True and post.message_type == OUTGOING
    assert post.content == "Assistant (Chat): Hello! How can I help?"


def test_replies_from_chatwoot_are_not_posted_back_but_inbox_replies_are() -> None:
    from_chatwoot = bot(
        "On its way", handoff_message_id=reply_message_id(77), agent={"name": "Alex"}
    )
    from_inbox = bot("On its way", handoff_message_id="m1", agent={"name": "Dana"}, channel="sms")
    items = posts_of([(0, from_chatwoot), (1, from_inbox)], "sms", Masker())
    assert items[0][1] is None
    assert items[1][1].content.startswith("Dana in the inbox (SMS): ")


def test_other_events_are_left_out() -> None:
    events = [
        (0, {"event": "action", "name": "action_listen"}),
        (1, {"event": "slot", "name": "order_number", "value": "12345"}),
        (2, {"event": "pause", "metadata": {}}),
    ]
    assert [post for _, post, _ in posts_of(events, None, Masker())] == [None, None, None]


def test_a_call_report_becomes_a_note_with_its_summary_and_transcript() -> None:
    report = {
        "event": "slot",
        "name": CALL_REPORT_SLOT,
        "value": {
            "summary": "Asked for a person about a refund.",
            "transcript": "AI: Hi\nUser: refund",
        },
    }
    [(_, post, _)] = posts_of([(0, report)], None, Masker())
    assert post is not None and post.private
    assert "Summary: Asked for a person about a refund." in post.content
    assert "Transcript:\nAI: Hi\nUser: refund" in post.content


def test_the_contact_is_named_without_the_number_unless_it_may_be_shared() -> None:
    profile = ContactProfile("c_1", phone=PHONE, channels={"sms": 1.0})
    masked = contact_of(profile, "c_1", 7, share_phone=False)
    assert PHONE not in str(masked) and masked["identifier"] == "c_1" and masked["inbox_id"] == 7
    shared = contact_of(profile, "c_1", 7, share_phone=True)
    assert shared["phone_number"] == PHONE


def test_the_summary_says_where_replies_go_and_how_to_give_it_back() -> None:
    handoff = Handoff.requested("c_1", "sms", "customer_asked", 100.0)
    profile = ContactProfile(
        "c_1", phone=PHONE, user_id="dana@example.com", channels={"sms": 1, "chat": 2}
    )
    note = summary_note(handoff, profile, Reach(("sms", "chat"), {}, "sms"), False, 30)
    assert note.startswith("Hand-off from SMS: the customer asked for a person.")
    assert "reach the customer by SMS" in note and "resolve it" in note
    assert "has used Chat, SMS" in note and PHONE not in note and "dana@example.com" not in note
    nowhere = summary_note(handoff, profile, Reach((), {"sms": "opted out (STOP)"}, None), False, 0)
    assert "cannot reach the customer right now: opted out (STOP)" in nowhere


def test_the_closing_note_names_who_closed_it() -> None:
    handoff = Handoff.requested("c_1", "sms", "customer_asked", 100.0)
    dana = Actor.agent("chatwoot:5", "Dana")
    assert closing_note(handoff.hand_back(dana, 200.0)).startswith(
        "Handed back to the assistant by Dana"
    )
    assert closing_note(handoff.resolve(dana, 200.0)).startswith("Resolved by Dana")
    gave_up = handoff.abandon(Actor.system("timeout"), 200.0, "nobody claimed it in time")
    assert "nobody claimed it in time" in closing_note(gave_up)
