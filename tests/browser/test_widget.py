"""The chat widget in a real headless Chromium (Debian's package, driven by Playwright) against
the real stack: history from a call and an SMS (through the real VAPI and Twilio connectors), a
chat turn, a button, and an SMS arriving while the page is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from playwright.sync_api import expect, sync_playwright

from omnichannel.addresses import user_address
from omnichannel.identity import IdentityStore
from omnichannel.outbound.gate import TIMEZONE_FIELD
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.processes import ROOT
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall
from tests.connectors.notifications.helpers import notify, shipped
from tests.connectors.webchat.helpers import (
    append_events,
    fresh_phone,
    sms_exchanges,
    text_from_phone,
    tracker_events,
    user_token,
)
from tests.support import GIBBERISH, JPEG, seed_order

pytestmark = [pytest.mark.rasa_server, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"


def test_widget_shows_history_chats_and_updates_live(rasa_stack: RasaStack) -> None:
    phone = fresh_phone()
    number = seed_order(rasa_stack, phone=phone)
    call = VapiCall(
        base_url=rasa_stack.base_url,
        server_secret=rasa_stack.env["VAPI_SERVER_SECRET"],
        number=phone,
    )

    async def phone_call() -> None:
        await call.say("hello")
        await call.hang_up(summary="The caller said hello and will text about a refund.")

    asyncio.run(phone_call())
    assert "30 days" in text_from_phone(rasa_stack, phone, "what's your refund policy").text
    token = user_token(
        rasa_stack.env["WEBCHAT_JWT_SECRET"], "browser-" + secrets.token_hex(4), phone=phone
    )
    ARTIFACTS.mkdir(exist_ok=True)
    outside_requests = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 600, "height": 1500})
            page.on(
                "request",
                lambda request: (
                    None
                    if request.url.startswith(rasa_stack.base_url.replace("http", "ws"))
                    or request.url.startswith(rasa_stack.base_url)
                    else outside_requests.append(request.url)
                ),
            )
            page.goto(f"{rasa_stack.base_url}/webhooks/webchat/#token={token}")
            log = page.get_by_role("log", name="Conversation")

            # The call and the earlier SMS turn are in the history, badged; the token left the URL.
            spoken = log.locator("li.omni-user", has_text="hello").first
            expect(spoken.locator(".omni-badge-voice")).to_have_text("Voice")
            summary = log.locator("li.omni-kind-call_summary")
            expect(summary).to_contain_text("Call summary: The caller said hello")
            expect(summary.locator(".omni-kind")).to_have_text("Call summary")
            earlier = log.locator("li.omni-user", has_text="what's your refund policy")
            expect(earlier).to_be_visible()
            expect(earlier.locator(".omni-badge-sms")).to_have_text("SMS")
            # The badge is hidden from screen readers, which read the channel with the speaker.
            expect(earlier.locator(".omni-meta .omni-visually-hidden")).to_have_text("You via SMS:")
            expect(log.locator("li.omni-bot.omni-msg", has_text="30 days").first).to_be_visible()
            expect(page.get_by_role("status").first).to_have_text("Connected")
            expect(log).to_have_attribute("aria-live", "polite")  # live again after history
            assert "token=" not in page.url

            # A chat turn: the `channel: webchat` greeting with its markdown and buttons.
            page.get_by_label("Message to the assistant").fill("hello")
            page.keyboard.press("Enter")
            greeting = log.locator("li.omni-bot", has_text="What can I do for you?")
            expect(greeting.locator("strong")).to_have_text("Acme Shop")
            expect(log.locator("li.omni-user.omni-pending")).to_have_count(0)

            # A button, reached with the keyboard as a real <button>.
            button = greeting.get_by_role("button", name="Where is my order?")
            button.focus()
            page.keyboard.press("Enter")
            clicked = log.locator("li.omni-user", has_text="Where is my order?")
            expect(clicked).to_be_visible()
            expect(clicked.locator(".omni-badge-chat")).to_have_text("Chat")
            expect(log.locator("li.omni-bot", has_text="What's your order number?")).to_be_visible()
            expect(button).to_have_attribute("aria-disabled", "true")
            expect(page.get_by_label("Message to the assistant")).to_be_focused()

            # The customer texts the order number meanwhile: it appears live, badged SMS.
            text_from_phone(rasa_stack, phone, number)
            texted = log.locator("li.omni-user", has_text=re.compile(rf"^\s*.*{number}"))
            expect(texted.locator(".omni-badge-sms")).to_be_visible()
            answer = log.locator("li.omni-bot", has_text=re.compile(rf"{number}.*UPS"))
            expect(answer).to_be_visible()
            expect(answer.locator(".omni-badge-sms")).to_be_visible()

            expect(answer).to_be_in_viewport()
            expect(spoken).to_be_in_viewport()  # the whole story fits: from the call to live SMS
            page.screenshot(path=str(ARTIFACTS / "webchat-widget.png"), full_page=True)
            texts = log.locator("li.omni-msg .omni-bubble").all_inner_texts()
        finally:
            browser.close()

    order = [
        next(i for i, text in enumerate(texts) if needle in text)
        for needle in ("Call summary", "what's your refund policy", "Where is my order?", number)
    ]
    assert order == sorted(order)
    assert outside_requests == []
    assert Path(ARTIFACTS / "webchat-widget.png").stat().st_size > 10_000


class CuttableProxy:
    """A TCP forwarder between the browser and the Rasa server whose connections can be cut
    and whose door can be shut, as a flaky network or a restarting load balancer would."""

    def __init__(self, upstream_port: int) -> None:
        #: Where new connections go (a test may point it at another replica, as a balancer).
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.sockets: List[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        self.open.clear()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@contextlib.contextmanager
def widget_page(
    port: int, token: str, watch: Optional[Callable[[Any], None]] = None
) -> Iterator[Any]:
    """A headless Chromium page of the widget served on ``port``, once it is connected;
    ``watch`` gets each WebSocket the page opens."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            if watch is not None:
                page.on("websocket", watch)
            page.goto(f"http://127.0.0.1:{port}/webhooks/webchat/#token={token}")
            expect(page.locator(".omni-status")).to_have_text("Connected")
            yield page
        finally:
            browser.close()


