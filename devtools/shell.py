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
otherwise. ``make shell INBOX=1`` also opens the agent inbox of this stack in your browser
(and prints its sign-in link), so you can ask for a person here and answer yourself there:
what the support team sends you (an agent's reply, a hand-back) is printed as it arrives.
``/voice``, ``/sms``, ``/whatsapp`` and ``/chat`` switch channel mid-conversation (the same
conversation, as for a real customer); ``/quit`` or Ctrl-D ends. What the shop sends first (a
notification sent with ``curl`` as docs/INTEGRATORS.md shows, with the URL and key the shell
prints) is printed as it arrives: in the open chat at once, or as a text; ``/inbox`` waits for
it. The LLM fallback uses
``OPENAI_API_KEY``/``OPENAI_BASE_URL``/``LLM_MODEL`` when they are set, else says it is offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from devtools.conversations import Customer, Server
from devtools.launcher import inbox_link
from devtools.model import ensure_model
from omnichannel.channels import CHAT, KINDS, LABELS, SMS, VOICE, WHATSAPP
from omnichannel.redis_client import conversation_key, redis_client
from omnichannel.rendering.sms import sms_segments
from testkit.fake_twilio import FakeTwilio
from testkit.processes import RedisServer, free_port
from testkit.stack import RasaStack, local_secrets

DEMO_CUSTOMER = "+14155552671"
_PASSED_THROUGH = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LLM_MODEL",
    "HANDOFF_PHONE_NUMBER",
    "OUTBOUND_QUIET_HOURS",
    "OUTBOUND_DEFAULT_TIMEZONE",
)
#: How long ``/inbox`` waits for a chat message the shop sent.
INBOX_WAIT_SECONDS = 5.0


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


def from_the_team(event: Dict[str, Any]) -> Optional[str]:
    """A logged message the support team's side sent (an agent's reply, a hand-off notice) as
    the shell prints it; None for anything else."""
    metadata = event.get("metadata") or {}
    if event.get("event") != "bot" or "handoff_message_id" not in metadata:
        return None
    agent = (metadata.get("agent") or {}).get("name")
    sender = f"{agent} (support team)" if agent else "bot"
    channel = str(metadata.get("channel") or "?")
    by = LABELS.get(channel, channel)
    return f"  {sender} sends by {by}: {event.get('text') or ''}"


async def print_team_messages(customer: Customer, seconds: float = 0.5) -> None:
    """Prints, as they are logged, the messages the support team's side sends the customer."""
    client = redis_client(customer.server.env["REDIS_URL"])
    key: Optional[str] = None
    # From now on: what the conversation held before the shell started is not news (a
    # conversation that does not exist yet starts empty).
    seen = 0
    conversation_id = await customer.server.conversation_of(customer.phone)
    if conversation_id is not None:
        key = conversation_key(conversation_id, "events")
        seen = await client.llen(key)
    while True:
        await asyncio.sleep(seconds)
        if key is None:
            conversation_id = await customer.server.conversation_of(customer.phone)
            if conversation_id is None:
                continue
            key = conversation_key(conversation_id, "events")
        length = await client.llen(key)
        for raw in await client.lrange(key, seen, length - 1):
            line = from_the_team(json.loads(raw))
            if line:
                print("\n" + line, flush=True)
        seen = length


def arrived(found: Sequence[Tuple[str, str]]) -> List[str]:
    """Messages the shop sent first (a notification), as their channel's customer gets them."""
    lines = []
    for channel, text in found:
        lines.append(f"  (sent to you first, on {channel})")
        lines.extend(shown(channel, [text]))
    return lines


async def watch(customer: Customer, turn: asyncio.Lock) -> None:
    """Prints what reaches the customer between their turns (a notification sent by ``curl``),
    checking every second."""
    while True:
        await asyncio.sleep(1.0)
        async with turn:
            found = await customer.unsolicited()
        if found:
            print("\n" + "\n".join(arrived(found)), flush=True)


async def converse(customer: Customer, channel: str, team: bool = False) -> None:
    print(
        f"You are {customer.phone}, on {channel}. /voice /sms /whatsapp /chat switch channel; "
        "/inbox waits for what the shop sends you; /quit ends."
    )
    turn = asyncio.Lock()
    if channel == CHAT:
        await customer.open_chat()  # a tab left open: notifications appear in it at once
    watcher = asyncio.create_task(watch(customer, turn))
    team_watcher = asyncio.create_task(print_team_messages(customer)) if team else None
    try:
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
            if text == "/inbox":
                async with turn:
                    found = await customer.unsolicited(wait=INBOX_WAIT_SECONDS)
                print("\n".join(arrived(found) or ["  (nothing new from the shop)"]))
                continue
            if not text:
                continue
            async with turn:
                replies = await customer.say(channel, text)
            print("\n".join(shown(channel, replies)))
    finally:
        watchers = [w for w in (watcher, team_watcher) if w is not None]
        for running in watchers:
            running.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await customer.close()


def notification_help(stack: RasaStack) -> str:
    """How to send this shell's customer a notification (the command of docs/INTEGRATORS.md)."""
    return (
        "Send yourself a notification from another terminal (docs/INTEGRATORS.md, "
        '"Notifications"):\n'
        f"  export RASA_URL={stack.base_url} "
        f"NOTIFICATIONS_API_KEY={stack.env['NOTIFICATIONS_API_KEY']}\n"
        "  then run the curl command shown there."
    )


def start_stack(work: Path) -> tuple[RasaStack, RedisServer, FakeTwilio]:
    redis = RedisServer(work / "redis").start()
    rasa_port = free_port()
    env: Dict[str, str] = {
        **local_secrets(rasa_port),
        "REDIS_URL": redis.url,
        # A demo at any hour: notifications are not held for the customer's night unless
        # OUTBOUND_QUIET_HOURS is set.
        "OUTBOUND_QUIET_HOURS": "off",
    }
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
    parser.add_argument(
        "--inbox",
        action="store_true",
        default=bool(os.environ.get("INBOX")),
        help="open this stack's agent inbox beside the shell (signed in as a local agent)",
    )
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omni-shell-") as directory:
        stack, redis, twilio = start_stack(Path(directory))
        try:
            customer = Customer(Server(stack.base_url, stack.env), phone=arguments.phone)
            if arguments.inbox:
                link = inbox_link(stack.env, stack.base_url)
                print(f"Agent inbox (signed in as a local agent): {link}")
                webbrowser.open(link)
            print(notification_help(stack))
            asyncio.run(converse(customer, arguments.channel, team=arguments.inbox))
        finally:
            stack.stop()
            twilio.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
