"""``make shell`` (devtools/shell.py): typed lines go through the chosen channel's real connector
and come back as that channel's customer receives them; switching channel keeps the
conversation. Driven on the shared stack, with the keyboard replaced by a script."""

from __future__ import annotations

import asyncio
import builtins
import time
from typing import Any, Iterator, List

import pytest

from devtools.conversations import Customer, Server
from devtools.shell import converse, from_the_team, shown
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, reply, token_for


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


def test_what_the_team_sends_is_told_apart() -> None:
    reply = {
        "event": "bot",
        "text": "Hi, Dana here.",
        "metadata": {"agent": {"name": "Dana"}, "handoff_message_id": "m1", "channel": "sms"},
    }
    notice = {
        "event": "bot",
        "text": "You're back.",
        "metadata": {"handoff_message_id": "m2", "channel": "chat"},
    }
    assert from_the_team(reply) == "  Dana (support team) sends by SMS: Hi, Dana here."
    assert from_the_team(notice) == "  bot sends by Chat: You're back."
    assert from_the_team({"event": "bot", "text": "Hello", "metadata": {}}) is None


@pytest.mark.rasa_server
async def test_with_the_inbox_an_agents_reply_is_printed_as_it_arrives(
    rasa_stack: RasaStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    phone = new_phone_number()
    server = Server(rasa_stack.base_url, rasa_stack.env)
    printed: List[str] = []

    def agent_answers() -> str:
        token = token_for(rasa_stack, "Dana")
        cid = asyncio.run(server.conversation_of(phone))
        assert inbox(rasa_stack, "claim", token, {"conversation_id": cid}).status_code == 200
        assert reply(rasa_stack, token, cid, "Hi, Dana here.", "sms").status_code == 202
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            printed.append(capsys.readouterr().out)
            if "Dana (support team) sends by SMS: Hi, Dana here." in "".join(printed):
                break
            time.sleep(0.05)
        return "/quit"

    script: Iterator[Any] = iter(["i want to talk to a person", agent_answers])
    monkeypatch.setattr(
        builtins,
        "input",
        lambda prompt="": (lambda step: step() if callable(step) else step)(next(script)),
    )
    await converse(Customer(server, phone=phone), "sms", team=True)
    printed.append(capsys.readouterr().out)
    output = "".join(printed)
    assert "I've passed this to our support team" in output
    assert "Dana (support team) sends by SMS: Hi, Dana here." in output