def test_widget_reconnects_and_delivers_what_was_typed_offline(rasa_stack: RasaStack) -> None:
    sub = "offline-" + secrets.token_hex(4)
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], sub)
    proxy = CuttableProxy(rasa_stack.rasa_port)
    try:
        with widget_page(proxy.port, token) as page:
            status = page.locator(".omni-status")
            log = page.get_by_role("log", name="Conversation")
            box = page.get_by_label("Message to the assistant")
            box.fill("hello")
            box.press("Enter")
            expect(log.locator("li.omni-bot", has_text="What can I do for you?")).to_be_visible()

            proxy.cut()
            expect(status).to_contain_text("reconnecting")
            box.fill("what's your refund policy")
            box.press("Enter")
            expect(log.locator("li.omni-user.omni-pending")).to_have_text(
                re.compile("what's your refund policy")
            )
            page.wait_for_timeout(1500)  # at least one more refused attempt: backoff grows
            proxy.restore()

            expect(status).to_have_text("Connected", timeout=20_000)
            expect(log.locator("li.omni-bot", has_text="30 days")).to_be_visible(timeout=20_000)
            expect(log.locator("li.omni-user.omni-pending")).to_have_count(0)
            expect(log.locator("li.omni-user", has_text="what's your refund policy")).to_have_count(
                1
            )
            expect(log.locator("li.omni-user", has_text="hello")).to_have_count(1)
    finally:
        proxy.close()
    with redis.Redis.from_url(rasa_stack.env["REDIS_URL"]) as client:
        conversation = client.get(user_address(sub).record_key).decode()
    texts = [e["text"] for e in tracker_events(rasa_stack, conversation) if e["event"] == "user"]
    assert texts == ["hello", "what's your refund policy"]  # delivered once, after the outage


