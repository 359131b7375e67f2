"""The agent inbox in a real headless Chromium against the real stack: a customer asks for a
person by SMS, an agent claims and answers from the inbox, the customer sees the answer as the
agent's in the web chat, writes there while the agent holds the conversation (the bot stands
aside), and the bot takes over again with what it knew. Then: customers' words, whatever the
channel, are inert in the inbox."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any, Dict, List

import pytest
from playwright.sync_api import expect, sync_playwright

from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall
from tests.browser.test_widget import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.connectors.inbox.helpers import token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of
from tests.connectors.webchat.helpers import (
    fresh_phone,
    text_from_phone,
    tracker_events,
    user_token,
)
from tests.support import seed_order

pytestmark = [pytest.mark.rasa_server, pytest.mark.browser]


def held_turn_done(stack: RasaStack, cid: str, text: str) -> List[Dict[str, Any]]:
    """The events after the customer's message ``text``, once its turn ended (an
    ``action_listen`` after it): the turn's whole record, awaited rather than slept for."""

    def after() -> Any:
        events = tracker_events(stack, cid)
        for index in range(len(events) - 1, -1, -1):
            if events[index]["event"] == "user" and events[index].get("text") == text:
                rest = events[index + 1 :]
                if any(e["event"] == "action" and e["name"] == "action_listen" for e in rest):
                    return rest
                return None
        return None

    return wait_for(after, what=f"the turn of {text!r}")


