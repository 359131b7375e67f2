"""The timeline builder on event dicts built directly, shaped as Rasa stores them."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from connectors.viewer.timeline import MAX_VALUE_CHARS, Masker, build_timeline
from omnichannel.receipts import Receipt

pytestmark = pytest.mark.unit

SEARCHED = "+14155550123"
OTHER = "+16505550199"


def user(text: str, channel: str, intent: str, confidence: float, **metadata: Any) -> Dict:
    connector = {"voice": "vapi", "sms": "twilio_sms", "whatsapp": "twilio_sms", "chat": "webchat"}[
        channel
    ]
    return {
        "event": "user",
        "timestamp": 1700000000.5,
        "text": text,
        "input_channel": connector,
        "metadata": {"channel": channel, **metadata},
        "parse_data": {
            "intent": {"name": intent, "confidence": confidence},
            "entities": [{"entity": "order_number", "value": "40213"}],
        },
    }


def bot(text: str, **data: Any) -> Dict:
    return {"event": "bot", "timestamp": 1700000001.0, "text": text, "data": data, "metadata": {}}


def timeline(events: List[Dict], turn_channel: Any = None, masker: Masker = Masker()) -> List:
    return build_timeline(list(enumerate(events)), turn_channel, masker)


def test_a_cross_channel_conversation_shows_each_turn_as_its_channel_rendered_it() -> None:
    entries = timeline(
        [
            {"event": "action", "name": "action_session_start", "timestamp": 1.0},
            {"event": "session_started", "timestamp": 1.0},
            {"event": "action", "name": "action_listen", "timestamp": 1.0},
            {"event": "user_featurization", "use_text_for_featurization": False},
            user("where is my order", "voice", "order_status", 0.97),
            {"event": "action", "name": "utter_x", "policy": "RulePolicy", "confidence": 1.0},
            bot("Your order **40213** ships on 2024-05-03. See https://example.com/t"),
            user("hi", "sms", "greet", 0.88),
            bot("Hi 🙂", buttons=[{"title": "Track", "payload": "/track"}]),
            user("hello", "chat", "greet", 0.91),
            bot(
                "Hello **there** <script>x</script>", buttons=[{"title": "Track", "payload": "/t"}]
            ),
            {"event": "slot", "name": "channel", "value": "chat", "timestamp": 2.0},
        ]
    )
    kinds = [entry["type"] for entry in entries]
    assert kinds == [
        "action", "session", "user", "action", "bot", "user", "bot", "user", "bot", "slot",
    ]  # fmt: skip
    assert [entry["index"] for entry in entries][:3] == [
        0,
        1,
        4,
    ]  # action_listen, featurization left out
    spoken = entries[2]
    assert (spoken["channel"], spoken["intent"], spoken["confidence"]) == (
        "voice",
        "order_status",
        0.97,
    )
    assert spoken["entities"] == [{"entity": "order_number", "value": "40213"}]
    assert entries[3]["policy"] == "RulePolicy"
    speech = entries[4]["rendered"]["speech"]
    assert entries[4]["channel"] == "voice"
    assert "**" not in speech and "https://" not in speech and "May" in speech
    texted = entries[6]["rendered"]
    assert texted["body"] == "Hi 🙂\nReply 1 for Track."
    assert (texted["segments"], texted["encoding"]) == (1, "UCS-2")
    chat = entries[8]["rendered"]
    assert "<strong>there</strong>" in chat["html"] and "<script>" not in chat["html"]
    assert chat["buttons"] == [{"title": "Track", "payload": "/t"}]
    assert entries[9] == {
        "index": 11, "timestamp": 2.0, "type": "slot", "name": "channel", "value": "chat",
        "barge_in": False,
    }  # fmt: skip


def test_the_first_bot_messages_of_a_page_take_the_channel_before_it() -> None:
    entries = timeline([bot("Reply 1 for more")], turn_channel="sms")
    assert entries[0]["channel"] == "sms" and "body" in entries[0]["rendered"]
    unknown = timeline([bot("**plain**")])
    assert unknown[0]["channel"] is None and unknown[0]["rendered"] == {"text": "**plain**"}


def test_barge_ins_are_marked_on_the_turn_and_the_slots() -> None:
    barged = user(
        "uh-huh",
        "voice",
        "backchannel",
        0.7,
        barge_in={"sent_text": "Our refund policy…", "heard_text": "Our", "heard_ratio": 0.2},
    )
    entries = timeline(
        [
            barged,
            {"event": "slot", "name": "interrupted", "value": True},
            {"event": "slot", "name": "unheard", "value": {"text": "refund policy", "topic": "x"}},
            {"event": "slot", "name": "order_number", "value": "40213"},
        ]
    )
    assert entries[0]["barge_in"] == {"heard_text": "Our", "heard_ratio": 0.2}
    assert [entry["barge_in"] for entry in entries[1:]] == [True, True, False]
    assert entries[1]["value"] == "true"
    assert entries[2]["value"] == '{"text": "refund policy", "topic": "x"}'


def test_a_call_report_becomes_a_call_summary() -> None:
    report = {
        "call_id": "call-1",
        "summary": "Caller asked about a refund.",
        "ended_reason": "customer-ended-call",
        "duration_seconds": 42.5,
        "transcript": None,
    }
    [entry] = timeline([{"event": "slot", "name": "last_call", "value": report, "timestamp": 3}])
    assert entry["type"] == "call_summary" and entry["channel"] == "voice"
    assert entry["summary"] == "Caller asked about a refund."
    assert (entry["ended_reason"], entry["duration_seconds"], entry["transcript"]) == (
        "customer-ended-call",
        42.5,
        None,
    )


def test_phone_numbers_are_masked_except_the_one_searched() -> None:
    said = user(f"call me on {OTHER} or {SEARCHED}", "sms", "inform", 0.5, address=f"tel:{OTHER}")
    slot = {"event": "slot", "name": "phone", "value": OTHER}
    plain = timeline([said, slot])
    assert OTHER not in str(plain) and SEARCHED not in str(plain)
    assert "+1650***0199" in plain[0]["text"]
    searched = timeline([said, slot], masker=Masker(SEARCHED))
    assert SEARCHED in searched[0]["text"] and OTHER not in str(searched)
    # A longer number that merely starts with the searched one stays masked.
    assert SEARCHED not in Masker(SEARCHED)(SEARCHED + "9")


def test_long_values_are_cut_and_odd_events_still_show() -> None:
    entries = timeline(
        [
            {"event": "slot", "name": "notes", "value": "x" * (MAX_VALUE_CHARS * 2)},
            {"event": "active_loop", "name": "order_form"},
            {"event": "active_loop", "name": None},
            {"event": "followup", "name": "utter_x"},
            {"event": "user", "text": None, "parse_data": "garbage", "metadata": None},
        ]
    )
    assert len(entries[0]["value"]) == MAX_VALUE_CHARS and entries[0]["value"].endswith("…")
    assert [entries[1]["name"], entries[2]["name"]] == ["order_form", None]
    assert entries[3] == {"index": 3, "timestamp": None, "type": "event", "event": "followup"}
    assert entries[4]["intent"] is None and entries[4]["channel"] is None


def test_a_hand_off_shows_who_answered_and_when_the_bot_stood_aside() -> None:
    reply = {
        "event": "bot",
        "timestamp": 5.0,
        "text": "Refund done.",
        "data": {},
        "metadata": {
            "agent": {"id": "a1", "name": "Dana"},
            "channel": "sms",
            "handoff_message_id": "m-123",
        },
    }
    paused = {"event": "pause", "timestamp": 4.0, "metadata": {"handoff": {"event": "requested"}}}
    resumed = {
        "event": "resume",
        "timestamp": 6.0,
        "metadata": {"handoff": {"event": "handed_back", "by": {"name": "Dana"}}},
    }
    stood_aside, answer, back = timeline([paused, reply, resumed])
    assert stood_aside == {
        "index": 0,
        "timestamp": 4.0,
        "type": "bot_state",
        "paused": True,
        "why": "requested",
        "by": None,
    }
    assert (answer["agent"], answer["message_id"], answer["channel"]) == ("Dana", "m-123", "sms")
    assert answer["rendered"]["body"] == "Dana: Refund done.", "as the texter got it"
    assert (back["paused"], back["why"], back["by"]) == (False, "handed_back", "Dana")


def test_a_whatsapp_turn_shows_its_bubbles_media_and_delivery() -> None:
    picture = {
        "kind": "image",
        "content_type": "image/jpeg",
        "url": "https://x",
        "source": "twilio",
    }
    events = [
        {
            **user("", "whatsapp", "send_picture", 1.0, message_sid="SM1", media=[picture]),
            "text": "/send_picture",
        },
        bot(
            "Thanks! **Pick** one",
            buttons=[{"title": "Refund", "payload": "/request_refund"}],
            image="https://acme.example/pack.png",
        ),
    ]
    receipts = {
        "SMa": Receipt("SMa", "whatsapp", "read", reply_to="SM1"),
        "SMb": Receipt("SMb", "whatsapp", "delivered", reply_to="SM1"),
        "SMc": Receipt("SMc", "whatsapp", "failed", "63016", reply_to="SM9"),
    }
    user_entry, bot_entry = build_timeline(list(enumerate(events)), None, Masker(), receipts)
    assert user_entry["media"] == [
        {"kind": "image", "content_type": "image/jpeg", "source": "twilio"}
    ]
    assert bot_entry["channel"] == "whatsapp"
    assert bot_entry["rendered"] == {
        "bubbles": [
            {"body": "", "media": ["https://acme.example/pack.png"]},
            {"body": "Thanks! *Pick* one", "options": ["Refund"]},
        ]
    }
    # A reply counts as read only once all its parts are.
    assert bot_entry["delivery"] == {"status": "delivered"}
    failed = build_timeline(
        [
            (0, {**events[0], "metadata": {**events[0]["metadata"], "message_sid": "SM9"}}),
            (1, events[1]),
        ],
        None,
        Masker(),
        receipts,
    )[1]
    assert failed["delivery"] == {"status": "failed", "error_code": "63016"}


def test_a_location_is_shown_with_its_address_masked() -> None:
    located = user(
        "",
        "whatsapp",
        "share_location",
        1.0,
        location={"latitude": 52.37, "longitude": 4.89, "address": "Call me at +14155552671"},
    )
    [entry] = timeline([located])
    assert entry["location"] == {
        "latitude": 52.37,
        "longitude": 4.89,
        "address": "Call me at +1415***2671",
    }