def test_widget_reconnects_after_a_restart_and_resends_only_the_unacknowledged(
    rasa_stack: RasaStack, fake_llm: FakeLlm
) -> None:
    """A replica drains (SIGTERM) while a turn runs: its socket closes with 1012 once the turn
    is answered, the widget reconnects through the balancer to the other replica and resends
    the message the draining one did not acknowledge, and only that one."""
    replica = rasa_stack.replica()
    sub = "restart-" + secrets.token_hex(4)
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], sub)
    proxy = CuttableProxy(replica.rasa_port)
    sockets: List[List[dict]] = []  # the frames the page sent, per socket

    def watch(ws: Any) -> None:
        sent: List[dict] = []
        sockets.append(sent)
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    try:
        with widget_page(proxy.port, token, watch) as page:
            status = page.locator(".omni-status")
            log = page.get_by_role("log", name="Conversation")
            box = page.get_by_label("Message to the assistant")
            pending = log.locator("li.omni-user.omni-pending")
            fake_llm.reset()
            fake_llm.script(LlmReply(content="Worth the wait.", delay=5))
            box.fill(GIBBERISH)
            box.press("Enter")
            expect(pending).to_have_count(0)  # acknowledged
            for _ in range(100):  # the turn waits for the LLM
                if fake_llm.requests:
                    break
                page.wait_for_timeout(50)

            os.killpg(replica.rasa_proc.pid, signal.SIGTERM)
            proxy.upstream_port = rasa_stack.rasa_port  # the balancer stops sending it work
            for _ in range(100):
                if httpx.get(f"{replica.base_url}/webhooks/ops/readyz").status_code == 503:
                    break
                page.wait_for_timeout(50)
            box.fill("what's your refund policy")
            box.press("Enter")
            expect(pending).to_have_count(1)  # the draining replica will not acknowledge it

            expect(log.locator("li.omni-bot", has_text="Worth the wait.")).to_be_visible(
                timeout=20_000
            )
            expect(log.locator("li.omni-bot", has_text="30 days")).to_be_visible(timeout=30_000)
            expect(pending).to_have_count(0)
            expect(status).to_have_text("Connected")
            expect(log.locator("li.omni-user", has_text=GIBBERISH)).to_have_count(1)
    finally:
        proxy.close()
        replica.stop()
    messages = [
        [frame.get("text") for frame in sent if frame["type"] == "message"] for sent in sockets
    ]
    assert messages == [[GIBBERISH, "what's your refund policy"], ["what's your refund policy"]]
    with redis.Redis.from_url(rasa_stack.env["REDIS_URL"]) as client:
        conversation = client.get(user_address(sub).record_key).decode()
    texts = [e["text"] for e in tracker_events(rasa_stack, conversation) if e["event"] == "user"]
    assert texts == [GIBBERISH, "what's your refund policy"]


def conversation_of_user(stack: RasaStack, sub: str) -> str:
    """The conversation of the host-site user ``sub`` (created, as the first chat would)."""

    async def resolve() -> str:
        client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
        try:
            return await IdentityStore(client).resolve_conversation(user_address(sub))
        finally:
            await client.close()

    return asyncio.run(resolve())


def test_widget_pages_back_through_a_long_history(rasa_stack: RasaStack) -> None:
    sub = "longtime-" + secrets.token_hex(4)

    conversation = conversation_of_user(rasa_stack, sub)
    append_events(rasa_stack, conversation, sms_exchanges(time.time() - 86400, 40))
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], sub)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(f"{rasa_stack.base_url}/webhooks/webchat/#token={token}")
            log = page.get_by_role("log", name="Conversation")
            bubbles = log.locator("li.omni-msg .omni-bubble")
            expect(bubbles).to_have_count(50)
            expect(bubbles.last).to_have_text("answer 39")
            older = page.get_by_role("button", name="Show earlier messages")
            older.click()
            expect(bubbles).to_have_count(80)
            expect(bubbles.first).to_have_text("question 0")
            expect(older).to_be_hidden()  # the beginning of the conversation
            texts = bubbles.all_inner_texts()
        finally:
            browser.close()
    assert texts == [t for n in range(40) for t in (f"question {n}", f"answer {n}")]


