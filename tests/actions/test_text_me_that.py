""" "Text me that" for any response whose domain.yml metadata declares ``sms_topic``
(omnichannel/textable.py), decided by ``content_to_text`` on trackers built directly, as Rasa
stores a response's bot event (its ``metadata:`` one level down, next to ``utter_action``)."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from rasa_sdk import Tracker

from actions.send_by_sms import content_to_text
from omnichannel.orders import Customer
from omnichannel.textable import declared, sms_topic

pytestmark = pytest.mark.unit

DOMAIN: Dict[str, Any] = {
    "responses": {
        "utter_store_hours": [
            {
                "text": "We're open 9 to 6, Monday to Saturday. Visit acme.example/stores.",
                "metadata": {"sms_topic": "our opening hours"},
            },
            {"channel": "vapi", "text": "We're open nine to six, Monday to Saturday."},
        ],
        "utter_gift_wrap": [
            {
                "text": "Gift wrapping is free.",
                "metadata": {
                    "sms_topic": "gift wrapping",
                    "sms_text": "Free gift wrap: tick the box.",
                },
            }
        ],
        "utter_youre_welcome": [{"text": "You're welcome!"}],
    }
}
NOBODY = Customer(phone=None, user_id=None)


def bot_event(response: str, text: str, **response_metadata: Any) -> Dict[str, Any]:
    metadata: Dict[str, Any] = {"utter_action": response}
    if response_metadata:
        metadata["metadata"] = response_metadata
    return {"event": "bot", "text": text, "data": {}, "metadata": metadata}


def tracker(events: List[Dict[str, Any]], said: str = "text me that") -> Tracker:
    latest = {"text": said, "intent": {"name": "send_by_sms", "confidence": 1.0}}
    user = {"event": "user", "text": said, "parse_data": latest, "metadata": {"channel": "voice"}}
    return Tracker("c1", {}, latest, [*events, user], False, None, {}, "action_listen")


def test_response_metadata_is_read_where_rasa_stores_it() -> None:
    event = bot_event("utter_store_hours", "…", sms_topic="our opening hours")
    assert sms_topic(event) == "our opening hours"
    # An action's own keyword arguments (top level) win over its response's.
    assert declared({"metadata": {"sms_topic": "a", "metadata": {"sms_topic": "b"}}}) == {
        "sms_topic": "a",
        "metadata": {"sms_topic": "b"},
    }


def test_a_response_declared_in_the_domain_is_texted_in_its_written_form() -> None:
    spoken = bot_event(
        "utter_store_hours",
        "We're open nine to six, Monday to Saturday.",
        sms_topic="our opening hours",
    )
    content = content_to_text(tracker([spoken]), DOMAIN, NOBODY)
    assert content is not None
    assert content.topic == "our opening hours"
    # Said on the call in its voice form; texted as written, with the link.
    assert content.text == "We're open 9 to 6, Monday to Saturday. Visit acme.example/stores."


def test_sms_text_in_the_metadata_is_what_is_texted() -> None:
    event = bot_event(
        "utter_gift_wrap",
        "Gift wrapping is free.",
        sms_topic="gift wrapping",
        sms_text="Free gift wrap: tick the box.",
    )
    content = content_to_text(tracker([event]), DOMAIN, NOBODY)
    assert content is not None and content.text == "Free gift wrap: tick the box."


def test_the_latest_declared_message_wins_and_undeclared_ones_are_skipped() -> None:
    events = [
        bot_event("utter_gift_wrap", "Gift wrapping is free.", sms_topic="gift wrapping"),
        bot_event("utter_store_hours", "We're open…", sms_topic="our opening hours"),
        bot_event("utter_youre_welcome", "You're welcome!"),
    ]
    content = content_to_text(tracker(events), DOMAIN, NOBODY)
    assert content is not None and content.topic == "our opening hours"


def test_nothing_declared_means_nothing_to_text() -> None:
    events = [bot_event("utter_youre_welcome", "You're welcome!")]
    assert content_to_text(tracker(events), DOMAIN, NOBODY) is None


def test_a_picture_a_call_could_only_offer_is_what_a_yes_texts() -> None:
    picture = {
        "event": "bot",
        "text": "Here's how to pack the item:",
        "data": {"image": "https://acme-shop.example/img/how-to-pack-a-return.png"},
        "metadata": {"utter_action": "utter_refund_started"},
    }
    offered = tracker([picture], said="yes")
    offered.slots["offer"] = "media"
    content = content_to_text(offered, DOMAIN, NOBODY)
    assert content is not None and content.topic == "the picture"
    assert content.media == "https://acme-shop.example/img/how-to-pack-a-return.png"


def test_a_response_template_goes_with_the_text() -> None:
    domain = {
        "responses": {
            "utter_refund_policy": [
                {
                    "text": "Our refund policy: 30 days.",
                    "metadata": {
                        "sms_topic": "the refund policy",
                        "whatsapp_template": {"name": "acme_refund_policy", "category": "UTILITY"},
                    },
                }
            ]
        }
    }
    asked = tracker([], said="text me the refund policy")
    content = content_to_text(asked, domain, NOBODY)
    assert content is not None and content.template is not None
    assert (content.template.name, content.template.variables) == ("acme_refund_policy", {})
