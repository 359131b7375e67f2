"""The insight page in a real headless Chromium, against a stack of its own (its own Redis, so
the figures are exactly those of the conversations scripted here): known conversations,
containment, hand-offs, fallbacks, calls' outcomes and the top not-understood message with its
conversations linked to the viewer; customers' markup shown as text; the CSV and the NLU
training file."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import time
from pathlib import Path
from typing import Dict, List

import httpx
import pytest
import yaml
from playwright.sync_api import expect, sync_playwright
from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader

from testkit.fake_llm import FakeLlm
from testkit.fake_otlp import FakeOtlp
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer, free_port
from testkit.stack import RasaStack, local_secrets, with_rest_channel
from testkit.vapi_call import VapiCall
from tests.browser.test_widget import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.connectors.twilio_sms.helpers import conversation_of, inbound, post_signed, replies
from tests.connectors.webchat.helpers import open_chat, user_token
from tests.support import stack_orders

pytestmark = [pytest.mark.rasa_server, pytest.mark.browser]

NOT_UNDERSTOOD = "zxqv blorft wibble"
MARKUP = "<img src=x onerror=alert(document.cookie)> zxqv qwpo plorkt"


@pytest.fixture(scope="module")
def insight_stack(
    trained_model: Path,
    fake_twilio: FakeTwilio,
    fake_llm: FakeLlm,
    fake_otlp: FakeOtlp,
    tmp_path_factory: pytest.TempPathFactory,
) -> RasaStack:
    """A stack on an empty Redis of its own, sharing the session's fakes."""
    work = tmp_path_factory.mktemp("insight-stack")
    redis_server = RedisServer(work / "redis").start()
    port = free_port()
    secrets = local_secrets(port)
    secrets["TWILIO_ACCOUNT_SID"] = fake_twilio.account_sid
    secrets["TWILIO_AUTH_TOKEN"] = fake_twilio.auth_token
    env = {
        **secrets,
        "REDIS_URL": redis_server.url,
        "TWILIO_API_BASE_URL": fake_twilio.url,
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_API_KEY": "sk-local-fake",
        "LLM_MODEL": "fake-model",
        "HANDOFF_PHONE_NUMBER": "+14155550100",
        "ORDERS_FIXTURE": str(stack_orders(work)),
        "OTEL_EXPORTER_OTLP_ENDPOINT": fake_otlp.endpoint,
    }
    stack = RasaStack(
        model=trained_model,
        env=env,
        credentials=with_rest_channel(work),
        log_dir=work / "logs",
        rasa_port=port,
    )
    try:
        stack.start()
    except Exception:
        print(stack.rasa_log()[-5000:])
        stack.stop()
        redis_server.stop()
        raise
    stack.redis_server = redis_server  # type: ignore[attr-defined]
    yield stack
    stack.stop()
    redis_server.stop()


async def _script(stack: RasaStack) -> Dict[str, str]:
    """Four conversations: two by SMS (one handed to a person), one in the chat, one call
    (handed to a person, then hung up). Three messages are not understood, one of them twice."""

    def sms(number: str, text: str) -> List[str]:
        return replies(post_signed(stack, inbound(stack, number, text)))

    contained_sms, handed_sms = new_phone_number(), new_phone_number()
    await asyncio.to_thread(sms, contained_sms, "hi")
    await asyncio.to_thread(sms, contained_sms, NOT_UNDERSTOOD)
    await asyncio.to_thread(sms, handed_sms, NOT_UNDERSTOOD)
    await asyncio.to_thread(sms, handed_sms, "I want to talk to a human")

    chat = await open_chat(stack, user_token(stack.env["WEBCHAT_JWT_SECRET"], "insight-user"))
    for text in ("hello", MARKUP):
        await chat.say(text)
        await chat.turn_done()
    await chat.ws.close()

    caller = new_phone_number()
    call = VapiCall(
        stack.base_url,
        stack.env["VAPI_SERVER_SECRET"],
        number=caller,
        custom_llm_key=stack.env["VAPI_CUSTOM_LLM_KEY"],
    )
    await call.assistant_request()
    await call.say("let me speak to a person")
    await call.hang_up(summary="The caller asked for a person.")
    await call.aclose()
    redis_url = stack.redis_server  # type: ignore[attr-defined]
    return {
        "contained_sms": conversation_of(redis_url, contained_sms),
        "handed_sms": conversation_of(redis_url, handed_sms),
        "chat": chat.conversation_id,
        "call": conversation_of(redis_url, caller),
    }


def _get(stack: RasaStack, path: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{stack.base_url}/webhooks/insight/{path}",
        params=params,
        headers={"Authorization": f"Bearer {stack.env['RASA_AUTH_TOKEN']}"},
        timeout=30,
    )


