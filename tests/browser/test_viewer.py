"""The conversation viewer in a real headless Chromium (Debian's package, driven by Playwright)
against the real stack: log in with the Rasa auth token, search a phone number, read the
timeline of a call and an SMS made through the real VAPI and Twilio connectors."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from testkit.twilio_webhook import WEBHOOK_PATH, whatsapp_form
from tests.browser.test_widget import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.connectors.notifications.helpers import (
    conversation_of,
    notify,
    place_customer,
    shipped,
)
from tests.connectors.viewer.helpers import CALL_SUMMARY, call_and_hang_up
from tests.connectors.webchat.helpers import fresh_phone, text_from_phone
from tests.support import JPEG

pytestmark = [pytest.mark.rasa_server, pytest.mark.browser]

MARKUP = '<img src="x" onerror="document.title=1">'


def test_an_operator_logs_in_searches_a_phone_and_reads_the_timeline(
    rasa_stack: RasaStack,
) -> None:
    phone = fresh_phone()
    asyncio.run(call_and_hang_up(rasa_stack, phone))
    text_from_phone(rasa_stack, phone, "what's your refund policy")
    text_from_phone(rasa_stack, phone, f"is this shown as text {MARKUP}")
    # A notification in the customer's night: held for the morning, listed with the reason.
    asyncio.run(place_customer(rasa_stack, conversation_of(rasa_stack, phone), 2))
    held = notify(rasa_stack, shipped({"phone": phone}, MARKUP))
    assert held.json()["status"] == "scheduled", held.text
    token = rasa_stack.env["RASA_AUTH_TOKEN"]
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "conversation-viewer.png"
    outside_requests = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.on(
                "request",
                lambda request: (
                    None
                    if request.url.startswith(rasa_stack.base_url)
                    else outside_requests.append(request.url)
                ),
            )
            page.goto(f"{rasa_stack.base_url}/webhooks/viewer")

            # A wrong token is refused; the right one opens the search.
            page.get_by_label("Rasa auth token").fill("wrong-token")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert").first).to_have_text("The token was refused.")
            page.get_by_label("Rasa auth token").fill(token)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_label("Search for")).to_be_focused()
            expect(page.get_by_label("Rasa auth token")).to_be_hidden()
            assert page.evaluate("sessionStorage.getItem('omni-viewer-token')") == token

            page.get_by_label("Search by").select_option("phone")
            page.get_by_label("Search for").fill(phone)
            page.get_by_role("button", name="Find").click()
            timeline = page.get_by_role("list", name="Timeline")
            spoken = timeline.locator("li.v-entry-user", has_text="hello").first
            expect(spoken.locator(".v-badge-voice")).to_have_text("Voice")
            expect(spoken.locator(".v-nlu")).to_contain_text("Intent: greet")
            texted = timeline.locator("li.v-entry-user", has_text="refund policy")
            expect(texted.locator(".v-badge-sms")).to_have_text("SMS")
            answer = timeline.locator("li.v-entry-bot", has_text="30 days").first
            expect(answer.locator(".v-badge-sms")).to_be_visible()
            expect(answer).to_contain_text("segment(s), GSM-7")
            summary = timeline.locator("li.v-entry-call_summary")
            expect(summary).to_contain_text(CALL_SUMMARY)
            expect(
                timeline.locator("li.v-entry-slot", has_text="channel = sms").first
            ).to_be_visible()
            expect(page.locator("#v-profile")).to_contain_text(phone)  # the number searched for
            outbound = page.get_by_role("table", name="This conversation's outbound items")
            row = outbound.locator("tr.v-outbound-scheduled")
            expect(row).to_contain_text("notification")
            expect(row).to_contain_text(f"utter_order_shipped (order_number={MARKUP})")
            expect(row).to_contain_text("quiet_hours")
            assert outbound.locator("img").count() == 0

            # Every conversation's recent items, by status; one opens its conversation.
            page.get_by_label("Status").select_option("scheduled")
            page.get_by_role("button", name="Show").click()
            recent = page.get_by_role("table", name="Recent outbound items")
            mine = recent.locator("tr", has_text=f"order_number={MARKUP}").first
            expect(mine).to_contain_text("quiet_hours")
            assert recent.locator("tr.v-outbound-sent").count() == 0
            assert recent.locator("img").count() == 0
            cid = conversation_of(rasa_stack, phone)
            mine.get_by_role("button", name=cid).click()
            expect(page.locator("#v-cid")).to_have_text(cid)

            # Event text is shown as text: the customer's markup is neither parsed nor run.
            markup = timeline.locator("li.v-entry-user", has_text="is this shown as text")
            expect(markup.locator(".v-text")).to_have_text(f"is this shown as text {MARKUP}")
            assert timeline.locator("img").count() == 0
            assert page.title() == "Conversation viewer"
            assert token not in page.url and phone not in page.url
            page.screenshot(path=str(screenshot), full_page=True)

            # Reloading keeps the tab logged in; logging out forgets the token.
            page.reload()
            expect(page.get_by_label("Search for")).to_be_visible()
            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_label("Rasa auth token")).to_be_visible()
            expect(page.get_by_role("list", name="Timeline")).to_be_hidden()
            assert page.evaluate("sessionStorage.getItem('omni-viewer-token')") is None
        finally:
            browser.close()

    assert outside_requests == []
    assert Path(screenshot).stat().st_size > 10_000


def test_the_viewer_shows_a_whatsapp_photo_and_the_replys_read_receipt(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    number = fresh_phone()
    url = rasa_stack.env["PUBLIC_BASE_URL"] + WEBHOOK_PATH
    fake_twilio.send_status_callbacks = True
    try:
        fake_twilio.deliver_inbound(url, whatsapp_form(rasa_stack.env, number, "hi"))
        [greeting] = fake_twilio.wait_for_messages(f"whatsapp:{number}", 1)
        deadline = time.monotonic() + 20
        while (greeting.sid, "read", 204) not in fake_twilio.callback_answers:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        fake_twilio.send_status_callbacks = False
    photo = fake_twilio.add_media(JPEG, "image/jpeg")
    fake_twilio.deliver_inbound(
        url, whatsapp_form(rasa_stack.env, number, "", media=[photo], media_types=["image/jpeg"])
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.goto(f"{rasa_stack.base_url}/webhooks/viewer")
            page.get_by_label("Rasa auth token").fill(rasa_stack.env["RASA_AUTH_TOKEN"])
            page.get_by_role("button", name="Log in").click()
            page.get_by_label("Search by").select_option("phone")
            page.get_by_label("Search for").fill(number)
            page.get_by_role("button", name="Find").click()
            timeline = page.get_by_role("list", name="Timeline")
            greeted = timeline.locator("li.v-entry-bot", has_text="What can I do for you?")
            expect(greeted.locator(".v-badge-whatsapp")).to_have_text("WhatsApp")
            expect(greeted.locator(".v-delivery")).to_have_text("read")
            expect(greeted.locator(".v-buttons li")).to_have_count(3)
            sent = timeline.locator("li.v-entry-user", has_text="Photo (image/jpeg)")
            sent.get_by_role("button", name="Show").click()
            shown = sent.locator("img.v-image")
            expect(shown).to_have_attribute("src", re.compile(r"^blob:"))
            assert shown.evaluate("img => img.naturalWidth") == 1
        finally:
            browser.close()
