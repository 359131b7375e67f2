"""A card number typed on each channel (SMS, WhatsApp, voice, chat), then words the bot does
not understand so the LLM fallback answers with the conversation in its prompt, reaches neither
the LLM provider, nor a log line, nor a trace, nor the insight page (its report, CSV and NLU
file); the phone number and the words of the message are in no span and no metric label; the
event log keeps the redacted text (the default ``EVENT_LOG_TEXT=redacted``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from omnichannel.redaction import CARD_MARK, EMAIL_MARK
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.fake_otlp import FakeOtlp
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, whatsapp_form
from testkit.vapi_call import VapiCall
from tests.actions.helpers import tracker
from tests.connectors.twilio_sms.helpers import (
    conversation_of,
    inbound,
    post_signed,
    replies,
    replies_of,
)
from tests.connectors.webchat.helpers import open_chat, user_token
from tests.support import GIBBERISH

pytestmark = pytest.mark.rasa_server

#: A Visa test number (Luhn-valid), written as people type it, and an email address.
CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.org"
#: Words no NLU example holds, so the LLM fallback answers (and gets the prompt).
WORDS = "zxqv blorft wibble plorkt"
TEXT = f"{WORDS} {CARD} {EMAIL}"
SECRETS = ("4111111111111111", "4111 1111 1111 1111", "1111 1111", EMAIL, "plorkt")


@pytest.fixture
def llm(fake_llm: FakeLlm) -> FakeLlm:
    fake_llm.reset()
    yield fake_llm
    fake_llm.reset()


def _logs(stack: RasaStack) -> str:
    return "\n".join(path.read_text(errors="replace") for path in Path(stack.log_dir).glob("*.log"))


async def test_a_card_number_typed_on_each_channel_goes_nowhere(
    rasa_stack: RasaStack, fake_otlp: FakeOtlp, fake_twilio: FakeTwilio, llm: FakeLlm, stack_redis
) -> None:
    since = time.time_ns()
    llm.script(*[LlmReply(content="Happy to help.")] * 8)
    number = new_phone_number()
    # On each channel the customer types the card number and the email, then words the bot does
    # not understand: the LLM fallback answers with the conversation so far in its prompt.

    # SMS
    post_signed(rasa_stack, inbound(rasa_stack, number, TEXT))
    assert replies(post_signed(rasa_stack, inbound(rasa_stack, number, GIBBERISH))) == [
        "Happy to help."
    ]
    # WhatsApp (answered inline in TwiML, or by Twilio's REST API past the inline budget)
    whatsapp_number = new_phone_number()
    said = []
    for text in (TEXT, GIBBERISH):
        form = whatsapp_form(rasa_stack.env, whatsapp_number, text)
        status, answer = await asyncio.to_thread(
            fake_twilio.deliver_inbound, rasa_stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH, form
        )
        assert status == 200
        said += replies_of(answer)
    for _ in range(300):
        sent = [m.body for m in fake_twilio.messages_to(f"whatsapp:{whatsapp_number}")]
        if "Happy to help." in said + sent:
            break
        await asyncio.sleep(0.1)
    assert "Happy to help." in said + sent
    # voice
    call = VapiCall(
        rasa_stack.base_url,
        rasa_stack.env["VAPI_SERVER_SECRET"],
        number=new_phone_number(),
        custom_llm_key=rasa_stack.env["VAPI_CUSTOM_LLM_KEY"],
    )
    await call.assistant_request()
    await call.say(TEXT)
    assert "Happy to help." in (await call.say(GIBBERISH)).text
    await call.aclose()
    # chat
    chat = await open_chat(
        rasa_stack, user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], f"privacy-{since}")
    )
    await chat.say(TEXT)
    await chat.turn_done()
    await chat.say(GIBBERISH)
    assert (await chat.next_bot())["text"] == "Happy to help."
    await chat.turn_done()
    await chat.ws.close()

    prompts = [m["content"] for request in llm.requests for m in request["messages"]]
    assert len(llm.requests) >= 4
    for secret in SECRETS[:-1]:
        assert not any(secret in prompt for prompt in prompts), secret
    assert sum(f"{WORDS} {CARD_MARK} {EMAIL_MARK}" in p for p in prompts) >= 4

    # The event log holds the redacted text: the viewer, the chat history and exports too.
    cid = conversation_of(stack_redis, number)
    user, _ = [e for e in tracker(rasa_stack, cid)["events"] if e["event"] == "user"]
    assert user["text"] == f"{WORDS} {CARD_MARK} {EMAIL_MARK}"

    # Traces: every span of these turns has arrived once the chat's has.
    await asyncio.to_thread(
        fake_otlp.wait_for,
        lambda spans: any(s.name == "chat.turn" and s.start_ns >= since for s in spans),
    )
    exported = b"".join(fake_otlp.raw)
    for secret in (*SECRETS, number, number[1:], whatsapp_number[1:], WORDS):
        assert secret.encode() not in exported, secret
        assert secret not in _logs(rasa_stack), secret
    url = f"http://127.0.0.1:{rasa_stack.env['METRICS_PORT']}/metrics"
    metrics = (await asyncio.to_thread(httpx.get, url)).text
    for secret in (*SECRETS, number, number[1:], WORDS):
        assert secret not in metrics, secret

    # The insight page lists the not-understood messages, redacted, in its report and files.
    insight = f"{rasa_stack.base_url}/webhooks/insight/api/"
    auth = {"Authorization": f"Bearer {rasa_stack.env['RASA_AUTH_TOKEN']}"}
    pages = []
    for path in ("report", "report.csv", "training.yml"):
        answer = await asyncio.to_thread(httpx.get, insight + path, headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        pages.append(answer.text)
    report = json.loads(pages[0])
    # These conversations' not-understood messages are listed (their text redacted as the
    # unit tests of omnichannel/insight/facts.py check); no card, email or number anywhere.
    assert GIBBERISH in [entry["text"] for entry in report["not_understood"]]
    for page in pages:
        for secret in (*SECRETS[:-1], number, number[1:], whatsapp_number[1:]):
            assert secret not in page, secret
