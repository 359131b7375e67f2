"""WhatsApp's renderer (omnichannel/rendering/whatsapp.py): formatting, lengths, tappable options
with their numbered fallback, media. Pure: no servers."""

from __future__ import annotations

from omnichannel.rendering.messages import BotMessage, Button
from omnichannel.rendering.whatsapp import (
    CONTENT_BODY_MAX,
    LIST_PICKER,
    QUICK_REPLY,
    WHATSAPP_MAX_BODY,
    interactive_for,
    render_whatsapp,
    session_content,
    whatsapp_text,
)


def message(text: str = "", **rest) -> BotMessage:
    return BotMessage.from_rasa({"text": text, **rest})


def test_markdown_becomes_whatsapp_formatting_and_nothing_leaks() -> None:
    assert whatsapp_text("**Order 12345** has *shipped*") == "*Order 12345* has _shipped_"
    assert whatsapp_text("__bold__ and _italic_ and ~~gone~~") == "*bold* and _italic_ and ~gone~"
    assert whatsapp_text("Use `code_name` here") == "Use ```code_name``` here"
    assert whatsapp_text("# Returns\n* one\n+ two") == "*Returns*\n- one\n- two"
    assert whatsapp_text("<b>Hi</b> <script>x()</script>there") == "Hi x()there"
    # Links keep their address; underscores and asterisks inside addresses stay as they are.
    assert (
        whatsapp_text(
            "See [our policy](https://acme.example/refund_policy_v2) or https://a.example/x_y_z"
        )
        == "See our policy (https://acme.example/refund_policy_v2) or https://a.example/x_y_z"
    )
    assert whatsapp_text("[https://a.example](https://a.example)") == "https://a.example"
    assert whatsapp_text("snake_case_word stays") == "snake_case_word stays"
    assert whatsapp_text("a  b\n\n\n\nc") == "a b\n\nc"


def test_up_to_three_short_options_are_tappable_quick_replies() -> None:
    rendered = render_whatsapp(
        [
            message(
                "What can I do?",
                buttons=[
                    {"title": "Order status", "payload": "/check_order_status"},
                    {"title": "Refund", "payload": "/request_refund"},
                ],
            )
        ]
    )
    [bubble] = rendered.messages
    content = session_content(bubble)
    assert bubble.body == "What can I do?" and content is not None
    assert content["types"] == {
        QUICK_REPLY: {
            "body": "What can I do?",
            "actions": [
                {"title": "Order status", "id": "/check_order_status"},
                {"title": "Refund", "id": "/request_refund"},
            ],
        }
    }
    assert "*1* Order status" in content["fallback"] and "*2* Refund" in content["fallback"]
    assert [b.payload for b in rendered.buttons] == ["/check_order_status", "/request_refund"]


def test_more_options_make_a_list_picker_and_too_many_numbered_text() -> None:
    four = [{"title": f"Option {n}", "payload": f"/pick{n}"} for n in range(4)]
    [bubble] = render_whatsapp([message("Pick one", buttons=four)]).messages
    assert LIST_PICKER in session_content(bubble)["types"]
    items = session_content(bubble)["types"][LIST_PICKER]["items"]
    assert [i["id"] for i in items] == ["/pick0", "/pick1", "/pick2", "/pick3"]
    eleven = [{"title": f"Option {n}", "payload": f"/pick{n}"} for n in range(11)]
    [plain] = render_whatsapp([message("Pick one", buttons=eleven)]).messages
    assert session_content(plain) is None
    assert plain.body.startswith("Pick one\n\n*1* Option 0\n*2* Option 1")
    assert plain.body.endswith("*11* Option 10\nReply with the number of your choice.")


def test_long_titles_duplicates_and_no_text_fall_back_to_numbers() -> None:
    long_titles = [Button("A title much longer than twenty-four", "/a"), Button("B", "/b")]
    assert interactive_for("Pick", long_titles) is None
    assert interactive_for("Pick", [Button("Same", "/a"), Button("Same", "/b")]) is None
    assert interactive_for("", [Button("Yes", "/affirm")]) is None
    assert interactive_for("x" * (CONTENT_BODY_MAX + 1), [Button("Yes", "/affirm")]) is None
    # Four to ten titles of up to 24 characters still make a list.
    titles = [Button(f"Twenty-one chars ti {n}", f"/t{n}") for n in range(3)]
    assert interactive_for("Pick", titles).content_type == LIST_PICKER


def test_numbering_continues_across_a_turn_and_links_are_links() -> None:
    rendered = render_whatsapp(
        [
            message("First?", buttons=[{"title": "Yes", "payload": "/affirm"}]),
            message(
                "Track it",
                buttons=[
                    {"title": "Track package", "payload": "https://t.example/1"},
                    {"title": "No thanks", "payload": "/deny"},
                ],
            ),
        ]
    )
    first, second = rendered.messages
    assert session_content(first)["fallback"].endswith(
        "*1* Yes\nReply with the number of your choice."
    )
    assert second.body == "Track it\nTrack package: https://t.example/1"
    assert "*2* No thanks" in session_content(second)["fallback"]
    assert [b.payload for b in rendered.buttons] == ["/affirm", "/deny"]


def test_long_text_is_split_at_twilios_limit() -> None:
    paragraph = "word " * 200
    bubbles = render_whatsapp([message(f"{paragraph}\n\n{paragraph}")]).messages
    assert len(bubbles) == 2 and all(len(b.body) <= WHATSAPP_MAX_BODY for b in bubbles)


def test_pictures_go_one_per_message_with_a_caption_when_it_fits() -> None:
    [captioned] = render_whatsapp(
        [message("How to pack it:", image="https://x.example/pack.png")]
    ).messages
    assert captioned.body == "How to pack it:"
    assert captioned.media_urls == ("https://x.example/pack.png",)
    long_text = "x" * (CONTENT_BODY_MAX + 10)
    text, picture = render_whatsapp([message(long_text, image="https://x.example/a.png")]).messages
    assert (text.body, text.media_urls) == (long_text, ())
    assert (picture.body, picture.media_urls) == ("", ("https://x.example/a.png",))
    with_options, *_ = render_whatsapp(
        [
            message(
                "Which?",
                image="https://x.example/a.png",
                buttons=[{"title": "This", "payload": "/this"}],
            )
        ]
    ).messages
    assert with_options.media_urls == ("https://x.example/a.png",)
    [document] = render_whatsapp([message(attachment="https://x.example/label.pdf")]).messages
    assert document.media_urls == ("https://x.example/label.pdf",) and document.body == ""


def test_a_designers_twilio_payload_goes_as_given() -> None:
    [bubble] = render_whatsapp(
        [message(custom={"content_sid": "HX" + "0" * 32, "content_variables": '{"1": "x"}'})]
    ).messages
    assert bubble.params == {"content_sid": "HX" + "0" * 32, "content_variables": '{"1": "x"}'}