def test_an_sms_hand_off_is_answered_from_the_inbox_and_handed_back(
    rasa_stack: RasaStack, stack_redis, fake_twilio: FakeTwilio
) -> None:
    phone = fresh_phone()
    number = seed_order(rasa_stack, phone=phone)
    agent = token_for(rasa_stack, "Dana")
    customer = user_token(
        rasa_stack.env["WEBCHAT_JWT_SECRET"], f"browser-{secrets.token_hex(4)}", phone=phone
    )
    ARTIFACTS.mkdir(exist_ok=True)
    outside_requests: List[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            inbox = browser.new_page(viewport={"width": 1200, "height": 1100})
            inbox.on(
                "request",
                lambda request: (
                    None
                    if request.url.startswith(rasa_stack.base_url.replace("http", "ws"))
                    or request.url.startswith(rasa_stack.base_url)
                    else outside_requests.append(request.url)
                ),
            )
            inbox.goto(f"{rasa_stack.base_url}/webhooks/inbox/#token={agent}")
            expect(inbox.locator("#i-connection")).to_have_text("Live")
            assert "token=" not in inbox.url
            expect(inbox.locator("#i-me")).to_have_text("Dana")

            # The customer texts about their order, then asks for a person.
            text_from_phone(rasa_stack, phone, f"where is my order {number}")
            cid = conversation_of(stack_redis, phone)
            asked = time.monotonic()
            text_from_phone(rasa_stack, phone, "i want to talk to a person")
            answered = time.monotonic()
            item = inbox.locator(f'#i-queue li[data-conversation="{cid}"]')
            expect(item).to_contain_text("i want to talk to a person", timeout=5000)
            # From the customer's SMS reaching our webhook (the turn included) to the agent's
            # page showing it, pushed over the inbox's socket.
            appeared = time.monotonic() - asked
            turn = answered - asked
            expect(item.locator(".i-badge-sms").first).to_have_text("SMS")
            expect(item).to_contain_text("Waiting")

            # The agent claims it and reads the whole conversation.
            item.get_by_role("button").click()
            timeline = inbox.get_by_role("list", name="Conversation timeline")
            expect(timeline.locator("li.i-entry-user", has_text=number)).to_be_visible()
            expect(timeline.locator("li.i-entry-bot_state")).to_contain_text("Bot stands aside")
            inbox.get_by_role("button", name="Claim", exact=True).click()
            expect(inbox.locator("#i-state")).to_contain_text("Claimed by Dana")
            expect(inbox.get_by_label("Reply by")).to_have_value("sms")  # the last used

            # The reply, with its SMS segment count before it is sent.
            sent_before = len(fake_twilio.messages_to(phone))
            reply = f"Hi, Dana here. Order {number} is with the courier and arrives Friday."
            inbox.get_by_label("Reply to the customer").fill(reply)
            expect(inbox.locator("#i-preview")).to_contain_text("1 segment (GSM-7)")
            inbox.get_by_role("button", name="Send").click()
            [texted] = wait_for(
                lambda: fake_twilio.messages_to(phone)[sent_before:], what="the agent's SMS"
            )
            assert texted.body == f"Dana: {reply}"
            mine = timeline.locator("li.i-entry-agent", has_text="arrives Friday")
            expect(mine.locator(".i-who")).to_have_text("Dana (agent)")
            expect(mine.locator(".i-status")).to_have_text("sent")

            # The customer opens the web chat: the answer is there, as Dana's.
            chat = browser.new_page(viewport={"width": 600, "height": 1100})
            chat.goto(f"{rasa_stack.base_url}/webhooks/webchat/#token={customer}")
            log = chat.get_by_role("log", name="Conversation")
            from_dana = log.locator("li.omni-agent", has_text="arrives Friday")
            expect(from_dana.locator(".omni-meta .omni-agent")).to_have_text("Dana · support team")
            expect(from_dana.locator(".omni-badge-sms")).to_be_visible()  # it came by SMS
            expect(from_dana.locator(".omni-visually-hidden")).to_have_text(
                "Dana from our support team via SMS:"
            )

            # The customer writes in the chat: Dana sees it live, the bot does not answer.
            question = "Thanks! Could you also check if a refund is possible?"
            chat.get_by_label("Message to the assistant").fill(question)
            chat.keyboard.press("Enter")
            live = timeline.locator("li.i-entry-user", has_text="refund is possible")
            expect(live.locator(".i-badge-chat")).to_have_text("Chat")
            after = held_turn_done(rasa_stack, cid, question)
            assert [e for e in after if e["event"] == "bot"] == [], "the bot stood aside"
            asked = log.locator("li.omni-user", has_text="refund is possible")
            expect(asked).to_be_visible()
            expect(asked.locator("xpath=following-sibling::li")).to_have_count(0)

            # Dana hands back; the bot answers the next message with what it knew.
            inbox.get_by_role("button", name="Hand back to the bot").click()
            expect(inbox.locator("#i-state")).to_contain_text("Handed back to the bot")
            expect(item).to_have_count(0)
            expect(
                log.locator("li.omni-bot", has_text="You're back with the Acme Shop")
            ).to_be_visible()
            chat.get_by_label("Message to the assistant").fill("where is my order?")
            chat.keyboard.press("Enter")
            status = log.locator("li.omni-bot", has_text=re.compile(rf"Order {number}\b"))
            expect(status.last).to_be_visible()
            expect(log.locator("li.omni-bot", has_text="What's your order number?")).to_have_count(
                0
            )

            inbox.screenshot(path=str(ARTIFACTS / "agent-inbox.png"), full_page=True)
            chat.screenshot(path=str(ARTIFACTS / "webchat-after-hand-off.png"), full_page=True)
        finally:
            browser.close()

    print(
        f"hand-off in the inbox {appeared * 1000:.0f} ms after the customer's SMS "
        f"(its turn: {turn * 1000:.0f} ms)"
    )
    assert appeared < 1.0
    assert len(fake_twilio.messages_to(phone)) == sent_before + 1, "one SMS from Dana, no more"
    assert outside_requests == []


MARKUP = {
    "sms": '<img src="x" onerror="window.__pwned=\'sms\'">',
    "chat": "<script>window.__pwned='chat'</script>",
    "voice": "<svg onload=\"window.__pwned='voice'\">",
    "summary": "<iframe src=\"javascript:window.__pwned='summary'\"></iframe>",
}


def test_customers_words_are_inert_in_the_inbox(rasa_stack: RasaStack, stack_redis) -> None:
    phone = fresh_phone()
    call = VapiCall(
        base_url=rasa_stack.base_url,
        server_secret=rasa_stack.env["VAPI_SERVER_SECRET"],
        number=phone,
    )

    async def phone_call() -> None:
        await call.say(f"my name is {MARKUP['voice']}")
        await call.hang_up(summary=f"The caller said {MARKUP['summary']}")
        await call.aclose()

    asyncio.run(phone_call())
    customer = user_token(
        rasa_stack.env["WEBCHAT_JWT_SECRET"], f"x-{secrets.token_hex(4)}", phone=phone
    )
    text_from_phone(rasa_stack, phone, f"hello {MARKUP['sms']}")
    text_from_phone(rasa_stack, phone, "i want to talk to a person")
    agent = token_for(rasa_stack, "Dana")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            chat = browser.new_page()
            chat.goto(f"{rasa_stack.base_url}/webhooks/webchat/#token={customer}")
            chat.get_by_label("Message to the assistant").fill(f"and {MARKUP['chat']}")
            chat.keyboard.press("Enter")
            held_turn_done(rasa_stack, conversation_of(stack_redis, phone), f"and {MARKUP['chat']}")

            inbox = browser.new_page(viewport={"width": 1200, "height": 1400})
            inbox.goto(f"{rasa_stack.base_url}/webhooks/inbox/#token={agent}")
            item = inbox.locator("#i-queue li", has_text=MARKUP["chat"])
            expect(item).to_be_visible()  # the last words, as text
            item.get_by_role("button").click()
            timeline = inbox.get_by_role("list", name="Conversation timeline")
            for text in (MARKUP["sms"], MARKUP["chat"], MARKUP["voice"], MARKUP["summary"]):
                expect(timeline.get_by_text(text, exact=False).first).to_be_visible()
            summary = timeline.locator("li.i-entry-call_summary")
            summary.locator("summary").click()  # the transcript, opened
            expect(summary).to_contain_text(MARKUP["voice"])
            assert inbox.evaluate("window.__pwned") is None
            assert chat.evaluate("window.__pwned") is None
            for tag in ("img", "script", "svg", "iframe"):
                assert inbox.locator(f"#i-main {tag}").count() == 0, tag
        finally:
            browser.close()
