"""Barge-in cases through the real VAPI connector, the trained assistant and the action server.

The caller is devtools.sim_vapi.VapiCall: it streams answers with the openai SDK as VAPI does
and, with ``interrupt_after``, hears only the start of an answer and then talks over it (VAPI's
``user-interrupted`` event, and the shortened assistant message in the next history).
"""

from __future__ import annotations

import pytest

from omnichannel.rendering.messages import split_sentences
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.stack import RasaStack
from tests.actions.helpers import conversation_of, phone_call, send_sms, tracker
from tests.support import seed_order

pytestmark = pytest.mark.rasa_server

POLICY_QUESTION = "what's your refund policy"


def first_unheard(policy: str, heard: str) -> int:
    """Index of the first sentence of ``policy`` the caller did not hear to its end."""
    sentences = split_sentences(policy)
    done = 0
    while done < len(sentences) and " ".join(sentences[: done + 1]) in heard:
        done += 1
    return done


async def test_backchannel_resumes_from_the_interrupted_sentence(
    rasa_stack: RasaStack, fake_llm: FakeLlm
) -> None:
    fake_llm.reset()
    call = phone_call(rasa_stack)
    policy = await call.say(POLICY_QUESTION, interrupt_after=150)
    heard = call.history[-1]["content"]
    sentences = split_sentences(policy.text)
    cut = first_unheard(policy.text, heard)
    assert 0 < cut < len(sentences) - 1

    resumed = await call.say("uh-huh")

    assert resumed.text == " ".join(sentences[cut:])
    assert sentences[0] not in resumed.text
    assert fake_llm.requests == []
    state = tracker(rasa_stack, await conversation_of(rasa_stack, call.number))
    assert state["slots"]["interrupted"] is True
    assert state["slots"]["unheard"] is None


async def test_noise_also_resumes(rasa_stack: RasaStack, fake_llm: FakeLlm) -> None:
    fake_llm.reset()
    call = phone_call(rasa_stack)
    policy = await call.say(POLICY_QUESTION, interrupt_after=90)
    cut = first_unheard(policy.text, call.history[-1]["content"])

    resumed = await call.say("hm")

    assert resumed.text == " ".join(split_sentences(policy.text)[cut:])
    assert fake_llm.requests == []


async def test_yeah_resumes_like_a_backchannel(rasa_stack: RasaStack, fake_llm: FakeLlm) -> None:
    fake_llm.reset()
    call = phone_call(rasa_stack)
    policy = await call.say(POLICY_QUESTION, interrupt_after=90)
    cut = first_unheard(policy.text, call.history[-1]["content"])

    resumed = await call.say("yeah")

    assert resumed.text == " ".join(split_sentences(policy.text)[cut:])
    assert fake_llm.requests == []


async def test_hold_on_stops_and_asks_what_they_need(rasa_stack: RasaStack) -> None:
    call = phone_call(rasa_stack)
    await call.say(POLICY_QUESTION, interrupt_after=60)

    reply = await call.say("hold on")

    assert reply.text == "Sure, I'll stop there. What do you need?"
    state = tracker(rasa_stack, await conversation_of(rasa_stack, call.number))
    assert state["slots"]["unheard"]["text"].startswith("You can return most items")


async def test_a_new_request_is_answered_at_once_and_the_rest_is_offered_later_by_sms(
    rasa_stack: RasaStack,
) -> None:
    call = phone_call(rasa_stack)
    policy = await call.say(POLICY_QUESTION, interrupt_after=60)

    number = seed_order(rasa_stack, phone=call.number)
    reply = await call.say(f"where is order {number}")

    # Spoken digit by digit.
    assert reply.text.startswith(f"Order {' '.join(number)},")
    assert "has shipped with UPS" in reply.text
    assert "refund" not in reply.text.lower()
    conversation = await conversation_of(rasa_stack, call.number)
    unheard = tracker(rasa_stack, conversation)["slots"]["unheard"]
    assert unheard["topic"] == "the refund policy"
    assert unheard["channel"] == "voice"
    assert policy.text.endswith(unheard["text"])
    assert unheard["text"].startswith("You can return most items")

    # Later the customer texts: the greeting offers what the call cut off, and "yes" sends it.
    greeting = await send_sms(rasa_stack, call.number, "hi")
    assert greeting[-1].endswith(
        "By the way, our call cut off during the refund policy. Want the rest by text? Reply YES."
    )
    rest = await send_sms(rasa_stack, call.number, "yes")
    assert " ".join(rest) == f"Here's the rest of the refund policy: {unheard['text']}"
    assert tracker(rasa_stack, conversation)["slots"]["unheard"] is None


async def test_an_unclear_request_after_a_barge_in_goes_to_the_llm_without_a_repeat(
    rasa_stack: RasaStack, fake_llm: FakeLlm
) -> None:
    fake_llm.reset()
    fake_llm.script(LlmReply(content="I can look into that for you."))
    call = phone_call(rasa_stack)
    await call.say(POLICY_QUESTION, interrupt_after=60)

    reply = await call.say("zxqv blorft wibble")

    assert reply.text == "I can look into that for you."
    prompt = fake_llm.requests[0]["messages"]
    assert any("[interrupted by the customer here]" in m["content"] for m in prompt)