def test_widget_links_attachments_and_runs_no_script_from_messages(rasa_stack: RasaStack) -> None:
    sub = "files-" + secrets.token_hex(4)

    conversation = conversation_of_user(rasa_stack, sub)
    start = time.time() - 60
    invoice = "https://files.example/invoice-12345.pdf"
    hostile = '<img src=x onerror="window.pwned=1"> [open](javascript:window.pwned=2) done'
    append_events(
        rasa_stack,
        conversation,
        [
            {"event": "bot", "timestamp": start, "data": {"attachment": invoice}},
            {
                "event": "bot",
                "timestamp": start + 1,
                "text": hostile,
                "data": {"attachment": "javascript:window.pwned=3"},
            },
        ],
    )
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], sub)
    dialogs: List[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(f"{rasa_stack.base_url}/webhooks/webchat/#token={token}")
            log = page.get_by_role("log", name="Conversation")
            expect(log.locator("li.omni-bot", has_text="onerror")).to_be_visible()
            attachment = log.locator("a.omni-attachment")
            expect(attachment).to_have_count(1)
            expect(attachment).to_have_attribute("href", invoice)
            expect(log.locator('a[href^="javascript:"]')).to_have_count(0)
            expect(log.locator(".omni-bubble img")).to_have_count(0)
            pwned = page.evaluate("window.pwned")
        finally:
            browser.close()
    assert pwned is None and dialogs == []


def test_widget_attaches_a_photo_and_refuses_what_is_not_one(
    rasa_stack: RasaStack, tmp_path: Path
) -> None:
    photo = tmp_path / "damage.jpg"
    photo.write_bytes(JPEG)
    disguised = tmp_path / "cat.png"
    disguised.write_bytes(b"<html><script>window.pwned=1</script></html>")
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], "attach-" + secrets.token_hex(4))
    with widget_page(rasa_stack.rasa_port, token) as page:
        log = page.get_by_role("log", name="Conversation")
        expect(page.get_by_role("button", name="Attach a photo or PDF")).to_be_visible()
        page.locator("input[type=file]").set_input_files(str(photo))
        # The photo is shown in the customer's bubble (read back with the token as a blob) and
        # answered as a picture alone (no refund request open).
        mine = log.locator("li.omni-user img.omni-image")
        expect(mine).to_have_count(1)
        expect(mine).to_have_attribute("src", re.compile(r"^blob:"))
        expect(log.locator("li.omni-bot", has_text="Thanks for the picture!")).to_be_visible()
        expect(log.locator("li.omni-user.omni-pending")).to_have_count(0)
        # A page disguised as a picture is refused, with the server's reason.
        page.locator("input[type=file]").set_input_files(str(disguised))
        expect(log.locator("li.omni-system")).to_contain_text(
            "Not sent: cat.png: Only photos (JPG, PNG, WebP, GIF) and PDFs can be sent."
        )
        assert page.evaluate("window.pwned") is None


def test_widget_tells_the_customers_zone_and_shows_a_notification_live(
    rasa_stack: RasaStack,
) -> None:
    sub = "notified-" + secrets.token_hex(4)
    conversation = conversation_of_user(rasa_stack, sub)
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], sub)

    def zone_on_file() -> Optional[str]:
        # Playwright's sync API runs a loop in this thread: a plain client reads the profile.
        with redis.Redis.from_url(rasa_stack.env["REDIS_URL"]) as client:
            zone = client.hget(f"omni:{{{conversation}}}:profile", f"extra:{TIMEZONE_FIELD}")
        return zone.decode() if zone else None

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_context(timezone_id="Asia/Tokyo").new_page()
            page.goto(f"{rasa_stack.base_url}/webhooks/webchat/#token={token}")
            deadline = time.monotonic() + 20
            while zone_on_file() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert zone_on_file() == "Asia/Tokyo"
            answer = notify(rasa_stack, shipped({"user_id": sub}, "40222"))
            assert (answer.json()["status"], answer.json()["channel"]) == ("sent", "chat")
            log = page.get_by_role("log", name="Conversation")
            shown = log.locator("li.omni-kind-notification")
            expect(shown).to_contain_text("Good news: your order 40222 has shipped.")
            expect(shown.locator(".omni-kind")).to_have_text("Notification")
        finally:
            browser.close()
