"""``make shell`` (devtools/shell.py): typed lines go through the chosen channel's real connector
and come back as that channel's customer receives them; switching channel keeps the
conversation. Driven on the shared stack, with the keyboard replaced by a script."""

from __future__ import annotations

import builtins
from typing import Iterator

import pytest

from devtools.conversations import Customer, Server
from devtools.shell import converse, shown
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack


@pytest.mark.unit
def test_replies_are_shown_as_each_channel_delivers_them() -> None:
    assert shown("voice", ["Hello there."]) == ["  bot says: Hello there."]
    assert shown("sms", ["Hi 🙂"])[0] == "  bot texts (1 segment(s), UCS-2):"
    assert shown("chat", ["**Hi**\nthere"]) == ["  bot writes:", "    **Hi**", "    there"]
    assert shown("sms", []) == ["  (sms: no reply)"]
    assert shown("whatsapp", ["*Hi*\n[Yes | No]"]) == [
        "  bot sends on WhatsApp:",
        "    *Hi*",
        "    [Yes | No]",
    ]


@pytest.mark.rasa_server
async def test_a_scripted_session_crosses_channels_in_one_conversation(
    rasa_stack: RasaStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    typed: Iterator[str] = iter(
        [
            "what can you do",
            "/voice",
            "what can you do",
            "/chat",
            "what can you do",
            "/whatsapp",
            "hi",
            "/quit",
        ]
    )
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(typed))
    customer = Customer(Server(rasa_stack.base_url, rasa_stack.env), phone=new_phone_number())
    await converse(customer, "sms")
    printed = capsys.readouterr().out
    # utter_help's three variations: by SMS, spoken (vapi) and the default in chat.
    assert (
        "bot texts (1 segment(s), GSM-7):\n    Acme Shop assistant: ask about an order" in printed
    )
    assert "bot says: I can check on an order, give you a tracking number" in printed
    assert "bot writes:\n    I can check an order's status, find a tracking number" in printed
    assert printed.count("(now on") == 3
    assert (
        "bot sends on WhatsApp:\n    Hi! I'm the *Acme Shop* assistant 👋 What can I do for you?\n"
        "    [Where's my order? | Start a refund | Refund policy]" in printed
    )
