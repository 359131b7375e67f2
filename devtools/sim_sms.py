"""Text the local assistant as Twilio would deliver your SMS or WhatsApp message.

Each message is POSTed to the SMS webhook with the form fields Twilio sends, signed over
``PUBLIC_BASE_URL`` + path with the ``.env`` auth token (:mod:`testkit.twilio_webhook`, exactly
what Twilio does), so it passes the same signature check as production traffic.
Inline replies (TwiML) are printed; replies the connector sends later through the REST API are
read back from the local fake Twilio API (``GET /fake/messages``) when ``TWILIO_API_BASE_URL``
points at it, as ``make run`` sets up.

    .venv/bin/python -m devtools.sim_sms --from +14155552671 'where is my order'
    .venv/bin/python -m devtools.sim_sms --from +14155552671            # interactive
    .venv/bin/python -m devtools.sim_sms --from +14155552671 --media https://…/photo.jpg ''
    .venv/bin/python -m devtools.sim_sms --whatsapp --from +14155552671 'hi'

``--whatsapp`` writes as a WhatsApp user: the local fake Twilio delivers the message (signed, as
Twilio does), which opens WhatsApp's 24-hour window there, and replies show the options they
offer to tap (type an option's number or title to choose it).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, Optional, Sequence, Tuple

import httpx

from devtools.launcher import RASA_PORT
from testkit.fake_twilio import fetch_messages
from testkit.local_env import local_settings
from testkit.twilio_webhook import WEBHOOK_PATH, SignedSms, signed_sms, whatsapp_form

SETTINGS = (
    "PUBLIC_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_PHONE_NUMBER",
    "TWILIO_API_BASE_URL",
)


def load_env() -> Dict[str, str]:
    """``.env`` (what ``make run`` wrote), overridden by the process environment."""
    values = local_settings()
    missing = [name for name in SETTINGS[:3] if not values.get(name)]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make run` once to create .env")
    return values


def send(server: str, sms: SignedSms) -> Tuple[int, List[Tuple[str, List[str]]], str]:
    """POST one signed webhook; returns the status, the TwiML messages and the raw answer."""
    answer = httpx.post(
        server.rstrip("/") + sms.path,
        data=sms.form,
        headers={
            **sms.headers,
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "User-Agent": "TwilioProxy/1.1",
        },
        timeout=20,
    )
    messages: List[Tuple[str, List[str]]] = []
    if answer.status_code == 200 and answer.text.strip():
        root = ElementTree.fromstring(answer.text)
        for message in root.findall("Message"):
            media = [item.text or "" for item in message.findall("Media")]
            messages.append((message.text or "", media))
    return answer.status_code, messages, answer.text


def deliver_whatsapp(env: Dict[str, str], number: str, text: str) -> Tuple[int, List, str]:
    """A WhatsApp message handed to the local fake Twilio, which delivers it to the webhook."""
    request = {
        "url": env["PUBLIC_BASE_URL"].rstrip("/") + WEBHOOK_PATH,
        "form": whatsapp_form(env, number, text),
    }
    answer = httpx.post(env["TWILIO_API_BASE_URL"] + "/fake/inbound", json=request, timeout=30)
    delivered = answer.json()
    messages: List[Tuple[str, List[str]]] = []
    if delivered["status"] == 200 and delivered["body"].strip():
        for message in ElementTree.fromstring(delivered["body"]).findall("Message"):
            messages.append((message.text or "", [m.text or "" for m in message.findall("Media")]))
    return delivered["status"], messages, delivered["body"]


def rest_messages(env: Dict[str, str], sender: str) -> Optional[List[dict]]:
    """Messages the local fake Twilio API recorded for ``sender``; None without a local fake."""
    base = env.get("TWILIO_API_BASE_URL") or ""
    if not base.startswith(("http://127.0.0.1", "http://localhost")):
        return None
    try:
        messages = fetch_messages(base)
    except OSError:
        return None
    number = sender.split(":", 1)[-1]
    return [m for m in messages if m["to"].split(":", 1)[-1] == number]


def print_message(prefix: str, body: str, media: Sequence[str]) -> None:
    lines = body.splitlines() or [""]
    print(f"{prefix} {lines[0]}")
    for line in lines[1:]:
        print(" " * len(prefix), line)
    for url in media:
        print(" " * len(prefix), f"[media] {url}")


def converse(
    env: Dict[str, str],
    server: str,
    sender: str,
    to: str,
    text: str,
    media: Sequence[str],
    wait: float,
    whatsapp: bool = False,
) -> int:
    seen = rest_messages(env, sender)
    already = len(seen) if seen is not None else 0
    if whatsapp:
        if seen is None:
            print("--whatsapp needs the local fake Twilio (TWILIO_API_BASE_URL, as make run sets)")
            return 1
        status, inline, raw = deliver_whatsapp(env, sender.split(":", 1)[-1], text)
    else:
        status, inline, raw = send(server, signed_sms(env, sender, text, media, to))
    if status != 200:
        print(f"webhook answered HTTP {status}: {raw.strip()[:200]}")
        return 1
    for body, urls in inline:
        print_message("bot (TwiML) >", body, urls)
    if seen is None:
        if not inline:
            print("(no inline reply; REST replies go to Twilio, not to a local fake)")
        return 0
    deadline = time.monotonic() + (wait if not inline else 1.0)
    shown = already
    while time.monotonic() < deadline:
        found = rest_messages(env, sender) or []
        for message in found[shown:]:
            options = message.get("options") or []
            body = message["body"] + (f"\n[tap: {' | '.join(options)}]" if options else "")
            print_message("bot (REST)  >", body, message["media_urls"])
        if len(found) > shown:
            shown = len(found)
            deadline = min(deadline, time.monotonic() + 1.0)
        time.sleep(0.2)
    if not inline and shown == already:
        print(f"(no reply within {wait:.0f} s)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Text the local assistant as Twilio would")
    parser.add_argument("--from", dest="sender", required=True, help="your number, e.g. +1415…")
    parser.add_argument("--to", help="the assistant's number (default TWILIO_PHONE_NUMBER)")
    parser.add_argument("--server", default=f"http://127.0.0.1:{RASA_PORT}", help="Rasa server")
    parser.add_argument("--media", action="append", default=[], help="an MMS picture URL")
    parser.add_argument("--wait", type=float, default=20, help="seconds to wait for REST replies")
    parser.add_argument("--whatsapp", action="store_true", help="write as a WhatsApp user")
    parser.add_argument("text", nargs="*", help="message(s) to send; none: interactive")
    args = parser.parse_args(argv)
    env = load_env()
    to = args.to or env.get("TWILIO_PHONE_NUMBER") or "+15005550006"
    if args.text:
        results = [
            converse(env, args.server, args.sender, to, text, args.media, args.wait, args.whatsapp)
            for text in args.text
        ]
        return max(results)
    print("Type a message and press Enter (Ctrl-D to quit).")
    for line in sys.stdin:
        converse(
            env,
            args.server,
            args.sender,
            to,
            line.rstrip("\n"),
            args.media,
            args.wait,
            args.whatsapp,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
