"""SMS rendering: fewest messages, no mid-word splits, GSM-7 kept where safe, numbered buttons."""

from __future__ import annotations

import pytest

from omnichannel.rendering.messages import BotMessage, Button
from omnichannel.rendering.sms import (
    SMS_MAX_LENGTH,
    gsm7_safe,
    is_gsm7,
    match_button_reply,
    render_sms,
    sms_segments,
    split_sms,
)

pytestmark = pytest.mark.unit


def _words(text: str) -> list:
    return text.split()


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("{" * 80, "GSM-7", 1),  # extension characters take two septets each
        ("{" * 81, "GSM-7", 2),
        ("é" * 160, "GSM-7", 1),  # é is in the GSM-7 basic set
        ("á" * 70, "UCS-2", 1),  # á is not
        ("á" * 71, "UCS-2", 2),
        ("a" * 134 + "😀", "UCS-2", 3),  # an emoji is two UTF-16 units: 136 units > 134
    ],
)
def test_segments_follow_gsm7_and_ucs2_limits(body: str, encoding: str, segments: int) -> None:
    counted = sms_segments(body)
    assert (counted.encoding, counted.segments) == (encoding, segments)


def test_typographic_characters_become_gsm7_look_alikes() -> None:
    designer = "It’s “ready” – ships today… • fast\u00a0delivery"
    assert not is_gsm7(designer)
    assert gsm7_safe(designer) == 'It\'s "ready" - ships today... - fast delivery'
    assert is_gsm7(gsm7_safe(designer))
    # one curly apostrophe would have cost 3 segments instead of 1 for a 150-character message
    text = "Your order’s on its way. " * 6
    assert sms_segments(text).segments == 3
    [message] = render_sms([BotMessage(text=text)]).messages
    assert message.segments.encoding == "GSM-7" and message.segments.segments == 1


def test_accents_without_a_gsm7_equivalent_are_kept() -> None:
    [message] = render_sms([BotMessage(text="Olá, José")]).messages
    assert message.body == "Olá, José"
    assert message.segments.encoding == "UCS-2"


def test_markdown_is_stripped_and_link_urls_kept() -> None:
    text = "## Tracking\n**Order 12345** has _shipped_. [Track it](https://t.example/abc)"
    [message] = render_sms([BotMessage(text=text)]).messages
    assert message.body == "Tracking\nOrder 12345 has shipped. Track it (https://t.example/abc)"


def test_a_turn_becomes_one_message_when_it_fits() -> None:
    rendering = render_sms([BotMessage(text="First."), BotMessage(text="Second.")])
    assert [m.body for m in rendering.messages] == ["First.\n\nSecond."]


@pytest.mark.parametrize("max_length", [40, 100, 320, SMS_MAX_LENGTH])
def test_long_text_splits_between_words_into_the_fewest_pieces(max_length: int) -> None:
    text = " ".join(f"word{i:04d}" for i in range(400))  # 3,599 characters
    pieces = split_sms(text, max_length)
    assert all(len(piece) <= max_length for piece in pieces)
    assert _words(" ".join(pieces)) == _words(text)  # nothing lost, no word cut
    # greedy packing: no piece could have taken the next piece's first word
    for piece, following in zip(pieces, pieces[1:], strict=False):
        assert len(piece) + 1 + len(following.split()[0]) > max_length
    # each piece leaves less than one word (8 characters + a space) unused
    assert len(pieces) <= -(-len(text) // (max_length - 9))


def test_paragraphs_are_kept_together_when_possible() -> None:
    first, second = "A" * 100 + " end.", "Second paragraph " * 3
    pieces = split_sms(f"{first}\n\n{second.strip()}", 120)
    assert pieces == [first, second.strip()]


def test_only_a_word_longer_than_the_limit_is_cut() -> None:
    url = "https://example.com/" + "x" * 80
    pieces = split_sms(f"Link: {url} thanks", 50)
    assert all(len(piece) <= 50 for piece in pieces)
    assert "".join(pieces).replace("Link:", "").replace("thanks", "") == url


def test_max_length_is_bounded_by_twilio() -> None:
    with pytest.raises(ValueError):
        split_sms("hi", SMS_MAX_LENGTH + 1)


def test_buttons_are_numbered_across_the_turn() -> None:
    rendering = render_sms(
        [
            BotMessage(
                text="What would you like?",
                buttons=(
                    Button("Order status", "/check_order_status"),
                    Button("Refund “policy”", "/ask_refund_policy"),
                ),
            ),
            BotMessage(text="Or talk to us.", buttons=(Button("A person", "/talk_to_human"),)),
        ]
    )
    [message] = rendering.messages
    assert message.body == (
        'What would you like?\nReply 1 for Order status, 2 for Refund "policy".\n\n'
        "Or talk to us.\nReply 3 for A person."
    )
    assert [b.payload for b in rendering.buttons] == [
        "/check_order_status",
        "/ask_refund_policy",
        "/talk_to_human",
    ]


@pytest.mark.parametrize(
    ("reply", "payload"),
    [
        ("1", "/check_order_status"),
        (" 2. ", "/ask_refund_policy"),
        ("order STATUS", "/check_order_status"),
        ("refund policy!", "/ask_refund_policy"),
        ("3", None),
        ("0", None),
        ("where is my order", None),
    ],
)
def test_replies_map_back_to_button_payloads(reply: str, payload: str) -> None:
    buttons = (
        Button("Order status", "/check_order_status"),
        Button("Refund policy", "/ask_refund_policy"),
    )
    chosen = match_button_reply(reply, buttons)
    assert (chosen.payload if chosen else None) == payload


def test_images_go_as_mms_media_of_the_message() -> None:
    rendering = render_sms(
        [BotMessage(text="Here is your label."), BotMessage(image="https://img.example/label.png")]
    )
    [message] = rendering.messages
    assert message.body == "Here is your label."
    assert message.media_urls == ("https://img.example/label.png",)


def test_more_than_ten_images_need_more_messages() -> None:
    images = [BotMessage(image=f"https://img.example/{i}.png") for i in range(12)]
    rendering = render_sms(images)
    assert [len(m.media_urls) for m in rendering.messages] == [10, 2]


def test_custom_twilio_payload_passes_through_untouched_and_in_order() -> None:
    custom = {
        "body": "Raw “text” kept",
        "media_url": ["https://img.example/a.png"],
        "persistent_action": ["mailto:help@example.com"],
        "call_control": "end_call",
    }
    rendering = render_sms(
        [BotMessage(text="Before."), BotMessage(custom=custom), BotMessage(text="After.")]
    )
    assert [m.body for m in rendering.messages] == ["Before.", "Raw “text” kept", "After."]
    passthrough = rendering.messages[1]
    assert passthrough.media_urls == ("https://img.example/a.png",)
    assert dict(passthrough.params) == {"persistent_action": ["mailto:help@example.com"]}


def test_payloads_for_other_channels_send_nothing() -> None:
    rendering = render_sms([BotMessage(custom={"call_control": "end_call"})])
    assert rendering.messages == ()


def test_a_persons_reply_says_who_wrote_it() -> None:
    [message] = render_sms([BotMessage(text="Your refund is **done**.", author="Dana")]).messages
    assert message.body == "Dana: Your refund is done."
    assert BotMessage.from_rasa({"text": "Hi", "agent": {"name": "Dana"}}).author == "Dana"
    assert BotMessage.from_rasa({"text": "Hi", "agent": "not a mapping"}).author is None
