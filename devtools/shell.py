"""``make shell CHANNEL=voice|sms|whatsapp|chat``: talk to the assistant as a customer of one
channel.

``rasa shell`` cannot say which channel a turn came from (``channel:`` variations never apply,
the ``channel`` slot stays unset) and needs a Redis and an action server you would start by
hand. This starts its own on free ports (an embedded Redis in a fresh directory, the
action server, the Rasa server with every connector, the local fake of Twilio's API), then sends
what you type through the real connector of the channel, with the real client (the ``openai``
SDK as VAPI, a Twilio-signed webhook, a WebSocket with a JWT), and prints what that customer
receives: the speech, each SMS with its segments and encoding, each WhatsApp message in
WhatsApp's formatting with the options it offers to tap, the chat message's markdown. A
WhatsApp message is delivered by the local fake of Twilio, as Twilio would (it opens the 24-hour
window); type an option's number or title to choose it.

You are the demo customer (+1 415 555 2671, who owns the demo orders) unless ``PHONE=`` says
otherwise. ``/voice``, ``/sms``, ``/whatsapp`` and ``/chat`` switch channel mid-conversation
(the same conversation, as for a real customer); ``/quit`` or Ctrl-D ends. The LLM fallback uses
``OPENAI_API_KEY``/``OPENAI_BASE_URL``/``LLM_MODEL`` when they are set, else says it is offline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from devtools.conversations import Customer, Server
from devtools.model import ensure_model
from omnichannel.channels import KINDS, SMS, VOICE, WHATSAPP
from omnichannel.rendering.sms import sms_segments
from testkit.fake_twilio import FakeTwilio
from testkit.processes import RedisServer, free_port
from testkit.stack import RasaStack, local_secrets

DEMO_CUSTOMER = "+14155552671"
_PASSED_THROUGH = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_MODEL", "HANDOFF_PHONE_NUMBER")


def shown(channel: str, replies: Sequence[str]) -> List[str]:
    """What the customer of ``channel`` got, one line (or block) per reply."""
    if not replies:
        return [f"  ({channel}: no reply)"]
    lines = []
    for reply in replies:
        if channel == VOICE:
            lines.append(f"  bot says: {reply}")
        elif channel == SMS:
            count = sms_segments(reply)
            lines.append(f"  bot texts ({count.segments} segment(s), {count.encoding}):")
            lines.extend(f"    {line}" for line in reply.splitlines() or [""])
        elif channel == WHATSAPP:
            lines.append("  bot sends on WhatsApp:")
            lines.extend(f"    {line}" for line in reply.splitlines() or [""])
        else:
            lines.append("  bot writes:")
            lines.extend(f"    {line}" for line in reply.splitlines() or [""])
    return lines


async def converse(customer: Customer, channel: str) -> None:
    print(
        f"You are {customer.phone}, on {channel}. /voice /sms /whatsapp /chat switch channel; "
        "/quit ends."
    )
    while True:
        try:
            text = (await asyncio.to_thread(input, f"you ({channel})> ")).strip()
        except EOFError:
            break
        if text in ("/quit", "/exit"):
            break
        if text.lstrip("/") in KINDS and text.startswith("/"):
            channel = text[1:]
            print(f"  (now on {channel}, same conversation)")
            continue
        if not text:
            continue
        replies = await customer.say(channel, text)
        print("\n".join(shown(channel, replies)))
    await customer.close()


def start_stack(work: Path) -> tuple[RasaStack, RedisServer, FakeTwilio]:
    redis = RedisServer(work / "redis").start()
    rasa_port = free_port()
    env: Dict[str, str] = {**local_secrets(rasa_port), "REDIS_URL": redis.url}
    twilio = FakeTwilio(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"])
    twilio.start()
    env["TWILIO_API_BASE_URL"] = twilio.url
    env.update({name: os.environ[name] for name in _PASSED_THROUGH if os.environ.get(name)})
    stack = RasaStack(
        model=ensure_model(),
        env=env,
        credentials=Path(__file__).resolve().parent.parent / "credentials.yml",
        log_dir=work / "logs",
        rasa_port=rasa_port,
    )
    print(f"starting Redis, the action server and Rasa on free ports (logs in {work}/logs) …")
    stack.start()
    return stack, redis, twilio


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.shell", description=__doc__)
    parser.add_argument("--channel", choices=KINDS, default=os.environ.get("CHANNEL") or "chat")
    parser.add_argument("--phone", default=os.environ.get("PHONE") or DEMO_CUSTOMER)
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omni-shell-") as directory:
        stack, redis, twilio = start_stack(Path(directory))
        try:
            customer = Customer(Server(stack.base_url, stack.env), phone=arguments.phone)
            asyncio.run(converse(customer, arguments.channel))
        finally:
            stack.stop()
            twilio.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