def test_the_insight_page_shows_the_figures_of_the_scripted_conversations(
    insight_stack: RasaStack,
) -> None:
    stack = insight_stack
    cids = asyncio.run(_script(stack))
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()

    # The figures land off the turns' path: poll until the last one (the call's outcome) is in.
    for _ in range(100):
        report = _get(stack, "api/report", **{"from": today, "to": today}).json()
        if report["total"]["call_outcomes"]:
            break
        time.sleep(0.1)
    total = report["total"]
    assert total["conversations"] == 4
    assert (total["contained"], total["handed_off"]) == (2, 2)
    assert total["containment_rate"] == 0.5 and total["handoff_rate"] == 0.5
    assert total["turns"] == 7
    assert total["fallbacks"] == 3
    assert total["handoff_preceded_by"] == {"talk_to_human": 2}
    assert total["call_outcomes"] == {"customer-ended-call": 1}
    assert report["by_channel"]["sms"]["conversations"] == 2
    assert report["by_channel"]["sms"]["handed_off"] == 1
    assert report["by_channel"]["voice"]["handed_off"] == 1
    assert report["by_channel"]["chat"]["contained"] == 1
    top = report["not_understood"][0]
    assert top["text"] == NOT_UNDERSTOOD and top["count"] == 2
    assert set(top["conversations"]) == {cids["contained_sms"], cids["handed_sms"]}
    assert sum(total["reply_seconds"]["histogram"].values()) == 7

    ARTIFACTS.mkdir(exist_ok=True)
    outside = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1800})
            page.on(
                "request",
                lambda r: None if r.url.startswith(stack.base_url) else outside.append(r.url),
            )
            page.goto(f"{stack.base_url}/webhooks/insight/")
            page.get_by_label("Rasa auth token").fill("wrong")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert").first).to_have_text("The token was refused.")
            page.get_by_label("Rasa auth token").fill(stack.env["RASA_AUTH_TOKEN"])
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#i-conversations")).to_have_text("4")
            expect(page.locator("#i-turns")).to_have_text("7")
            expect(page.locator("#i-containment")).to_have_text("2 (50%)")
            expect(page.locator("#i-handoffs")).to_have_text("2 (50%)")
            expect(page.locator("#i-fallback-rate")).to_have_text("42.9% (3 of 7)")
            expect(page.locator("#i-barge-ins")).to_have_text("0")
            expect(page.locator("#i-handoffs-unavailable")).to_have_text("0")
            expect(page.locator("#i-agent-replies")).to_have_text("0")
            first = page.locator("#i-not-understood tr").first
            expect(first.locator(".i-nu-text")).to_have_text(NOT_UNDERSTOOD)
            expect(first.locator(".i-nu-count")).to_have_text("2")
            expect(first.locator("a")).to_have_count(2)
            # Every chart is drawn by Chart.js on its canvas.
            drawn = page.evaluate(
                "Array.from(document.querySelectorAll('canvas')).map(c => !!Chart.getChart(c))"
            )
            assert drawn == [True] * 5
            # The customer's markup is text: not parsed, not run.
            markup_cell = page.locator(".i-nu-text", has_text="<img")
            expect(markup_cell).to_have_text(MARKUP.lower())
            assert page.locator("#i-not-understood img").count() == 0
            assert page.title() == "Insight"

            # One channel: SMS only.
            page.get_by_label("Channel").select_option("sms")
            page.get_by_role("button", name="Show").click()
            expect(page.locator("#i-conversations")).to_have_text("2")
            expect(page.locator("#i-handoffs")).to_have_text("1 (50%)")
            page.screenshot(path=str(ARTIFACTS / "insight-page.png"), full_page=True)

            # CSV and training file downloads.
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV").click()
            rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
            assert rows[1][:7] == [
                "channel",
                "conversations",
                "turns",
                "contained",
                "containment_rate",
                "handed_off",
                "handoff_rate",
            ]
            assert rows[2][:7] == ["sms", "2", "4", "1", "0.5", "1", "0.5"]
            with page.expect_download() as download:
                page.get_by_role("button", name="Not-understood as NLU examples").click()
            training = Path(download.value.path()).read_text()

            # The viewer link of a not-understood message opens that conversation.
            first.locator("a").first.click()
            expect(page.locator("#v-cid")).to_have_text(top["conversations"][0])
        finally:
            browser.close()
    assert outside == []

    parsed = yaml.safe_load(training)
    assert parsed["version"] == "3.1"
    examples = RasaYAMLReader().reads(training).intent_examples
    assert NOT_UNDERSTOOD in [example.get("text") for example in examples]
