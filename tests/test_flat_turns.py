"""Flat turns keep the conversation's state: a window shorter than the conversation loses nothing.

Rasa sees only the last ``window_turns`` user turns behind the carried state (connectors/
tracker_store.py). On each channel, through the real connectors, a conversation longer than two
windows shows that what older turns established is still honoured late: a form opened on the
call keeps asking, and takes the order number given after the form's start left the window;
that number, given long before, is not asked again for a refund; the part of the refund policy
a barge-in cut off is still offered (SMS, chat) or texted (voice); and the LLM fallback's prompt
still holds the cross-channel history from before the window, the call's first words included.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, List

import pytest
import websockets
import yaml

from testkit.fake_llm import FakeLlm, LlmReply
from testkit.fake_twilio import FakeTwilio
from testkit.processes import ROOT
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall
from tests.actions.helpers import (
    chat_token,
    chat_turn,
    chat_url,
    frame,
    phone_call,
    send_sms,
)
from tests.support import GIBBERISH, seed_order

pytestmark = pytest.mark.rasa_server

WINDOW_TURNS = yaml.safe_load(Path(ROOT / "endpoints.yml").read_text())["tracker_store"][
    "window_turns"
]
#: More digressions than the window holds, so the form's start scrolls out of it.
DIGRESSIONS = WINDOW_TURNS + 2
#: Questions answered by rules, with a word of each answer; none of them greets (a greeting
#: on SMS or chat would offer the cut-off policy before the test asks for it).
QUESTIONS = (
    ("are you a bot?", "virtual assistant"),
    ("thanks", "welcome"),
    ("what's your refund policy", "30 days"),
)
#: The chat's rate limit lets one message a second through after a burst.
CHAT_PACE = 1.05


class Voice:
    """The rest of the conversation on the call that started it."""

    def __init__(self, call: VapiCall) -> None:
        self.call = call

    @staticmethod
    def number(digits: str) -> str:
        """An order number as the voice renderer says it, digit by digit."""
        return " ".join(digits)

    async def turn(self, text: str) -> str:
        return (await self.call.say(text)).text


class Written:
    @staticmethod
    def number(digits: str) -> str:
        return digits


class Sms(Written):
    def __init__(self, stack: RasaStack, phone: str) -> None:
        self.stack, self.phone = stack, phone

    async def turn(self, text: str) -> str:
        return " ".join(await send_sms(self.stack, self.phone, text))


class Chat(Written):
    """A signed-in chat with the caller's verified phone: the same conversation."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.last = 0.0

    async def turn(self, text: str) -> str:
        await asyncio.sleep(max(0.0, self.last + CHAT_PACE - time.monotonic()))
        self.last = time.monotonic()
        return " ".join(m.get("text") or "" for m in await chat_turn(self.ws, text))


async def _digress(channel: Any, turns: int, form_asks: bool) -> None:
    for index in range(turns):
        question, answer = QUESTIONS[index % len(QUESTIONS)]
        reply = await channel.turn(question)
        assert answer in reply, (index, question, reply)
        # While the form is active it asks again after every digression, and only then.
        assert ("order number" in reply) is form_asks, (index, question, reply)


async def _scenario(
    stack: RasaStack, call: VapiCall, channel: Any, kind: str, twilio: FakeTwilio, llm: FakeLlm
) -> None:
    order = seed_order(stack, phone=call.number)
    asked = await channel.turn("where is my order")
    assert "order number" in asked

    await _digress(channel, DIGRESSIONS, form_asks=True)
    status = await channel.turn(f"it's {order}")
    assert channel.number(order) in status and "UPS" in status, status

    # The LLM's prompt: the history before the window too, across channels.
    llm.script(LlmReply(content="I can help with that."))
    await channel.turn(GIBBERISH)
    prompt: List[str] = [m["content"] for m in llm.requests[-1]["messages"]]
    assert "[voice] what's your refund policy" in prompt  # the call's first words
    assert f"[{kind}] where is my order" in prompt
    assert prompt[-1] == f"[{kind}] {GIBBERISH}"

    await _digress(channel, DIGRESSIONS, form_asks=False)
    asked = await channel.turn("I'd like to return my order")
    assert f"start a refund for order {channel.number(order)}" in asked, asked
    refund = await channel.turn("yes")
    assert f"refund request for order {channel.number(order)}" in refund, refund

    if kind == "voice":
        texted = await channel.turn("text me the rest")
        assert texted == "Done, I've texted you the rest of the refund policy.", texted
        sms = twilio.wait_for_messages(call.number, 1)[-1]
        assert "Items must be unused" in sms.body
    else:
        offered = await channel.turn("hi")
        assert "cut off during the refund policy" in offered, offered
        rest = await channel.turn("yes")
        assert "Items must be unused" in rest, rest


@pytest.mark.parametrize("kind", ["voice", "sms", "chat"])
async def test_state_from_before_the_window_is_honoured_late(
    kind: str, rasa_stack: RasaStack, fake_twilio: FakeTwilio, fake_llm: FakeLlm
) -> None:
    fake_llm.reset()
    call = phone_call(rasa_stack)
    # The call: the refund policy, cut off by the caller after 60 characters; the cut is
    # reported with the next message, so the rest is kept (``unheard``).
    policy = await call.say("what's your refund policy", interrupt_after=60)
    assert "30 days" in policy.text
    if kind == "voice":
        await _scenario(rasa_stack, call, Voice(call), kind, fake_twilio, fake_llm)
    elif kind == "sms":
        await call.say("thanks")
        await _scenario(rasa_stack, call, Sms(rasa_stack, call.number), kind, fake_twilio, fake_llm)
    else:
        await call.say("thanks")
        async with websockets.connect(chat_url(rasa_stack)) as ws:
            await ws.send(
                json.dumps({"type": "auth", "token": chat_token(rasa_stack, call.number)})
            )
            assert (await frame(ws))["type"] == "ready"
            assert (await frame(ws))["type"] == "history"
            await _scenario(rasa_stack, call, Chat(ws), kind, fake_twilio, fake_llm)


async def test_a_caller_who_texted_before_a_long_call_is_welcomed_back(
    rasa_stack: RasaStack,
) -> None:
    """The welcome-back greeting looks further back than the window: an SMS, then a call of
    more turns than the window holds, then a second call that recalls the SMS."""
    first = phone_call(rasa_stack)
    await send_sms(rasa_stack, first.number, "hi")
    await _digress(Voice(first), DIGRESSIONS, form_asks=False)
    second = phone_call(rasa_stack, first.number)
    answer = await second.assistant_request()
    assert answer["assistant"]["firstMessage"] == (
        "Welcome back! I see you texted us earlier. How can I help?"
    )
