"""Voice rendering: what a caller hears for a bot message."""

from __future__ import annotations

import time

import pytest

from omnichannel.rendering.messages import BotMessage, Button
from omnichannel.rendering.voice import (
    VOICE_LINK_OFFER,
    VOICE_MEDIA_OFFER,
    render_voice,
    render_voice_message,
    speak_numbers,
    spoken_choices,
    spoken_text,
)

pytestmark = pytest.mark.unit


def voice(text: str = "", **fields) -> str:
    return render_voice_message(BotMessage(text=text, **fields))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("**Great**, your _order_ is on its way.", "Great, your order is on its way."),
        ("# Refunds\nYou have 30 days.", "Refunds. You have 30 days."),
        ("Options:\n- tracking\n- refunds", "Options: tracking. refunds."),
        ("All done 🎉👍🏽!", "All done!"),
        ("Thanks ❤️ see you", "Thanks see you."),
        ("`code` and ~~old~~ text", "code and old text."),
    ],
)
def test_markup_and_emoji_are_not_spoken(text, expected):
    assert voice(text) == expected


def test_a_raw_link_becomes_an_offer_to_text_it():
    said = voice(
        "The tracking number is 1Z999AA10123456784. "
        "Track it here: https://track.acme-shop.example/1Z999AA10123456784"
    )
    assert "http" not in said and "acme-shop" not in said and "Track it here" not in said
    assert said.endswith(VOICE_LINK_OFFER)
    assert said.startswith("The tracking number is 1 Z 9 9, 9 A A 1,")


def test_a_markdown_link_keeps_its_label_and_offers_the_link():
    said = voice("Read [our refund policy](https://acme.example/refunds) before you send it.")
    assert said == f"Read our refund policy before you send it. {VOICE_LINK_OFFER}"


def test_a_long_sentence_around_a_url_is_kept_without_it():
    said = voice("You can find all the details about returns at www.acme.example/returns today.")
    assert said == f"You can find all the details about returns today. {VOICE_LINK_OFFER}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Order 12345 has shipped.", "Order 1 2 3 4 5 has shipped."),
        ("Order #40213", "Order #4 0 2 1 3"),
        ("It costs $49.99 and takes 3 days.", "It costs $49.99 and takes 3 days."),
        ("A refund of $12500 is on its way.", "A refund of $12500 is on its way."),
        ("Total: €15000.50", "Total: €15000.50"),
        ("Since 2024 we ship faster.", "Since 2024 we ship faster."),
        ("Code AB12CD34", "Code A B 1 2, C D 3 4"),
        ("Call +14155552671 now", "Call 1, 4 1 5, 5 5 5, 2 6 7 1 now"),
        ("USPS 9400111899223197428490", "USPS 9 4 0 0, 1 1 1 8, 9 9 2 2, 3 1 9 7, 4 2 8 4, 9 0"),
        ("word and 12 words", "word and 12 words"),
    ],
)
def test_numbers_and_ids_are_spoken_sensibly(text, expected):
    assert speak_numbers(text) == expected


def test_iso_dates_are_spoken_as_dates():
    this_year = time.localtime().tm_year
    assert speak_numbers(f"Arrives {this_year}-11-26.") == "Arrives November 26."
    assert speak_numbers("Ordered 1999-02-03.") == "Ordered February 3, 1999."
    assert speak_numbers("Not a date 2026-13-40") == "Not a date 2026-13-40"


@pytest.mark.parametrize(
    "titles, expected",
    [
        (["Yes"], "You can say Yes."),
        (["Yes", "No"], "You can say Yes or No."),
        (["Track", "Refund", "**Human** 🙋"], "You can say Track, Refund, or Human."),
        ([], ""),
    ],
)
def test_buttons_are_spoken_as_choices(titles, expected):
    assert spoken_choices(titles) == expected


def test_a_message_with_text_buttons_and_image():
    message = BotMessage(
        text="Which order?",
        buttons=(Button("Order 12345", "/inform{}"), Button("Another", "/deny")),
        image="https://acme.example/pic.png",
    )
    assert render_voice_message(message) == (
        f"Which order? You can say Order 1 2 3 4 5 or Another. {VOICE_MEDIA_OFFER}"
    )


def test_custom_payloads_are_never_spoken():
    assert voice(custom={"call_control": "end_call"}) == ""
    assert voice("Bye.", custom={"blocks": [1, 2]}) == "Bye."


def test_quick_replies_from_rasa_are_spoken_as_choices():
    parsed = BotMessage.from_rasa(
        {"text": "Pick one", "quick_replies": [{"title": "A"}, {"title": "B"}, {"title": "C"}]}
    )
    assert render_voice_message(parsed) == "Pick one. You can say A, B, or C."


def test_a_turn_is_its_messages_joined():
    turn = [BotMessage(text="One moment."), BotMessage(), BotMessage(text="Order 12345 shipped.")]
    assert render_voice(turn) == "One moment. Order 1 2 3 4 5 shipped."


def test_spoken_text_reports_links():
    assert spoken_text("See https://x.example") == ("", True)
    assert spoken_text("Nothing to see") == ("Nothing to see.", False)
