"""The figures a batch of stored events contributes (pure: no Redis)."""

from __future__ import annotations

import pytest

from omnichannel.insight.facts import figures_of, normalised, reply_bucket

pytestmark = pytest.mark.unit

DAY_TS = 1796601600.0  # 2026-12-07 00:00 UTC


def user(text: str, intent: str, channel: str = "sms", **metadata) -> dict:
    return {
        "event": "user",
        "timestamp": DAY_TS + 10,
        "text": text,
        "parse_data": {
            "intent": {"name": intent},
            "intent_ranking": [{"name": intent}, {"name": "track_order"}],
        },
        "metadata": {"channel": channel, **metadata},
    }


def action(name: str) -> dict:
    return {"event": "action", "timestamp": DAY_TS + 11, "name": name}


def test_a_not_understood_message_counts_once_as_a_fallback_with_its_text() -> None:
    figures = figures_of(
        [user("  Zxqv   Blorft!  ", "nlu_fallback"), action("action_llm_fallback")],
        reply_seconds=0.3,
    )
    assert figures.counts == {("2026-12-07", "sms"): {"turns": 1, "fallbacks": 1, "reply:0.5": 1}}
    assert figures.active == [("2026-12-07", "sms")]
    assert figures.not_understood == [("2026-12-07", "sms", "zxqv blorft", "track_order")]


def test_a_hand_off_knows_what_preceded_it_even_in_a_later_save() -> None:
    same_save = figures_of(
        [user("a person please", "talk_to_human", "voice"), action("action_handoff_to_human")]
    )
    assert same_save.counts[("2026-12-07", "voice")]["handoff_after:talk_to_human"] == 1
    assert same_save.handed == [("2026-12-07", "voice")]
    later = figures_of(
        [{"event": "pause", "timestamp": DAY_TS + 20}],
        previous_intent="request_refund",
        previous_channel="chat",
    )
    assert later.counts == {
        ("2026-12-07", "chat"): {"handoffs": 1, "handoff_after:request_refund": 1}
    }


def test_call_outcomes_barge_ins_and_carried_events() -> None:
    figures = figures_of(
        [
            user("stop", "deny", "voice", barge_in={"heard_text": "Your order"}),
            {"event": "user", "text": "old", "metadata": {"carried_state": True}},
            {
                "event": "slot",
                "timestamp": DAY_TS + 30,
                "name": "last_call",
                "value": {"ended_reason": "customer-ended-call"},
            },
            {
                "event": "slot",
                "timestamp": DAY_TS + 40,
                "name": "last_call",
                "value": {"ended_reason": "<script>"},
            },
        ]
    )
    counts = figures.counts[("2026-12-07", "voice")]
    assert counts["turns"] == 1 and counts["barge_ins"] == 1
    assert counts["call:customer-ended-call"] == 1
    assert sum(v for k, v in counts.items() if k.startswith("call:other")) == 1  # bounded


def test_texts_are_redacted_and_bounded() -> None:
    assert normalised("Pay 4111 1111 1111 1111 to jane@example.org") == (
        "pay [card number] to [email]"
    )
    assert len(normalised("x" * 500)) == 120
    assert reply_bucket(0.1) == "0.25" and reply_bucket(45) == "inf"


def bot(response: str = "", **metadata) -> dict:
    return {
        "event": "bot",
        "timestamp": DAY_TS + 12,
        "text": "…",
        "metadata": {**({"utter_action": response} if response else {}), **metadata},
    }


def test_a_hand_off_with_its_pause_counts_once_and_a_refused_one_not_at_all() -> None:
    asked = user("a person please", "talk_to_human", "chat")
    queued = figures_of(
        [
            asked,
            action("action_handoff_to_human"),
            bot("utter_handoff_queued"),
            {"event": "pause", "timestamp": DAY_TS + 12, "metadata": {"handoff": {"event": "x"}}},
            action("action_listen"),
        ]
    )
    assert queued.counts[("2026-12-07", "chat")] == {
        "turns": 1,
        "handoffs": 1,
        "handoff_after:talk_to_human": 1,
    }
    assert queued.handed == [("2026-12-07", "chat")]
    # A call put through: the action pauses nothing, its transfer message says so.
    transferred = figures_of(
        [
            user("a person", "talk_to_human", "voice"),
            action("action_handoff_to_human"),
            bot("utter_handoff_transfer"),
            action("action_listen"),
        ]
    )
    assert transferred.handed == [("2026-12-07", "voice")]
    for refusal in ("utter_handoff_unavailable", "utter_handoff_unreachable"):
        refused = figures_of(
            [asked, action("action_handoff_to_human"), bot(refusal), action("action_listen")]
        )
        assert refused.handed == []
        assert refused.counts[("2026-12-07", "chat")] == {"turns": 1, "handoff_unavailable": 1}


def test_agent_replies_and_how_hand_offs_ended_count_on_the_conversation_channel() -> None:
    figures = figures_of(
        [
            bot(agent={"id": "a-1", "name": "Ana"}, handoff={"event": "agent_reply"}),
            bot(agent={"id": "a-1", "name": "Ana"}),
            bot("utter_handoff_waiting", handoff={"event": "wait_notice"}),
            {
                "event": "resume",
                "timestamp": DAY_TS + 50,
                "metadata": {"handoff": {"event": "resolved", "by": {"kind": "agent"}}},
            },
            {"event": "resume", "timestamp": DAY_TS + 60},  # Rasa's API: no hand-off's end
            {
                "event": "resume",
                "timestamp": DAY_TS + 70,
                "metadata": {"handoff": {"event": "<b>"}},
            },
        ],
        previous_intent="talk_to_human",
        previous_channel="sms",
    )
    assert figures.counts == {
        ("2026-12-07", "sms"): {
            "agent_replies": 2,
            "handoff_ended:resolved": 1,
            "handoff_ended:other": 1,
        }
    }
    assert figures.handed == [] and figures.active == []
