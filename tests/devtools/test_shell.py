"""``make shell`` (devtools/shell.py): typed lines go through the chosen channel's real connector
and come back as that channel's customer receives them; switching channel keeps the
conversation. Driven on the shared stack, with the keyboard replaced by a script."""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import subprocess
import time
from typing import Any, Iterator, List

import pytest

from devtools.conversations import Customer, Server
from devtools.responses import ROOT
from devtools.shell import DEMO_CUSTOMER, converse, from_the_team, notification_help, shown
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, reply, token_for
from tests.connectors.notifications.helpers import conversation_of, place_customer


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


def documented_curl() -> str:
    """The notification command of docs/INTEGRATORS.md, as a reader copies it."""
    page = (ROOT / "docs" / "INTEGRATORS.md").read_text()
    block = page.split("<!-- notification-curl -->", 1)[1]
    return block.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.rasa_server
async def test_the_shell_receives_a_notification_sent_by_the_documented_curl(
    rasa_stack: RasaStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    command = documented_curl()
    assert '"phone": "+14155552671"' in command  # the shell's own customer
    answers = []

    def run_curl() -> None:
        # The shared stack keeps quiet hours: the demo customer is placed in their afternoon.
        cid = conversation_of(rasa_stack, DEMO_CUSTOMER)
        asyncio.run(place_customer(rasa_stack, cid, 15))
        env = {
            **os.environ,
            "RASA_URL": rasa_stack.base_url,
            "NOTIFICATIONS_API_KEY": rasa_stack.env["NOTIFICATIONS_API_KEY"],
        }
        done = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
        )
        answers.append(json.loads(done.stdout))

    typed: Iterator[str] = iter(["/inbox", "/quit"])

    def keyboard(prompt: str = "") -> str:
        text = next(typed)
        if text == "/inbox":
            run_curl()
        return text

    monkeypatch.setattr(builtins, "input", keyboard)
    customer = Customer(Server(rasa_stack.base_url, rasa_stack.env), phone=DEMO_CUSTOMER)
    await converse(customer, "chat")
    printed = capsys.readouterr().out
    assert answers[0]["status"] == "sent" and answers[0]["channel"] == "chat", answers
    assert "(sent to you first, on chat)" in printed
    assert "Good news: your order 40213 has shipped." in printed
    assert printed.count("Good news: your order 40213 has shipped.") == 1


@pytest.mark.unit
def test_the_shell_prints_how_to_send_it_a_notification() -> None:
    class Stack:
        base_url = "http://127.0.0.1:5999"
        env = {"NOTIFICATIONS_API_KEY": "k3y"}

    text = notification_help(Stack())  # type: ignore[arg-type]
    assert "export RASA_URL=http://127.0.0.1:5999 NOTIFICATIONS_API_KEY=k3y" in text
    assert "docs/INTEGRATORS.md" in text
