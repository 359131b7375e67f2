"""TwiML answers (connectors/twilio_sms/twiml.py), read back as Twilio reads them."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from connectors.twilio_sms.twiml import EMPTY_TWIML, twiml
from omnichannel.rendering.sms import SmsMessage


def test_no_messages_is_an_empty_response_meaning_no_reply() -> None:
    root = ElementTree.fromstring(EMPTY_TWIML)
    assert (root.tag, list(root)) == ("Response", [])
    assert twiml() == EMPTY_TWIML


def test_messages_carry_their_body_and_media_in_order() -> None:
    answer = twiml(
        [
            SmsMessage(body="Your order <12345> & more"),
            SmsMessage(body="", media_urls=("https://i.example/a.png", "https://i.example/b.png")),
        ]
    )
    root = ElementTree.fromstring(answer)
    first, second = root.findall("Message")
    assert first.text == "Your order <12345> & more"  # escaped in the XML, intact when read
    assert first.findall("Media") == []
    assert [m.text for m in second.findall("Media")] == [
        "https://i.example/a.png",
        "https://i.example/b.png",
    ]
