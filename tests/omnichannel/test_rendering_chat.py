"""Chat rendering (omnichannel/rendering/chat.py): markdown kept as safe HTML,
buttons, images and custom payloads passed through."""

from __future__ import annotations

import pytest

from omnichannel.rendering.chat import chat_html, render_chat
from omnichannel.rendering.messages import BotMessage

pytestmark = pytest.mark.unit


def test_markdown_becomes_the_small_safe_html_subset() -> None:
    html = chat_html(
        "Order **12345** is *on its way*.\n"
        "Track it [here](https://track.example/a_b?x=1&y=2) or at https://ups.example/t_1.\n\n"
        "- use `code`\n- done"
    )
    assert html == (
        "<p>Order <strong>12345</strong> is <em>on its way</em>.<br>"
        'Track it <a href="https://track.example/a_b?x=1&amp;y=2" target="_blank" '
        'rel="noopener noreferrer">here</a> or at <a href="https://ups.example/t_1" '
        'target="_blank" rel="noopener noreferrer">https://ups.example/t_1</a>.</p>'
        "<ul><li>use <code>code</code></li><li>done</li></ul>"
    )


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[click](javascript:alert(1))",
        '[x](https://a.example/"onmouseover="alert(1))',
        "`<b>` **<i>bold</i>**",
        "\x00 0 \x00",
    ],
)
def test_no_markup_from_the_text_survives(text: str) -> None:
    html = chat_html(text)
    for tag in ("<script", "<img", "<i>", "<b>", "javascript:", 'onmouseover="', "\x00"):
        assert tag not in html, html
    assert html.count("<a ") == html.count("</a>") <= 1


def test_rendered_message_keeps_buttons_images_and_custom() -> None:
    message = BotMessage.from_rasa(
        {
            "text": "Pick one",
            "buttons": [{"title": "Track", "payload": "/ask_tracking_number"}],
            "quick_replies": [{"title": "Human"}],
            "image": "https://img.example/parcel.png",
            "custom": {"card": {"sku": "T-1"}},
        }
    )
    assert render_chat(message) == {
        "text": "Pick one",
        "html": "<p>Pick one</p>",
        "buttons": [
            {"title": "Track", "payload": "/ask_tracking_number"},
            {"title": "Human", "payload": "Human"},
        ],
        "image": "https://img.example/parcel.png",
        "custom": {"card": {"sku": "T-1"}},
    }


def test_voice_call_control_is_not_shown_in_chat() -> None:
    rendered = render_chat(
        BotMessage.from_rasa({"text": "", "custom": {"call_control": "end_call"}})
    )
    assert "custom" not in rendered and rendered["html"] == ""


def test_a_button_to_a_web_page_is_a_link_not_a_message() -> None:
    rendered = render_chat(
        BotMessage.from_rasa(
            {
                "text": "Shipped",
                "buttons": [
                    {"title": "Track package", "payload": "https://track.example/1Z9"},
                    {"title": "Refund", "payload": "/request_refund"},
                ],
            }
        )
    )
    assert rendered["buttons"] == [
        {"title": "Track package", "url": "https://track.example/1Z9"},
        {"title": "Refund", "payload": "/request_refund"},
    ]
